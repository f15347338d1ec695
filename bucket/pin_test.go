package bucket

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestGCExpiredPins(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}
	s := newStore(t, nil, WithClock(clk.Now), WithResultTTL(time.Hour))
	ctx := context.Background()
	shared := pseudoRandom(20, 300<<10) // in both DAGs
	a, _, err := s.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(21, 500<<10), "shared": shared})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := s.ImportFiles(ctx, map[string][]byte{"b": []byte("b"), "shared": shared})
	if err != nil {
		t.Fatal(err)
	}
	// Bucket over a lives longer than a's own result pin.
	bucket, err := s.Assemble(ctx, []Entry{{Name: "task-0", Root: a}}, &Manifest{Job: "j"}, 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, b, 2*time.Hour, "b-longer"); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx)
	if err != nil || st.BlocksRemoved != 0 || st.ExpiredPins != 0 {
		t.Fatalf("GC with live pins: %+v %v", st, err)
	}
	clk.Add(90 * time.Minute) // a's result pin expired; bucket and b live
	st, err = s.GC(ctx)
	if err != nil || st.ExpiredPins != 1 || st.BlocksRemoved != 0 {
		t.Fatalf("GC after a's pin expired: %+v %v (bucket still reaches a)", st, err)
	}
	if _, err := s.checkComplete(ctx, a); err != nil {
		t.Fatalf("a collected while the bucket reaches it: %v", err)
	}
	clk.Add(time.Hour) // b expired, bucket live
	st, err = s.GC(ctx)
	if err != nil || st.ExpiredPins != 1 || st.BlocksRemoved == 0 {
		t.Fatalf("GC after b expired: %+v %v", st, err)
	}
	if has, _ := s.Has(ctx, b); has {
		t.Fatal("b's root survived")
	}
	if _, err := s.checkComplete(ctx, bucket); err != nil {
		t.Fatalf("bucket damaged by GC (shared blocks must stay): %v", err)
	}
	clk.Add(time.Hour) // everything expired
	st, err = s.GC(ctx)
	if err != nil || st.ExpiredPins != 1 || st.BlocksKept != 0 {
		t.Fatalf("final GC: %+v %v", st, err)
	}
	keys, _ := s.bs.AllKeysChan(ctx)
	for k := range keys {
		t.Fatalf("block %s left after all pins expired", k)
	}
	pins, _ := s.Pins(ctx)
	if len(pins) != 0 {
		t.Fatalf("pins left: %v", pins)
	}
}

func TestGCLoopAndUnpin(t *testing.T) {
	s := newStore(t, nil, WithGCInterval(50*time.Millisecond))
	ctx := context.Background()
	root, _, err := s.ImportFiles(ctx, map[string][]byte{"x": []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unpin(ctx, root); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		has, err := s.Has(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("GC loop did not collect the unpinned root")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := New(ctx, nil, dir, WithGCInterval(0), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	root, _, err := s.ImportFiles(ctx, map[string][]byte{"a": pseudoRandom(30, 300<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := New(ctx, nil, dir, WithGCInterval(0), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	pins, err := s2.Pins(ctx)
	if err != nil || len(pins) != 1 || !pins[0].Root.Equals(root) {
		t.Fatalf("pins after reopen: %v %v", pins, err)
	}
	if _, err := s2.checkComplete(ctx, root); err != nil {
		t.Fatalf("DAG after reopen: %v", err)
	}
}

// TestRepinKeepsLaterExpiry: pinning a root again keeps the later expiry
// and the first creation time, also for a pin written before a reopen and
// when the pin filter has been rebuilt past its capacity.
func TestRepinKeepsLaterExpiry(t *testing.T) {
	smallFilters(t, 4)
	dir := t.TempDir()
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	open := func() *Store {
		s, err := New(ctx, nil, dir, WithGCInterval(0), WithLogger(testLogger(t)), WithClock(clock.Now))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	root, _, err := s.ImportFiles(ctx, map[string][]byte{"a": []byte("pinned twice")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, root, 48*time.Hour, "long"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	for i := range 20 { // past the filter's capacity: it is rebuilt
		r, _, err := s.ImportFiles(ctx, map[string][]byte{"f": []byte(fmt.Sprint("other ", i))})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Pin(ctx, r, time.Hour, "other"); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(time.Minute)
	if err := s.Pin(ctx, root, time.Hour, "short"); err != nil {
		t.Fatal(err)
	}
	pins, err := s.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pins {
		if !p.Root.Equals(root) {
			continue
		}
		want := time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
		if !p.Expires.Equal(want) || p.Name != "short" || !p.Created.Equal(want.Add(-48*time.Hour)) {
			t.Fatalf("re-pinned: %+v, want expiry %s kept", p, want)
		}
		return
	}
	t.Fatal("pin gone")
}
