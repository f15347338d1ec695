package node

import (
	"context"
	"crypto/rand"
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// hostileHost is a bare libp2p host on loopback with its own key, for a
// test to play a peer the node talks to; it is closed with the test.
func hostileHost(t *testing.T) (host.Host, crypto.PrivKey) {
	t.Helper()
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, key
}

func signedTestAd(t *testing.T, key crypto.PrivKey, seq uint64) *pb.SignedAd {
	id, _ := peer.IDFromPrivateKey(key)
	a := &pb.CapacityAd{Version: protocol.Version, PeerId: []byte(id), Pool: "test", Seq: seq,
		TimestampMs: time.Now().UnixMilli(), TtlMs: int64(protocol.MaxAdTTL / time.Millisecond),
		Capacity: &pb.Capacity{CpuMillis: 1000, MemoryTotal: 1 << 30}, Load: &pb.Load{Slots: 1}}
	s, err := protocol.SignAd(key, a)
	if err != nil {
		t.Error(err)
	}
	return s
}

// TestHostileSyncPeerCannotFloodTable: a peer that answers every table
// sync with its own ad re-signed under a new seq plus 400 ads of freshly
// made identities (valid signatures, right pool) fills the table only up to
// scheduler.MaxEntries, and the node can still sync with honest peers. (It
// grew the table without bound; past protocol.MaxTableEntries every honest
// peer reset the node's requests. It also kept the node's anti-entropy to
// itself; every followLimit-th round now goes to a random peer.)
func TestHostileSyncPeerCannotFloodTable(t *testing.T) {
	nodes := slowAdNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustConnect(ctx, t, a, b)
	mustSeeEachOther(t, a, b)
	// sanity: a can sync with b before the flood
	if _, err := a.pull(ctx, b.ID()); err != nil {
		t.Fatalf("pull from b before the flood: %v", err)
	}

	h, hkey := hostileHost(t)
	var seq atomic.Uint64
	seq.Store(uint64(time.Now().UnixMicro()))
	served := tableServer(t, h, func() []*pb.SignedAd {
		ads := []*pb.SignedAd{signedTestAd(t, hkey, seq.Add(1))}
		for i := 0; i < maxAdsPerSync; i++ {
			k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
			ads = append(ads, signedTestAd(t, k, 1))
		}
		return ads
	})
	start := time.Now()
	if err := a.Connect(ctx, h.Addrs()[0].String()+"/p2p/"+h.ID().String()); err != nil {
		t.Fatal(err)
	}
	// Enough pulls to offer more identities than the table may hold.
	eventually(t, 40*time.Second, "the hostile peer served enough pulls", func() bool {
		return served.Load() > int64(scheduler.MaxEntries/maxAdsPerSync)+2
	})
	t.Logf("after %s: hostile served %d pulls, a's table holds %d peers",
		time.Since(start).Round(time.Millisecond), served.Load(), a.Table().Len())
	if n := a.Table().Len(); n > scheduler.MaxEntries {
		t.Errorf("table holds %d peers, bound %d", n, scheduler.MaxEntries)
	}
	h.RemoveStreamHandler(protocol.TableProtocol)
	if _, err := a.pull(ctx, b.ID()); err != nil {
		t.Errorf("the node can no longer sync with an honest peer: %v", err)
	}
}

// TestPullBacksDoNotQueue: peers that each send a table request a second
// claiming their own seq is MaxUint64, and never answer the pull-back it
// triggers, queue no more than maxPullBacksWaiting pull-backs, nor starve
// an honest sync. (Pull-backs waited for a slot with no deadline and no
// bound: 49 queued after 12 s, and an honest pull timed out.)
func TestPullBacksDoNotQueue(t *testing.T) {
	nodes := slowAdNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mustConnect(ctx, t, a, b)

	const hostile = 6
	hs := make([]host.Host, hostile)
	for i := range hs {
		h, _ := hostileHost(t)
		h.SetStreamHandler(protocol.TableProtocol, func(s network.Stream) {
			// Never answer: a's pull holds its slot until its 5 s deadline.
			time.Sleep(6 * time.Second)
			_ = s.Reset()
		})
		if err := h.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: a.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
		hs[i] = h
	}
	hammer, stop := context.WithCancel(ctx)
	defer stop()
	for _, h := range hs {
		go func(h host.Host) {
			tk := time.NewTicker(pullBackEvery + 20*time.Millisecond)
			defer tk.Stop()
			for {
				s, err := h.NewStream(hammer, a.ID(), protocol.TableProtocol)
				if err == nil {
					_ = protocol.WriteMsg(s, &pb.TableRequest{Pool: "test",
						Known: []*pb.KnownSeq{{PeerId: []byte(h.ID()), Seq: math.MaxUint64}}})
					_ = s.CloseWrite()
					_ = s.Close()
				}
				select {
				case <-hammer.Done():
					return
				case <-tk.C:
				}
			}
		}(h)
	}
	// Syncs waiting for a slot: in pullThen, not yet in pullHolding.
	waiting := func() int {
		buf := make([]byte, 8<<20)
		st := string(buf[:runtime.Stack(buf, true)])
		n := 0
		for _, g := range strings.Split(st, "\n\n") {
			if strings.Contains(g, "(*Node).pullThen(") && !strings.Contains(g, "(*Node).pullHolding(") {
				n++
			}
		}
		return n
	}
	for i := 0; i < 3; i++ {
		time.Sleep(2 * time.Second)
		// The bounded pull-backs and anti-entropy's one pull may wait,
		// each within its deadline.
		if n := waiting(); n > maxPullBacksWaiting+1 {
			t.Errorf("t=%ds: %d syncs queued for a slot", 2*(i+1), n)
		}
	}
	// Anti-entropy and the honest pull wait at most a sync's deadline; a
	// slot frees when a hostile pull-back's deadline passes.
	pctx, pcancel := context.WithTimeout(ctx, 2*syncTimeout)
	_, err := a.pull(pctx, b.ID())
	pcancel()
	if err != nil {
		t.Errorf("an honest sync starved by hostile pull-backs: %v", err)
	}
	stop()
}
