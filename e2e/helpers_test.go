// Package e2e runs the swarmgen binary as real separate processes and
// drives it through its CLI and HTTP API.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// TestMain removes the binary built for the run, so repeated runs do not
// leave a 60 MB directory each under the temp dir.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// swarmgenBinary returns $SWARMGEN_BINARY or builds the CLI once.
func swarmgenBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SWARMGEN_BINARY"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "swarmgen-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "swarmgen")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/swarmgen").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is one running swarmgen process.
type proc struct {
	cmd     *exec.Cmd
	api     string
	dataDir string
	out     *bytes.Buffer
	done    chan struct{}
	mu      sync.Mutex
	exited  bool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// startNode runs `swarmgen node run` with args and waits for its API.
func startNode(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	port := freePort(t)
	args := append([]string{"node", "run", "--data-dir", dataDir, "--api", api,
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port),
		"--pool", "e2e", "--ad-interval", "1s", "--no-mdns", "--no-nat"}, extra...)
	p := &proc{api: api, dataDir: dataDir, out: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(swarmgenBinary(t), args...)
	// These nodes run Go apps only: no Python check at start (the Stable
	// Diffusion end-to-end test lives in node/ and sets its own).
	p.cmd.Env = append(os.Environ(), "SWARMGEN_PYTHON=")
	lb := &lockedBuffer{b: p.out}
	p.cmd.Stdout, p.cmd.Stderr = lb, lb
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			lb.mu.Lock()
			t.Logf("node %s output:\n%s", api, p.out.String())
			lb.mu.Unlock()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var rows []map[string]any
		if err := p.cli(t, &rows, "peers", "--json"); err == nil {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("node exited at start:\n%s", p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node API %s did not come up", api)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGINT and waits for a clean exit.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once, as a crash would.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// cli runs a swarmgen CLI command against this node's API and decodes its
// stdout as JSON into v (if v is not nil).
func (p *proc) cli(t *testing.T, v any, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, swarmgenBinary(t), append([]string{"--api", p.api}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("swarmgen %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	if v != nil {
		if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
			return fmt.Errorf("swarmgen %s: decode output: %v: %s", strings.Join(args, " "), err, stdout.String())
		}
	}
	return nil
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
