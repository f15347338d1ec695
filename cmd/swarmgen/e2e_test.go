package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the swarmgen binary: the
// process executor runs "<this executable> app <name>" for built-in apps.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "app" {
		os.Exit(run(context.Background(), os.Args, stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}, true))
	}
	os.Exit(m.Run())
}

// TestDevnetJobEndToEnd drives a real devnet through the CLI only: submit
// with --wait -o, which watches the real event stream and downloads the
// bucket through the real gateway, verifying every block.
func TestDevnetJobEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a devnet")
	}
	out, errb, stop := startCLI(t, "--log-level", "warn", "devnet", "--nodes", "2", "--api", "127.0.0.1:0", "--gateway", "127.0.0.1:0")
	api := waitFor(t, out, errb, apiLine)[1]
	waitFor(t, out, errb, regexp.MustCompile(`gateway: +http://\S+\n`))
	dir := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := runCLICtx(t, ctx, "", "--api", api, "job", "submit", "-t", "noop", "-n", "3", "--set", "greeting=hi", "--wait", "-o", dir, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s\ndevnet stderr %s", r.code, r.out, r.err, errb.String())
	}
	var final struct {
		ID     string
		Status string
		Tasks  []struct{ Status string }
	}
	if err := json.Unmarshal([]byte(r.out), &final); err != nil || final.Status != "completed" || len(final.Tasks) != 3 {
		t.Fatalf("final job %+v (%v)", final, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
		t.Fatalf("bucket not downloaded: %v\n%s", err, r.err)
	}
	for _, task := range []string{"task-0", "task-1", "task-2"} {
		ents, err := os.ReadDir(filepath.Join(dir, task))
		if err != nil || len(ents) == 0 {
			t.Fatalf("%s: %v %v", task, ents, err)
		}
	}
	// The other commands read the same job back.
	if r := runCLI(t, "", "--api", api, "job", "status", final.ID); r.code != 0 {
		t.Fatalf("status: %d %s", r.code, r.err)
	}
	if r := runCLI(t, "", "--api", api, "job", "logs", final.ID); r.code != 0 {
		t.Fatalf("logs: %d %s", r.code, r.err)
	}
	if code := stop(); code != 0 {
		t.Fatalf("devnet exit %d", code)
	}
}
