package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/node"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCLI runs a long-running command (node run, devnet) in the
// background until the returned stop is called; stop returns its exit code.
func startCLI(t *testing.T, args ...string) (out, errb *syncBuffer, stop func() int) {
	t.Helper()
	out, errb = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"swarmgen"}, args...), stdio{in: strings.NewReader(""), out: out, err: errb}, false)
	}()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("command did not stop after cancel; stderr:\n%s", errb.String())
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return out, errb, stop
}

// waitFor polls until re matches out.
func waitFor(t *testing.T, out, errb *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %v in output:\n%s\nstderr:\n%s", re, out.String(), errb.String())
	return nil
}

var apiLine = regexp.MustCompile(`api: +http://(127\.0\.0\.1:\d+)\n`)

func TestNodeRunServesAPIAndStops(t *testing.T) {
	dir := t.TempDir()
	out, errb, stop := startCLI(t, "--log-level", "warn", "node", "run", "--data-dir", dir,
		"--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--no-mdns", "--no-nat", "--pool", "cli-test")
	api := waitFor(t, out, errb, apiLine)[1]
	id := waitFor(t, out, errb, regexp.MustCompile(`peer ID: (\S+)\n`))[1]
	if !strings.Contains(out.String(), "/ip4/127.0.0.1/tcp/") || !strings.Contains(out.String(), "/p2p/"+id) {
		t.Fatalf("addresses not printed:\n%s", out.String())
	}
	// The CLI talks to the node it started.
	r := runCLI(t, "", "--api", api, "peers", "--json")
	if r.code != 0 {
		t.Fatalf("peers against the real node: exit %d %s", r.code, r.err)
	}
	if code := stop(); code != 0 {
		t.Fatalf("node run exit %d after SIGINT-equivalent; stderr:\n%s", code, errb.String())
	}
	// The identity persisted: `id` prints the same peer ID.
	if r := runCLI(t, "", "id", "--data-dir", dir); r.code != 0 || strings.TrimSpace(r.out) != id {
		t.Fatalf("id = %q (exit %d), want %s", r.out, r.code, id)
	}
}

func TestIDCreatesKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	r1 := runCLI(t, "", "id", "--data-dir", dir)
	r2 := runCLI(t, "", "id", "--data-dir", dir)
	if r1.code != 0 || r1.out == "" || r1.out != r2.out || !strings.HasPrefix(r1.out, "12D3KooW") {
		t.Fatalf("id: %q then %q (%s)", r1.out, r2.out, r1.err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}

func TestNodeRunInvalidConfigExits2(t *testing.T) {
	for _, args := range [][]string{
		{"--executor", "vm"},
		{"--pool", ""},
		{"--ad-interval", "1ms"},
		{"--memory", "lots"},
		{"--label", "novalue"},
		{"--bootstrap", "/ip4/1.2.3.4/tcp/1"},
		{"--gpus", "0,,1"},
	} {
		r := runCLI(t, "", append([]string{"node", "run", "--data-dir", t.TempDir(), "--api", ""}, args...)...)
		if r.code != exitUsage || r.err == "" {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 with the reason", args, r.code, r.err)
		}
	}
}

func TestNodeConfigMapping(t *testing.T) {
	var got node.Config
	app := newApp(&cmdEnv{io: stdio{out: &bytes.Buffer{}, err: &bytes.Buffer{}}})
	for _, c := range app.Commands {
		if c.Name == "node" {
			c.Subcommands[0].Action = func(c *cli.Context) error {
				var err error
				got, err = nodeConfig(c)
				return err
			}
		}
	}
	t.Setenv("SWARMGEN_SLOTS", "3")
	err := app.Run([]string{"swarmgen", "--api", "127.0.0.1:7000", "node", "run", "--data-dir", "/d",
		"--listen", "/ip4/127.0.0.1/tcp/1,/ip4/127.0.0.1/udp/1/quic-v1", "--listen", "/ip4/127.0.0.1/tcp/2",
		"--bootstrap", "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
		"--pool", "lab", "--psk-file", "/k", "--gateway", "127.0.0.1:8080", "--executor", "docker",
		"--cpus", "2.5", "--memory", "8Gi", "--gpus", "0,1", "--ad-interval", "3s", "--dht", "--no-mdns", "--no-nat",
		"--label", "zone=eu,tier=a", "--label", "x=", "--templates", "noop,fractal", "--no-provide",
		"--python", "/py", "--template-dir", "/t", "--price-per-task", "42"})
	if err != nil {
		t.Fatal(err)
	}
	want := node.DefaultConfig()
	want.DataDir = "/d"
	want.Listen = []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1", "/ip4/127.0.0.1/tcp/2"}
	want.Bootstrap = []string{"/ip4/1.2.3.4/tcp/1/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"}
	want.Pool, want.PSKFile, want.API, want.Gateway, want.Executor = "lab", "/k", "127.0.0.1:7000", "127.0.0.1:8080", "docker"
	want.CPUs, want.Memory, want.GPUs, want.AdInterval = 2.5, 8<<30, "0,1", 3*time.Second
	want.DHT, want.MDNS, want.NAT, want.Slots, want.Provide = true, false, false, 3, false
	want.Labels = map[string]string{"zone": "eu", "tier": "a", "x": ""}
	want.Templates = []string{"noop", "fractal"}
	want.Python, want.TemplateDir, want.PricePerTaskMicros = "/py", "/t", 42
	if g, w := sprintConfig(got), sprintConfig(want); g != w {
		t.Fatalf("config\n got %s\nwant %s", g, w)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("mapped config invalid: %v", err)
	}
}

func sprintConfig(c node.Config) string {
	return strings.ReplaceAll(strings.TrimSpace(fmtV(c)), "\n", " ")
}

func TestDevnetCommand(t *testing.T) {
	out, errb, stop := startCLI(t, "--log-level", "warn", "devnet", "--nodes", "2", "--api", "127.0.0.1:0", "--gateway", "")
	api := waitFor(t, out, errb, apiLine)[1]
	if !strings.Contains(out.String(), "devnet: 2 nodes") || !strings.Contains(out.String(), "job submit") {
		t.Fatalf("devnet banner:\n%s", out.String())
	}
	// Node 0 comes to see node 1 in its capacity table.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := runCLI(t, "", "--api", api, "peers")
		if r.code == 0 && strings.Count(r.out, "\n") >= 3 { // header + self + the other node
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peers never showed 2 nodes:\n%s\n%s", r.out, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := stop(); code != 0 {
		t.Fatalf("devnet exit %d; stderr:\n%s", code, errb.String())
	}
}

func fmtV(v any) string { return fmt.Sprintf("%+v", v) }
