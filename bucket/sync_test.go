package bucket

import (
	"context"
	"testing"
)

// TestDeferredSync: under WithDeferredSync a pin leaves its writes in the
// memtable until Sync (or a clean Close), and they survive a reopen.
func TestDeferredSync(t *testing.T) {
	ctx := context.Background()
	for _, explicit := range []bool{true, false} {
		dir := t.TempDir()
		s, err := New(ctx, nil, dir, WithGCInterval(0), WithLogger(testLogger(t)), WithDeferredSync())
		if err != nil {
			t.Fatal(err)
		}
		root, _, err := s.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(31, 300<<10)})
		if err != nil {
			t.Fatal(err)
		}
		s.flushMu.Lock()
		pending := s.flushedGen < s.writeGen.Load()
		s.flushMu.Unlock()
		if !pending {
			t.Fatal("a deferred pin flushed the memtable")
		}
		if explicit {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			s.flushMu.Lock()
			synced := s.flushedGen == s.writeGen.Load()
			s.flushMu.Unlock()
			if !synced {
				t.Fatal("Sync left writes unflushed")
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := New(ctx, nil, dir, WithGCInterval(0), WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s2.checkComplete(ctx, root); err != nil {
			t.Errorf("explicit sync %v: DAG after reopen: %v", explicit, err)
		}
		s2.Close()
	}
}
