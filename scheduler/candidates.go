package scheduler

import (
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
)

// Requirements are what a job asks of a peer, derived from its spec.
type Requirements struct {
	TemplateID string              `json:"templateId"`
	Executors  []string            `json:"executors"` // kinds that can run the template; the first is preferred
	Image      string              `json:"image,omitempty"`
	Model      string              `json:"model,omitempty"`
	Resources  inference.Resources `json:"resources"`
	// PreferGPU ranks peers with a GPU (with GPUMemory, if set) first.
	PreferGPU   bool                `json:"preferGpu,omitempty"`
	Constraints jobspec.Constraints `json:"constraints"`
}

// Candidate is a peer that passed the filters, with what ranking found.
type Candidate struct {
	Peer      peer.ID
	Entry     Entry
	FreeSlots int
	HasGPU    bool // a GPU fit for the job (for PreferGPU)
	Warm      bool // the job's model is loaded there
	Price     int64
	Self      bool
	Score     float64
}

// SelectContext is the state a selection depends on besides the table.
type SelectContext struct {
	Now time.Time
	Req *Requirements
	// Exclude rejects peers for a reason of the caller's (e.g.
	// ReasonExcludedAfterFailure).
	Exclude map[peer.ID]Reason
	// SlotDelta corrects an ad's free slots by what the caller knows
	// happened since the ad (tasks it assigned there, tasks that finished).
	SlotDelta map[peer.ID]int
	// Placed counts the job's tasks already on each peer (spread).
	Placed map[peer.ID]int
	// Reliability returns a peer's success score in [0,1] (nil: 0.5 each).
	Reliability func(peer.ID) float64
	// Self is this node's peer ID: a small bonus (no transfer of results).
	Self peer.ID
	// Seed orders ties; derive it from the job ID so runs replay.
	Seed uint64
}

// Checker is one feasibility filter: it returns the reason it rejects c,
// or "" to let it pass. Checkers see c.Entry and c.FreeSlots.
type Checker interface {
	Check(sc *SelectContext, c *Candidate) Reason
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(sc *SelectContext, c *Candidate) Reason

// Check calls f.
func (f CheckerFunc) Check(sc *SelectContext, c *Candidate) Reason { return f(sc, c) }

// CandidateIterator yields candidates one at a time; nil means done.
// Iterators chain: a source over the table, then feasibility filters.
type CandidateIterator interface {
	Next() *Candidate
}

// sourceIterator yields every table entry.
type sourceIterator struct {
	sc      *SelectContext
	entries []Entry
	i       int
}

func (s *sourceIterator) Next() *Candidate {
	if s.i >= len(s.entries) {
		return nil
	}
	e := s.entries[s.i]
	s.i++
	c := &Candidate{Peer: e.Peer, Entry: e, Self: e.Peer == s.sc.Self && s.sc.Self != ""}
	if l := e.Ad.GetLoad(); l != nil {
		c.FreeSlots = int(l.Slots) - int(l.Running) - int(l.Queued) + s.sc.SlotDelta[e.Peer]
	}
	if p := e.Ad.GetPrice(); p != nil {
		c.Price = p.PerTaskMicros
	}
	return c
}

// FeasibilityIterator passes on the candidates every checker accepts and
// records the first reason of each rejection.
type FeasibilityIterator struct {
	src      CandidateIterator
	sc       *SelectContext
	checkers []Checker
	rej      Rejections
}

// NewFeasibilityIterator chains checkers after src, recording into rej.
func NewFeasibilityIterator(src CandidateIterator, sc *SelectContext, rej Rejections, checkers ...Checker) *FeasibilityIterator {
	return &FeasibilityIterator{src: src, sc: sc, checkers: checkers, rej: rej}
}

// Next returns the next feasible candidate or nil.
func (f *FeasibilityIterator) Next() *Candidate {
	for {
		c := f.src.Next()
		if c == nil {
			return nil
		}
		ok := true
		for _, ch := range f.checkers {
			if r := ch.Check(f.sc, c); r != "" {
				f.rej.Add(r, c.Peer)
				ok = false
				break
			}
		}
		if ok {
			return c
		}
	}
}

// DefaultCheckers are the filters in the order they run: cheap and
// decisive first, "full" last so that a peer that could never run the job
// is not reported as merely busy.
var DefaultCheckers = []Checker{
	CheckerFunc(checkExpired),
	CheckerFunc(checkExcluded),
	CheckerFunc(checkPeerConstraints),
	CheckerFunc(checkExecutor),
	CheckerFunc(checkTemplate),
	CheckerFunc(checkLabels),
	CheckerFunc(checkGPU),
	CheckerFunc(checkCPU),
	CheckerFunc(checkMemory),
	CheckerFunc(checkPrice),
	CheckerFunc(checkFull),
}

func checkExpired(sc *SelectContext, c *Candidate) Reason {
	if !c.Entry.Expires.After(sc.Now) {
		return ReasonExpired
	}
	return ""
}

func checkExcluded(sc *SelectContext, c *Candidate) Reason {
	return sc.Exclude[c.Peer]
}

func checkPeerConstraints(sc *SelectContext, c *Candidate) Reason {
	cs := sc.Req.Constraints
	if len(cs.ExcludePeers) == 0 && len(cs.Peers) == 0 {
		return ""
	}
	id := c.Peer.String()
	if slices.Contains(cs.ExcludePeers, id) {
		return ReasonExcludedByJob
	}
	if len(cs.Peers) > 0 && !slices.Contains(cs.Peers, id) {
		return ReasonConstraintPeer
	}
	return ""
}

func checkExecutor(sc *SelectContext, c *Candidate) Reason {
	for _, k := range sc.Req.Executors {
		if slices.Contains(c.Entry.Ad.GetExecutors(), k) {
			return ""
		}
	}
	return ReasonExecutorMissing
}

func checkTemplate(sc *SelectContext, c *Candidate) Reason {
	if ts := c.Entry.Ad.GetTemplates(); len(ts) > 0 && !slices.Contains(ts, sc.Req.TemplateID) {
		return ReasonTemplateNotAllowed
	}
	return ""
}

func checkLabels(sc *SelectContext, c *Candidate) Reason {
	labels := c.Entry.Ad.GetLabels()
	for k, v := range sc.Req.Constraints.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return ReasonConstraintLabel
		}
	}
	return ""
}

