package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/inference/apps"
)

// benchTaskDir returns a directory for task dirs on tmpfs (/dev/shm) when
// there is one, else "" (the data dir): the scheduling benchmarks measure
// scheduling and protocol, not how fast this machine's disk makes
// directories (most of a no-op task's cost on the shared VM's ext4).
func benchTaskDir(b *testing.B) string {
	if os.Getenv("SWARMGEN_BENCH_TASKS_ON_DISK") != "" {
		return ""
	}
	dir, err := os.MkdirTemp("/dev/shm", "swarmgen-bench-")
	if err != nil {
		return ""
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// benchAdInterval is the nodes' periodic ad interval in the job
// benchmarks: `node run`'s default, unless SWARMGEN_BENCH_AD_INTERVAL says
// otherwise (earlier figures used 5s). All nodes share this process's two
// cores, so every ad's gossip and signature checks at 51 nodes come out of
// the scheduling figure.
func benchAdInterval(b *testing.B) time.Duration {
	if v := os.Getenv("SWARMGEN_BENCH_AD_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("SWARMGEN_BENCH_AD_INTERVAL: %v", err)
		}
		return d
	}
	return DefaultConfig().AdInterval
}

func benchDevnet(b *testing.B, nodes int, submitterProvides bool, slots int, opts ...Option) *Devnet {
	b.Helper()
	taskDir := benchTaskDir(b)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	d, err := StartDevnet(ctx, DevnetConfig{Nodes: nodes, API: "127.0.0.1:0", DataDir: b.TempDir(), Logger: quietLogger(),
		AdInterval: benchAdInterval(b),
		Configure: func(i int, c *Config) {
			c.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
			c.Slots = slots
			if taskDir != "" {
				c.TaskDir = filepath.Join(taskDir, fmt.Sprint(i))
			}
			if i == 0 {
				c.Provide = submitterProvides
			}
		},
		Options: append([]Option{WithSchedulerConfig(fastScheduler())}, opts...)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	if err := d.WaitConverged(ctx); err != nil {
		b.Fatal(err)
	}
	return d
}

var (
	benchTasks   = 1000
	benchJobWait = 5 * time.Minute
)

func benchSubmit(b *testing.B, apiAddr, body string) string {
	b.Helper()
	resp, err := http.Post("http://"+apiAddr+"/v1/jobs", "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var c api.CreatedJob
	if err := decodeJSON(resp.Body, &c); err != nil || resp.StatusCode != http.StatusCreated {
		b.Fatalf("submit: %d %v", resp.StatusCode, err)
	}
	return c.ID
}

// waitDone waits (in-process, no HTTP) until the job ends: it wakes on the
// job's events, so the figure is not rounded up to a polling interval, and
// polls as a fallback for a dropped event.
func waitDone(b *testing.B, n *Node, id string, d time.Duration) api.Job {
	b.Helper()
	sub, stop := n.submitter.hub.subscribe(id)
	events := sub.ch
	defer stop()
	deadline := time.Now().Add(d)
	for {
		j, ok, err := n.submitter.job(context.Background(), id)
		if err != nil || !ok {
			b.Fatalf("job %s: %v", id, err)
		}
		if isTerminal(j.Status) {
			if j.Status != api.JobCompleted {
				b.Fatalf("job %s %s: %+v", id, j.Status, j)
			}
			return j
		}
		if time.Now().After(deadline) {
			counts := map[string]int{}
			attempts := 0
			for _, t := range j.Tasks {
				counts[t.Status]++
				attempts += t.Attempts
			}
			b.Fatalf("job %s still %s: tasks %v, attempts %d, reasons %v", id, j.Status, counts, attempts, j.Reasons)
		}
	wait:
		for {
			select {
			case e := <-events:
				if e.Type != "job" {
					continue
				}
			case <-time.After(100 * time.Millisecond):
			}
			break wait
		}
	}
}

// BenchmarkSchedulingThroughput: one submitter (not providing) and P
// providers in one process, real libp2p streams, results imported,
// fetched and assembled, the noop app run in-process so that the figure
// is scheduling and protocol, not process start-up.
//
//	go test -run '^$' -bench SchedulingThroughput -benchtime 1x ./node
//
// SWARMGEN_THROUGHPUT_CPUPROFILE=<path> writes a CPU profile of the timed
// part to <path>.<P>.
func BenchmarkSchedulingThroughput(b *testing.B) {
	for _, providers := range []int{10, 50} {
		b.Run(fmt.Sprintf("providers=%d", providers), func(b *testing.B) {
			d := benchDevnet(b, providers+1, false, 8, WithExecutor(inference.KindProcess, inference.NewInProcess(apps.Funcs())))
			n := d.Nodes()[0]
			tasks := benchTasks
			body := fmt.Sprintf(`{"templateID":"noop","params":{"partitioner":{"num_replicas":%d},"app":{}}}`, tasks)
			b.ResetTimer()
			stop := profileTimed(b, "SWARMGEN_THROUGHPUT_CPUPROFILE", providers)
			start := time.Now()
			for i := 0; i < b.N; i++ {
				waitDone(b, n, benchSubmit(b, n.APIAddr(), body), benchJobWait)
			}
			el := time.Since(start)
			stop()
			b.ReportMetric(float64(tasks*b.N)/el.Seconds(), "tasks/s")
		})
	}
}

// BenchmarkNoopLatency: submit→completed of a 1-task noop job on a 3-node
// loopback devnet, p50 and p99 over b.N jobs.
//
//	go test -run '^$' -bench NoopLatency -benchtime 200x ./node
func BenchmarkNoopLatency(b *testing.B) {
	d := benchDevnet(b, 3, false, 4, WithExecutor(inference.KindProcess, inference.NewInProcess(apps.Funcs())))
	n := d.Nodes()[0]
	body := `{"templateID":"noop","params":{"partitioner":{"num_replicas":1},"app":{}}}`
	waitDone(b, n, benchSubmit(b, n.APIAddr(), body), time.Minute) // warm up streams
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		waitDone(b, n, benchSubmit(b, n.APIAddr(), body), time.Minute)
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
