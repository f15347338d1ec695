package scheduler

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
)

func req(mod func(*Requirements)) *Requirements {
	r := &Requirements{TemplateID: "stable-diffusion", Executors: []string{"process", "docker"}, Model: "stabilityai/sd-turbo"}
	if mod != nil {
		mod(r)
	}
	return r
}

func peersOf(cs []Candidate) []peer.ID {
	out := make([]peer.ID, len(cs))
	for i, c := range cs {
		out[i] = c.Peer
	}
	return out
}

func TestRankFiltersWithNamedReasons(t *testing.T) {
	table := []Entry{
		entry(t, 0),                                     // no GPU
		entry(t, 1, withGPU(24<<30)),                    // fits
		entry(t, 2, withGPU(4<<30)),                     // GPU too small
		entry(t, 3, withGPU(24<<30), withLoad(4, 4, 4)), // full
		entry(t, 4, withGPU(24<<30), withExecutors("wasm")),
		entry(t, 5, withGPU(24<<30), withTemplates("fractal")),
		entry(t, 6, withGPU(24<<30), withMemory(2<<30, 1<<30)),
		entry(t, 7, withGPU(24<<30), withLabels(map[string]string{"region": "us"})),
		entry(t, 8, withGPU(24<<30), withPrice(500)),
		entry(t, 9), // no GPU
	}
	expired := entry(t, 10, withGPU(24<<30))
	expired.Expires = t0
	table = append(table, expired)
	sc := SelectContext{Now: t0, Req: req(func(r *Requirements) {
		r.Resources = inference.Resources{GPUs: 1, GPUMemory: 16 << 30, Memory: 8 << 30}
		r.Constraints.Labels = map[string]string{}
		r.Constraints.MaxPricePerTaskMicros = 100
	})}
	cands, rej := Rank(table, sc)
	if got := peersOf(cands); !slices.Equal(got, []peer.ID{testPeer(t, 1), testPeer(t, 7)}) {
		t.Fatalf("candidates = %v", got)
	}
	want := map[Reason]int{ReasonNoGPU: 2, ReasonGPUMemory: 1, ReasonFull: 1, ReasonExecutorMissing: 1,
		ReasonTemplateNotAllowed: 1, ReasonMemory: 1, ReasonOverMaxPrice: 1, ReasonExpired: 1}
	for r, n := range want {
		if rej.Count(r) != n {
			t.Errorf("%s: %d peers, want %d (%v)", r, rej.Count(r), n, rej.Counts())
		}
	}
	sum := rej.Summary()
	if sum[0] != "2 peers lack a GPU" || !slices.Contains(sum, "1 peer is full") {
		t.Errorf("summary = %q", sum)
	}
	// Label constraint.
	sc.Req.Constraints.Labels = map[string]string{"region": "eu"}
	_, rej = Rank(table, sc)
	if rej.Count(ReasonConstraintLabel) != 8 { // all that got that far: none is in "eu"
		t.Errorf("label rejections = %v", rej.Counts())
	}
	// Peer allow/deny lists and caller exclusions.
	sc.Req.Constraints = jobspec.Constraints{}
	sc.Req.Constraints.ExcludePeers = []string{testPeer(t, 1).String()}
	sc.Exclude = map[peer.ID]Reason{testPeer(t, 7): ReasonExcludedAfterFailure}
	cands, rej = Rank(table, sc)
	if got := peersOf(cands); !slices.Equal(got, []peer.ID{testPeer(t, 8)}) || rej.Count(ReasonExcludedByJob) != 1 || rej.Count(ReasonExcludedAfterFailure) != 1 {
		t.Errorf("cands %v rej %v", peersOf(cands), rej.Counts())
	}
}

