package bucket

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	mh "github.com/multiformats/go-multihash"
)

// Block data lives in append-only pack files; pebble holds only a small
// index entry per block (pack, offset, length, CRC-32C). Why not pebble alone
// or one file per block: see docs/bucket.md ("Storage").
//
// A pack is a CARv1 body: sections uvarint(len(cid)+len(data)) ‖ cid ‖ data,
// so a fetched CAR stream is appended as received, in large writes.
//
// Durability: an index entry reaches pebble only after the pack bytes it
// points at were fsynced (sync), so a durable index entry never points at
// lost data. Until then the entry is pending: in memory, visible to readers.

const (
	packIndexPrefix = "/swarmgen/packidx"
	packExt         = ".pack"
	// packRotateBytes: a sync starts a new pack once the current one is
	// this large, so packs are mostly written by one fetch or import and die
	// together when its pins expire.
	packRotateBytes = 64 << 20
	packLocSize     = 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// packLoc is where one block's data sits.
type packLoc struct {
	pack uint32
	off  int64
	n    uint32
	crc  uint32
}

func (l packLoc) encode() []byte {
	b := make([]byte, packLocSize)
	binary.LittleEndian.PutUint32(b[0:], l.pack)
	binary.LittleEndian.PutUint64(b[4:], uint64(l.off))
	binary.LittleEndian.PutUint32(b[12:], l.n)
	binary.LittleEndian.PutUint32(b[16:], l.crc)
	return b
}

func decodePackLoc(b []byte) (packLoc, error) {
	if len(b) != packLocSize {
		return packLoc{}, fmt.Errorf("pack index entry of %d bytes, want %d", len(b), packLocSize)
	}
	l := packLoc{
		pack: binary.LittleEndian.Uint32(b[0:]),
		off:  int64(binary.LittleEndian.Uint64(b[4:])),
		n:    binary.LittleEndian.Uint32(b[12:]),
		crc:  binary.LittleEndian.Uint32(b[16:]),
	}
	if l.off < 0 || l.n > maxBlockSize {
		return packLoc{}, fmt.Errorf("pack index entry out of range: %+v", l)
	}
	return l, nil
}

func packIndexKey(h mh.Multihash) []byte {
	return []byte(packIndexPrefix + dshelp.MultihashToDsKey(h).String())
}

// packFile is one pack: a read handle, and while it is the current pack or
// not yet synced, a write handle.
type packFile struct {
	id     uint32
	r      packReader
	w      packWriter // nil once rotated out and synced
	size   int64      // bytes appended (guarded by packStore.wmu while w != nil)
	wbAt   int64      // size at the last writeback call (guarded by packStore.wmu)
	alloc  int64      // end of what reserve allocated (guarded by packStore.wmu)
	synced int64      // bytes known durable (guarded by packStore.syncMu)
	live   int64      // bytes of indexed blocks (guarded by packStore.mu)
}

// packEntry is one block to register after its section was appended.
type packEntry struct {
	hash mh.Multihash
	loc  packLoc
}

// packStore holds block data in pack files with the index in pebble. Safe
// for concurrent use: appends are serialised by wmu, the maps by mu, syncs
// by syncMu (lock order syncMu → wmu → mu).
type packStore struct {
	dir packDir
	db  *pebble.DB
	log *slog.Logger

	syncMu sync.Mutex
	// syncErr is the first failed fsync: after one, whether earlier
	// writes reached the disk is unknown (Linux may drop the dirty pages and
	// report success next time), so every later sync fails too.
	syncErr error
	wmu     sync.Mutex
	cur     *packFile // appended to; nil until the first append after a rotation

	mu       sync.RWMutex
	packs    map[uint32]*packFile
	nextID   uint32
	pending  map[string]packLoc // multihash bytes → data not yet in the durable index
	newPacks bool               // a pack file was created since the last directory sync
	// filter holds every multihash indexed since open (durable or
	// pending): a lookup it rules out costs no pebble Get.
	filter *keyFilter
}

// openPackStore opens the packs under dir, rebuilding per-pack live bytes from
// the index. Index entries pointing at a missing pack (a pack removed by GC
// before the deletions were flushed) are dropped, and packs no entry points
// at (their data never became durable before a crash) are removed.
func openPackStore(dir packDir, db *pebble.DB, log *slog.Logger) (*packStore, error) {
	p := &packStore{dir: dir, db: db, log: log, packs: map[uint32]*packFile{}, pending: map[string]packLoc{}, filter: newKeyFilter(0)}
	names, err := dir.list()
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	for _, name := range names {
		id, ok := parsePackName(name)
		if !ok {
			continue
		}
		r, err := dir.open(name)
		if err != nil {
			p.closeFiles()
			return nil, fmt.Errorf("open pack %s: %w", name, err)
		}
		size, err := r.size()
		if err != nil {
			r.Close()
			p.closeFiles()
			return nil, fmt.Errorf("stat pack %s: %w", name, err)
		}
		dir.trimTail(name, size)
		p.packs[id] = &packFile{id: id, r: r, size: size, synced: size}
		p.nextID = max(p.nextID, id+1)
	}
	var dangling [][]byte
	err = p.scanIndex(func(key []byte, l packLoc) error {
		pf := p.packs[l.pack]
		if pf == nil || l.off+int64(l.n) > pf.size {
			dangling = append(dangling, slices.Clone(key))
			return nil
		}
		pf.live += int64(l.n)
		return p.filterIndexKey(key)
	})
	if err != nil {
		p.closeFiles()
		return nil, err
	}
	if p.filter.full() {
		if err := p.rebuildFilterLocked(); err != nil {
			p.closeFiles()
			return nil, err
		}
	}
	for _, k := range dangling {
		if err := db.Delete(k, pebble.NoSync); err != nil {
			p.closeFiles()
			return nil, fmt.Errorf("drop dangling pack index entry: %w", err)
		}
	}
	if len(dangling) > 0 {
		// Durable before any new pack exists (no WAL): a new pack takes
		// the ID after the highest file, maybe a missing pack's that these
		// entries name, and a crash before the next flush would bring
		// them back pointing into it.
		if err := db.Flush(); err != nil {
			p.closeFiles()
			return nil, fmt.Errorf("drop dangling pack index entries: flush: %w", err)
		}
		log.Warn("dropped pack index entries pointing at missing data", "entries", len(dangling))
	}
	for id, pf := range p.packs {
		if pf.live == 0 {
			if err := p.removePack(pf); err != nil {
				p.closeFiles()
				return nil, err
			}
			delete(p.packs, id)
		}
	}
	return p, nil
}

func packName(id uint32) string { return fmt.Sprintf("%08x%s", id, packExt) }

func parsePackName(name string) (uint32, bool) {
	base, ok := strings.CutSuffix(name, packExt)
	if !ok || len(base) != 8 {
		return 0, false
	}
	id, err := strconv.ParseUint(base, 16, 32)
	return uint32(id), err == nil
}

// scanIndex calls fn for every durable index entry.
func (p *packStore) scanIndex(fn func(key []byte, l packLoc) error) error {
	prefix := []byte(packIndexPrefix + "/")
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("scan pack index: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		l, err := decodePackLoc(it.Value())
		if err != nil {
			key := slices.Clone(it.Key()) // not valid after Close
			it.Close()
			return fmt.Errorf("pack index %q: %w", key, err)
		}
		if err := fn(it.Key(), l); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("scan pack index: %w", err)
	}
	return nil
}

func prefixEnd(prefix []byte) []byte {
	end := slices.Clone(prefix)
	end[len(end)-1]++
	return end
}

// hashFromIndexKey returns the multihash an index key names.
func hashFromIndexKey(key []byte) (mh.Multihash, error) {
	k, ok := strings.CutPrefix(string(key), packIndexPrefix)
	if !ok {
		return nil, fmt.Errorf("not a pack index key: %q", key)
	}
	return dshelp.DsKeyToMultihash(ds.NewKey(k))
}

// appendSections appends buf (whole CAR sections) to the current pack and
// registers entries, whose offsets are relative to buf. A block already held
// is not registered again; its copy in buf stays unindexed, pack space GC
// reclaims, unless every block in buf is held: then nothing is written (a
// re-fetch of a DAG held already, as each assignment of a task's input
// fetches it, costs no space). The data is
// readable at once and durable after the next sync. Writeback of the new bytes is
// started right away so that sync finds little left to do.
func (p *packStore) appendSections(buf []byte, entries []packEntry) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	// Decide which entries to register before writing: the lookups touch
	// pebble, not the pack.
	keep := entries[:0:0]
	for _, e := range entries {
		if ok, err := p.has(e.hash); err != nil {
			return err
		} else if ok {
			continue
		}
		keep = append(keep, e)
	}
	if len(keep) == 0 {
		return nil // all held already: writing them again would only waste the pack
	}
	cur, base, err := p.writeCur(buf)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.registerLocked(cur, base, keep)
	p.mu.Unlock()
	// Queue writeback now (and wait for the previous batch), so dirty data
	// does not pile up and the final fsync is short.
	cur.startWriteback()
	return nil
}

