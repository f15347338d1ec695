package bucket

import "github.com/ipfs/go-cid"

// WithDeferredSync makes pins (Pin, and the pins ImportDir, Fetch,
// ImportFiles and Assemble take) return without waiting for their writes
// to reach the disk; the owner calls Sync where durability matters. A node
// uses it for task results: a provider's lost result is redone elsewhere,
// and a submitter syncs before it records a result as fetched, so one
// flush covers every task that finished within a scheduling tick instead
// of one flush per task.
func WithDeferredSync() Option { return func(c *config) { c.deferSync = true } }

// Sync makes every write so far durable (one memtable flush, shared with
// concurrent callers). Safe for concurrent use.
func (s *Store) Sync() error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	return s.flush(cid.Undef)
}
