package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// selfAd is the node's own latest signed ad.
type selfAd struct {
	seq    uint64
	ad     *pb.CapacityAd
	signed *pb.SignedAd
	data   []byte
}

func (n *Node) selfAd() *selfAd {
	n.adMu.Lock()
	defer n.adMu.Unlock()
	return n.self
}

// SetLoadFunc sets how the node reads its current load for ads.
func (n *Node) SetLoadFunc(f func() api.Load) {
	n.adMu.Lock()
	n.loadFn = f
	n.adMu.Unlock()
}

// SetWarmFunc sets how the node reads its warm models for ads.
func (n *Node) SetWarmFunc(f func() []string) {
	n.adMu.Lock()
	n.warmFn = f
	n.adMu.Unlock()
}

// AdChanged asks for an ad to be published soon (coalesced), e.g. when the
// load or the warm models changed.
func (n *Node) AdChanged() {
	select {
	case n.adTrigger <- struct{}{}:
	default:
	}
}

// nextAd builds and signs a fresh ad. seq is time-based so that it keeps
// growing across restarts without persisting a counter.
func (n *Node) nextAd() (*selfAd, error) {
	n.adMu.Lock()
	defer n.adMu.Unlock()
	now := n.now()
	seq := uint64(now.UnixMicro())
	if n.self != nil && seq <= n.self.seq {
		seq = n.self.seq + 1
	}
	if _, avail, err := readMeminfo("/proc/meminfo"); err == nil {
		n.probe.MemoryFree = min(avail, n.probe.MemoryTotal)
	}
	load := n.loadFn()
	slots := n.advertisedSlots(load)
	ad := &pb.CapacityAd{
		Version:     protocol.Version,
		PeerId:      []byte(n.id),
		Pool:        n.cfg.Pool,
		Seq:         seq,
		TimestampMs: now.UnixMilli(),
		TtlMs:       n.cfg.AdTTL.Milliseconds(),
		Capacity: &pb.Capacity{
			CpuMillis:   n.probe.CPUMillis,
			MemoryTotal: n.probe.MemoryTotal,
			MemoryFree:  n.probe.MemoryFree,
			DiskFree:    n.probe.DiskFree,
			Gpus:        n.probe.GPUs,
		},
		Executors:    n.execs,
		WarmModels:   n.warmFn(),
		Load:         &pb.Load{Running: int32(load.Running), Queued: int32(load.Queued), Slots: int32(slots)},
		Price:        &pb.PricePolicy{PerTaskMicros: n.cfg.PricePerTaskMicros},
		Templates:    n.offeredTemplates(),
		AgentVersion: "swarmgen/" + Version,
		Labels:       n.cfg.Labels,
	}
	if !n.cfg.Provide {
		ad.Templates = []string{"none"}
	}
	signed, err := protocol.SignAd(n.key, ad)
	if err != nil {
		return nil, err
	}
	data, err := protocol.MarshalSignedAd(signed)
	if err != nil {
		return nil, fmt.Errorf("marshal ad: %w", err)
	}
	if len(data) > protocol.MaxAdSize {
		return nil, fmt.Errorf("own ad is %d bytes, over the %d limit: fewer labels or templates", len(data), protocol.MaxAdSize)
	}
	n.self = &selfAd{seq: seq, ad: ad, signed: signed, data: data}
	return n.self, nil
}

// freeMemory is the memory free at the last ad (nextAd refreshes it under
// adMu; the rest of the probe does not change after start).
func (n *Node) freeMemory() int64 {
	n.adMu.Lock()
	defer n.adMu.Unlock()
	return n.probe.MemoryFree
}

// advertisedSlots is the slot count an ad carries for load: none when the
// node does not provide.
func (n *Node) advertisedSlots(load api.Load) int {
	switch {
	case !n.cfg.Provide:
		return 0
	case load.Slots > 0:
		return load.Slots
	}
	return n.defaultSlots()
}

func (n *Node) defaultSlots() int {
	if n.cfg.Slots > 0 {
		return n.cfg.Slots
	}
	s := int(n.probe.CPUMillis / 1000)
	if s < 1 {
		s = 1
	}
	return s
}

