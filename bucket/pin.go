package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
)

// pinPrefix is the datastore namespace of pin records, beside the
// blockstore's "/blocks".
const pinPrefix = "/swarmgen/pins/"

// PinInfo is one pin record.
type PinInfo struct {
	Root    cid.Cid   `json:"root"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"` // zero: never
}

type pinRecord struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
}

func pinKey(c cid.Cid) ds.Key { return ds.NewKey(pinPrefix + c.String()) }

// Pin keeps root and everything reachable from it until ttl has passed
// (ttl <= 0: until Unpin). Pinning a root that is already pinned keeps the
// later expiry and takes the new name.
func (s *Store) Pin(ctx context.Context, root cid.Cid, ttl time.Duration, name string) error {
	unlock, err := s.lockWrite()
	if err != nil {
		return err
	}
	defer unlock()
	return s.pin(ctx, root, ttl, name)
}

// pin is Pin for callers that already hold the GC read lock. The blocks
// are synced and indexed before the pin record is written, so that no
// pebble flush (ours, or one pebble starts by itself) makes a pin durable
// before the blocks it protects. Under WithDeferredSync that waits for Sync:
// a crash can then leave a pin whose blocks are partly lost, which every
// reader reports as missing blocks.
func (s *Store) pin(ctx context.Context, root cid.Cid, ttl time.Duration, name string) error {
	if !s.cfg.deferSync {
		if err := s.syncPacks(); err != nil {
			return fmt.Errorf("pin %s: %w", root, err)
		}
	}
	if err := s.putPin(ctx, root, ttl, name); err != nil {
		return err
	}
	if s.cfg.deferSync {
		return nil // the owner calls Sync when durability matters
	}
	return s.flush(root)
}

func (s *Store) putPin(ctx context.Context, root cid.Cid, ttl time.Duration, name string) error {
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	now := s.cfg.now()
	rec := pinRecord{Name: name, Created: now}
	if ttl > 0 {
		rec.Expires = now.Add(ttl)
	}
	key := pinKey(root)
	fkey := []byte(key.String())
	if s.pinned == nil || s.pinned.full() {
		s.pinned = s.buildPinFilter(ctx)
	}
	// Most pins are of new roots: the filter saves their pebble lookup.
	var old []byte
	var err error
	if s.pinned.mayHave(fkey) {
		old, err = s.ds.Get(ctx, key)
		if err != nil && !errors.Is(err, ds.ErrNotFound) {
			// Ignoring it could turn a permanent pin into one that expires.
			return fmt.Errorf("pin %s: read the current pin: %w", root, err)
		}
	}
	if old != nil {
		var prev pinRecord
		if json.Unmarshal(old, &prev) == nil {
			rec.Created = prev.Created
			if prev.Expires.IsZero() || (!rec.Expires.IsZero() && prev.Expires.After(rec.Expires)) {
				rec.Expires = prev.Expires
			}
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.ds.Put(ctx, key, b); err != nil {
		return fmt.Errorf("pin %s: %w", root, err)
	}
	s.pinned.add(fkey)
	s.writeGen.Add(1)
	return nil
}

// buildPinFilter returns a filter over the pin records' keys, sized for
// twice their number, or nil (every lookup goes to pebble) if they cannot
// be listed. pinMu is held.
func (s *Store) buildPinFilter(ctx context.Context) *keyFilter {
	res, err := s.ds.Query(ctx, query.Query{Prefix: pinPrefix, KeysOnly: true})
	if err != nil {
		s.log.Warn("list pins for the pin filter", "err", err)
		return nil
	}
	defer res.Close()
	var keys []string
	for r := range res.Next() {
		if r.Error != nil {
			s.log.Warn("list pins for the pin filter", "err", r.Error)
			return nil
		}
		keys = append(keys, r.Key)
	}
	f := newKeyFilter(2 * len(keys))
	for _, k := range keys {
		f.add([]byte(k))
	}
	return f
}

// syncPacks makes the blocks written so far durable and moves their index
// entries into pebble (counted as a write for flush).
func (s *Store) syncPacks() error {
	moved, err := s.packs.sync()
	if moved > 0 {
		s.writeGen.Add(1)
	}
	return err
}

// flush makes every write so far durable: pack data first, then pebble
// (the WAL is off, see pebbleOptions), which holds the pins and the pack
// index. A memtable flush is costly, so concurrent callers share one: a
// caller whose writes an already finished flush covered returns at once
// (group commit).
func (s *Store) flush(root cid.Cid) error {
	if err := s.syncPacks(); err != nil {
		return fmt.Errorf("pin %s: %w", root, err)
	}
	gen := s.writeGen.Load()
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if s.flushedGen >= gen {
		return nil
	}
	target := s.writeGen.Load()
	if err := s.ds.DB.Flush(); err != nil {
		return fmt.Errorf("pin %s: flush: %w", root, err)
	}
	s.flushedGen = target
	return nil
}

// Unpin removes the pin on root; its blocks go at the next GC unless
// another pin reaches them.
func (s *Store) Unpin(ctx context.Context, root cid.Cid) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	s.pinMu.Lock()
	err := s.ds.Delete(ctx, pinKey(root))
	if err == nil {
		s.writeGen.Add(1)
	}
	s.pinMu.Unlock()
	if err != nil {
		return fmt.Errorf("unpin %s: %w", root, err)
	}
	return s.flush(root)
}

// Pins lists the pin records, expired ones included until GC removes them.
func (s *Store) Pins(ctx context.Context) ([]PinInfo, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.leave()
	res, err := s.ds.Query(ctx, query.Query{Prefix: pinPrefix})
	if err != nil {
		return nil, fmt.Errorf("list pins: %w", err)
	}
	defer res.Close()
	var out []PinInfo
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("list pins: %w", r.Error)
		}
		c, err := cid.Decode(ds.NewKey(r.Key).BaseNamespace())
		if err != nil {
			s.log.Warn("bad pin key", "key", r.Key, "err", err)
			continue
		}
		var rec pinRecord
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			s.log.Warn("bad pin record", "root", c, "err", err)
			continue
		}
		out = append(out, PinInfo{Root: c, Name: rec.Name, Created: rec.Created, Expires: rec.Expires})
	}
	return out, nil
}

