package bucket

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
)

var benchSizes = []struct {
	name string
	n    int
}{{"1MB", 1 << 20}, {"64MB", 64 << 20}, {"256MB", 256 << 20}}

// benchProvider imports n pseudo-random bytes as one file on a provider.
func benchProvider(b *testing.B, n int) (*Store, cid.Cid) {
	prov := newStore(b, newHost(b))
	root, _, err := prov.ImportFiles(context.Background(), map[string][]byte{"out.bin": pseudoRandom(uint64(n), n)})
	if err != nil {
		b.Fatal(err)
	}
	return prov, root
}

// freshClient returns a new client store on a new host connected to prov;
// the setup is outside the timed region.
func freshClient(b *testing.B, prov *Store) *Store {
	h := newHost(b)
	connect(b, h, prov.host)
	return newStore(b, h)
}

func reportMBps(b *testing.B, n int, d time.Duration) {
	b.ReportMetric(float64(n)*float64(b.N)/1e6/d.Seconds(), "MB/s")
}

// BenchmarkFetch measures Store.Fetch (CAR stream, every block verified and
// stored) between two loopback hosts.
func BenchmarkFetch(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			prov, root := benchProvider(b, sz.n)
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cli := freshClient(b, prov)
				b.StartTimer()
				start := time.Now()
				if err := cli.Fetch(context.Background(), root, prov.host.ID(), int64(sz.n)*2); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
			}
			reportMBps(b, sz.n, total)
		})
	}
}

// BenchmarkBitswap measures a plain boxo bitswap session fetching the same
// DAG (level by level, as the fallback does).
func BenchmarkBitswap(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			prov, root := benchProvider(b, sz.n)
			prov.host.RemoveStreamHandler("/swarmgen/fetch/1.0.0")
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				cli := freshClient(b, prov)
				b.StartTimer()
				start := time.Now()
				v := newDAGVerifier(root, int64(sz.n)*2)
				if err := cli.fetchBitswap(context.Background(), prov.host.ID(), v); err != nil {
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
			payload := pseudoRandom(1, 1<<20)
			src.SetStreamHandler(benchStreamProto, func(s network.Stream) {
				defer s.Close()
				w := bufio.NewWriterSize(s, fetchWriteBufferSize)
				for left := sz.n; left > 0; left -= len(payload) {
					if _, err := w.Write(payload[:min(left, len(payload))]); err != nil {
						s.Reset()
						return
					}
				}
				w.Flush()
			})
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dst := newHost(b)
				connect(b, dst, src)
				b.StartTimer()
				start := time.Now()
				if err := readAll(dst, src, sz.n); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
			}
			reportMBps(b, sz.n, total)
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

var _ = blockservice.New