// Ads after AdChanged: the change must settle for adSettle, and what is
// news then (adNews: what the node offers, or whether it has a free slot,
// compared with the last ad it published) goes out, at most one such ad
// per adChangeEvery; load counts that move while it stays full (or stays
// free) wait for the periodic ad. The settling filters flaps: a provider
// between two jobs is free for a few milliseconds, and announcing that to
// the pool (every ad costs every node a signature check) told nobody
// anything. Submitters do not wait for these ads: a coordinator counts its
// own assignments against a peer's advertised slots, and a bid is answered
// from the provider's live state.
const (
	adSettle      = 500 * time.Millisecond
	adChangeEvery = time.Second
)

// adNews reports whether an ad built now would tell the pool something
// that should not wait for the periodic ad: other executors, warm models,
// templates or slots, or a change between having room for another task
// and not. With 50 busy providers, publishing every load change (once a
// second each) cost each node ~2 500 signature checks a second, a fifth of
// the pool's CPU in BenchmarkSchedulingThroughput, for counts no scheduler
// decision waits for.
func (n *Node) adNews() bool {
	n.adMu.Lock()
	prev := n.self
	var load api.Load
	var warm []string
	if prev != nil {
		load, warm = n.loadFn(), n.warmFn()
	}
	n.adMu.Unlock()
	if prev == nil {
		return true
	}
	ad := prev.ad
	slots := n.advertisedSlots(load)
	room := func(running, queued, slots int) bool { return running+queued < slots }
	pl := ad.GetLoad()
	return int32(slots) != pl.GetSlots() ||
		room(load.Running, load.Queued, slots) != room(int(pl.GetRunning()), int(pl.GetQueued()), int(pl.GetSlots())) ||
		!slices.Equal(warm, ad.WarmModels) ||
		!slices.Equal(n.execs, ad.Executors) ||
		(n.cfg.Provide && !slices.Equal(n.offeredTemplates(), ad.Templates))
}

// publishLoop publishes an ad at start, every AdInterval, and soon after
// AdChanged when the change is news (see adSettle and adNews).
func (n *Node) publishLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.AdInterval)
	defer t.Stop()
	var last time.Time
	publish := true
	for {
		if publish {
			self, err := n.nextAd()
			if err != nil {
				n.log.Error("build ad", "err", err)
			} else if err := n.topic.Publish(ctx, self.data); err != nil && ctx.Err() == nil {
				n.log.Warn("publish ad", "err", err)
			}
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			publish = true
		case <-n.adTrigger:
			wait := max(adSettle, adChangeEvery-time.Since(last))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			// What is not news waits for the periodic ad.
			publish = n.adNews()
		}
	}
}

// Peers returns the capacity table as API rows, this node first.
func (n *Node) Peers() []api.Peer {
	var out []api.Peer
	if s := n.selfAd(); s != nil {
		row := peerRow(s.ad, n.now(), n.now().Add(n.cfg.AdTTL))
		row.Self = true
		out = append(out, row)
	}
	for _, e := range n.table.Snapshot() {
		out = append(out, peerRow(e.Ad, e.Received, e.Expires))
	}
	return out
}

func peerRow(ad *pb.CapacityAd, seen, expires time.Time) api.Peer {
	pid := peerIDString(ad.PeerId)
	row := api.Peer{
		PeerID:     pid,
		Executors:  nonNil(ad.Executors),
		WarmModels: nonNil(ad.WarmModels),
		Templates:  ad.Templates,
		Labels:     ad.Labels,
		Version:    ad.AgentVersion,
		LastSeen:   seen.UTC(),
		Expires:    expires.UTC(),
		GPUs:       []api.GPU{},
	}
	if c := ad.Capacity; c != nil {
		row.CPU = float64(c.CpuMillis) / 1000
		row.Memory = c.MemoryTotal
		row.MemoryFree = c.MemoryFree
		row.DiskFree = c.DiskFree
		for _, g := range c.Gpus {
			row.GPUs = append(row.GPUs, api.GPU{Name: g.Name, Memory: g.Memory})
		}
	}
	if l := ad.Load; l != nil {
		row.Load = api.Load{Running: int(l.Running), Queued: int(l.Queued), Slots: int(l.Slots)}
	}
	if p := ad.Price; p != nil {
		row.PricePerTaskMicros = p.PerTaskMicros
	}
	return row
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (n *Node) offeredTemplates() []string {
	if n.provider == nil {
		return n.cfg.Templates
	}
	return n.provider.offeredTemplates()
}
