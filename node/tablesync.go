package node

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// Table sync: a node that connects to a peer pulls the peer's capacity table
// over a direct stream, sending the digest of what it holds so only newer
// ads come back. Each relayed ad carries its advertiser's signature and is
// verified like a gossiped one. This is how a joining node learns the pool
// at once instead of waiting for every peer's next periodic ad, and, run
// each round against the peer that has news or a random one
// (antiEntropyLoop), it is anti-entropy for ads that gossip dropped.

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
	requester := s.Conn().RemotePeer()
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
		n.log.Debug("table response", "peer", requester, "err", err)
		_ = s.Reset()
		return
	}
	// The requester lists its own ad in its digest: if that is newer than
	// what this node holds, fetch it.
	if seq, ok := known[requester]; ok && seq > n.table.Seq(requester) {
		n.pullBack(requester)
	}
}

// pullBackEvery bounds pull-backs to one per peer per period.
const pullBackEvery = time.Second

// pullBack pulls the table of a peer whose request showed that its own ad
// is newer than the one this node holds (or unknown to it). Without it, a
// node's ad reached only the peers that happened to pull from it: a node
// whose on-connect syncs failed under load, and that no one's anti-entropy
// picked, stayed unknown to the pool until its next periodic ad, although
// it pulled from others every round. Only the requester's own entry
// triggers it: ads it relays spread by anti-entropy anyway, and pulling
// back for those too doubled the syncs of a converging pool. The digest
// is unverified: a peer can claim a seq it does not have, and the rate
// limit bounds what that costs (one pull from it per pullBackEvery,
// verified like any other).
//
// At most maxPullBacksWaiting pull-backs wait for a sync slot, each within
// its sync's deadline; past that a pull-back is dropped (the requester's
// ad spreads by anti-entropy anyway). Unbounded, pull-backs that fresh
// identities trigger at no cost to themselves, and then never answer,
// piled up ahead of every other sync. Dropping every pull-back that found
// no free slot instead slowed a 100-node pool's convergence by ~1 s: while
// a pool forms, the slots are busy most of the time.
//
// A peer suspended for serving invalid ads (syncFaults) is not pulled back.
func (n *Node) pullBack(p peer.ID) {
	if n.ctx.Err() != nil || n.faults.suspended(p, n.now()) || !n.tsync.claimPullBack(p, time.Now()) {
		return
	}
	if n.pullBacksWaiting.Add(1) > maxPullBacksWaiting {
		n.pullBacksWaiting.Add(-1)
		return
	}
	n.goRun("table-pull-back", func(ctx context.Context) {
		err := n.syncFromThen(ctx, p, func() { n.pullBacksWaiting.Add(-1) })
		if err != nil {
			n.log.Debug("table pull-back", "peer", p, "err", err)
		}
	})
}

// maxPullBacksWaiting bounds the pull-backs waiting for a sync slot.
const maxPullBacksWaiting = maxSyncInFlight

// syncFromThen is syncFrom that calls slotted once it holds a sync slot or
// gave up waiting for one. A peer suspended for serving invalid ads
// (syncFaults) is not pulled from; that counts as a failed sync.
func (n *Node) syncFromThen(ctx context.Context, p peer.ID, slotted func()) error {
	var r pullResult
	var err error
	if n.faults.suspended(p, n.now()) {
		slotted()
		err = fmt.Errorf("table sync with %s: %w", p, errSyncSuspended)
	} else {
		r, err = n.pullThen(ctx, p, slotted)
	}
	n.tsync.record(p, r, err, time.Now())
	return err
}

// syncFrom pulls p's table and notes how much of it was news (see
// syncSched). Concurrency is bounded by syncSem.
func (n *Node) syncFrom(ctx context.Context, p peer.ID) error {
	return n.syncFromThen(ctx, p, func() {})
}

// pullResult is what a pull brought.
type pullResult struct {
	news     int // ads new to the table: new peers or newer seqs
	newPeers int // of which peers the table did not hold
}

// pull fetches the ads p holds that are newer than this node's, verifies
// them and stores them. The wait for a sync slot counts against the sync's
// own deadline.
func (n *Node) pull(ctx context.Context, p peer.ID) (pullResult, error) {
	return n.pullThen(ctx, p, func() {})
}

