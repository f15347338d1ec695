//go:build unix

package stablediffusion

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/inference"
)

// BenchmarkWarmPool measures images/s through WarmPool with the tiny
// pipeline (64x64, 2 steps, CPU): one task per call vs replicas batched 4 to
// a call. Worker start and model load happen before the timer starts.
//
//	go test -run XXX -bench WarmPool -benchtime 20x ./inference/stablediffusion/
func BenchmarkWarmPool(b *testing.B) {
	python, model := tinyModelB(b)
	for _, batch := range []int{1, 4} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			script := "worker.py"
			pool := NewWarmPool(WarmConfig{Python: python, WorkerScript: script, MaxIdle: time.Hour, Env: map[string]string{"HF_HUB_OFFLINE": "1", "SWARMGEN_SD_LOG": "WARNING"}})
			defer pool.Close()
			ctx := context.Background()
			root := b.TempDir()
			n := 0
			mk := func() ([]*inference.Task, []string) {
				var ts []*inference.Task
				var ds []string
				for range batch {
					n++
					task, dir := sdTaskB(b, root, fmt.Sprintf("t%d", n), int64(n), map[string]any{"prompt": "bench", "model": model, "steps": 2, "width": 64, "height": 64})
					ts, ds = append(ts, task), append(ds, dir)
				}
				return ts, ds
			}
			if err := pool.Preload(ctx, model); err != nil {
				b.Fatal(err)
			}
			ts, ds := mk()
			if _, err := pool.RunBatch(ctx, ts, ds, nil); err != nil { // warm-up
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				ts, ds := mk()
				b.StartTimer()
				res, err := pool.RunBatch(ctx, ts, ds, nil)
				if err != nil || res[0].ExitCode != 0 {
					b.Fatalf("%v %+v", err, res)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "images/s")
		})
	}
}

// BenchmarkWarmPoolConcurrent measures images/s when 4 callers (a
// provider's worker loops) each send one-task Run calls for replicas of one
// prompt, with merging of waiting calls off (MaxMergeImages 1) and on (the
// default), with torch on 1 and 2 CPU threads. Same tiny pipeline as
// BenchmarkWarmPool; it also reports tasks per worker request.
//
//	go test -run XXX -bench WarmPoolConcurrent -benchtime 40x ./inference/stablediffusion/
func BenchmarkWarmPoolConcurrent(b *testing.B) {
	python, model := tinyModelB(b)
	const callers = 4
	for _, threads := range []string{"1", "2"} {
		for _, merge := range []bool{false, true} {
			b.Run(fmt.Sprintf("threads=%s/merge=%v", threads, merge), func(b *testing.B) {
				benchConcurrent(b, python, model, callers, threads, merge)
			})
		}
	}
}

func benchConcurrent(b *testing.B, python, model string, callers int, threads string, merge bool) {
	cfg := WarmConfig{Python: python, WorkerScript: "worker.py", MaxIdle: time.Hour,
		Env: map[string]string{"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads, "SWARMGEN_SD_LOG": "WARNING"}}
	if !merge {
		cfg.MaxMergeImages = 1
	}
	pool := NewWarmPool(cfg)
	defer pool.Close()
	ctx := context.Background()
	root := b.TempDir()
	app := map[string]any{"prompt": "bench", "model": model, "steps": 2, "width": 64, "height": 64}
	if err := pool.Preload(ctx, model); err != nil {
		b.Fatal(err)
	}
	warm, warmDir := sdTaskB(b, root, "warm", 0, app)
	if _, err := pool.Run(ctx, warm, warmDir, nil); err != nil {
		b.Fatal(err)
	}
	tasks := make([]*inference.Task, b.N)
	dirs := make([]string, b.N)
	for i := range b.N {
		tasks[i], dirs[i] = sdTaskB(b, root, fmt.Sprintf("t%d", i), int64(i+1), app)
	}
	before := pool.Stats()[0]
	var next atomic.Int64
	errs := make(chan error, callers)
	b.ResetTimer()
	for range callers {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					errs <- nil
					return
				}
				if _, err := pool.Run(ctx, tasks[i], dirs[i], nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var failed error
	for range callers {
		if err := <-errs; err != nil && failed == nil {
			failed = err
		}
	}
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	after := pool.Stats()[0]
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
	b.ReportMetric(float64(after.Tasks-before.Tasks)/float64(max(after.Requests-before.Requests, 1)), "tasks/request")
}