// GCStats says what one GC run did.
type GCStats struct {
	ExpiredPins   int
	LivePins      int
	BlocksKept    int
	BlocksRemoved int
	// PackBytesFreed counts pack file bytes removed: packs none of whose
	// blocks is left.
	PackBytesFreed int64
	// PacksCompacted counts packs less than half live whose live blocks
	// (PackBytesMoved bytes) were copied to the current pack.
	PacksCompacted int
	PackBytesMoved int64
}

// GC removes expired pins, then deletes every block not reachable from a
// live pin (mark and sweep). Writers (import, assemble) hold off GC until
// their root is pinned; fetches hold off GC only while they store a batch
// and keep what they stored in a blockHold, which GC treats as live, so
// no writer's blocks are swept in flight.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	var st GCStats
	if s.ctx.Err() != nil {
		return st, ErrClosed
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	if s.ctx.Err() != nil { // Close may have held the lock meanwhile
		return st, ErrClosed
	}
	pins, err := s.Pins(ctx)
	if err != nil {
		return st, err
	}
	now := s.cfg.now()
	live := map[string]struct{}{} // multihash bytes: the blockstore keys by multihash
	for _, p := range pins {
		if !p.Expires.IsZero() && !p.Expires.After(now) {
			s.pinMu.Lock()
			err := s.ds.Delete(ctx, pinKey(p.Root))
			s.pinMu.Unlock()
			if err != nil {
				return st, fmt.Errorf("gc: drop expired pin %s: %w", p.Root, err)
			}
			st.ExpiredPins++
			s.log.Info("pin expired", "root", p.Root, "name", p.Name, "expired", p.Expires)
			continue
		}
		st.LivePins++
		if err := s.mark(ctx, p.Root, live); err != nil {
			return st, err
		}
	}
	// Blocks of fetches in progress: stored, not pinned yet.
	if n := s.markHeld(live); n > 0 {
		s.log.Debug("gc: blocks held by writes in progress", "blocks", n)
	}
	// Not AllKeysChan, which cannot say that its listing ended early: GC
	// would take part of the store for all of it and report success.
	var dead []cid.Cid
	err = s.pbs.allKeys(ctx, func(k cid.Cid) bool {
		if _, ok := live[string(k.Hash())]; ok {
			st.BlocksKept++
		} else {
			dead = append(dead, k)
		}
		return ctx.Err() == nil
	})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		// Sweeping only what was listed would be safe, but a listing that
		// fails is a store in trouble: collect nothing, say so, retry later.
		return st, fmt.Errorf("gc: list blocks: %w", err)
	}
	for _, k := range dead {
		if err := s.bs.DeleteBlock(ctx, k); err != nil {
			return st, fmt.Errorf("gc: delete %s: %w", k, err)
		}
		st.BlocksRemoved++
	}
	if err := s.reclaimPacks(&st); err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if st.BlocksRemoved > 0 || st.ExpiredPins > 0 {
		s.log.Info("gc done", "expiredPins", st.ExpiredPins, "livePins", st.LivePins,
			"blocksKept", st.BlocksKept, "blocksRemoved", st.BlocksRemoved, "packBytesFreed", st.PackBytesFreed,
			"packsCompacted", st.PacksCompacted, "packBytesMoved", st.PackBytesMoved)
	}
	return st, nil
}

