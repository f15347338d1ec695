//go:build unix

package stablediffusion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/inference"
)

// The tests drive the real worker.py with a tiny random-weight pipeline that
// make_tiny_pipeline.py builds once per test binary (no download).

var (
	tinyOnce  sync.Once
	tinyDir   string
	tinyErr   error
	tinyRoot  string
	pythonBin string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tinyRoot != "" {
		_ = os.RemoveAll(tinyRoot)
	}
	os.Exit(code)
}

func requireAll() bool { return os.Getenv("SWARMGEN_REQUIRE_ALL") == "1" }

// findPython returns SWARMGEN_PYTHON, the repo's .venv python, or python3.
func findPython() string {
	if p := os.Getenv("SWARMGEN_PYTHON"); p != "" {
		return p
	}
	if abs, err := filepath.Abs("../../.venv/bin/python"); err == nil {
		if _, err := os.Stat(abs); err == nil {
			return abs
		}
	}
	return "python3"
}

// tinyModel builds the tiny pipeline once, or skips (fails under
// SWARMGEN_REQUIRE_ALL=1) when Python with diffusers is missing.
func tinyModel(t *testing.T) (python, model string) { return tinyModelB(t) }

// tinyModelB is tinyModel for any testing.TB.
func tinyModelB(t testing.TB) (python, model string) {
	t.Helper()
	tinyOnce.Do(func() {
		pythonBin = findPython()
		if err := checkPython(context.Background(), pythonBin); err != nil {
			tinyErr = err
			return
		}
		tinyRoot, tinyErr = os.MkdirTemp("", "swarmgen-sd-test-")
		if tinyErr != nil {
			return
		}
		tinyDir = filepath.Join(tinyRoot, "tiny-sd")
		out, err := exec.Command(pythonBin, "make_tiny_pipeline.py", tinyDir).CombinedOutput()
		if err != nil {
			tinyErr = fmt.Errorf("make_tiny_pipeline.py: %w: %s", err, tail(out, 2000))
		}
	})
	if tinyErr != nil {
		if requireAll() {
			t.Fatalf("python with diffusers required (SWARMGEN_REQUIRE_ALL=1): %v", tinyErr)
		}
		t.Skipf("needs python with torch+diffusers (set SWARMGEN_PYTHON): %v", tinyErr)
	}
	return pythonBin, tinyDir
}

func newPool(t *testing.T, python string, maxIdle time.Duration) *WarmPool {
	t.Helper()
	script, err := filepath.Abs("worker.py")
	if err != nil {
		t.Fatal(err)
	}
	p := NewWarmPool(WarmConfig{
		Python:       python,
		WorkerScript: script,
		MaxIdle:      maxIdle,
		Env:          map[string]string{"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SWARMGEN_SD_LOG": "INFO"},
	})
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func sdTask(t *testing.T, root, id string, seed int64, app map[string]any) (*inference.Task, string) {
	return sdTaskB(t, root, id, seed, app)
}

func sdTaskB(t testing.TB, root, id string, seed int64, app map[string]any) (*inference.Task, string) {
	t.Helper()
	raw, err := json.Marshal(app)
	if err != nil {
		t.Fatal(err)
	}
	task := &inference.Task{JobID: "job", TaskID: id, Seed: seed, Count: 1, Params: raw, Timeout: 5 * time.Minute}
	dir, err := inference.PrepareTaskDir(root, task)
	if err != nil {
		t.Fatal(err)
	}
	return task, dir
}

func readPNG(t *testing.T, dir string) image.Image {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "output", "image-0.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// maxPixelDiff returns the largest per-channel difference (0..255).
func maxPixelDiff(a, b image.Image) int {
	if a.Bounds() != b.Bounds() {
		return 1 << 16
	}
	worst := 0
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			r1, g1, b1, _ := a.At(x, y).RGBA()
			r2, g2, b2, _ := b.At(x, y).RGBA()
			for _, d := range []int{int(r1>>8) - int(r2>>8), int(g1>>8) - int(g2>>8), int(b1>>8) - int(b2>>8)} {
				worst = max(worst, d, -d)
			}
		}
	}
	return worst
}

func onlyStats(t *testing.T, p *WarmPool) WorkerStats {
	t.Helper()
	s := p.Stats()
	if len(s) != 1 {
		t.Fatalf("want 1 worker, got %+v", s)
	}
	return s[0]
}

