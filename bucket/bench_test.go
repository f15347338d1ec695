package bucket

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

var benchSizes = []struct {
	name string
	n    int
}{{"1MB", 1 << 20}, {"64MB", 64 << 20}, {"256MB", 256 << 20}}

// benchProvider imports n pseudo-random bytes as one file on a provider.
// Its host also serves n plain bytes on benchStreamProto, the baseline the
// fetch is compared with between the same two hosts.
func benchProvider(b *testing.B, n int) (*Store, cid.Cid) {
	h := newHost(b)
	serveBytes(h, n)
	prov := newStore(b, h)
	root, _, err := prov.ImportFiles(context.Background(), map[string][]byte{"out.bin": pseudoRandom(uint64(n), n)})
	if err != nil {
		b.Fatal(err)
	}
	return prov, root
}

// serveBytes makes h answer every benchStreamProto stream with n bytes,
// written from memory in 1 MiB buffered writes.
func serveBytes(h host.Host, n int) {
	payload := pseudoRandom(1, 1<<20)
	h.SetStreamHandler(benchStreamProto, func(s network.Stream) {
		defer s.Close()
		w := bufio.NewWriterSize(s, fetchWriteBufferSize)
		for left := n; left > 0; left -= len(payload) {
			if _, err := w.Write(payload[:min(left, len(payload))]); err != nil {
				s.Reset()
				return
			}
		}
		w.Flush()
	})
}

// freshClient returns a new client store on a new host connected to prov;
// the setup is outside the timed region.
func freshClient(b *testing.B, prov *Store, dir string, opts ...Option) *Store {
	h := newHost(b)
	connect(b, h, prov.host)
	return newStoreIn(b, h, dir, opts...)
}

func reportMBps(b *testing.B, n int, d time.Duration) {
	b.ReportMetric(float64(n)*float64(b.N)/1e6/d.Seconds(), "MB/s")
}

// cpuClock measures the process's CPU time (user+system, all threads) over
// the timed regions: on a shared machine CPU per byte is steadier than
// wall-clock throughput, and both ends of a transfer run in this process.
type cpuClock struct{ total, start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (c *cpuClock) Start() { c.start = processCPU() }
func (c *cpuClock) Stop()  { c.total += processCPU() - c.start }

// report adds the metric "CPU-ms/MB": CPU milliseconds per MB moved.
func (c *cpuClock) report(b *testing.B, n int) {
	b.ReportMetric(float64(c.total.Milliseconds())/(float64(n)*float64(b.N)/1e6), "CPU-ms/MB")
}

// BenchmarkFetch measures Store.Fetch (CAR stream, every block verified and
// stored, durable on disk when Fetch returns) between two loopback hosts.
// Each iteration also moves the same bytes over a plain stream between the
// same two hosts: "ratio" is fetch throughput / plain stream throughput.
func BenchmarkFetch(b *testing.B) { benchFetch(b) }

// BenchmarkFetchDeferred is BenchmarkFetch with the store as a node runs
// it (WithDeferredSync): the blocks are written to the data dir's files
// but not fsynced when Fetch returns; the node's persister syncs the store
// before any snapshot records the result, so the wait for the disk is off
// the fetch's path, not skipped.
func BenchmarkFetchDeferred(b *testing.B) { benchFetch(b, WithDeferredSync()) }

// BenchmarkFetchMem is BenchmarkFetch with the client's blockstore in
// memory: the protocol and verification cost without the disk.
func BenchmarkFetchMem(b *testing.B) { benchFetch(b, WithInMemory()) }

// BenchmarkFetchTmpfs is BenchmarkFetch with the client's data directory
// on tmpfs (/dev/shm): the same files and fsyncs, no device behind them.
func BenchmarkFetchTmpfs(b *testing.B) {
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		b.Skip("no /dev/shm")
	}
	benchFetchIn(b, func(b *testing.B) string {
		d, err := os.MkdirTemp("/dev/shm", "swarmgen-bench-")
		if err != nil {
			b.Skip("/dev/shm not writable:", err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	})
}

func benchFetch(b *testing.B, opts ...Option) { benchFetchIn(b, nil, opts...) }

// benchFetchIn runs the fetch benchmark with the client's data directory
// from dataDir (nil: a temp dir).
func benchFetchIn(b *testing.B, dataDir func(*testing.B) string, opts ...Option) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			prov, root := benchProvider(b, sz.n)
			var total, stream time.Duration
			var cpu cpuClock
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				if dataDir != nil {
					dir = dataDir(b)
				}
				cli := freshClient(b, prov, dir, opts...)
				b.StartTimer()
				// The same bytes on a plain stream between the same two
				// hosts, before or after the fetch in turn, so that load
				// changes on this shared machine hit both alike.
				plain := func() {
					start := time.Now()
					if err := readAll(cli.host, prov.host, sz.n); err != nil {
						b.Fatal(err)
					}
					stream += time.Since(start)
				}
				if i%2 == 0 {
					plain()
				}
				start := time.Now()
				cpu.Start()
				if err := cli.Fetch(context.Background(), root, prov.host.ID(), int64(sz.n)*2); err != nil {
					b.Fatal(err)
				}
				cpu.Stop()
				total += time.Since(start)
				if i%2 == 1 {
					plain()
				}
			}
			reportMBps(b, sz.n, total)
			cpu.report(b, sz.n)
			b.ReportMetric(float64(sz.n)*float64(b.N)/1e6/stream.Seconds(), "stream-MB/s")
			b.ReportMetric(stream.Seconds()/total.Seconds(), "ratio")
		})
	}
}