// writebackEvery: writeback is started once this much was appended since
// the last start. A fetch appends 4 MiB slabs, each written back at once;
// the many small appends of tiny results (a few hundred bytes each) are
// left to the next sync instead of a syscall that waits on the device
// under the write lock each time.
const writebackEvery = 1 << 20

// startWriteback starts writeback of the bytes appended since the last
// start if there are writebackEvery of them. wmu is held.
func (f *packFile) startWriteback() {
	if f.size-f.wbAt < writebackEvery {
		return
	}
	f.w.writeback(f.size)
	f.wbAt = f.size
}

// writeCur appends buf to the current pack, creating one if there is
// none, and returns the pack and the offset buf landed at. wmu is held.
func (p *packStore) writeCur(buf []byte) (*packFile, int64, error) {
	if p.cur == nil {
		if err := p.newPack(); err != nil {
			return nil, 0, err
		}
	}
	cur := p.cur
	base := cur.size
	if end := base + int64(len(buf)); len(buf) >= reserveMin && end > cur.alloc {
		cur.alloc = max(cur.alloc, base) + reserveAhead
		for cur.alloc < end {
			cur.alloc += reserveAhead
		}
		cur.w.reserve(base, cur.alloc-base)
	}
	n, err := cur.w.WriteAt(buf, base)
	cur.size += int64(n)
	if err != nil {
		return nil, 0, fmt.Errorf("append to pack %s: %w", packName(cur.id), err)
	}
	return cur, base, nil
}

