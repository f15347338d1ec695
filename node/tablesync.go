package node

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Table sync: a node that connects to a peer pulls the peer's capacity table
// over a direct stream, sending the digest of what it holds so only newer
// ads come back. Each relayed ad carries its advertiser's signature and is
// verified like a gossiped one. This is how a joining node learns the pool
// at once instead of waiting for every peer's next periodic ad, and, run
// against a random peer each round, it is anti-entropy for ads that gossip
// dropped.

const (
	syncTimeout     = 5 * time.Second
	maxAdsPerSync   = 400 // keeps a response well under MaxTableResponse
	maxSyncInFlight = 8
)

func (n *Node) handleTableStream(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	var req pb.TableRequest
	if err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTableRequest, &req); err != nil {
		n.log.Debug("table request", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	if req.Pool != n.cfg.Pool {
		_ = s.Reset()
		return
	}
	if len(req.Known) > protocol.MaxTableEntries {
		_ = s.Reset()
		return
	}
	known := make(map[peer.ID]uint64, len(req.Known))
	for _, k := range req.Known {
		known[peer.ID(k.PeerId)] = k.Seq
	}
	ads := n.table.Newer(known, maxAdsPerSync)
	if self := n.selfAd(); self != nil {
		if seq, ok := known[n.id]; !ok || seq < self.seq {
			ads = append(ads, self.signed)
		}
	}
	if err := protocol.WriteMsg(s, &pb.TableResponse{Ads: ads}); err != nil {
		n.log.Debug("table response", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
	}
}

// syncFrom pulls p's table. Concurrency is bounded by syncSem.
func (n *Node) syncFrom(ctx context.Context, p peer.ID) error {
	select {
	case n.syncSem <- struct{}{}:
		defer func() { <-n.syncSem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "table-sync"), p, protocol.TableProtocol)
	if err != nil {
		return fmt.Errorf("table sync with %s: %w", p, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	known := n.table.Digest()
	if err := protocol.WriteMsg(s, &pb.TableRequest{Pool: n.cfg.Pool, Known: known}); err != nil {
		_ = s.Reset()
		return fmt.Errorf("table sync with %s: %w", p, err)
	}
	_ = s.CloseWrite()
	var resp pb.TableResponse
	if err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTableResponse, &resp); err != nil {
		_ = s.Reset()
		return fmt.Errorf("table sync with %s: %w", p, err)
	}
	if len(resp.Ads) > maxAdsPerSync+1 {
		return fmt.Errorf("table sync with %s: %d ads, limit %d", p, len(resp.Ads), maxAdsPerSync+1)
	}
	now := n.now()
	for _, sa := range resp.Ads {
		if n.knownAd(sa) {
			continue
		}
		v, err := protocol.VerifyAd(sa, "", n.cfg.Pool, now)
		if err != nil {
			n.adStats.reject(err)
			continue
		}
		if v.Peer == n.id {
			continue
		}
		n.storeAd(v, "sync")
	}
	return nil
}

// peekAd decodes an ad's peer and seq without verifying anything.
func peekAd(sa *pb.SignedAd) (peer.ID, uint64, bool) {
	if sa == nil || len(sa.Ad) > protocol.MaxAdSize {
		return "", 0, false
	}
	var ad pb.CapacityAd
	if err := proto.Unmarshal(sa.Ad, &ad); err != nil {
		return "", 0, false
	}
	pid, err := peer.IDFromBytes(ad.PeerId)
	if err != nil {
		return "", 0, false
	}
	return pid, ad.Seq, true
}

// knownAd reports, without verifying the signature, whether the table
// already holds this ad or a newer one from the same peer (or it is this
// node's own). Signature checks dominate the CPU cost of a pool's ads, and
// most relayed or gossiped copies are duplicates; a forged seq here can only
// make the node skip an ad, never accept one.
func (n *Node) knownAd(sa *pb.SignedAd) bool {
	pid, seq, ok := peekAd(sa)
	return ok && (pid == n.id || seq <= n.table.Seq(pid))
}
