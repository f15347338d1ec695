package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// tableServer makes h answer every table request with ads() and counts the
// requests it answered.
func tableServer(t *testing.T, h host.Host, ads func() []*pb.SignedAd) *atomic.Int64 {
	t.Helper()
	var served atomic.Int64
	h.SetStreamHandler(protocol.TableProtocol, func(s network.Stream) {
		defer s.Close()
		var req pb.TableRequest
		if err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTableRequest, &req); err != nil {
			_ = s.Reset()
			return
		}
		served.Add(1)
		_ = protocol.WriteMsg(s, &pb.TableResponse{Ads: ads()})
	})
	return &served
}

// dialNode connects h to n, so that n has a connection to h it did not dial
// (and does not pull on).
func dialNode(ctx context.Context, t *testing.T, h host.Host, n *Node) {
	t.Helper()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
}

func freshKey() crypto.PrivKey {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	return k
}

// TestSyncFaultPeerLosesStanding: a peer that answers a table sync with a
// mis-signed ad (beside a valid one that is news) does not become the peer
// anti-entropy follows, is not pulled from again, and a table request from
// it does not make the node pull back. (It cost the peer nothing: it led
// anti-entropy with the valid news and was pulled from and pulled back as
// often as an honest peer.)
func TestSyncFaultPeerLosesStanding(t *testing.T) {
	a := slowAdNodes(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, _ := hostileHost(t)
	served := tableServer(t, h, func() []*pb.SignedAd {
		forged := signedTestAd(t, freshKey(), 1)
		forged.Signature[0] ^= 0xff
		return []*pb.SignedAd{signedTestAd(t, freshKey(), 1), forged}
	})
	dialNode(ctx, t, h, a)
	before := a.AdStats().Rejected()[protocol.ErrAdSignature.Error()]

	if err := a.syncFrom(ctx, h.ID()); err == nil {
		t.Error("a sync that brought a forged ad reported no error")
	}
	if got := a.AdStats().Rejected()[protocol.ErrAdSignature.Error()]; got != before+1 {
		t.Errorf("signature rejections %d, want %d", got, before+1)
	}
	if p, ok := a.tsync.lead(); ok && p == h.ID() {
		t.Error("the peer that served a forged ad leads anti-entropy")
	}
	if err := a.syncFrom(ctx, h.ID()); err == nil {
		t.Error("a second sync from the faulty peer ran without error")
	}
	if n := served.Load(); n != 1 {
		t.Errorf("the faulty peer was pulled from %d times, want 1", n)
	}
	a.pullBack(h.ID())
	a.tsync.mu.Lock()
	_, pulled := a.tsync.pulledBack[h.ID()]
	a.tsync.mu.Unlock()
	if pulled {
		t.Error("a table request from the faulty peer starts a pull-back")
	}
}

// TestSyncHonestPeerNoFault: what an honest peer may serve — ads the
// node already holds, and an ad that expired moments ago (the server drops
// expired entries every 500 ms, and clocks differ) — costs it nothing.
func TestSyncHonestPeerNoFault(t *testing.T) {
	nodes := slowAdNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mustConnect(ctx, t, a, b)
	mustSeeEachOther(t, a, b)
	held, _ := a.Table().Get(b.ID())

	h, _ := hostileHost(t)
	served := tableServer(t, h, func() []*pb.SignedAd {
		k := freshKey()
		id, _ := peer.IDFromPrivateKey(k)
		now := time.Now()
		justExpired, err := protocol.SignAd(k, &pb.CapacityAd{Version: protocol.Version, PeerId: []byte(id), Pool: "test",
			Seq: 1, TimestampMs: now.Add(-2 * time.Second).UnixMilli(), TtlMs: 1000,
			Capacity: &pb.Capacity{CpuMillis: 1000}})
		if err != nil {
			t.Error(err)
		}
		// b's ad, which a holds: known, skipped unverified.
		return []*pb.SignedAd{held.Signed, justExpired}
	})
	dialNode(ctx, t, h, a)
	for i := 0; i < 3; i++ {
		if err := a.syncFrom(ctx, h.ID()); err != nil {
			t.Fatalf("sync %d from a peer serving known and just-expired ads: %v", i, err)
		}
		if err := a.syncFrom(ctx, b.ID()); err != nil {
			t.Fatalf("sync %d from an honest node: %v", i, err)
		}
	}
	if n := served.Load(); n != 3 {
		t.Errorf("served %d syncs, want 3", n)
	}
	if got := a.AdStats().Rejected()[protocol.ErrAdExpired.Error()]; got < 3 {
		t.Errorf("expired ads counted %d, want >= 3", got)
	}
	for _, p := range []peer.ID{h.ID(), b.ID()} {
		if c := a.faults.count(p, time.Now()); c != 0 || a.appScore(p) != 0 {
			t.Errorf("honest peer %s: fault count %v, score %v", p, c, a.appScore(p))
		}
	}
	if n := a.AdStats().SyncFaults.Load(); n != 0 {
		t.Errorf("%d sync faults counted", n)
	}
}

// The penalty's GossipSub side and counter: after one faulty response the
// peer's application-specific score is below zero and the fault is counted.
func TestSyncFaultScoresAndCounts(t *testing.T) {
	a := slowAdNodes(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, _ := hostileHost(t)
	tableServer(t, h, func() []*pb.SignedAd {
		// Another pool's ad and an oversized one: both faults.
		k := freshKey()
		id, _ := peer.IDFromPrivateKey(k)
		other, _ := protocol.SignAd(k, &pb.CapacityAd{Version: protocol.Version, PeerId: []byte(id), Pool: "elsewhere",
			Seq: 1, TimestampMs: time.Now().UnixMilli(), TtlMs: 30000, Capacity: &pb.Capacity{}})
		big := signedTestAd(t, freshKey(), 1)
		big.Signature = make([]byte, protocol.MaxAdSize)
		return []*pb.SignedAd{other, big}
	})
	dialNode(ctx, t, h, a)
	err := a.syncFrom(ctx, h.ID())
	if !errors.Is(err, errSyncFault) || !errors.Is(err, protocol.ErrAdWrongPool) {
		t.Fatalf("sync error %v, want errSyncFault wrapping the first bad ad's reason", err)
	}
	if s := a.appScore(h.ID()); s >= 0 || math.Abs(s-syncFaultWeight) > 1 {
		t.Errorf("app score %v after one faulty response, want ~%v", s, float64(syncFaultWeight))
	}
	if n := a.AdStats().SyncFaults.Load(); n != 1 {
		t.Errorf("sync faults %d, want 1", n)
	}
	rej := a.AdStats().Rejected()
	if rej[protocol.ErrAdWrongPool.Error()] != 1 || rej[protocol.ErrAdOversized.Error()] != 1 {
		t.Errorf("rejections by reason: %v", rej)
	}
	if !errors.Is(a.syncFrom(ctx, h.ID()), errSyncSuspended) {
		t.Error("a suspended peer was pulled from")
	}
}

func TestSyncFaultsDecayAndBound(t *testing.T) {
	var f syncFaults
	t0 := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if f.suspended("p", t0) || f.score("p", t0) != 0 {
		t.Fatal("a peer without faults is penalised")
	}
	f.add("p", t0)
	if !f.suspended("p", at(time.Minute)) || f.score("p", t0) != syncFaultWeight {
		t.Fatalf("one fault: suspended %v, score %v", f.suspended("p", at(time.Minute)), f.score("p", t0))
	}
	// Half-life of a 1 h decay to 1 %: ~9 min.
	if f.suspended("p", at(10*time.Minute)) {
		t.Error("one fault still suspends after 10 min")
	}
	if s := f.score("p", at(10*time.Minute)); s >= 0 || s < syncFaultWeight/4 {
		t.Errorf("score after 10 min %v, want a small penalty", s)
	}
	if f.count("p", at(time.Hour+time.Second)) != 0 {
		t.Error("a fault is remembered after an hour")
	}
	// Repeated faults add up.
	f.add("q", t0)
	f.add("q", t0)
	if n := f.add("q", t0); n != 3 || f.score("q", t0) != 9*syncFaultWeight {
		t.Errorf("three faults: count %v, score %v", n, f.score("q", t0))
	}
	// Bounded: a churn of once-faulty identities evicts one another, not q.
	for i := 0; i < maxFaultPeers+100; i++ {
		f.add(peer.ID(fmt.Sprint("fresh-", i)), at(time.Duration(i)*time.Millisecond))
	}
	if n := len(f.m); n > maxFaultPeers {
		t.Fatalf("fault map holds %d peers, bound %d", n, maxFaultPeers)
	}
	if f.count("q", at(2*time.Second)) < 2.9 {
		t.Error("the repeat offender was evicted by fresh identities")
	}
}

func TestSyncAdFaultClockGrace(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ad := func(signed time.Time, ttl time.Duration) *pb.SignedAd {
		b, _ := proto.Marshal(&pb.CapacityAd{TimestampMs: signed.UnixMilli(), TtlMs: ttl.Milliseconds()})
		return &pb.SignedAd{Ad: b}
	}
	cases := []struct {
		name  string
		sa    *pb.SignedAd
		err   error
		fault bool
	}{
		{"expired just now", ad(now.Add(-time.Minute), time.Minute), protocol.ErrAdExpired, false},
		{"expired within grace", ad(now.Add(-2*time.Minute), 61*time.Second), protocol.ErrAdExpired, false},
		{"expired long ago", ad(now.Add(-time.Hour), time.Minute), protocol.ErrAdExpired, true},
		{"future within grace", ad(now.Add(45*time.Second), time.Minute), protocol.ErrAdFuture, false},
		{"far future", ad(now.Add(time.Hour), time.Minute), protocol.ErrAdFuture, true},
		{"bad signature", ad(now, time.Minute), protocol.ErrAdSignature, true},
		{"bad value", ad(now, time.Minute), protocol.ErrAdBadValue, true},
		{"malformed", &pb.SignedAd{Ad: []byte{0xff}}, protocol.ErrAdMalformed, true},
	}
	for _, c := range cases {
		if got := syncAdFault(c.sa, fmt.Errorf("%w: detail", c.err), now); got != c.fault {
			t.Errorf("%s: fault %v, want %v", c.name, got, c.fault)
		}
	}
}

// Responses no honest peer sends — one that does not decode, one with more
// ads than a response may hold — are faults too; a reset stream is not.
func TestSyncFaultBadResponses(t *testing.T) {
	a := slowAdNodes(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	serve := func(write func(s network.Stream)) host.Host {
		h, _ := hostileHost(t)
		h.SetStreamHandler(protocol.TableProtocol, func(s network.Stream) {
			defer s.Close()
			var req pb.TableRequest
			_ = protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTableRequest, &req)
			write(s)
		})
		dialNode(ctx, t, h, a)
		return h
	}
	garbage := serve(func(s network.Stream) { _, _ = s.Write([]byte{4, 0xff, 0xff, 0xff, 0xff}) })
	known := signedTestAd(t, freshKey(), 1)
	tooMany := serve(func(s network.Stream) {
		ads := make([]*pb.SignedAd, maxAdsPerSync+2)
		for i := range ads {
			ads[i] = known
		}
		_ = protocol.WriteMsg(s, &pb.TableResponse{Ads: ads})
	})
	reset := serve(func(s network.Stream) { _ = s.Reset() })
	for _, h := range []host.Host{garbage, tooMany} {
		if err := a.syncFrom(ctx, h.ID()); err == nil || !a.faults.suspended(h.ID(), time.Now()) {
			t.Errorf("bad response: err %v, suspended %v", err, a.faults.suspended(h.ID(), time.Now()))
		}
	}
	if err := a.syncFrom(ctx, reset.ID()); err == nil || a.faults.count(reset.ID(), time.Now()) != 0 {
		t.Errorf("reset stream: err %v, fault count %v", err, a.faults.count(reset.ID(), time.Now()))
	}
	if n := a.AdStats().SyncFaults.Load(); n != 2 {
		t.Errorf("sync faults %d, want 2", n)
	}
}