// Packs are preallocated ahead of large appends (a fetch's 4 MiB slabs, a
// big import's batches), reserveAhead at a time; the many small appends of
// tiny results do not reserve, so a pack of those never holds more space
// than data. What a pack reserved past its data is released when it is
// retired, closed, or (after a crash) opened.
const (
	reserveMin   = 256 << 10
	reserveAhead = 32 << 20
)

// newPack creates the next pack file and makes it current. wmu is held.
func (p *packStore) newPack() error {
	p.mu.Lock()
	id := p.nextID
	p.nextID++
	p.mu.Unlock()
	name := packName(id)
	w, err := p.dir.create(name)
	if err != nil {
		return fmt.Errorf("create pack: %w", err)
	}
	r, err := p.dir.open(name)
	if err != nil {
		w.Close()
		return fmt.Errorf("open pack: %w", err)
	}
	pf := &packFile{id: id, r: r, w: w}
	p.mu.Lock()
	p.packs[id] = pf
	p.newPacks = true
	p.mu.Unlock()
	p.cur = pf
	return nil
}

// lookup returns where the block with hash h is, pending entries first.
func (p *packStore) lookup(h mh.Multihash) (packLoc, bool, error) {
	p.mu.RLock()
	l, ok := p.pending[string(h)]
	maybe := ok || p.filter.mayHave(h)
	p.mu.RUnlock()
	if ok {
		return l, true, nil
	}
	if !maybe {
		return packLoc{}, false, nil
	}
	v, closer, err := p.db.Get(packIndexKey(h))
	if errors.Is(err, pebble.ErrNotFound) {
		return packLoc{}, false, nil
	}
	if err != nil {
		return packLoc{}, false, fmt.Errorf("pack index: %w", err)
	}
	l, err = decodePackLoc(v)
	closer.Close()
	if err != nil {
		return packLoc{}, false, err
	}
	return l, true, nil
}

