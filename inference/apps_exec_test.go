package inference_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/inference/apps"
)

// appBinary returns testdata/testapp, whose "app <name>" runs apps.Run as
// "swarmgen app <name>" does, without depending on cmd/.
func appBinary(tb testing.TB) string { return inference.TestApp(tb) }

func fractalTask(id string, seed int64) *inference.Task {
	return &inference.Task{
		JobID: "job", TaskID: id, Seed: seed,
		App:    inference.App{Kind: inference.KindProcess, Command: []string{"{swarmgen}", "app", "fractal"}},
		Params: json.RawMessage(`{"width":80,"height":40,"iterations":150,"prompt":"hello"}`),
	}
}

// TestFractalThroughExecutors runs the fractal app as a child process and
// in-process: both give the same bytes, proper progress and a valid PNG.
func TestFractalThroughExecutors(t *testing.T) {
	proc := inference.NewProcess(inference.ProcessConfig{SwarmgenBinary: appBinary(t)})
	inproc := inference.NewInProcess(apps.Funcs())
	var pngs [][]byte
	for i, ex := range []inference.Executor{proc, inproc} {
		task := fractalTask("t"+string(rune('a'+i)), 99)
		dir, err := inference.PrepareTaskDir(t.TempDir(), task)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var prog []float64
		res, err := ex.Run(context.Background(), task, dir, func(f float64) {
			mu.Lock()
			prog = append(prog, f)
			mu.Unlock()
		})
		if err != nil {
			t.Fatalf("executor %d: %v\nlog: %s", i, err, res.Log)
		}
		if len(prog) != 3 || prog[len(prog)-1] != 1 {
			t.Fatalf("executor %d: progress %v, want 3 reports ending at 1", i, prog)
		}
		b, err := os.ReadFile(filepath.Join(dir, "output", "fractal.png"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(b))
		if err != nil || cfg.Width != 80 || cfg.Height != 40 {
			t.Fatalf("executor %d: png %+v, %v", i, cfg, err)
		}
		if n, _ := inference.OutputSize(dir); n != res.OutputBytes || n <= int64(len(b)) {
			t.Fatalf("OutputBytes %d, measured %d", res.OutputBytes, n)
		}
		pngs = append(pngs, b)
	}
	if !bytes.Equal(pngs[0], pngs[1]) {
		t.Fatal("process and in-process fractal differ")
	}
}

func TestFractalBadParamsExitNonZero(t *testing.T) {
	proc := inference.NewProcess(inference.ProcessConfig{SwarmgenBinary: appBinary(t)})
	task := fractalTask("bad", 1)
	task.Params = json.RawMessage(`{"width":5}`)
	dir, err := inference.PrepareTaskDir(t.TempDir(), task)
	if err != nil {
		t.Fatal(err)
	}
	res, err := proc.Run(context.Background(), task, dir, nil)
	if !errors.Is(err, inference.ErrExit) || res.ExitCode == 0 {
		t.Fatalf("err = %v, want ErrExit", err)
	}
	if !bytes.Contains(res.Log, []byte(`param "width"`)) {
		t.Fatalf("log does not name the param: %s", res.Log)
	}
}

func TestInProcessContract(t *testing.T) {
	ex := inference.NewInProcess(map[string]inference.AppFunc{
		"fail":  func(ctx context.Context, env inference.AppEnv) error { return errors.New("boom") },
		"panic": func(ctx context.Context, env inference.AppEnv) error { panic("kaboom") },
		"block": func(ctx context.Context, env inference.AppEnv) error { <-ctx.Done(); return ctx.Err() },
		"chatty": func(ctx context.Context, env inference.AppEnv) error {
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 50 {
						fmt.Fprintln(env.Stdout, "::progress 0.5")
					}
				}()
			}
			wg.Wait()
			return nil
		},
		"big": func(ctx context.Context, env inference.AppEnv) error {
			return os.WriteFile(filepath.Join(env.Output, "x"), make([]byte, 2000), 0o644)
		},
	}, inference.InProcessConfig{OutputCap: 1000})
	var reports atomic.Int64
	run := func(name string, timeout time.Duration, ctx context.Context) (*inference.Result, error) {
		task := &inference.Task{JobID: "j", TaskID: name, App: inference.App{Command: []string{"{swarmgen}", "app", name}}, Timeout: timeout}
		dir, err := inference.PrepareTaskDir(t.TempDir(), task)
		if err != nil {
			t.Fatal(err)
		}
		return ex.Run(ctx, task, dir, func(float64) { reports.Add(1) })
	}
	if _, err := run("chatty", 0, context.Background()); err != nil || reports.Load() != 200 {
		t.Errorf("chatty: %v, %d progress reports, want 200", err, reports.Load())
	}
	bg := context.Background()
	if res, err := run("fail", 0, bg); !errors.Is(err, inference.ErrExit) || res.ExitCode != 1 || !strings.Contains(string(res.Log), "boom") {
		t.Errorf("fail: %v %+v", err, res)
	}
	if res, err := run("panic", 0, bg); !errors.Is(err, inference.ErrExit) || res.ExitCode != 2 {
		t.Errorf("panic: %v %+v", err, res)
	}
	if _, err := run("block", 50*time.Millisecond, bg); !errors.Is(err, inference.ErrTimeout) {
		t.Errorf("block with timeout: %v", err)
	}
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	if _, err := run("block", 0, ctx); !errors.Is(err, inference.ErrCancelled) {
		t.Errorf("block cancelled: %v", err)
	}
	if _, err := run("big", 0, bg); !errors.Is(err, inference.ErrOutputTooBig) {
		t.Errorf("big: %v", err)
	}
	if _, err := run("nope", 0, bg); !errors.Is(err, inference.ErrInvalidTask) {
		t.Errorf("unknown app: %v", err)
	}
}

