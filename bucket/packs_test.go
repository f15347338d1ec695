package bucket

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"golang.org/x/sys/unix"
)

func rawBlock(t testing.TB, data []byte) blocks.Block {
	t.Helper()
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := blocks.NewBlockWithCid(data, cid.NewCidV1(cid.Raw, h))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// openAt opens a Store without networking in dir; the caller closes it.
func openAt(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := New(context.Background(), nil, dir, WithGCInterval(0), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// retirePack ends the current pack (as a sync does at 64 MiB) and syncs:
// the next write starts a new pack.
func retirePack(t testing.TB, s *Store) {
	t.Helper()
	s.packs.wmu.Lock()
	s.packs.cur = nil
	s.packs.wmu.Unlock()
	if _, err := s.packs.sync(); err != nil {
		t.Fatal(err)
	}
}

// indexed reports whether pebble (not the in-memory pending set) holds an
// index entry for c.
func indexed(t testing.TB, s *Store, c cid.Cid) bool {
	t.Helper()
	_, closer, err := s.ds.DB.Get(packIndexKey(c.Hash()))
	if errors.Is(err, pebble.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	closer.Close()
	return true
}

func packFiles(t testing.TB, dataDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "packs"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestPackIndexAfterSync: a block is readable as soon as it is put, but its
// index entry reaches pebble only with the sync that made its pack bytes
// durable (a pin), so a durable entry never points at lost data.
func TestPackIndexAfterSync(t *testing.T) {
	s := newStore(t, nil)
	ctx := context.Background()
	blk := rawBlock(t, pseudoRandom(70, 100<<10))
	if err := s.bs.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	got, err := s.bs.Get(ctx, blk.Cid())
	if err != nil || string(got.RawData()) != string(blk.RawData()) {
		t.Fatalf("read back before sync: %v", err)
	}
	if indexed(t, s, blk.Cid()) {
		t.Fatal("index entry written before the pack was synced")
	}
	if s.packs.pendingBytes() != int64(len(blk.RawData())) {
		t.Fatalf("pending %d bytes, want %d", s.packs.pendingBytes(), len(blk.RawData()))
	}
	if err := s.Pin(ctx, blk.Cid(), 0, "x"); err != nil {
		t.Fatal(err)
	}
	if !indexed(t, s, blk.Cid()) || s.packs.pendingBytes() != 0 {
		t.Fatal("pin did not sync and index the block")
	}
	// Putting it again stores nothing new.
	if err := s.bs.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	if s.packs.pendingBytes() != 0 {
		t.Fatal("a block held already was appended again")
	}
}

// TestPackCorruptionDetected: a flipped byte in a pack file is reported as
// ErrCorruptBlock on read (CRC), not returned as data.
func TestPackCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	data := pseudoRandom(71, 64<<10)
	blk := rawBlock(t, data)
	if err := s.bs.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, blk.Cid(), 0, "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	names := packFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("pack files %v, want one", names)
	}
	p := filepath.Join(dir, "packs", names[0])
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-100] ^= 0x01
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir)
	defer s2.Close()
	if _, err := s2.bs.Get(ctx, blk.Cid()); !errors.Is(err, ErrCorruptBlock) {
		t.Fatalf("get of a corrupted block: %v, want ErrCorruptBlock", err)
	}
}

// TestPackRecovery: what a crash can leave behind is cleaned up on open: a
// pack no index entry points at (its blocks were never synced and indexed)
// is removed, and an index entry pointing past a pack's end or at a missing
// pack is dropped.
func TestPackRecovery(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	keep := rawBlock(t, pseudoRandom(72, 50<<10))
	if err := s.bs.Put(ctx, keep); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, keep.Cid(), 0, "keep"); err != nil {
		t.Fatal(err)
	}
	// A dangling entry, as if its pack had been removed before the
	// deletion reached the disk.
	ghost := rawBlock(t, []byte("ghost"))
	if err := s.ds.DB.Set(packIndexKey(ghost.Cid().Hash()), packLoc{pack: 999, off: 0, n: 5}.encode(), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A pack whose blocks never got indexed (crash before the pin).
	stray := filepath.Join(dir, "packs", packName(500))
	if err := os.WriteFile(stray, pseudoRandom(73, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir)
	defer s2.Close()
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stray pack still there: %v", err)
	}
	if has, err := s2.Has(ctx, ghost.Cid()); has || err != nil {
		t.Fatalf("dangling index entry survived: %v %v", has, err)
	}
	got, err := s2.bs.Get(ctx, keep.Cid())
	if err != nil || string(got.RawData()) != string(keep.RawData()) {
		t.Fatalf("pinned block after reopen: %v", err)
	}
}

// TestGCRemovesPacks: once no block in a pack is live, GC deletes the file.
func TestGCRemovesPacks(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	defer s.Close()
	root, _, err := s.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(74, 3<<20)})
	if err != nil {
		t.Fatal(err)
	}
	// The next write goes to a new pack: the first one is not current.
	retirePack(t, s)
	other, _, err := s.ImportFiles(ctx, map[string][]byte{"b": pseudoRandom(75, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(packFiles(t, dir)); n != 2 {
		t.Fatalf("%d packs, want 2", n)
	}
	if err := s.Unpin(ctx, root); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PackBytesFreed < 3<<20 {
		t.Fatalf("GC freed %d pack bytes, want the first pack (> 3 MiB): %+v", st.PackBytesFreed, st)
	}
	if n := len(packFiles(t, dir)); n != 1 {
		t.Fatalf("%d packs after GC, want 1", n)
	}
	if _, err := s.checkComplete(ctx, other); err != nil {
		t.Fatalf("live DAG damaged: %v", err)
	}
}

// TestLegacyBlocks: blocks an earlier version stored in pebble ("/blocks")
// are still read, listed, served and deleted.
func TestLegacyBlocks(t *testing.T) {
	prov, cli := pair(t)
	ctx := context.Background()
	files := map[string][]byte{"a": pseudoRandom(76, 600<<10)}
	root, _, err := prov.ImportFiles(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	// Move every block of the DAG from the packs into the legacy store, as
	// a store written by an earlier version holds them (Open notices such
	// blocks: TestLegacyBlocksFoundAtOpen).
	prov.pbs.legacyHeld.Store(true)
	var moved []cid.Cid
	keys, err := prov.bs.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		moved = append(moved, k)
	}
	for _, k := range moved {
		blk, err := prov.bs.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := prov.packs.delete(k.Hash()); err != nil {
			t.Fatal(err)
		}
		if err := prov.pbs.legacy.Put(ctx, blk); err != nil {
			t.Fatal(err)
		}
		if ok, _ := prov.packs.has(k.Hash()); ok {
			t.Fatal("block still in packs")
		}
	}
	if err := cli.Fetch(ctx, root, prov.host.ID(), 64<<20); err != nil {
		t.Fatalf("fetch of legacy blocks: %v", err)
	}
	dst := t.TempDir()
	if err := cli.ExportDir(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, files, readTree(t, dst))
	if err := prov.bs.DeleteBlock(ctx, moved[0]); err != nil {
		t.Fatal(err)
	}
	if has, _ := prov.Has(ctx, moved[0]); has {
		t.Fatal("legacy block not deleted")
	}
	// GC lists legacy blocks (straight from pebble) and collects them.
	if err := prov.Unpin(ctx, root); err != nil {
		t.Fatal(err)
	}
	st, err := prov.GC(ctx)
	if err != nil || st.BlocksRemoved != len(moved)-1 {
		t.Fatalf("GC of unpinned legacy blocks: %+v %v, want %d removed", st, err, len(moved)-1)
	}
	if has, _ := prov.Has(ctx, moved[1]); has {
		t.Fatal("unpinned legacy block survived GC")
	}
}

// TestLegacyBlocksFoundAtOpen: a store opened over a data dir whose pebble
// holds legacy blocks looks them up; one without skips the lookups.
func TestLegacyBlocksFoundAtOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openAt(t, dir)
	if s.pbs.legacyHeld.Load() {
		t.Fatal("a new store claims legacy blocks")
	}
	blk := rawBlock(t, []byte("written by an earlier version"))
	if err := s.pbs.legacy.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	defer s.Close()
	if !s.pbs.legacyHeld.Load() {
		t.Fatal("legacy block not noticed at open")
	}
	got, err := s.bs.Get(ctx, blk.Cid())
	if err != nil || string(got.RawData()) != string(blk.RawData()) {
		t.Fatalf("legacy block: %v", err)
	}
	if n, err := s.bs.GetSize(ctx, blk.Cid()); err != nil || n != len(blk.RawData()) {
		t.Fatalf("legacy block size %d, %v", n, err)
	}
	absent := rawBlock(t, []byte("absent")).Cid()
	if _, err := s.bs.Get(ctx, absent); !ipldIsNotFound(err) {
		t.Fatalf("absent block: %v, want not found", err)
	}
}

// TestMemPack checks the in-memory pack file across chunk boundaries.
func TestMemPack(t *testing.T) {
	d := newMemPackDir()
	w, err := d.create("a.pack")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.create("a.pack"); err == nil {
		t.Fatal("created a pack twice")
	}
	data := pseudoRandom(77, 3*memChunk+123)
	if _, err := w.WriteAt(data[:memChunk-7], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(data[memChunk-7:], memChunk-7); err != nil {
		t.Fatal(err)
	}
	r, _ := d.open("a.pack")
	got := make([]byte, len(data))
	if n, err := r.ReadAt(got, 0); n != len(data) || err != nil || string(got) != string(data) {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	if n, err := r.ReadAt(got[:10], int64(len(data)-5)); n != 5 || err == nil {
		t.Fatalf("read past the end: %d %v, want 5 bytes and EOF", n, err)
	}
	names, _ := d.list()
	if strings.Join(names, ",") != "a.pack" {
		t.Fatalf("list = %v", names)
	}
	if err := d.remove("a.pack"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.open("a.pack"); err == nil {
		t.Fatal("opened a removed pack")
	}
}

// TestCrashBeforePin: the on-disk state of a Store that has pinned one DAG
// and written the blocks of another without pinning it (as a crash would
// leave it: a copy of the directory taken while the Store is open) reopens
// with the pinned DAG complete and nothing of the other indexed.
func TestCrashBeforePin(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	defer s.Close()
	pinned, _, err := s.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(78, 700<<10)})
	if err != nil {
		t.Fatal(err)
	}
	loose := rawBlock(t, pseudoRandom(79, 200<<10))
	if err := s.bs.Put(ctx, loose); err != nil {
		t.Fatal(err)
	}
	// pebble may flush its memtable at any time (another pin, a full
	// memtable): that must not make loose's index entry durable before its
	// pack bytes were synced.
	if err := s.ds.DB.Flush(); err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	copyTree(t, dir, crashed)
	s2 := openAt(t, crashed)
	defer s2.Close()
	if _, err := s2.checkComplete(ctx, pinned); err != nil {
		t.Fatalf("pinned DAG after the crash: %v", err)
	}
	if has, err := s2.Has(ctx, loose.Cid()); has || err != nil {
		t.Fatalf("an unpinned, unsynced block was indexed after the crash: %v %v", has, err)
	}
}

func copyTree(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// failingSyncDir is an in-memory pack directory whose files fail their
// first fdatasync and then report success, as Linux does once it has
// dropped the pages it could not write.
type failingSyncDir struct{ *memPackDir }

type failingSyncWriter struct {
	packWriter
	calls *int
}

var errInjectedSync = errors.New("injected fdatasync failure")

func (d failingSyncDir) create(name string) (packWriter, error) {
	w, err := d.memPackDir.create(name)
	return failingSyncWriter{w, new(int)}, err
}

func (w failingSyncWriter) syncData() error {
	*w.calls++
	if *w.calls == 1 {
		return errInjectedSync
	}
	return nil
}

// TestPackSyncFailureSticks: after a failed fdatasync no pin succeeds (the
// earlier writes may be lost whatever a later fsync says), and no pin
// record is written for blocks that may not be on disk.
func TestPackSyncFailureSticks(t *testing.T) {
	s, err := New(context.Background(), nil, t.TempDir(), WithInMemory(), WithGCInterval(0), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	s.packs.dir = failingSyncDir{newMemPackDir()}
	ctx := context.Background()
	blk := rawBlock(t, pseudoRandom(80, 10<<10))
	if err := s.bs.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := s.Pin(ctx, blk.Cid(), 0, "x"); !errors.Is(err, errInjectedSync) {
			t.Fatalf("pin %d after a failed sync: %v, want the sync error", i, err)
		}
	}
	if pins, _ := s.Pins(ctx); len(pins) != 0 {
		t.Fatalf("pin record written over an unsynced block: %v", pins)
	}
	if err := s.Close(); !errors.Is(err, errInjectedSync) {
		t.Fatalf("close after a failed sync: %v, want the sync error", err)
	}
}

// TestGCCompactsSparsePacks: a pack less than half live has its live blocks
// copied to the current pack and is removed; the live DAG survives, also
// across a reopen, and a block deleted after the move stays deleted.
func TestGCCompactsSparsePacks(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	keep, drop := keepAndDrop(t, s)
	before := packFiles(t, dir)
	if len(before) != 1 {
		t.Fatalf("packs %v, want one", before)
	}
	if err := s.Unpin(ctx, drop); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PacksCompacted != 1 || st.PackBytesMoved < 1<<20 || st.PackBytesFreed < 4<<20 {
		t.Fatalf("GC stats %+v: want one pack compacted, > 1 MiB moved, the old pack (> 4 MiB) freed", st)
	}
	after := packFiles(t, dir)
	if len(after) != 1 || after[0] == before[0] {
		t.Fatalf("packs after GC %v (before %v): want one new pack", after, before)
	}
	if _, err := s.checkComplete(ctx, keep); err != nil {
		t.Fatalf("live DAG after compaction: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir)
	defer s2.Close()
	if _, err := s2.checkComplete(ctx, keep); err != nil {
		t.Fatalf("live DAG after compaction and reopen: %v", err)
	}
	leaf := leafOf(t, s2, keep)
	if err := s2.bs.DeleteBlock(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	if has, _ := s2.Has(ctx, leaf); has {
		t.Fatal("a moved block survived its deletion")
	}
}

// TestDeleteMovedBlock: deleting a block that compaction has moved but not
// yet synced removes both its new and its old index entry.
func TestDeleteMovedBlock(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	small, big := rawBlock(t, pseudoRandom(83, 10<<10)), rawBlock(t, pseudoRandom(84, 100<<10))
	if err := s.bs.PutMany(ctx, []blocks.Block{small, big}); err != nil {
		t.Fatal(err)
	}
	retirePack(t, s)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.bs.DeleteBlock(ctx, big.Cid()); err != nil {
		t.Fatal(err)
	}
	sparse := s.packs.sparse()
	if len(sparse) != 1 {
		t.Fatalf("sparse packs %v, want one", sparse)
	}
	if _, err := s.packs.compact(sparse); err != nil {
		t.Fatal(err)
	}
	if !indexed(t, s, small.Cid()) || s.packs.pendingBytes() != int64(len(small.RawData())) {
		t.Fatal("moved block not pending over its durable entry")
	}
	if err := s.bs.DeleteBlock(ctx, small.Cid()); err != nil {
		t.Fatal(err)
	}
	if indexed(t, s, small.Cid()) || s.packs.pendingBytes() != 0 {
		t.Fatal("deleting a moved block left an index entry")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir)
	defer s2.Close()
	for _, b := range []blocks.Block{small, big} {
		if has, _ := s2.Has(ctx, b.Cid()); has {
			t.Fatalf("deleted block %s back after reopen", b.Cid())
		}
	}
	if n := len(packFiles(t, dir)); n != 0 {
		t.Fatalf("%d packs left with nothing live in them", n)
	}
}

// allocated returns the bytes the filesystem allocated to a file.
func allocated(t testing.TB, path string) (size, alloc int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size(), st.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestPackReserve: a large append preallocates the pack ahead of the data
// without changing its size; the reservation is given back when the pack
// is closed, and one left by a crash is trimmed when the store opens.
func TestPackReserve(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	data := pseudoRandom(81, 3<<20)
	root, _, err := s.ImportFiles(ctx, map[string][]byte{"big.bin": data})
	if err != nil {
		t.Fatal(err)
	}
	names := packFiles(t, dir)
	if len(names) != 1 {
		t.Fatalf("packs: %v", names)
	}
	pack := filepath.Join(dir, "packs", names[0])
	size, alloc := allocated(t, pack)
	if alloc < size+reserveSlack {
		t.Skipf("no preallocation on this filesystem (size %d, allocated %d)", size, alloc)
	}
	if size < int64(len(data)) || size > int64(len(data))+64<<10 {
		t.Fatalf("pack size %d for %d bytes of data: the reservation must not count", size, len(data))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if size2, alloc := allocated(t, pack); size2 != size || alloc > size+reserveSlack {
		t.Fatalf("after close: size %d (was %d), allocated %d: reservation kept", size2, size, alloc)
	}
	// As if the node had crashed with a reservation outstanding.
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, size, 16<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, alloc := allocated(t, pack); alloc < size+16<<20 {
		t.Fatalf("fallocate did not take: allocated %d", alloc)
	}
	s2 := openAt(t, dir)
	defer s2.Close()
	if size2, alloc := allocated(t, pack); size2 != size || alloc > size+reserveSlack {
		t.Fatalf("after reopen: size %d (was %d), allocated %d: crash reservation not trimmed", size2, size, alloc)
	}
	out := t.TempDir()
	if err := s2.ExportDir(ctx, root, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "big.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after reopen: %v", err)
	}
}

// keepAndDrop imports a 1 MiB DAG and a 3 MiB one into one pack and
// retires the pack, so that once drop is unpinned GC finds it sparse.
func keepAndDrop(t testing.TB, s *Store) (keep, drop cid.Cid) {
	t.Helper()
	ctx := context.Background()
	keep, _, err := s.ImportFiles(ctx, map[string][]byte{"k": pseudoRandom(81, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	drop, _, err = s.ImportFiles(ctx, map[string][]byte{"d": pseudoRandom(82, 3<<20)})
	if err != nil {
		t.Fatal(err)
	}
	retirePack(t, s)
	return keep, drop
}

// TestPackIDNotReusedForStaleEntries: a durable index entry pointing at a
// pack that is gone (what a crash leaves if a pack is removed before the
// deletion of its entries is durable, or a pack file is lost) was dropped
// at open only in pebble's memtable, and the next pack took the missing
// pack's ID (the one after the highest file). A crash before the next
// pebble flush then brought the entry back, pointing into the new pack:
// the block counted as held (a fetch skips held blocks) and read as
// corrupt, and the new pack could never be reclaimed for it.
func TestPackIDNotReusedForStaleEntries(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openAt(t, dir)
	keep := rawBlock(t, pseudoRandom(85, 4096))
	if err := s.bs.Put(ctx, keep); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, keep.Cid(), 0, "keep"); err != nil {
		t.Fatal(err)
	}
	s.packs.mu.RLock()
	next := s.packs.nextID
	s.packs.mu.RUnlock()
	ghost := rawBlock(t, []byte("a block whose pack is gone"))
	loc := packLoc{pack: next, off: 0, n: uint32(len(ghost.RawData())), crc: crc32.Checksum(ghost.RawData(), castagnoli)}
	if err := s.ds.DB.Set(packIndexKey(ghost.Cid().Hash()), loc.encode(), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // flushes: the stale entry is durable
		t.Fatal(err)
	}

	s2 := openAt(t, dir) // drops the stale entry
	defer s2.Close()
	fresh := rawBlock(t, pseudoRandom(86, 4096))
	if err := s2.bs.Put(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	// The pack sync of a pin: the new pack is durable; then the crash,
	// before pebble flushed anything (no WAL).
	if _, err := s2.packs.sync(); err != nil {
		t.Fatal(err)
	}
	t.Logf("packs before the crash: %v (stale entry pointed at %s)", packFiles(t, dir), packName(next))
	crashed := t.TempDir()
	copyTree(t, dir, crashed)

	s3 := openAt(t, crashed)
	defer s3.Close()
	if has, err := s3.Has(ctx, ghost.Cid()); has || err != nil {
		_, gerr := s3.bs.Get(ctx, ghost.Cid())
		t.Fatalf("stale entry came back after the crash: Has %v %v; Get: %v", has, err, gerr)
	}
	if _, err := s3.bs.Get(ctx, keep.Cid()); err != nil {
		t.Fatalf("pinned block: %v", err)
	}
}