// pullThen is pull that calls slotted once it holds a sync slot or gave
// up waiting for one.
func (n *Node) pullThen(ctx context.Context, p peer.ID, slotted func()) (pullResult, error) {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	select {
	case n.syncSem <- struct{}{}:
		slotted()
		defer func() { <-n.syncSem }()
	case <-ctx.Done():
		slotted()
		return pullResult{}, fmt.Errorf("table sync with %s: no sync slot: %w", p, ctx.Err())
	}
	return n.pullHolding(ctx, p)
}

// pullHolding is the sync itself, for pullThen once it holds a slot; ctx
// carries the sync's deadline. A response that no honest peer sends (over
// the limits, undecodable, or with ads that fail verification for reasons
// other than clock skew) counts against p (syncFault) and fails the sync
// with errSyncFault; the valid ads in it are kept, since their own
// signatures vouch for them.
func (n *Node) pullHolding(ctx context.Context, p peer.ID) (pullResult, error) {
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "table-sync"), p, protocol.TableProtocol)
	if err != nil {
		return pullResult{}, fmt.Errorf("table sync with %s: %w", p, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(syncTimeout))
	if err := protocol.WriteMsg(s, n.tableRequest()); err != nil {
		_ = s.Reset()
		return pullResult{}, fmt.Errorf("table sync with %s: %w", p, err)
	}
	_ = s.CloseWrite()
	var resp pb.TableResponse
	if err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTableResponse, &resp); err != nil {
		_ = s.Reset()
		err = fmt.Errorf("table sync with %s: %w", p, err)
		if errors.Is(err, protocol.ErrTooLarge) || errors.Is(err, proto.Error) {
			n.syncFault(p, err)
		}
		return pullResult{}, err
	}
	if len(resp.Ads) > maxAdsPerSync+1 {
		err := fmt.Errorf("table sync with %s: %w: %d ads, limit %d", p, errSyncFault, len(resp.Ads), maxAdsPerSync+1)
		n.syncFault(p, err)
		return pullResult{}, err
	}
	now := n.now()
	var r pullResult
	fresh := resp.Ads[:0]
	for _, sa := range resp.Ads {
		if !n.knownAd(sa) {
			fresh = append(fresh, sa)
		}
	}
	// One batch for the lot: a joining node's pulls bring ~all the pool's
	// ads, and their signatures are most of the CPU it spends joining.
	vs, errs := n.keys.VerifyAds(fresh, "", n.cfg.Pool, now)
	bad, firstBad := 0, error(nil)
	for i, v := range vs {
		if err := errs[i]; err != nil {
			n.adStats.reject(err)
			if syncAdFault(fresh[i], err, now) {
				bad++
				firstBad = cmp.Or(firstBad, err)
			}
			continue
		}
		if v.Peer == n.id {
			continue
		}
		switch n.storeAd(v, "sync") {
		case scheduler.Added:
			r.newPeers++
			r.news++
		case scheduler.Updated:
			r.news++
		}
	}
	if bad > 0 {
		err := fmt.Errorf("table sync with %s: %w: %d of %d ads, first: %w", p, errSyncFault, bad, len(fresh), firstBad)
		n.syncFault(p, err)
		return r, err
	}
	return r, nil
}

// tableRequest is this node's side of a table sync: its pool and the seq
// it holds per peer.
func (n *Node) tableRequest() *pb.TableRequest {
	known := n.table.Digest()
	if self := n.selfAd(); self != nil {
		// Our own ad is in every peer's table and never in ours: without
		// this entry every response would carry it back.
		known = append(known, &pb.KnownSeq{PeerId: []byte(n.id), Seq: self.seq})
	}
	return &pb.TableRequest{Pool: n.cfg.Pool, Known: known}
}

// Anti-entropy rounds: every antiEntropyEarly until antiEntropyEarlyFor
// after the node joined (its first successful pull) or last learned of a
// new peer by a pull, while the pool around it is still forming; every
// antiEntropyNews while pulls keep bringing news; otherwise once per ad
// interval.
const (
	antiEntropyEarly    = 500 * time.Millisecond
	antiEntropyEarlyFor = 10 * time.Second
	antiEntropyNews     = 150 * time.Millisecond
	followLimit         = 4
)

