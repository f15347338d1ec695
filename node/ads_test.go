package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/api"
)

// TestAdChangePublishesOnlyNews: a load change goes out early only when it
// flips whether the node has room (or what it offers changes) and the flip
// lasts; counts that move while it stays full wait for the periodic ad,
// which here is a minute away. The peer's table follows what was
// published.
func TestAdChangePublishesOnlyNews(t *testing.T) {
	mod := func(c *Config) { c.AdInterval = time.Minute; c.Slots = 4 }
	a := testNode(t, t.TempDir(), mod)
	b := testNode(t, t.TempDir(), mod)
	var mu sync.Mutex
	load, warm := api.Load{Slots: 4}, []string(nil)
	set := func(l api.Load, w []string) {
		mu.Lock()
		load, warm = l, w
		mu.Unlock()
		a.AdChanged()
	}
	a.SetLoadFunc(func() api.Load { mu.Lock(); defer mu.Unlock(); return load })
	a.SetWarmFunc(func() []string { mu.Lock(); defer mu.Unlock(); return warm })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Connect(ctx, a.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
	// Whatever a.AdChanged calls the node made itself at start are over
	// once its ad shows our load function's slots.
	a.AdChanged()
	eventually(t, 5*time.Second, "b holds a's ad", func() bool {
		e, ok := b.table.Get(a.ID())
		return ok && e.Ad.Load.GetSlots() == 4
	})
	seq := func() uint64 { return a.selfAd().seq }
	quiet := func(what string) {
		t.Helper()
		before := seq()
		// Long enough for the change and one queued before it to settle
		// and be judged, so the next step starts with none pending.
		time.Sleep(adChangeEvery + 2*adSettle + 200*time.Millisecond)
		if seq() != before {
			t.Fatalf("%s: an ad went out early", what)
		}
	}
	published := func(what string, check func(api.Load) bool) {
		t.Helper()
		before := seq()
		eventually(t, 3*time.Second, what+": a publishes", func() bool { return seq() != before })
		eventually(t, 3*time.Second, what+": b sees it", func() bool {
			e, ok := b.table.Get(a.ID())
			l := e.Ad.GetLoad()
			return ok && e.Ad.Seq == seq() && check(api.Load{Running: int(l.GetRunning()), Queued: int(l.GetQueued()), Slots: int(l.GetSlots())})
		})
	}
	set(api.Load{Running: 1, Slots: 4}, nil)
	quiet("one task of four slots")
	// Full for a moment, free again before the change settled: a flap.
	set(api.Load{Running: 4, Slots: 4}, nil)
	time.Sleep(adSettle / 5)
	set(api.Load{Running: 3, Slots: 4}, nil)
	quiet("full for a moment")
	set(api.Load{Running: 4, Slots: 4}, nil)
	published("full", func(l api.Load) bool { return l.Running == 4 })
	set(api.Load{Running: 4, Queued: 3, Slots: 4}, nil)
	quiet("still full, more queued")
	set(api.Load{Running: 4, Queued: 3, Slots: 4}, []string{"sd-turbo"})
	published("warm model", func(l api.Load) bool { return l.Queued == 3 })
	set(api.Load{Running: 2, Slots: 4}, []string{"sd-turbo"})
	published("room again", func(l api.Load) bool { return l.Running == 2 && l.Queued == 0 })
}