// TestWarmPool runs one pool through its life: warm reuse, batching,
// merging of waiting calls, cancel, crash and idle stop. One pool keeps the
// number of (slow) Python starts low on a small CI machine.
func TestWarmPool(t *testing.T) {
	python, model := tinyModel(t)
	pool := newPool(t, python, time.Hour)
	ctx := context.Background()
	root := t.TempDir()
	app := func(prompt string) map[string]any {
		return map[string]any{"prompt": prompt, "model": model, "steps": 2, "width": 64, "height": 64}
	}
	if err := pool.Available(ctx); err != nil {
		t.Fatalf("Available: %v", err)
	}

	t.Run("two tasks one load", func(t *testing.T) {
		var progress []float64
		for i, prompt := range []string{"a cat", "a dog"} {
			task, dir := sdTask(t, root, fmt.Sprintf("one%d", i), int64(i), app(prompt))
			res, err := pool.Run(ctx, task, dir, func(f float64) { progress = append(progress, f) })
			if err != nil {
				t.Fatalf("task %d: %v\n%s", i, err, res.Log)
			}
			if res.ExitCode != 0 || res.OutputBytes == 0 {
				t.Fatalf("task %d: %+v", i, res)
			}
			if b := readPNG(t, dir).Bounds(); b.Dx() != 64 || b.Dy() != 64 {
				t.Fatalf("image size %v", b)
			}
		}
		if len(progress) != 4 || progress[1] != 1 || progress[3] != 1 {
			t.Errorf("progress = %v, want two steps per task", progress)
		}
		s := onlyStats(t, pool)
		if s.Loads != 1 || s.Tasks != 2 || s.Restarts != 0 || s.PID == 0 {
			t.Errorf("stats = %+v, want one process that loaded once and served 2 tasks", s)
		}
		if got := pool.WarmModels(); len(got) != 1 || got[0] != model {
			t.Errorf("WarmModels = %v", got)
		}
	})

	t.Run("bad params", func(t *testing.T) {
		a := app("x")
		a["steps"] = 0
		task, dir := sdTask(t, root, "bad", 1, a)
		res, err := pool.Run(ctx, task, dir, nil)
		if !errors.Is(err, inference.ErrExit) || res == nil || res.ExitCode != ExitBadParams {
			t.Fatalf("err = %v, res = %+v", err, res)
		}
		if want := "app.steps"; !strings.Contains(err.Error(), want) || !strings.Contains(string(res.Log), want) {
			t.Errorf("error %q / log do not name %s", err, want)
		}
	})

	t.Run("batch of 3 equals 3 single runs", func(t *testing.T) {
		var tasks []*inference.Task
		var dirs, singles []string
		for i := range 3 {
			task, dir := sdTask(t, root, fmt.Sprintf("batch%d", i), int64(100+i), app("a lighthouse"))
			tasks = append(tasks, task)
			dirs = append(dirs, dir)
		}
		seen := make([]float64, 3)
		res, err := pool.RunBatch(ctx, tasks, dirs, func(i int, f float64) { seen[i] = f })
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.ExitCode != 0 || !strings.Contains(string(r.Log), "batch of 3 images") {
				t.Fatalf("batch task %d: %+v\n%s", i, r, r.Log)
			}
			if seen[i] != 1 {
				t.Errorf("task %d last progress %v", i, seen[i])
			}
		}
		for i := range 3 {
			task, dir := sdTask(t, root, fmt.Sprintf("single%d", i), int64(100+i), app("a lighthouse"))
			if _, err := pool.Run(ctx, task, dir, nil); err != nil {
				t.Fatal(err)
			}
			singles = append(singles, dir)
		}
		for i := range 3 {
			if d := maxPixelDiff(readPNG(t, dirs[i]), readPNG(t, singles[i])); d > 3 {
				t.Errorf("replica %d: batched differs from single by %d", i, d)
			}
		}
		if d := maxPixelDiff(readPNG(t, dirs[0]), readPNG(t, dirs[1])); d < 10 {
			t.Errorf("different seeds gave near-equal images (max diff %d)", d)
		}
		if s := onlyStats(t, pool); s.Loads != 1 {
			t.Errorf("loads = %d after batch, want 1", s.Loads)
		}
	})

	merge := &mergeFixture{pool: pool, root: root, model: model}
	t.Run("merge waiting calls", func(t *testing.T) { testMerge(t, merge) })

	t.Run("cancel kills and restarts the worker", func(t *testing.T) {
		before := onlyStats(t, pool)
		a := app("slow")
		a["steps"], a["width"], a["height"] = 200, 512, 512
		task, dir := sdTask(t, root, "cancel", 1, a)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		start := time.Now()
		res, err := pool.Run(cctx, task, dir, func(f float64) { cancel() })
		if !errors.Is(err, inference.ErrCancelled) {
			t.Fatalf("err = %v, want ErrCancelled", err)
		}
		if res == nil || res.ExitCode == 0 {
			t.Errorf("result %+v", res)
		}
		if el := time.Since(start); el > time.Minute {
			t.Errorf("cancel took %s", el)
		}
		if alive(before.PID) {
			t.Errorf("worker pid %d still alive after cancel", before.PID)
		}
		task2, dir2 := sdTask(t, root, "aftercancel", 1, app("a boat"))
		if _, err := pool.Run(ctx, task2, dir2, nil); err != nil {
			t.Fatalf("after cancel: %v", err)
		}
		after := onlyStats(t, pool)
		if after.PID == before.PID || after.Restarts != before.Restarts+1 {
			t.Errorf("before %+v after %+v: want a new process", before, after)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		a := app("slow")
		a["steps"], a["width"], a["height"] = 200, 512, 512
		task, dir := sdTask(t, root, "timeout", 1, a)
		task.Timeout = 2 * time.Second
		if _, err := pool.Run(ctx, task, dir, nil); !errors.Is(err, inference.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
	})

	t.Run("merged batch cancelled", func(t *testing.T) { testMergeCancelAll(t, merge) })

	t.Run("crashed worker is restarted", func(t *testing.T) {
		task0, dir0 := sdTask(t, root, "precrash", 1, app("a tree"))
		if _, err := pool.Run(ctx, task0, dir0, nil); err != nil {
			t.Fatal(err)
		}
		before := onlyStats(t, pool)
		if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitDead(t, before.PID)
		if err := pool.Preload(ctx, model); err != nil {
			t.Fatalf("Preload after crash: %v", err)
		}
		if s := onlyStats(t, pool); !s.Loaded || s.Loads != 1 || s.PID == before.PID {
			t.Errorf("after Preload: %+v", s)
		}
		task, dir := sdTask(t, root, "postcrash", 1, app("a tree"))
		res, err := pool.Run(ctx, task, dir, nil)
		if err != nil {
			t.Fatalf("after crash: %v\n%s", err, res.Log)
		}
		after := onlyStats(t, pool)
		if after.PID == before.PID || after.Restarts != before.Restarts+1 || after.Loads != 1 {
			t.Errorf("before %+v after %+v", before, after)
		}
		if d := maxPixelDiff(readPNG(t, dir0), readPNG(t, dir)); d != 0 {
			t.Errorf("same task after restart differs by %d", d)
		}
	})

	t.Run("close kills a busy worker", func(t *testing.T) {
		pid := onlyStats(t, pool).PID
		a := app("slow")
		a["steps"], a["width"], a["height"] = 200, 512, 512
		task, dir := sdTask(t, root, "busyclose", 1, a)
		started := make(chan struct{})
		var once sync.Once
		errc := make(chan error, 1)
		go func() {
			_, err := pool.Run(ctx, task, dir, func(float64) { once.Do(func() { close(started) }) })
			errc <- err
		}()
		select {
		case <-started:
		case err := <-errc:
			t.Fatalf("slow task ended early: %v", err)
		case <-time.After(2 * time.Minute):
			t.Fatal("no progress from the slow task")
		}
		if err := pool.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, inference.ErrExit) {
				t.Errorf("busy task after Close: %v, want ErrExit", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after Close")
		}
		if alive(pid) {
			t.Errorf("worker %d alive after Close", pid)
		}
		task2, dir2 := sdTask(t, root, "closed", 1, app("x"))
		if _, err := pool.Run(ctx, task2, dir2, nil); !errors.Is(err, inference.ErrUnavailable) {
			t.Errorf("after Close: %v", err)
		}
	})
}

// TestIdleWorkerStops also covers a failed Preload: the worker that
// refused the model stays up until the idle reaper stops it.
func TestIdleWorkerStops(t *testing.T) {
	python, _ := tinyModel(t)
	pool := newPool(t, python, 300*time.Millisecond)
	missing := filepath.Join(t.TempDir(), "no-such-model")
	err := pool.Preload(context.Background(), missing)
	if !errors.Is(err, inference.ErrExit) || !strings.Contains(err.Error(), "app.model") || !strings.Contains(err.Error(), "exit code 2") {
		t.Fatalf("Preload of a missing model: %v", err)
	}
	s := onlyStats(t, pool)
	if s.PID == 0 || s.Loaded {
		t.Fatalf("after failed preload: %+v", s)
	}
	if m := pool.WarmModels(); len(m) != 0 {
		t.Errorf("WarmModels after a failed preload = %v", m)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(pool.Stats()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle worker not stopped: %+v", pool.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitDead(t, s.PID)
}

func TestBatchValidation(t *testing.T) {
	pool := NewWarmPool(WarmConfig{WorkerScript: "worker.py", Python: "/nonexistent/python"})
	defer pool.Close()
	ctx := context.Background()
	mk := func(model string) *inference.Task {
		raw, _ := json.Marshal(map[string]any{"prompt": "x", "model": model})
		return &inference.Task{JobID: "j", TaskID: "t", Params: raw}
	}
	cases := []struct {
		name  string
		tasks []*inference.Task
		dirs  []string
	}{
		{"empty", nil, nil},
		{"length mismatch", []*inference.Task{mk("a/b")}, []string{"x", "y"}},
		{"two models", []*inference.Task{mk("a/b"), mk("c/d")}, []string{"x", "y"}},
		{"model not a string", []*inference.Task{{Params: json.RawMessage(`{"model": 5}`)}}, []string{"x"}},
	}
	for _, c := range cases {
		if _, err := pool.RunBatch(ctx, c.tasks, c.dirs, nil); !errors.Is(err, ErrBatch) {
			t.Errorf("%s: err = %v, want ErrBatch", c.name, err)
		}
	}
	// A missing interpreter is reported as unavailable, not a crash.
	if _, err := pool.Run(ctx, mk("a/b"), t.TempDir(), nil); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("missing python: err = %v, want ErrUnavailable", err)
	}
	if err := pool.Available(ctx); !errors.Is(err, inference.ErrUnavailable) {
		t.Errorf("Available = %v", err)
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