// antiEntropyLoop pulls one connected peer's table each round: the peer
// whose last pull brought news if there is one, else a random one.
// Following the news is what makes a pool that starts at once converge
// soon after the last connection: the bootstrap peer, which every node
// dials, learns each joiner's ad at its connection, and the others keep
// pulling from it while it has more instead of waiting for random rounds
// to reach it. A table change wakes the loop, so news cuts a long wait
// short.
func (n *Node) antiEntropyLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	last := time.Now()
	rounds := 0
	for {
		p, news := n.tsync.lead()
		// Every followLimit-th round goes to a random peer even while one
		// brings news: a peer that always has news (made-up identities
		// cost nothing) must not keep this node's anti-entropy to itself.
		explore := rounds%followLimit == followLimit-1
		d := n.cfg.AdInterval
		if until := n.tsync.fastUntil(); until.IsZero() || time.Now().Before(until) {
			d = antiEntropyEarly
		}
		if news {
			d = min(d, antiEntropyNews)
		}
		if wait := time.Until(last.Add(d)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-n.TableChanged():
				timer.Stop() // no drain needed since Go 1.23
				continue     // re-plan: there may be news to follow now
			case <-timer.C:
			}
		}
		last = time.Now()
		rounds++
		if !news || explore || n.host.Network().Connectedness(p) != network.Connected || n.faults.suspended(p, last) {
			// Peers suspended for serving invalid ads are never picked.
			peers := slices.DeleteFunc(n.ps.ListPeers(protocol.CapacityTopic(n.cfg.Pool)),
				func(q peer.ID) bool { return n.faults.suspended(q, last) })
			if len(peers) == 0 {
				continue
			}
			p = peers[rand.IntN(len(peers))]
		}
		if err := n.syncFrom(ctx, p); err != nil {
			n.log.Debug("anti-entropy", "peer", p, "err", err)
		}
	}
}

// syncSched plans anti-entropy from what pulls brought: how long rounds
// stay fast, and which peer's pulls bring news, so that anti-entropy
// follows it. It also rate-limits pull-backs. The zero value is ready; it
// is safe for concurrent use.
type syncSched struct {
	mu         sync.Mutex
	fast       time.Time // fast rounds until then; zero until the first successful pull
	leader     peer.ID   // peer whose latest pull brought the most new ads
	leadNews   int       // how many its latest pull brought
	pulledBack map[peer.ID]time.Time
}

// maxPullBackPeers bounds the pull-back rate-limit map (see claimPeer):
// past it, entries older than pullBackEvery are dropped, and if all are
// recent the pull-back is refused. It is far above what an honest pool
// makes in one pullBackEvery, and pull-backs beyond maxPullBacksWaiting
// are dropped anyway.
const maxPullBackPeers = 1024

// claimPullBack reports whether a pull-back from p may start now, and if
// so records it: at most one per peer per pullBackEvery, and none while
// maxPullBackPeers peers were pulled back within the last pullBackEvery.
func (s *syncSched) claimPullBack(p peer.ID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pulledBack == nil {
		s.pulledBack = map[peer.ID]time.Time{}
	}
	return claimPeer(s.pulledBack, p, now, pullBackEvery, maxPullBackPeers)
}

// record notes the outcome of a pull from p at now. The first successful
// pull (joining) and any pull that brought a new peer keep rounds fast for
// antiEntropyEarlyFor; updates of known peers do not, or a pool's periodic
// ads would keep them fast for good. p becomes the leader when it brought
// at least as much news as the leader's latest pull; the leader loses the
// role when a pull from it brings nothing or fails.
func (s *syncSched) record(p peer.ID, r pullResult, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && (s.fast.IsZero() || r.newPeers > 0) {
		s.fast = now.Add(antiEntropyEarlyFor)
	}
	added := r.news
	switch {
	case err == nil && added > 0 && (s.leader == "" || p == s.leader || added >= s.leadNews):
		s.leader, s.leadNews = p, added
	case p == s.leader:
		s.leader, s.leadNews = "", 0
	}
}

// lead returns the peer to follow and whether there is one.
func (s *syncSched) lead() (peer.ID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader, s.leader != ""
}

// fastUntil returns when fast rounds end (zero before the first
// successful pull).
func (s *syncSched) fastUntil() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fast
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
