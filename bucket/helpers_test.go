package bucket

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// newHost starts a real libp2p host on loopback TCP.
func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t testing.TB, a, b host.Host) {
	t.Helper()
	if err := a.Connect(context.Background(), peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newStore opens a Store on h (may be nil) in a temp dir.
func newStore(t testing.TB, h host.Host, opts ...Option) *Store {
	t.Helper()
	return newStoreIn(t, h, t.TempDir(), opts...)
}

// newStoreIn opens a Store on h (may be nil) in dir, closed at cleanup.
func newStoreIn(t testing.TB, h host.Host, dir string, opts ...Option) *Store {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger(t)), WithGCInterval(0)}, opts...)
	s, err := New(context.Background(), h, dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// pair returns a provider and a client store on two connected hosts.
func pair(t testing.TB, opts ...Option) (prov, cli *Store) {
	t.Helper()
	h1, h2 := newHost(t), newHost(t)
	connect(t, h2, h1)
	return newStore(t, h1, opts...), newStore(t, h2, opts...)
}

// pseudoRandom returns n deterministic pseudo-random bytes.
func pseudoRandom(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeTree writes files (slash paths) under dir.
func writeTree(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for p, data := range files {
		fp := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree reads every regular file under dir into a map of slash paths.
func readTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t testing.TB, want, got map[string][]byte) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("got %d files, want %d", len(got), len(want))
	}
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Fatalf("missing %s", p)
		}
		if !bytes.Equal(w, g) {
			t.Fatalf("%s differs: got %d bytes sha %x, want %d bytes sha %x", p, len(g), sha256.Sum256(g), len(w), sha256.Sum256(w))
		}
	}
}

func fmtSscanf(s, f string, a ...any) (int, error) { return fmt.Sscanf(s, f, a...) }

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
