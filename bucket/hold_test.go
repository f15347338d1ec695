package bucket

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/swarmgen/swarmgen/protocol"
)

// stallStream is a served fetch stream that stops writing once `after`
// bytes have gone out: it closes stalled and waits for release. It plays a
// slow or hostile peer trickling a fetch.
type stallStream struct {
	network.Stream
	after   int
	sent    int
	stalled chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallStream) Write(b []byte) (int, error) {
	if s.sent+len(b) > s.after {
		s.once.Do(func() { close(s.stalled) })
		<-s.release
	}
	n, err := s.Stream.Write(b)
	s.sent += n
	return n, err
}

// stallingProvider makes prov serve fetch streams that stall after `after`
// bytes until release is closed; then the stream goes on, or is reset if
// breakAfter is set (the client falls back to bitswap).
func stallingProvider(prov *Store, after int, breakAfter bool) (stalled, release chan struct{}) {
	stalled, release = make(chan struct{}), make(chan struct{})
	prov.host.SetStreamHandler(protocol.FetchProtocol, func(st network.Stream) {
		ss := &stallStream{Stream: st, after: after, stalled: stalled, release: release}
		err := prov.serveFetch(ss)
		if err != nil || breakAfter {
			st.Reset()
			return
		}
		st.Close()
	})
	return stalled, release
}

// TestSlowFetchDoesNotStallGC: a fetch from a peer that stalls part way
// held the GC read lock for the whole transfer; GC then waited for the
// write lock, and every import, fetch and pin behind it waited too (Go's
// RWMutex blocks new readers once a writer waits). Now GC and an import
// finish while the fetch is stalled, the GC keeps what the fetch stored
// (also blocks it found stored already, unpinned), and the fetch then
// completes with its DAG whole and pinned, over the stream or, when the
// stream breaks, over bitswap.
func TestSlowFetchDoesNotStallGC(t *testing.T) {
	for _, breakStream := range []bool{false, true} {
		name := "stream resumes"
		if breakStream {
			name = "stream breaks, bitswap"
		}
		t.Run(name, func(t *testing.T) {
			prov, cli := pair(t, WithInMemory())
			ctx := context.Background()
			// "a" sorts first: its blocks come in the first batch, and the
			// client holds them already, unpinned (garbage to a GC).
			shared := pseudoRandom(81, 600<<10)
			files := map[string][]byte{"a": shared, "b": pseudoRandom(82, 12<<20)}
			root, _, err := prov.ImportFiles(ctx, files)
			if err != nil {
				t.Fatal(err)
			}
			garbage, _, err := cli.ImportFiles(ctx, map[string][]byte{"s": shared})
			if err != nil {
				t.Fatal(err)
			}
			if err := cli.Unpin(ctx, garbage); err != nil {
				t.Fatal(err)
			}
			stored := storedSignal(cli)
			stalled, release := stallingProvider(prov, 6<<20, breakStream)
			var releaseOnce sync.Once
			unstall := func() { releaseOnce.Do(func() { close(release) }) }
			defer unstall()

			fetched := make(chan error, 1)
			go func() { fetched <- cli.Fetch(ctx, root, prov.host.ID(), 64<<20) }()
			<-stalled
			<-stored // the client has appended its first batch

			gcStats := gcAndImportWhile(t, ctx, cli, "a fetch was stalled on its peer")
			t.Logf("GC during the stalled fetch: %+v", gcStats)
			select {
			case err := <-fetched:
				t.Fatalf("fetch returned while its peer was stalled: %v", err)
			default:
			}

			unstall()
			select {
			case err := <-fetched:
				if err != nil {
					t.Fatalf("fetch: %v", err)
				}
			case <-time.After(2 * stuck):
				t.Fatal("fetch did not finish after the peer resumed")
			}
			checkFetched(t, cli, root, files)
			// Once pinned, the DAG needs no hold: another GC keeps it all.
			if _, err := cli.GC(ctx); err != nil {
				t.Fatal(err)
			}
			checkFetched(t, cli, root, files)
		})
	}
}

// checkFetched: the DAG under root is complete, pinned, and exports files.
func checkFetched(t *testing.T, s *Store, root cid.Cid, files map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.checkComplete(ctx, root); err != nil {
		t.Fatalf("fetched DAG: %v", err)
	}
	pins, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pinned := false
	for _, p := range pins {
		pinned = pinned || p.Root.Equals(root)
	}
	if !pinned {
		t.Fatalf("fetched root %s not pinned: %v", root, pins)
	}
	dst := t.TempDir()
	if err := s.ExportDir(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, files, readTree(t, dst))
}

