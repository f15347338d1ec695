package bucket

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
)

// smallFilters makes every key filter the test creates start at n keys, so
// that a few puts outgrow it and it is rebuilt.
func smallFilters(t *testing.T, n int) {
	old := filterMinKeys
	filterMinKeys = n
	t.Cleanup(func() { filterMinKeys = old })
}

// TestKeyFilter: no key added is ever ruled out, and at capacity few keys
// not added pass.
func TestKeyFilter(t *testing.T) {
	const n = 50000
	f := newKeyFilter(n)
	key := func(i int) []byte { return binary.BigEndian.AppendUint64([]byte("k"), uint64(i)) }
	for i := 0; i < n; i++ {
		f.add(key(i))
	}
	for i := 0; i < n; i++ {
		if !f.mayHave(key(i)) {
			t.Fatalf("key %d was added but is ruled out", i)
		}
	}
	fp := 0
	for i := n; i < 2*n; i++ {
		if f.mayHave(key(i)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.01 {
		t.Fatalf("false positive rate %.4f at capacity, want ≤ 0.01", rate)
	}
	if f.full() {
		t.Fatal("full at capacity")
	}
	f.add(key(-1))
	if !f.full() {
		t.Fatal("not full past capacity")
	}
	var none *keyFilter
	none.add(key(1))
	if !none.mayHave(key(1)) || !none.full() {
		t.Fatal("a nil filter must rule nothing out and ask for a rebuild")
	}
}

// TestPackKeyFilterRebuild: with a tiny filter, puts past its capacity
// rebuild it from the index and pending entries, blocks stay found through
// syncs, deletes and a reopen, and absent blocks are answered without the
// index.
func TestPackKeyFilterRebuild(t *testing.T) {
	smallFilters(t, 8)
	ctx := context.Background()
	dir := t.TempDir()
	s := openAt(t, dir)
	var cids []cid.Cid
	for i := 0; i < 200; i++ {
		b := rawBlock(t, []byte(fmt.Sprintf("block %d", i)))
		if err := s.bs.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		cids = append(cids, b.Cid())
		if i%37 == 0 {
			retirePack(t, s) // some entries durable, some pending
		}
	}
	if c := s.packs.filter.capacity; c < 200 {
		t.Fatalf("filter capacity %d after 200 puts: not rebuilt", c)
	}
	for _, c := range cids[:10] {
		if err := s.bs.DeleteBlock(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		for i, c := range cids {
			ok, err := s.bs.Has(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if ok != (i >= 10) {
				t.Fatalf("block %d: Has = %v", i, ok)
			}
		}
		ruledOut := 0
		for i := 0; i < 1000; i++ {
			h := rawBlock(t, []byte(fmt.Sprintf("absent %d", i))).Cid().Hash()
			if ok, err := s.bs.Has(ctx, cid.NewCidV1(cid.Raw, h)); err != nil || ok {
				t.Fatalf("absent block %d: Has = %v, %v", i, ok, err)
			}
			s.packs.mu.RLock()
			if !s.packs.filter.mayHave(h) {
				ruledOut++
			}
			s.packs.mu.RUnlock()
		}
		if ruledOut < 900 {
			t.Fatalf("filter ruled out only %d of 1000 absent blocks", ruledOut)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir)
	defer s.Close()
	if c := s.packs.filter.capacity; c < 190 {
		t.Fatalf("filter capacity %d after reopening a store of 190 blocks", c)
	}
	check(s)
}
