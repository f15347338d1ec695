package node

import (
	"errors"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Peers that serve invalid ads by table sync lose standing. An honest peer
// serves only ads it verified itself, so an invalid one (a forged or
// malformed ad, one of another pool, a response over the limits) is the
// serving peer's doing, whoever signed the ad. Each faulty response counts
// one fault; the count decays like GossipSub's invalid-delivery counter
// (P4), and while it lasts the peer
//
//   - gets an application-specific GossipSub score (P5) of
//     syncFaultWeight × count², as if it had forwarded that many invalid
//     ads by gossip: one fault puts it below zero (out of the mesh, no peer
//     exchange from it), three below the gossip threshold;
//   - is not pulled from (anti-entropy, pull on connect, pull-back) until
//     the count decays below syncSuspendAt, ~9 minutes after one fault.
//
// What clock skew and relay delay explain is no fault: an ad that expired
// or lies in the future by less than syncClockGrace, and, as on gossip, an
// ad that is stale or already held (those are never verified at all).
const (
	syncFaultWeight = -100
	syncFaultDecay  = time.Hour // a count falls to syncFaultForget in this time
	syncFaultForget = 0.01      // below this the record goes
	syncSuspendAt   = 0.5
	maxFaultPeers   = 1024
	// syncClockGrace: a server whose clock is within MaxClockSkew of ours
	// accepted an ad at most MaxClockSkew ahead of its clock, and drops it
	// once it expires by its clock; twice the skew covers both clocks.
	syncClockGrace = 2 * protocol.MaxClockSkew
)

// errSyncFault: a table-sync response carried invalid ads.
var errSyncFault = errors.New("peer served invalid ads")

// errSyncSuspended: the peer served invalid ads recently; it is not pulled from.
var errSyncSuspended = errors.New("peer suspended from table sync")

// syncFaults holds the decaying fault count of peers that served invalid
// ads by table sync, for at most maxFaultPeers peers. The zero value is
// ready; it is safe for concurrent use.
type syncFaults struct {
	mu sync.Mutex
	m  map[peer.ID]faultCount
}

// faultCount is a count as of at.
type faultCount struct {
	n  float64
	at time.Time
}

func (c faultCount) decayed(now time.Time) float64 {
	dt := now.Sub(c.at)
	if dt <= 0 {
		return c.n
	}
	return c.n * math.Pow(syncFaultForget, dt.Seconds()/syncFaultDecay.Seconds())
}

// add counts a fault of p at now and returns p's count.
func (f *syncFaults) add(p peer.ID, now time.Time) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[peer.ID]faultCount{}
	}
	c, ok := f.m[p]
	if !ok && len(f.m) >= maxFaultPeers {
		f.evict(now)
	}
	n := 1.0
	if ok {
		n += c.decayed(now)
	}
	f.m[p] = faultCount{n, now}
	return n
}

// evict makes room for one more peer: records decayed below
// syncFaultForget go, and if none did, the lowest count goes. Fresh
// identities that fault once each thus push out one another, not a peer
// that keeps faulting.
func (f *syncFaults) evict(now time.Time) {
	var low peer.ID
	lowN := math.Inf(1)
	for q, c := range f.m {
		n := c.decayed(now)
		if n < syncFaultForget {
			delete(f.m, q)
			continue
		}
		if n < lowN {
			low, lowN = q, n
		}
	}
	if len(f.m) >= maxFaultPeers {
		delete(f.m, low)
	}
}

// count returns p's decayed fault count at now (0 for a peer without faults).
func (f *syncFaults) count(p peer.ID, now time.Time) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.m[p]
	if !ok {
		return 0
	}
	n := c.decayed(now)
	if n < syncFaultForget {
		delete(f.m, p)
		return 0
	}
	return n
}

// suspended reports whether table sync with p is off at now.
func (f *syncFaults) suspended(p peer.ID, now time.Time) bool {
	return f.count(p, now) >= syncSuspendAt
}

// score is p's GossipSub application-specific score at now.
func (f *syncFaults) score(p peer.ID, now time.Time) float64 {
	n := f.count(p, now)
	return syncFaultWeight * n * n
}

// appScore is GossipSub's AppSpecificScore. GossipSub calls it under its
// own lock: it only reads syncFaults.
func (n *Node) appScore(p peer.ID) float64 { return n.faults.score(p, n.now()) }

// syncAdFault reports whether err, from verifying ad sa of a table-sync
// response at now, is the serving peer's fault (see syncFaults).
func syncAdFault(sa *pb.SignedAd, err error, now time.Time) bool {
	future, expired := errors.Is(err, protocol.ErrAdFuture), errors.Is(err, protocol.ErrAdExpired)
	if !future && !expired {
		return true
	}
	// The time checks run after the signature's: these bytes decode.
	var ad pb.CapacityAd
	if proto.Unmarshal(sa.GetAd(), &ad) != nil {
		return true
	}
	signed := time.UnixMilli(ad.TimestampMs)
	if future {
		return signed.After(now.Add(syncClockGrace))
	}
	return !signed.Add(time.Duration(ad.TtlMs) * time.Millisecond).After(now.Add(-syncClockGrace))
}

// syncFault counts a faulty table-sync response from p (see syncFaults).
func (n *Node) syncFault(p peer.ID, why error) {
	c := n.faults.add(p, n.now())
	n.adStats.SyncFaults.Add(1)
	n.log.Info("table-sync peer served invalid ads", "peer", p, "faults", math.Round(c*100)/100, "err", why)
}
