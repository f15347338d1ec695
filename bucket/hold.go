package bucket

import (
	mh "github.com/multiformats/go-multihash"
)

// blockHold keeps the blocks that a write in progress has stored, or found
// stored already, from GC until the write has pinned its root or failed.
//
// Why: a write that waits on the network (Fetch from a peer, FetchURL)
// must not hold the GC lock while it waits. A slow or hostile peer would
// hold it for the whole deadline, and once GC asks for the write lock Go's
// RWMutex blocks every new reader too: every import, fetch and pin on the
// node would stall behind that one peer. Such writes take the lock only
// around each batch they store (holdStore) and around their pin, so a GC
// can run between batches, before anything pins what they stored. GC treats
// every held block as live. A write that fails releases its hold; what it
// stored is then unpinned garbage that the next GC collects.
type blockHold struct {
	s      *Store
	hashes map[string]struct{} // multihash bytes; guarded by s.holdMu
}

// newHold registers an empty hold; the caller releases it.
func (s *Store) newHold() *blockHold {
	h := &blockHold{s: s, hashes: map[string]struct{}{}}
	s.holdMu.Lock()
	if s.holds == nil {
		s.holds = map[*blockHold]struct{}{}
	}
	s.holds[h] = struct{}{}
	s.holdMu.Unlock()
	return h
}

// release drops the hold: after the write pinned its root (the pin keeps
// the blocks now), or failed (GC may collect them).
func (h *blockHold) release() {
	h.s.holdMu.Lock()
	delete(h.s.holds, h)
	h.s.holdMu.Unlock()
}

// locked runs f under the GC read lock. f stores blocks and adds them with
// add while the lock is held, so a GC sees the blocks and the hold
// together or neither.
func (h *blockHold) locked(f func(add func(mh.Multihash)) error) error {
	unlock, err := h.s.lockWrite()
	if err != nil {
		return err
	}
	defer unlock()
	add := func(m mh.Multihash) {
		h.s.holdMu.Lock()
		h.hashes[string(m)] = struct{}{}
		h.s.holdMu.Unlock()
	}
	return f(add)
}

// markHeld adds every held block to live. GC's write lock is held, so no
// hold grows meanwhile.
func (s *Store) markHeld(live map[string]struct{}) int {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	n := 0
	for h := range s.holds {
		for k := range h.hashes {
			live[k] = struct{}{}
			n++
		}
	}
	return n
}
