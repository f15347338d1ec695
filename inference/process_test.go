package inference

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func newProc(t testing.TB, cfg ProcessConfig) *Process {
	cfg.SwarmgenBinary = testapp(t)
	return NewProcess(cfg)
}

func TestProcessSuccess(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	task := newTask(t, "ok")
	dir := prepare(t, task)
	var got []float64
	res, err := p.Run(context.Background(), task, dir, func(f float64) { got = append(got, f) })
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, res.Log)
	}
	if res.ExitCode != 0 || res.OutputBytes != int64(len("hello\n")) {
		t.Fatalf("result = %+v", res)
	}
	if !bytes.Contains(res.Log, []byte("done on stderr")) || !bytes.Contains(res.Log, []byte("::progress 0.5")) {
		t.Fatalf("log misses stdout or stderr: %q", res.Log)
	}
	if len(got) != 1 || got[0] != 0.5 {
		t.Fatalf("progress = %v, want [0.5]", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "output", "ok.txt")); string(b) != "hello\n" {
		t.Fatalf("output = %q", b)
	}
	if res.Finished.Before(res.Started) {
		t.Fatal("finished before started")
	}
}

func TestProcessExitCode(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	task := newTask(t, "exit", "3")
	res, err := p.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrExit) {
		t.Fatalf("err = %v, want ErrExit", err)
	}
	if res == nil || res.ExitCode != 3 || !bytes.Contains(res.Log, []byte("exiting with 3")) {
		t.Fatalf("result = %+v", res)
	}
}

func TestProcessMissingBinary(t *testing.T) {
	p := NewProcess(ProcessConfig{})
	task := newTask(t)
	task.App.Command = []string{"/nonexistent/app"}
	if _, err := p.Run(context.Background(), task, prepare(t, task), nil); err == nil || !strings.Contains(err.Error(), "/nonexistent/app") {
		t.Fatalf("err = %v, want start error naming the binary", err)
	}
	task.App.Command = nil
	if _, err := p.Run(context.Background(), task, prepare(t, task), nil); !errors.Is(err, ErrInvalidTask) {
		t.Fatalf("empty command: err = %v, want ErrInvalidTask", err)
	}
}

// readPid waits for the app to record its child's pid.
func readPid(t *testing.T, dir string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(dir, "output", "child.pid")); err == nil && len(b) > 0 {
			pid, err := strconv.Atoi(string(b))
			if err != nil {
				t.Fatalf("child.pid: %v", err)
			}
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("app never wrote child.pid")
	return 0
}

func TestProcessTimeoutKillsTree(t *testing.T) {
	for _, mode := range []string{"polite", "stubborn"} {
		t.Run(mode, func(t *testing.T) {
			p := newProc(t, ProcessConfig{KillGrace: 300 * time.Millisecond})
			task := newTask(t, "tree", mode)
			task.Timeout = 1500 * time.Millisecond
			dir := prepare(t, task)
			pidc := make(chan int, 1)
			go func() { pidc <- readPid(t, dir) }()
			start := time.Now()
			res, err := p.Run(context.Background(), task, dir, nil)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("Run took %s after a 1.5s timeout", took)
			}
			if res == nil || res.ExitCode == 0 {
				t.Fatalf("result = %+v, want non-zero exit", res)
			}
			child := <-pidc
			if !waitDead(child, 2*time.Second) {
				t.Fatalf("grandchild %d still alive after timeout", child)
			}
		})
	}
}

func TestProcessBackgroundChildKilledOnExit(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	task := newTask(t, "background")
	dir := prepare(t, task)
	if _, err := p.Run(context.Background(), task, dir, nil); err != nil {
		t.Fatalf("Run: %v", err)
	}
	child := readPid(t, dir)
	if !waitDead(child, 2*time.Second) {
		t.Fatalf("child %d left running after the app exited", child)
	}
}

func TestProcessCancel(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	task := newTask(t, "tree")
	dir := prepare(t, task)
	ctx, cancel := context.WithCancel(context.Background())
	var child int
	go func() { child = readPid(t, dir); cancel() }()
	res, err := p.Run(ctx, task, dir, nil)
	if !errors.Is(err, ErrCancelled) {
		t.Fatalf("err = %v, want ErrCancelled", err)
	}
	if res == nil {
		t.Fatal("nil result for a started process")
	}
	if !waitDead(child, 2*time.Second) {
		t.Fatalf("grandchild %d alive after cancel", child)
	}
}