// BenchmarkBitswap measures a plain boxo bitswap session fetching the same
// DAG (level by level, as the fallback does) into an in-memory blockstore.
func BenchmarkBitswap(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			prov, root := benchProvider(b, sz.n)
			prov.host.RemoveStreamHandler("/swarmgen/fetch/1.0.0")
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cli := freshClient(b, prov, b.TempDir(), WithInMemory())
				b.StartTimer()
				start := time.Now()
				v := newDAGVerifier(root, int64(sz.n)*2)
				hold := cli.newHold()
				err := cli.fetchBitswap(context.Background(), prov.host.ID(), v, hold)
				hold.release()
				if err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
			}
			reportMBps(b, sz.n, total)
		})
	}
}

const benchStreamProto = "/swarmgen/bench/raw/1.0.0"

// BenchmarkPlainStream moves the same number of bytes over one libp2p
// stream between two loopback hosts: the ceiling Fetch is compared with.
func BenchmarkPlainStream(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			src := newHost(b)
			serveBytes(src, sz.n)
			var total time.Duration
			var cpu cpuClock
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dst := newHost(b)
				connect(b, dst, src)
				b.StartTimer()
				start := time.Now()
				cpu.Start()
				if err := readAll(dst, src, sz.n); err != nil {
					b.Fatal(err)
				}
				cpu.Stop()
				total += time.Since(start)
			}
			reportMBps(b, sz.n, total)
			cpu.report(b, sz.n)
		})
	}
}

func readAll(dst, src host.Host, n int) error {
	s, err := dst.NewStream(context.Background(), src.ID(), benchStreamProto)
	if err != nil {
		return err
	}
	defer s.Close()
	got, err := io.Copy(io.Discard, bufio.NewReaderSize(s, fetchReadBufferSize))
	if err != nil {
		return err
	}
	if got != int64(n) {
		return fmt.Errorf("read %d bytes, want %d", got, n)
	}
	return nil
}

// BenchmarkPlainStreamToDisk is BenchmarkPlainStream writing the bytes to a
// file and fsyncing it: the ceiling for a fetch that stores durably.
func BenchmarkPlainStreamToDisk(b *testing.B) {
	sz := benchSizes[2]
	src := newHost(b)
	serveBytes(src, sz.n)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst := newHost(b)
		connect(b, dst, src)
		f, err := os.Create(filepath.Join(b.TempDir(), "out"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		s, err := dst.NewStream(context.Background(), src.ID(), benchStreamProto)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(f, bufio.NewReaderSize(s, fetchReadBufferSize))
		if err != nil || n != int64(sz.n) {
			b.Fatal(n, err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		s.Close()
		f.Close()
	}
	reportMBps(b, sz.n, total)
}

// BenchmarkGatewayDownload downloads a 256 MB bucket file through the
// gateway (HTTP over loopback, UnixFS reader over the blockstore).
func BenchmarkGatewayDownload(b *testing.B) {
	s := newStore(b, nil)
	ctx := context.Background()
	const n = 256 << 20
	root, _, err := s.ImportFiles(ctx, map[string][]byte{"out.bin": pseudoRandom(77, n)})
	if err != nil {
		b.Fatal(err)
	}
	bucket, err := s.Assemble(ctx, []Entry{{Name: "task-0", Root: root}}, &Manifest{Job: "bench"}, 0)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(NewGateway(s, mapIndex{"bench": bucket}))
	defer srv.Close()
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp, err := http.Get(srv.URL + "/buckets/bench/task-0/out.bin")
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || got != n {
			b.Fatal(got, err)
		}
		total += time.Since(start)
	}
	reportMBps(b, n, total)
}

// BenchmarkAssemble builds the bucket of a 1 000-task job whose results
// are tiny DAGs (a directory holding one small file), as a scheduling
// benchmark's noop job does; it runs on the submitter once all tasks are
// done, so it is on the job's critical path.
//
//	go test -run '^$' -bench Assemble ./bucket
func BenchmarkAssemble(b *testing.B) {
	ctx := context.Background()
	s := newStore(b, newHost(b), WithDeferredSync())
	const tasks = 1000
	entries := make([]Entry, tasks)
	m := Manifest{Job: "j-bench", Template: "noop", CreatedAt: time.Now().UTC()}
	for i := range entries {
		root, _, err := s.ImportFiles(ctx, map[string][]byte{"result.json": []byte(fmt.Sprintf(`{"app":"noop","index":%d}`, i))})
		if err != nil {
			b.Fatal(err)
		}
		entries[i] = Entry{Name: TaskDirName(i), Root: root}
		m.Tasks = append(m.Tasks, ManifestTask{Index: i, TaskID: fmt.Sprintf("t-%d", i), Provider: "12D3KooWbench", Attempt: 1, CID: root.String(), Seed: int64(i)})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Assemble(ctx, entries, &m, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}