func (p *packStore) has(h mh.Multihash) (bool, error) {
	_, ok, err := p.lookup(h)
	return ok, err
}

// size returns the block's length, or false if it is not here.
func (p *packStore) size(h mh.Multihash) (int, bool, error) {
	l, ok, err := p.lookup(h)
	return int(l.n), ok, err
}

// read returns the block's data, in dst if dst is not nil (then its length
// must be the block's), checked against the CRC recorded when it was
// written unless checkCRC is false (for a reader that verifies the block's
// hash anyway); false if the block is not here.
func (p *packStore) read(h mh.Multihash, dst []byte, checkCRC bool) ([]byte, bool, error) {
	// A concurrent GC may remove the block's pack between the lookup and
	// the read: look up again once.
	for try := 0; ; try++ {
		l, ok, err := p.lookup(h)
		if err != nil || !ok {
			return nil, ok, err
		}
		if dst == nil {
			dst = make([]byte, l.n)
		} else if len(dst) != int(l.n) {
			return nil, false, fmt.Errorf("%w: %s: stored block is %d bytes, not %d", ErrCorruptBlock, h.B58String(), l.n, len(dst))
		}
		p.mu.RLock()
		pf := p.packs[l.pack]
		if pf == nil {
			p.mu.RUnlock()
			if try == 0 {
				continue
			}
			return nil, false, fmt.Errorf("%w: %s: pack %s is gone", ErrMissingBlock, h.B58String(), packName(l.pack))
		}
		_, err = pf.r.ReadAt(dst, l.off)
		p.mu.RUnlock()
		if err != nil {
			return nil, false, fmt.Errorf("read %s from pack %s: %w", h.B58String(), packName(l.pack), err)
		}
		if checkCRC && crc32.Checksum(dst, castagnoli) != l.crc {
			return nil, false, fmt.Errorf("%w: %s: CRC mismatch in pack %s at %d", ErrCorruptBlock, h.B58String(), packName(l.pack), l.off)
		}
		return dst, true, nil
	}
}

// delete drops the block's index entry (the bytes stay in the pack until GC
// removes or compacts it). It reports whether the block was here.
func (p *packStore) delete(h mh.Multihash) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, shadowing := p.pending[string(h)]
	if shadowing {
		delete(p.pending, string(h))
		p.packs[l.pack].live -= int64(l.n)
	}
	// A pending entry can shadow a durable one only when compact moved the
	// block; that durable entry's bytes were already taken off its pack's
	// live count.
	key := packIndexKey(h)
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return shadowing, nil
	}
	if err != nil {
		return false, fmt.Errorf("pack index: %w", err)
	}
	dl, derr := decodePackLoc(v)
	closer.Close()
	l = dl
	if err := p.db.Delete(key, pebble.NoSync); err != nil {
		return false, fmt.Errorf("pack index: %w", err)
	}
	if derr == nil && !shadowing {
		if pf := p.packs[l.pack]; pf != nil {
			pf.live -= int64(l.n)
		}
	}
	return true, nil
}

