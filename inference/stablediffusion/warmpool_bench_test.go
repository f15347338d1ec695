//go:build unix

package stablediffusion

import (
	"context"
	"fmt"
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
