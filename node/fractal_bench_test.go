package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
)

// swarmgenBinaryForBench returns $SWARMGEN_BINARY or builds the CLI.
func swarmgenBinaryForBench(b *testing.B) string {
	if p := os.Getenv("SWARMGEN_BINARY"); p != "" {
		return p
	}
	p := filepath.Join(b.TempDir(), "swarmgen")
	if out, err := exec.Command("go", "build", "-o", p, "../cmd/swarmgen").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return p
}

const (
	fractalTasks  = 6
	fractalParams = `{"width":512,"height":512,"iterations":2000,"prompt":"bench"}`
)

// fractalJob is the benchmark's job body (a fixed job seed) and its tasks
// as the submitter partitions them, so both paths render the same regions:
// a region's cost depends on its seed many times over.
func fractalJob(b *testing.B) (string, []jobspec.TaskSpec) {
	body := fmt.Sprintf(`{"templateID":"fractal","seed":7,"params":{"partitioner":{"num_replicas":%d},"app":%s}}`, fractalTasks, fractalParams)
	spec, err := jobspec.Parse([]byte(body), jobspec.Builtin(), jobspec.DefaultLimits())
	if err != nil {
		b.Fatal(err)
	}
	tasks, err := jobspec.Partition(spec, spec.Template, nil)
	if err != nil {
		b.Fatal(err)
	}
	return body, tasks
}

// BenchmarkFractalNetworkOverhead runs the same fractal tasks (real
// `swarmgen app fractal` processes) two ways with the same parallelism (2,
// the machine's cores): through a 3-node devnet (a submitter that does not
// provide, two providers with one slot each: bids, streams, result DAGs,
// fetch and bucket assembly included) and directly with the process
// executor, two at a time. It reports the ratio direct/devnet (1.0 = no
// overhead).
//
//	go test -run '^$' -bench FractalNetworkOverhead -benchtime 3x ./node
func BenchmarkFractalNetworkOverhead(b *testing.B) {
	bin := swarmgenBinaryForBench(b)
	var direct, devnet time.Duration
	body, tasks := fractalJob(b)

	ex := inference.NewProcess(inference.ProcessConfig{SwarmgenBinary: bin, Logger: quietLogger()})
	root := b.TempDir()
	runDirect := func(round int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 2)
		for i, ts := range tasks {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				t := &inference.Task{JobID: fmt.Sprintf("direct-%d", round), TaskID: fmt.Sprintf("t%d", i), Index: i, Count: fractalTasks, Attempt: 1,
					Seed: ts.Seed, App: inference.App{Kind: inference.KindProcess, Command: []string{"{swarmgen}", "app", "fractal"}},
					Params: ts.Params, Timeout: time.Minute}
				dir, err := inference.PrepareTaskDir(root, t)
				if err != nil {
					b.Error(err)
					return
				}
				defer inference.CleanupTaskDir(dir)
				if _, err := ex.Run(context.Background(), t, dir, nil); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := StartDevnet(ctx, DevnetConfig{Nodes: 3, API: "127.0.0.1:0", DataDir: b.TempDir(), Logger: quietLogger(),
		Configure: func(i int, c *Config) {
			c.SwarmgenBinary = bin
			c.Slots = 1
			c.Provide = i != 0
		},
		Options: []Option{WithSchedulerConfig(fastScheduler())}})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if err := d.WaitConverged(ctx); err != nil {
		b.Fatal(err)
	}
	n := d.Nodes()[0]
	runDirect(-1) // warm the page cache and the binary
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		runDirect(i)
		direct += time.Since(start)
		start = time.Now()
		waitDone(b, n, benchSubmit(b, n.APIAddr(), body), 5*time.Minute)
		devnet += time.Since(start)
	}
	b.ReportMetric(direct.Seconds()/float64(b.N), "direct-s")
	b.ReportMetric(devnet.Seconds()/float64(b.N), "devnet-s")
	b.ReportMetric(direct.Seconds()/devnet.Seconds(), "direct/devnet")
}