// BenchmarkFractalDirect renders a 512x512 fractal in-process (params
// decoding, rendering, PNG encoding, file writes).
func BenchmarkFractalDirect(b *testing.B) {
	ex := inference.NewInProcess(apps.Funcs())
	root := b.TempDir()
	task := fractalTask("bench", 5)
	task.Params = json.RawMessage(`{"width":512,"height":512,"iterations":200}`)
	dir, err := inference.PrepareTaskDir(root, task)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ex.Run(context.Background(), task, dir, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(512*512)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mpixel/s")
}

// BenchmarkProcessNoop measures one task through the process executor:
// task dir preparation, fork/exec of the app binary, the noop app, wait,
// output measurement and cleanup.
func BenchmarkProcessNoop(b *testing.B) {
	ex := inference.NewProcess(inference.ProcessConfig{SwarmgenBinary: appBinary(b)})
	root := b.TempDir()
	task := &inference.Task{JobID: "job", TaskID: "noop", App: inference.App{Command: []string{"{swarmgen}", "app", "noop"}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir, err := inference.PrepareTaskDir(root, task)
		if err != nil {
			b.Fatal(err)
		}
		if res, err := ex.Run(context.Background(), task, dir, nil); err != nil {
			b.Fatalf("%v: %s", err, res.Log)
		}
		inference.CleanupTaskDir(dir)
	}
}

// BenchmarkInProcessNoop is BenchmarkProcessNoop without fork/exec: the
// per-task overhead the scheduler benchmarks pay.
func BenchmarkInProcessNoop(b *testing.B) {
	ex := inference.NewInProcess(apps.Funcs())
	root := b.TempDir()
	task := &inference.Task{JobID: "job", TaskID: "noop", App: inference.App{Command: []string{"{swarmgen}", "app", "noop"}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir, err := inference.PrepareTaskDir(root, task)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ex.Run(context.Background(), task, dir, nil); err != nil {
			b.Fatal(err)
		}
		inference.CleanupTaskDir(dir)
	}
}
