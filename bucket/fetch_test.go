package bucket

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
)

func sampleTree() map[string][]byte {
	return map[string][]byte{
		"empty.txt":            {},
		"one.bin":              {42},
		"big.bin":              pseudoRandom(1, 700<<10+13), // 3 chunks, last partial
		"exact.bin":            pseudoRandom(2, ChunkSize),
		"sub/inner.txt":        []byte("hello\n"),
		"sub/deeper/image.png": pseudoRandom(3, 5000),
		"sub/deeper/dup.bin":   pseudoRandom(1, 700<<10+13), // same content as big.bin: shared blocks
	}
}

func TestImportExportRoundtrip(t *testing.T) {
	s := newStore(t, nil)
	src := t.TempDir()
	files := sampleTree()
	writeTree(t, src, files)
	root, size, err := s.ImportDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, b := range files {
		want += int64(len(b))
	}
	if size != want {
		t.Fatalf("size %d, want %d", size, want)
	}
	if root.Version() != 1 {
		t.Fatalf("root %s is not CIDv1", root)
	}
	// Import is deterministic.
	root2, _, err := s.ImportDir(context.Background(), src)
	if err != nil || !root2.Equals(root) {
		t.Fatalf("reimport: %s %v, want %s", root2, err, root)
	}
	dst := filepath.Join(t.TempDir(), "out")
	if err := s.ExportDir(context.Background(), root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, files, readTree(t, dst))
	// Exporting again into the same place refuses to overwrite.
	if err := s.ExportDir(context.Background(), root, dst); err == nil {
		t.Fatal("export over existing files succeeded")
	}
	ents, err := s.ListDir(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]DirEntry{}
	for _, e := range ents {
		names[e.Name] = e
	}
	if e := names["big.bin"]; e.Size != int64(len(files["big.bin"])) || e.IsDir {
		t.Fatalf("ListDir big.bin = %+v", e)
	}
	if e := names["empty.txt"]; e.Size != 0 || e.IsDir || !e.Cid.Defined() {
		t.Fatalf("ListDir empty.txt = %+v", e)
	}
	if e := names["sub"]; !e.IsDir {
		t.Fatalf("ListDir sub = %+v", e)
	}
}

func TestFetchEndToEnd(t *testing.T) {
	prov, cli := pair(t)
	src := t.TempDir()
	files := sampleTree()
	writeTree(t, src, files)
	ctx := context.Background()
	root, _, err := prov.ImportDir(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Fetch(ctx, root, prov.host.ID(), 64<<20); err != nil {
		t.Fatal(err)
	}
	// The client now has everything offline.
	dst := t.TempDir()
	if err := cli.ExportDir(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, files, readTree(t, dst))
	pins, err := cli.Pins(ctx)
	if err != nil || len(pins) != 1 || !pins[0].Root.Equals(root) {
		t.Fatalf("pins after fetch = %v, %v", pins, err)
	}
}

func TestFetchMaxBytes(t *testing.T) {
	prov, cli := pair(t)
	ctx := context.Background()
	root, size, err := prov.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(4, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	err = cli.Fetch(ctx, root, prov.host.ID(), size/2)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("fetch over maxBytes: %v, want ErrTooLarge", err)
	}
	// Enough budget (file bytes + node overhead) succeeds.
	if err := cli.Fetch(ctx, root, prov.host.ID(), size+64<<10); err != nil {
		t.Fatal(err)
	}
}

// leafOf returns one raw leaf CID of the DAG under root.
func leafOf(t *testing.T, s *Store, root cid.Cid) cid.Cid {
	t.Helper()
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if c.Type() == cid.Raw {
			return c
		}
		nd, err := s.getNode(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
	}
	t.Fatal("no raw leaf")
	return cid.Undef
}

// blockKey is the datastore key of a block in the provider's blockstore.
func blockKey(c cid.Cid) ds.Key {
	return ds.NewKey("/blocks").Child(dshelpKey(c))
}

func TestFetchCorruptBlock(t *testing.T) {
	prov, cli := pair(t)
	ctx := context.Background()
	root, _, err := prov.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(5, 600<<10), "b": []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, prov, root)
	// Replace the leaf's stored bytes (a block store takes what it is
	// given): the provider now serves data that does not match the CID.
	if err := prov.bs.DeleteBlock(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	bad, _ := blocks.NewBlockWithCid(pseudoRandom(6, 1000), leaf)
	if err := prov.bs.Put(ctx, bad); err != nil {
		t.Fatal(err)
	}
	err = cli.Fetch(ctx, root, prov.host.ID(), 64<<20)
	if !errors.Is(err, ErrCorruptBlock) {
		t.Fatalf("fetch of tampered DAG: %v, want ErrCorruptBlock", err)
	}
	if has, _ := cli.Has(ctx, leaf); has {
		t.Fatal("client stored the tampered block")
	}
}

func TestFetchMissingBlock(t *testing.T) {
	prov, cli := pair(t, WithBlockTimeout(2*time.Second))
	ctx := context.Background()
	root, _, err := prov.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(7, 600<<10)})
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafOf(t, prov, root)
	if err := prov.bs.DeleteBlock(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	err = cli.Fetch(ctx, root, prov.host.ID(), 64<<20)
	if !errors.Is(err, ErrMissingBlock) {
		t.Fatalf("fetch of incomplete DAG: %v, want ErrMissingBlock", err)
	}
}

// TestFetchBitswapFallback: the provider does not speak FetchProtocol; the
// whole DAG comes over bitswap and is verified.
func TestFetchBitswapFallback(t *testing.T) {
	prov, cli := pair(t)
	ctx := context.Background()
	files := map[string][]byte{"a": pseudoRandom(8, 900<<10), "d/b": []byte("b")}
	root, _, err := prov.ImportFiles(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	prov.host.RemoveStreamHandler("/swarmgen/fetch/1.0.0")
	if err := cli.Fetch(ctx, root, prov.host.ID(), 64<<20); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := cli.ExportDir(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, files, readTree(t, dst))
}

func TestFetchLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MB transfer skipped in -short")
	}
	size := 256 << 20
	if raceEnabled {
		size = 32 << 20
		t.Logf("race detector on: transferring %d MB instead of 256 MB", size>>20)
	}
	prov, cli := pair(t)
	ctx := context.Background()
	data := pseudoRandom(9, size)
	root, _, err := prov.ImportFiles(ctx, map[string][]byte{"out.bin": data})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cli.Fetch(ctx, root, prov.host.ID(), 300<<20); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MB fetched in %s", size>>20, time.Since(start))
	dst := t.TempDir()
	if err := cli.ExportDir(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, map[string][]byte{"out.bin": data}, readTree(t, dst))
}

// TestCloseDuringFetch: closing the Store cancels a fetch stuck on a peer
// that never delivers, instead of waiting for the block timeout.
func TestCloseDuringFetch(t *testing.T) {
	h1, h2 := newHost(t), newHost(t)
	connect(t, h2, h1)
	prov := newStore(t, h1)
	cli, err := New(context.Background(), h2, t.TempDir(), WithGCInterval(0), WithBlockTimeout(time.Hour), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	root, _, err := prov.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(60, 600<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.bs.DeleteBlock(ctx, leafOf(t, prov, root)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cli.Fetch(ctx, root, h1.ID(), 64<<20) }()
	time.Sleep(500 * time.Millisecond) // let it reach the bitswap fallback
	closed := make(chan error, 1)
	go func() { closed <- cli.Close() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("fetch of an incomplete DAG succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Fetch did not return after Close")
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close hung")
	}
}
