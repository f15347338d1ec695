package node

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// claimPeer is a per-peer rate limit held in last (peer → time of its last
// claim): it reports whether p may act at now, at most once per every, and
// if so records it. last holds at most max peers. Peer IDs cost nothing to
// make, so the bound must hold whatever the churn: when the map is full,
// entries older than every (which no longer limit anything) are dropped,
// and if it is still full (max peers claimed within one period) the claim
// is refused. Both users guard an optimisation that something else covers
// (anti-entropy, gossip), so refusing loses a shortcut, never an ad; evicting
// a recent entry instead would let a churn of fresh IDs lift the limit on
// the peers they pushed out.
func claimPeer(last map[peer.ID]time.Time, p peer.ID, now time.Time, every time.Duration, max int) bool {
	if t, ok := last[p]; ok {
		if now.Sub(t) < every {
			return false
		}
		last[p] = now
		return true
	}
	if len(last) >= max {
		for q, t := range last {
			if now.Sub(t) >= every {
				delete(last, q)
			}
		}
		if len(last) >= max {
			return false
		}
	}
	last[p] = now
	return true
}