// sync makes every block appended so far durable and moves its index entry
// from memory into pebble (not yet flushed: the caller flushes pebble, see
// Store.flush); it returns how many entries it moved. Order: pack data
// fsynced, pack directory fsynced if a pack was created, then the index
// entries.
func (p *packStore) sync() (int, error) {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	if p.syncErr != nil {
		return 0, p.syncErr
	}
	p.wmu.Lock()
	var dirty []*packFile
	p.mu.Lock()
	for _, pf := range p.packs {
		if pf.w != nil && pf.size > pf.synced {
			dirty = append(dirty, pf)
		}
	}
	sizes := make([]int64, len(dirty))
	for i, pf := range dirty {
		sizes[i] = pf.size
	}
	if p.cur != nil && p.cur.size >= packRotateBytes {
		p.cur = nil // the next append starts a new pack
	}
	// Packs no append can reach any more: closed for writing once synced.
	var retired []*packFile
	for _, pf := range p.packs {
		if pf.w != nil && pf != p.cur {
			retired = append(retired, pf)
		}
	}
	snap := make(map[string]packLoc, len(p.pending))
	for k, l := range p.pending {
		snap[k] = l
	}
	newPacks := p.newPacks
	p.newPacks = false
	p.mu.Unlock()
	p.wmu.Unlock()

	for i, pf := range dirty {
		if err := pf.w.syncData(); err != nil {
			p.syncErr = fmt.Errorf("sync pack %s: %w", packName(pf.id), err)
			return 0, p.syncErr
		}
		pf.synced = sizes[i]
	}
	// The directory before anything can return early: newPacks is
	// cleared, and a pack whose entry was never fsynced could vanish in a
	// crash after the next sync made its index entries durable.
	if newPacks {
		if err := p.syncDir(); err != nil {
			p.syncErr = err
			return 0, err
		}
	}
	for _, pf := range retired {
		if pf.synced != pf.size {
			continue
		}
		p.mu.Lock()
		w := pf.w
		pf.w = nil
		p.mu.Unlock()
		w.release(pf.size)
		if err := w.Close(); err != nil {
			return 0, fmt.Errorf("close pack %s: %w", packName(pf.id), err)
		}
	}
	if len(snap) == 0 {
		return 0, nil
	}
	// Move the entries still pending (a concurrent delete may have dropped
	// some) into pebble, atomically with their removal from memory.
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.db.NewBatch()
	defer b.Close()
	var moved []string
	for k, l := range snap {
		if cur, ok := p.pending[k]; !ok || cur != l {
			continue
		}
		if err := b.Set(packIndexKey(mh.Multihash(k)), l.encode(), nil); err != nil {
			return 0, fmt.Errorf("pack index: %w", err)
		}
		moved = append(moved, k)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("pack index: %w", err)
	}
	for _, k := range moved {
		delete(p.pending, k)
	}
	return len(moved), nil
}

func (p *packStore) syncDir() error {
	if err := p.dir.sync(); err != nil {
		return fmt.Errorf("sync pack directory: %w", err)
	}
	return nil
}