// fitGPUs counts the peer's GPUs with at least perGPU bytes.
func fitGPUs(c *Candidate, perGPU int64) int {
	n := 0
	for _, g := range c.Entry.Ad.GetCapacity().GetGpus() {
		if g.GetMemory() >= perGPU {
			n++
		}
	}
	return n
}

func checkGPU(sc *SelectContext, c *Candidate) Reason {
	r := sc.Req.Resources
	c.HasGPU = fitGPUs(c, r.GPUMemory) > 0
	if r.GPUs == 0 {
		return ""
	}
	if len(c.Entry.Ad.GetCapacity().GetGpus()) < r.GPUs {
		return ReasonNoGPU
	}
	if fitGPUs(c, r.GPUMemory) < r.GPUs {
		return ReasonGPUMemory
	}
	return ""
}

func checkCPU(sc *SelectContext, c *Candidate) Reason {
	if need := sc.Req.Resources.CPUMillis; need > 0 && c.Entry.Ad.GetCapacity().GetCpuMillis() < need {
		return ReasonCPU
	}
	return ""
}

func checkMemory(sc *SelectContext, c *Candidate) Reason {
	if need := sc.Req.Resources.Memory; need > 0 && c.Entry.Ad.GetCapacity().GetMemoryTotal() < need {
		return ReasonMemory
	}
	return ""
}

func checkPrice(sc *SelectContext, c *Candidate) Reason {
	if max := sc.Req.Constraints.MaxPricePerTaskMicros; max > 0 && c.Price > max {
		return ReasonOverMaxPrice
	}
	return ""
}

// checkFull rejects a peer whose slots and a queue as deep again are
// taken: providers queue accepted tasks (BidPolicy.MaxQueue), and a queued
// task starts the moment a slot frees, with no bid round in between, so a
// busy peer is still worth asking. Its bid has the final word.
func checkFull(sc *SelectContext, c *Candidate) Reason {
	if c.FreeSlots+int(c.Entry.Ad.GetLoad().GetSlots()) <= 0 {
		return ReasonFull
	}
	return ""
}

// Ranking weights. Preference order: a GPU when the app wants one, then a
// warm model (saves a model load, often longer than the task), then
// reliability, then free capacity and spread, then price.
const (
	weightGPU         = 4.0
	weightWarm        = 3.0
	weightReliability = 2.0 // × (score-0.5)·2, in [-2, 2]
	weightFree        = 1.0 // × free slots clamped to [-4,4], /4
	weightMemory      = 0.5 // × free/total memory
	weightSpread      = 0.75
	weightPrice       = 1.0 // × price/max price among candidates
	weightSelf        = 0.25
)

// Rank filters entries with DefaultCheckers and returns the feasible
// candidates best first, plus why the others were rejected. Ties are
// broken by a shuffle seeded from sc.Seed, so the same inputs give the
// same order.
func Rank(entries []Entry, sc SelectContext) ([]Candidate, Rejections) {
	rej := make(Rejections)
	sorted := slices.Clone(entries)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Peer < sorted[j].Peer })
	it := NewFeasibilityIterator(&sourceIterator{sc: &sc, entries: sorted}, &sc, rej, DefaultCheckers...)
	var out []Candidate
	var maxPrice int64
	for c := it.Next(); c != nil; c = it.Next() {
		out = append(out, *c)
		maxPrice = max(maxPrice, c.Price)
	}
	for i := range out {
		out[i].Score = score(&sc, &out[i], maxPrice)
	}
	rng := rand.New(rand.NewPCG(sc.Seed, 0x5eed))
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	return out, rej
}

func score(sc *SelectContext, c *Candidate, maxPrice int64) float64 {
	s := 0.0
	if sc.Req.PreferGPU && c.HasGPU {
		s += weightGPU
	}
	if sc.Req.Model != "" && slices.Contains(c.Entry.Ad.GetWarmModels(), sc.Req.Model) {
		c.Warm = true
		s += weightWarm
	}
	rel := 0.5
	if sc.Reliability != nil {
		rel = sc.Reliability(c.Peer)
	}
	s += weightReliability * (rel - 0.5) * 2
	s += weightFree * float64(max(min(c.FreeSlots, 4), -4)) / 4 // busy peers rank lower
	if capy := c.Entry.Ad.GetCapacity(); capy.GetMemoryTotal() > 0 {
		s += weightMemory * float64(capy.GetMemoryFree()) / float64(capy.GetMemoryTotal())
	}
	s -= weightSpread * float64(sc.Placed[c.Peer])
	if maxPrice > 0 {
		s -= weightPrice * float64(c.Price) / float64(maxPrice)
	}
	if c.Self {
		s += weightSelf
	}
	return s
}

// SeedFor derives a tie-break seed from a job ID.
func SeedFor(jobID string, salt uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(jobID))
	return h.Sum64() ^ salt
}