// reclaimPacks removes the packs nothing live is left in, after copying
// the live blocks out of packs that are less than half live. Index changes
// (deletions, moved blocks) are synced and flushed first, so that no
// durable index entry points at a removed pack. GC's write lock is held.
func (s *Store) reclaimPacks(st *GCStats) error {
	if sparse := s.packs.sparse(); len(sparse) > 0 {
		moved, err := s.packs.compact(sparse)
		st.PackBytesMoved = moved
		if err != nil {
			return err
		}
		st.PacksCompacted = len(sparse)
	}
	if st.BlocksRemoved == 0 && st.PacksCompacted == 0 && !s.packs.reclaimable() {
		return nil
	}
	if err := s.syncPacks(); err != nil {
		return err
	}
	if err := s.ds.DB.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	freed, err := s.packs.reclaim()
	st.PackBytesFreed = freed
	return err
}

// mark adds every locally present block reachable from root to live. Raw
// leaves are marked without being read; missing blocks are skipped (a
// partial DAG keeps what it has).
func (s *Store) mark(ctx context.Context, root cid.Cid, live map[string]struct{}) error {
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := live[string(c.Hash())]; ok {
			continue
		}
		if c.Type() == cid.Raw {
			live[string(c.Hash())] = struct{}{}
			continue
		}
		blk, err := s.bs.Get(ctx, c)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			if errors.Is(err, ErrCorruptBlock) {
				// Kept, like an undecodable node below: what it links to
				// cannot be reached, but one bad block must not stop all
				// collection (it did until the pin expired: never, for a
				// pin without TTL).
				s.log.Warn("gc: corrupt block under a pin kept", "cid", c, "err", err)
				live[string(c.Hash())] = struct{}{}
				continue
			}
			return fmt.Errorf("gc: mark %s: %w", c, err)
		}
		live[string(c.Hash())] = struct{}{}
		if c.Type() != cid.DagProtobuf {
			continue
		}
		nd, err := merkledag.DecodeProtobuf(blk.RawData())
		if err != nil {
			s.log.Warn("gc: undecodable dag-pb node kept", "cid", c, "err", err)
			continue
		}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
	}
	return nil
}

func isNotFound(err error) bool {
	return errors.Is(err, ds.ErrNotFound) || ipldIsNotFound(err)
}

// gcLoop runs GC every interval until the Store closes.
func (s *Store) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.gcInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			if _, err := s.GC(s.ctx); err != nil && s.ctx.Err() == nil {
				s.log.Error("gc failed", "err", err)
			}
		}
	}
}
