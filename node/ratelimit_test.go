package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// outboundConn is an outbound connection to p as onConnected sees it; the
// rest of network.Conn is never called.
type outboundConn struct {
	network.Conn
	p peer.ID
}

func (c outboundConn) RemotePeer() peer.ID { return c.p }
func (c outboundConn) Stat() network.ConnStats {
	return network.ConnStats{Stats: network.Stats{Direction: network.DirOutbound}}
}

// TestSyncOnConnectLimitBounded: the pull-on-connect rate limit holds at
// most maxSyncedPeers entries however many peer IDs connect. (It kept one
// entry per peer that ever connected outbound and pruned only peers that
// left the capacity table, so peers that never got into it stayed for good.)
func TestSyncOnConnectLimitBounded(t *testing.T) {
	n := slowAdNodes(t, 1)[0]
	for i := 0; i < 3*maxSyncedPeers; i++ {
		n.onConnected(nil, outboundConn{p: peer.ID(fmt.Sprint("fresh-", i))})
	}
	n.syncedMu.Lock()
	got := len(n.synced)
	n.syncedMu.Unlock()
	if got > maxSyncedPeers {
		t.Fatalf("sync-on-connect limit holds %d peers, bound %d", got, maxSyncedPeers)
	}
}

// TestPullBackLimitHardBound: a churn of fresh peer IDs, all within one
// pullBackEvery, cannot grow the pull-back rate limit past
// maxPullBackPeers; pull-backs past it are refused until entries age out.
// (When every entry was recent nothing could be pruned and it inserted
// anyway.)
func TestPullBackLimitHardBound(t *testing.T) {
	var s syncSched
	now := time.Unix(1_800_000_000, 0)
	claimed := 0
	for i := 0; i < 3*maxPullBackPeers; i++ {
		if s.claimPullBack(peer.ID(fmt.Sprint("fresh-", i)), now) {
			claimed++
		}
	}
	if n := len(s.pulledBack); n > maxPullBackPeers {
		t.Fatalf("pull-back map holds %d peers, bound %d", n, maxPullBackPeers)
	}
	if claimed > maxPullBackPeers {
		t.Fatalf("%d pull-backs claimed in one period, bound %d", claimed, maxPullBackPeers)
	}
	// Once the entries are older than the period they limit nothing: room
	// again.
	if !s.claimPullBack("late", now.Add(pullBackEvery)) {
		t.Fatal("pull-back refused after the full map's entries aged out")
	}
	if n := len(s.pulledBack); n != 1 {
		t.Fatalf("after ageing out: %d entries, want 1", n)
	}
}