// TestFailedFetchReleasesHold: what a fetch stored before it failed is
// not pinned and not held from GC any more: the next GC collects it.
func TestFailedFetchReleasesHold(t *testing.T) {
	prov, cli := pair(t, WithInMemory())
	ctx := context.Background()
	root, _, err := prov.ImportFiles(ctx, map[string][]byte{"b": pseudoRandom(83, 12<<20)})
	if err != nil {
		t.Fatal(err)
	}
	stored := storedSignal(cli)
	stalled, release := stallingProvider(prov, 6<<20, true)
	defer close(release)
	fctx, cancel := context.WithCancel(ctx)
	fetched := make(chan error, 1)
	go func() { fetched <- cli.Fetch(fctx, root, prov.host.ID(), 64<<20) }()
	<-stalled
	<-stored
	cancel()
	if err := <-fetched; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: %v, want context.Canceled", err)
	}
	st, err := cli.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GC after the failed fetch: %+v", st)
	if st.BlocksRemoved == 0 || st.BlocksKept != 0 {
		t.Errorf("GC after a failed fetch removed %d blocks and kept %d: want what it stored collected", st.BlocksRemoved, st.BlocksKept)
	}
}

// TestSlowURLDoesNotStallGC: FetchURL read the HTTP body under the GC read
// lock, so a server trickling it stalled GC and, behind GC, every other
// writer. Now GC and an import finish while the download is stalled, GC
// keeps what the download stored, and the download then completes whole
// and pinned.
func TestSlowURLDoesNotStallGC(t *testing.T) {
	s := newStore(t, nil, WithInMemory())
	data := pseudoRandom(84, 12<<20)
	stalled, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:6<<20])
		w.(http.Flusher).Flush()
		close(stalled)
		<-release
		w.Write(data[6<<20:])
	}))
	defer srv.Close()
	defer unstall() // before srv.Close, which waits for the handler
	stored := storedSignal(s)
	ctx := context.Background()
	type result struct {
		root cid.Cid
		err  error
	}
	fetched := make(chan result, 1)
	go func() {
		root, err := s.FetchURL(ctx, srv.URL+"/big.bin", 64<<20, time.Minute)
		fetched <- result{root, err}
	}()
	<-stalled
	<-stored // the download stored its first batch

	gcStats := gcAndImportWhile(t, ctx, s, "a URL download was stalled")
	t.Logf("GC during the stalled download: %+v", gcStats)
	unstall()
	var res result
	select {
	case res = <-fetched:
		if res.err != nil {
			t.Fatalf("FetchURL: %v", res.err)
		}
	case <-time.After(2 * stuck):
		t.Fatal("FetchURL did not finish after the server resumed")
	}
	checkFetched(t, s, res.root, map[string][]byte{"big.bin": data})
}

// stuck is a deadlock detector only: nothing the tests wait for within it
// waits on the network.
const stuck = 20 * time.Second

// gcAndImportWhile runs a GC and an import on s while something (what)
// waits on the network, and fails unless both finish within stuck.
func gcAndImportWhile(t *testing.T, ctx context.Context, s *Store, what string) GCStats {
	t.Helper()
	gcDone := make(chan error, 1)
	var gcStats GCStats
	go func() {
		var err error
		gcStats, err = s.GC(ctx)
		gcDone <- err
	}()
	imported := make(chan error, 1)
	go func() {
		_, _, err := s.ImportFiles(ctx, map[string][]byte{"other": []byte("another task's output")})
		imported <- err
	}()
	for _, w := range []struct {
		what string
		c    chan error
	}{{"GC", gcDone}, {"import", imported}} {
		select {
		case err := <-w.c:
			if err != nil {
				t.Fatalf("%s while %s: %v", w.what, what, err)
			}
		case <-time.After(stuck):
			t.Fatalf("%s did not finish within %s while %s", w.what, stuck, what)
		}
	}
	return gcStats
}

// storedSignal returns a channel that receives when s has stored a batch
// of a fetch or download (at most one signal waits; more are dropped).
func storedSignal(s *Store) <-chan struct{} {
	stored := make(chan struct{}, 1)
	s.testHookFetchStored = func() {
		select {
		case stored <- struct{}{}:
		default:
		}
	}
	return stored
}
