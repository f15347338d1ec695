package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// BenchmarkConvergence starts N in-process nodes, then connects them (each
// dials node 0 and 3 random other nodes, like a bootstrap list, all at
// once) and measures the time from the first dial until every node's
// capacity table holds every other node, and the heap per node once
// converged.
//
//	go test -run '^$' -bench Convergence -benchtime 1x ./node
//
// SWARMGEN_CONVERGE_CPUPROFILE=<path> writes a CPU profile of the timed
// part of each size to <path>.<N>.
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchConverge(b, n)
			}
		})
	}
}

func benchConverge(b *testing.B, count int) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, uint64(count)))
	nodes := make([]*Node, 0, count)
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	for i := 0; i < count; i++ {
		cfg := DefaultConfig()
		cfg.DataDir = filepath.Join(dir, fmt.Sprint(i))
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Pool = "bench"
		// Periodic ads are not what converges the table, and with the
		// default 10 s a round of them fell into the timed window or not
		// depending on how long start-up took on the loaded machine.
		cfg.AdInterval = time.Minute
		cfg.MDNS, cfg.NAT, cfg.API = false, false, ""
		n, err := New(context.Background(), cfg, WithLogger(quietLogger()))
		if err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	// Profiles only the timed part; the node start-up would swamp it.
	defer profileTimed(b, "SWARMGEN_CONVERGE_CPUPROFILE", count)()
	// The deadline runs from the first dial: start-up on a loaded machine
	// must not eat into it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	errs := make(chan error, count)
	for i := 1; i < count; i++ {
		targets := map[int]bool{0: true}
		for len(targets) < min(4, count-1) {
			if t := rng.IntN(count); t != i {
				targets[t] = true
			}
		}
		go func() {
			for t := range targets {
				// A dial on loopback gives up after 5 s; on this shared
				// machine under load a handshake can take that long, and a
				// bootstrapping node would try again.
				var err error
				for try := 0; try < 3; try++ {
					if err = nodes[i].Connect(ctx, nodes[t].Addrs()[0]); err == nil {
						break
					}
					if sw, ok := nodes[i].Host().Network().(*swarm.Swarm); ok {
						sw.Backoff().Clear(nodes[t].ID())
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 1; i < count; i++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	dialed := time.Since(start)
	for _, n := range nodes {
		for n.table.Len() < count-1 {
			ch := n.TableChanged()
			if n.table.Len() >= count-1 {
				break
			}
			select {
			case <-ctx.Done():
				b.Fatalf("not converged: node sees %d of %d", n.table.Len(), count-1)
			case <-ch:
			}
		}
	}
	total := time.Since(start)
	cpu := processCPU() - cpu0
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(total.Milliseconds()), "ms-to-converge")
	b.ReportMetric(float64(dialed.Milliseconds()), "ms-to-dial")
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(count)/(1<<20), "MiB-heap/node")
}

// processCPU is the CPU time (user and system) this process has used. On
// a shared machine it says what convergence cost when the wall-clock time
// says mostly how busy the neighbours were: CPU-bound on 2 cores, the
// wall-clock time cannot be below half of it.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profileTimed starts a CPU profile to $env.<suffix> when the environment
// variable env names a path, for a benchmark to profile its timed part
// only; the returned func stops it.
func profileTimed(b *testing.B, env string, suffix any) func() {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%v", path, suffix))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
