package node

import (
	"fmt"
	"testing"

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