func TestRankPreferences(t *testing.T) {
	base := SelectContext{Now: t0, Req: req(func(r *Requirements) { r.PreferGPU = true; r.Resources.GPUMemory = 4 << 30 })}
	rank := func(sc SelectContext, table ...Entry) []peer.ID {
		cs, _ := Rank(table, sc)
		return peersOf(cs)
	}
	p := func(i int) peer.ID { return testPeer(t, i) }
	// GPU preferred (without being required) beats CPU.
	if got := rank(base, entry(t, 0), entry(t, 1, withGPU(8<<30))); got[0] != p(1) {
		t.Errorf("gpu: %v", got)
	}
	// Warm model beats cold.
	if got := rank(base, entry(t, 0), entry(t, 1, withWarm("stabilityai/sd-turbo"))); got[0] != p(1) {
		t.Errorf("warm: %v", got)
	}
	// Cheaper beats dearer.
	if got := rank(base, entry(t, 0, withPrice(900)), entry(t, 1, withPrice(10))); got[0] != p(1) {
		t.Errorf("price: %v", got)
	}
	// More free slots beat fewer.
	if got := rank(base, entry(t, 0, withLoad(3, 0, 4)), entry(t, 1, withLoad(0, 0, 4))); got[0] != p(1) {
		t.Errorf("free: %v", got)
	}
	// Reliable beats flaky.
	sc := base
	sc.Reliability = func(q peer.ID) float64 {
		if q == p(0) {
			return Reliability{Successes: 1, Failures: 9}.Score()
		}
		return Reliability{Successes: 9}.Score()
	}
	if got := rank(sc, entry(t, 0), entry(t, 1)); got[0] != p(1) {
		t.Errorf("reliability: %v", got)
	}
	// Spread: a peer already holding tasks of the job ranks lower.
	sc = base
	sc.Placed = map[peer.ID]int{p(1): 2}
	if got := rank(sc, entry(t, 0), entry(t, 1)); got[0] != p(0) {
		t.Errorf("spread: %v", got)
	}
	// Ties are broken by a seeded shuffle: same seed, same order; the
	// order is not just peer-ID order for every seed.
	var table []Entry
	for i := range 8 {
		table = append(table, entry(t, i))
	}
	sc = base
	sc.Seed = SeedFor("job-a", 0)
	first := rank(sc, table...)
	if again := rank(sc, table...); !slices.Equal(first, again) {
		t.Error("same seed gave another order")
	}
	differs := false
	for s := range uint64(10) {
		sc.Seed = s
		if !slices.Equal(rank(sc, table...), first) {
			differs = true
		}
	}
	if !differs {
		t.Error("tie order ignores the seed")
	}
}

func TestRankSelfIsACandidate(t *testing.T) {
	table := []Entry{entry(t, 0), entry(t, 1), entry(t, 2)}
	for _, self := range []int{0, 1, 2} {
		cs, _ := Rank(table, SelectContext{Now: t0, Req: req(nil), Self: testPeer(t, self), Seed: 7})
		if len(cs) != 3 || cs[0].Peer != testPeer(t, self) || !cs[0].Self {
			t.Fatalf("self %d: %v", self, peersOf(cs))
		}
	}
}

func TestRankBusyPeerIsAskedUntilQueueDepth(t *testing.T) {
	busy := entry(t, 0, withLoad(4, 2, 4)) // slots taken, short queue: still asked, ranked last
	idle := entry(t, 1, withLoad(0, 0, 4)) // free
	full := entry(t, 2, withLoad(4, 4, 4)) // slots and a queue as deep again: full
	cs, rej := Rank([]Entry{busy, idle, full}, SelectContext{Now: t0, Req: req(nil)})
	if got := peersOf(cs); !slices.Equal(got, []peer.ID{idle.Peer, busy.Peer}) || rej.Count(ReasonFull) != 1 {
		t.Fatalf("candidates %v, rejections %v", got, rej.Counts())
	}
	// What this node assigned since the ad counts too.
	cs, _ = Rank([]Entry{idle}, SelectContext{Now: t0, Req: req(nil), SlotDelta: map[peer.ID]int{idle.Peer: -8}})
	if len(cs) != 0 {
		t.Fatal("peer filled by our own assignments still a candidate")
	}
}