// allKeys calls fn with the multihash of every block held (pending ones
// included).
func (p *packStore) allKeys(fn func(mh.Multihash) bool) error {
	p.mu.RLock()
	pend := make([]mh.Multihash, 0, len(p.pending))
	for k := range p.pending {
		pend = append(pend, mh.Multihash(k))
	}
	p.mu.RUnlock()
	for _, h := range pend {
		if !fn(h) {
			return nil
		}
	}
	errStop := errors.New("stop")
	err := p.scanIndex(func(key []byte, _ packLoc) error {
		h, err := hashFromIndexKey(key)
		if err != nil {
			p.log.Warn("bad pack index key", "key", key, "err", err)
			return nil
		}
		if !fn(h) {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// reclaim removes the packs that no block lives in any more, except the
// current one and packs not yet synced. The caller has made the index
// deletions durable first (a crash must not leave entries pointing at a
// removed pack; openPackStore drops such entries anyway). It returns the
// bytes freed.
func (p *packStore) reclaim() (int64, error) {
	p.wmu.Lock()
	cur := p.cur
	p.wmu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	var freed int64
	for id, pf := range p.packs {
		if pf == cur || pf.w != nil || pf.live > 0 {
			continue
		}
		if err := p.removePack(pf); err != nil {
			return freed, err
		}
		delete(p.packs, id)
		freed += pf.size
	}
	return freed, nil
}

// reclaimable reports whether reclaim would remove a pack: one with no
// live bytes that was still current, or not yet synced, when the GC that
// emptied it ran, and that no later GC would otherwise look at.
func (p *packStore) reclaimable() bool {
	p.wmu.Lock()
	cur := p.cur
	p.wmu.Unlock()
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, pf := range p.packs {
		if pf != cur && pf.w == nil && pf.live <= 0 {
			return true
		}
	}
	return false
}

// sparse lists the packs (not current, closed for writing, no pending
// entries) of which less than half the bytes are live: compact copies their
// live blocks to the current pack so that reclaim can remove them.
func (p *packStore) sparse() map[uint32]bool {
	p.wmu.Lock()
	cur := p.cur
	p.wmu.Unlock()
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := map[uint32]bool{}
	for id, pf := range p.packs {
		if pf != cur && pf.w == nil && pf.live > 0 && pf.live < pf.size/2 {
			out[id] = true
		}
	}
	for _, l := range p.pending {
		delete(out, l.pack)
	}
	return out
}

// compact appends the live blocks of the packs in ids to the current pack
// (read back with their CRC checked) and registers their new places, which
// shadow the old index entries until the next sync overwrites them; the
// old packs' live bytes drop to zero. The caller (GC, with writers held
// off) then syncs, flushes pebble and reclaims. It returns the bytes moved.
func (p *packStore) compact(ids map[uint32]bool) (int64, error) {
	type move struct {
		hash mh.Multihash
		loc  packLoc
	}
	var moves []move
	err := p.scanIndex(func(key []byte, l packLoc) error {
		if !ids[l.pack] {
			return nil
		}
		h, err := hashFromIndexKey(key)
		if err != nil {
			return nil // bad key: left where it is
		}
		// Pending means moved already, by a compaction that failed part
		// way before the sync that would have made it durable: moving it
		// again would take its bytes off this pack's live count twice.
		p.mu.RLock()
		_, moved := p.pending[string(h)]
		p.mu.RUnlock()
		if !moved {
			moves = append(moves, move{h, l})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var moved int64
	var buf []byte
	var entries []packEntry
	var olds []packLoc
	flush := func() error {
		if len(entries) == 0 {
			return nil
		}
		err := p.appendMoved(buf, entries, olds)
		buf, entries, olds = buf[:0], entries[:0], olds[:0]
		return err
	}
	for _, m := range moves {
		data, ok, err := p.read(m.hash, nil, true)
		if err != nil || !ok {
			// Unreadable or gone: leave it (its pack then stays).
			p.log.Warn("compaction skipped a block", "hash", m.hash.B58String(), "err", err)
			continue
		}
		buf = sectionHeader(buf, cid.NewCidV1(cid.Raw, m.hash), len(data))
		entries = append(entries, packEntry{hash: m.hash, loc: packLoc{off: int64(len(buf)), n: uint32(len(data)), crc: m.loc.crc}})
		olds = append(olds, m.loc)
		buf = append(buf, data...)
		moved += int64(len(data))
		if len(buf) >= fetchSlabSize {
			if err := flush(); err != nil {
				return moved, err
			}
		}
	}
	return moved, flush()
}

// appendMoved is appendSections for compact: every entry is registered,
// shadowing its durable entry at olds[i], whose bytes leave their pack's
// live count.
func (p *packStore) appendMoved(buf []byte, entries []packEntry, olds []packLoc) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	cur, base, err := p.writeCur(buf)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.registerLocked(cur, base, entries)
	for _, o := range olds {
		if old := p.packs[o.pack]; old != nil {
			old.live -= int64(o.n)
		}
	}
	p.mu.Unlock()
	cur.startWriteback()
	return nil
}

// registerLocked records entries, appended to cur at offset base, as
// pending (readable, durable at the next sync). p.mu is held.
func (p *packStore) registerLocked(cur *packFile, base int64, entries []packEntry) {
	for _, e := range entries {
		l := e.loc
		l.pack, l.off = cur.id, base+l.off
		if prev, ok := p.pending[string(e.hash)]; ok {
			// Shadowed: its bytes are no longer live where they were.
			if pf := p.packs[prev.pack]; pf != nil {
				pf.live -= int64(prev.n)
			}
		}
		p.pending[string(e.hash)] = l
		cur.live += int64(l.n)
		p.filter.add(e.hash)
	}
	if p.filter.full() {
		if err := p.rebuildFilterLocked(); err != nil {
			// Without a complete filter a "no" could be wrong: answer
			// "maybe" for everything until a rebuild succeeds.
			p.log.Error("rebuild pack key filter; every lookup goes to the index", "err", err)
			p.filter = nil
		}
	}
}

// filterIndexKey adds the multihash of a durable index key to the filter.
func (p *packStore) filterIndexKey(key []byte) error {
	h, err := hashFromIndexKey(key)
	if err != nil {
		return fmt.Errorf("pack index: %w", err)
	}
	p.filter.add(h)
	return nil
}

// rebuildFilterLocked replaces the filter with one sized for twice the keys
// indexed now, filled from the durable index and the pending entries. p.mu
// is held (or p is not shared yet), so no entry moves from pending to the
// index meanwhile.
func (p *packStore) rebuildFilterLocked() error {
	n := len(p.pending)
	if p.filter != nil {
		n = max(n, p.filter.n)
	}
	p.filter = newKeyFilter(2 * n)
	if err := p.scanIndex(func(key []byte, _ packLoc) error { return p.filterIndexKey(key) }); err != nil {
		p.filter = nil
		return err
	}
	for k := range p.pending {
		p.filter.add([]byte(k))
	}
	// Deleted blocks are gone from it now; size it for what is here.
	if p.filter.full() {
		return p.rebuildFilterLocked()
	}
	return nil
}

// pendingBytes reports the bytes of blocks not yet durable (tests).
func (p *packStore) pendingBytes() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var n int64
	for _, l := range p.pending {
		n += int64(l.n)
	}
	return n
}

// removePack closes and deletes one pack file; mu is held or p is not yet
// shared.
func (p *packStore) removePack(pf *packFile) error {
	if pf.w != nil {
		pf.w.Close()
	}
	pf.r.Close()
	if err := p.dir.remove(packName(pf.id)); err != nil {
		return fmt.Errorf("remove pack %s: %w", packName(pf.id), err)
	}
	return nil
}

// close syncs what is pending and closes every pack file.
func (p *packStore) close() error {
	_, err := p.sync()
	p.closeFiles()
	return err
}

func (p *packStore) closeFiles() {
	p.wmu.Lock() // p.cur is guarded by wmu
	defer p.wmu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pf := range p.packs {
		if pf.w != nil {
			pf.w.release(pf.size)
			pf.w.Close()
			pf.w = nil
		}
		pf.r.Close()
	}
	p.packs = map[uint32]*packFile{}
	p.cur = nil
}

// maxSectionHeader bounds sectionHeader's length for the CIDs this package
// accepts (sha2-256: at most 36 bytes) with room to spare.
const maxSectionHeader = 64

// sectionHeader returns uvarint(len(cid)+n) ‖ cid: the part of a CAR
// section before the block data.
func sectionHeader(dst []byte, c cid.Cid, n int) []byte {
	cb := c.KeyString()
	dst = binary.AppendUvarint(dst, uint64(len(cb)+n))
	return append(dst, cb...)
}