func TestProcessProgressParsing(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	task := newTask(t, "progress")
	var mu sync.Mutex
	var got []float64
	if _, err := p.Run(context.Background(), task, prepare(t, task), func(f float64) {
		mu.Lock()
		got = append(got, f)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	want := []float64{0.25, 1, 0, 0.75}
	if len(got) != len(want) {
		t.Fatalf("progress = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("progress = %v, want %v", got, want)
		}
	}
}

func TestProcessLogCapKeepsTail(t *testing.T) {
	p := newProc(t, ProcessConfig{LogCap: 1000})
	task := newTask(t, "spam", "200000")
	res, err := p.Run(context.Background(), task, prepare(t, task), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Log) != 1000 {
		t.Fatalf("log is %d bytes, want the 1000-byte cap", len(res.Log))
	}
	if !bytes.HasSuffix(res.Log, []byte("THE-END\n")) {
		t.Fatalf("log tail = %q, want it to end with THE-END", res.Log[len(res.Log)-40:])
	}
}

func TestProcessOutputCap(t *testing.T) {
	p := newProc(t, ProcessConfig{OutputCap: 1000})
	task := newTask(t, "bigout", "5000")
	res, err := p.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrOutputTooBig) {
		t.Fatalf("err = %v, want ErrOutputTooBig", err)
	}
	if res.OutputBytes <= 1000 {
		t.Fatalf("OutputBytes = %d", res.OutputBytes)
	}
	task = newTask(t, "bigout", "1000")
	if _, err := p.Run(context.Background(), task, prepare(t, task), nil); err != nil {
		t.Fatalf("output at the cap: %v", err)
	}
}

func TestProcessSymlinkOutputRejected(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	task := newTask(t, "symlink")
	_, err := p.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrBadOutput) || !strings.Contains(err.Error(), "passwd") {
		t.Fatalf("err = %v, want ErrBadOutput naming the link", err)
	}
}

func TestProcessEnvAndParams(t *testing.T) {
	p := newProc(t, ProcessConfig{Env: map[string]string{"FROM_CFG": "c", "SHARED": "cfg"}})
	task := newTask(t, "env")
	task.App.Env = map[string]string{"FROM_APP": "a", "SHARED": "app", "SWARMGEN_OUTPUT": "/evil"}
	t.Setenv("LEAKED_SECRET", "x")
	dir := prepare(t, task)
	if _, err := p.Run(context.Background(), task, dir, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "output", "env.txt"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	want := map[string]string{
		"SWARMGEN_TASK_DIR": dir,
		"SWARMGEN_PARAMS":   filepath.Join(dir, "params.json"),
		"SWARMGEN_INPUT":    filepath.Join(dir, "input"),
		"SWARMGEN_OUTPUT":   filepath.Join(dir, "output"),
		"FROM_CFG":          "c",
		"FROM_APP":          "a",
		"SHARED":            "app",
		"HOME":              dir,
		"PATH":              minimalPath,
		"CWD":               dir,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["LEAKED_SECRET"]; ok {
		t.Error("host environment leaked into the app")
	}

	var params map[string]json.RawMessage
	body, _ := os.ReadFile(filepath.Join(dir, "params.json"))
	if err := json.Unmarshal(body, &params); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"job", "task", "index", "count", "attempt", "seed", "app"}
	if len(params) != len(wantKeys) {
		t.Fatalf("params.json keys = %s", body)
	}
	for _, k := range wantKeys {
		if _, ok := params[k]; !ok {
			t.Fatalf("params.json lacks %q: %s", k, body)
		}
	}
	if string(params["job"]) != `"job1"` || string(params["index"]) != "2" || string(params["count"]) != "5" ||
		string(params["attempt"]) != "1" || string(params["seed"]) != "42" || string(params["app"]) != `{"width":32}` {
		t.Fatalf("params.json = %s", body)
	}
}

func TestProcessBadEnv(t *testing.T) {
	p := newProc(t, ProcessConfig{})
	for _, env := range []map[string]string{{"A=B": "x"}, {"": "x"}, {"A": "x\x00y"}, {"LD_PRELOAD": "/tmp/x.so"}} {
		task := newTask(t, "ok")
		task.App.Env = env
		if _, err := p.Run(context.Background(), task, prepare(t, task), nil); !errors.Is(err, ErrInvalidTask) {
			t.Errorf("env %q: err = %v, want ErrInvalidTask", env, err)
		}
	}
}

func TestProcessAvailable(t *testing.T) {
	if err := newProc(t, ProcessConfig{}).Available(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := NewProcess(ProcessConfig{SwarmgenBinary: filepath.Join(t.TempDir(), "missing")})
	if err := p.Available(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("missing binary: err = %v, want ErrUnavailable", err)
	}
}
