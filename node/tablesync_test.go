package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

func TestSyncSchedFollowsNews(t *testing.T) {
	var s syncSched
	if _, ok := s.lead(); ok {
		t.Fatal("zero syncSched has a leader")
	}
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	step := func(p peer.ID, added int, err error, want peer.ID) {
		t.Helper()
		s.record(p, pullResult{news: added}, err, time.Now())
		got, ok := s.lead()
		if ok != (want != "") || got != want {
			t.Fatalf("after pull from %s (%d new, err %v): leader %q, want %q", p, added, err, got, want)
		}
	}
	step(a, 0, nil, "")                // no news: nobody to follow
	step(a, 5, nil, a)                 // news: follow a
	step(b, 3, nil, a)                 // less news than a's last pull: keep a
	step(a, 1, nil, a)                 // a still has news
	step(b, 3, nil, b)                 // now b brought more than a's last
	step(c, 9, errors.New("reset"), b) // a failed pull is no news
	step(b, 0, nil, "")                // the leader ran dry: back to random
	step(c, 2, nil, c)                 // anyone with news leads again
	step(c, 0, errors.New("gone"), "") // a failing leader is dropped
}

func TestSyncSchedFastRoundsAndPullBackLimit(t *testing.T) {
	var s syncSched
	now := time.Now()
	at := func(d time.Duration) time.Time { return now.Add(d) }
	s.record("a", pullResult{news: 3, newPeers: 3}, errors.New("refused"), now)
	if !s.fastUntil().IsZero() {
		t.Fatal("a failed pull counts as joining")
	}
	s.record("a", pullResult{}, nil, now)
	if got := s.fastUntil(); !got.Equal(at(antiEntropyEarlyFor)) {
		t.Fatalf("joining with an empty pull: fast until %s, want %s", got, at(antiEntropyEarlyFor))
	}
	s.record("b", pullResult{news: 4}, nil, at(time.Second))
	if got := s.fastUntil(); !got.Equal(at(antiEntropyEarlyFor)) {
		t.Fatal("updates of known peers extended the fast rounds")
	}
	s.record("b", pullResult{news: 2, newPeers: 1}, nil, at(2*time.Second))
	if got := s.fastUntil(); !got.Equal(at(2*time.Second + antiEntropyEarlyFor)) {
		t.Fatalf("a new peer: fast until %s, want %s", got, at(2*time.Second+antiEntropyEarlyFor))
	}

	if !s.claimPullBack("a", now) {
		t.Fatal("first pull-back from a refused")
	}
	if s.claimPullBack("a", now.Add(pullBackEvery/2)) {
		t.Fatal("second pull-back from a within pullBackEvery allowed")
	}
	if !s.claimPullBack("b", now.Add(pullBackEvery/2)) {
		t.Fatal("pull-back from b limited by a's")
	}
	if !s.claimPullBack("a", now.Add(pullBackEvery)) {
		t.Fatal("pull-back from a refused after pullBackEvery")
	}
	// The rate-limit map stays bounded: old entries go once it is full.
	for i := 0; i < 3*maxPullBackPeers; i++ {
		s.claimPullBack(peer.ID(fmt.Sprint(i)), now.Add(time.Duration(i)*pullBackEvery))
	}
	if n := len(s.pulledBack); n > maxPullBackPeers {
		t.Fatalf("pull-back map holds %d peers, bound %d", n, maxPullBackPeers)
	}
}

// A node that joins learns the pool from one peer's table at once (the
// ad interval is far longer than the test), and once in sync its table
// request makes the peer answer with nothing: not even the requester's own
// ad, which every peer holds.
func TestTableSyncJoinerLearnsPoolAndQuietsDown(t *testing.T) {
	nodes := slowAdNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mustConnect(ctx, t, b, a)
	mustSeeEachOther(t, a, b)
	mustConnect(ctx, t, c, a)
	// c never connects to b: only a's table can tell it about b.
	eventually(t, 3*time.Second, "c learns a and b from a", func() bool { return c.Table().Len() == 2 })

	if resp := askTable(ctx, t, c, a); len(resp.Ads) != 0 {
		for _, sa := range resp.Ads {
			pid, seq, _ := peekAd(sa)
			t.Errorf("in-sync peer sent an ad: %s seq %d (c is %s)", pid, seq, c.ID())
		}
	}
	if r, err := c.pull(ctx, a.ID()); err != nil || r.news != 0 {
		t.Fatalf("pull from an in-sync peer: %+v, err %v", r, err)
	}
}

// A peer whose table request shows that its own ad is newer than the one
// held is pulled back at once, even when nothing else would fetch it soon
// (no gossip, anti-entropy idle).
func TestTableSyncPullsBackRequesterAd(t *testing.T) {
	nodes := slowAdNodes(t, 2)
	a, c := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mustConnect(ctx, t, c, a)
	eventually(t, 5*time.Second, "a sees c", func() bool { _, ok := a.Table().Get(c.ID()); return ok })
	// Idle a's anti-entropy: fast rounds over, nobody to follow.
	a.tsync.mu.Lock()
	a.tsync.fast, a.tsync.leader = time.Now().Add(-time.Hour), ""
	a.tsync.mu.Unlock()
	// A round planned before that still runs; after it the loop waits a
	// whole ad interval.
	time.Sleep(3 * antiEntropyEarly)

	self, err := c.nextAd() // a new ad that is not published
	if err != nil {
		t.Fatal(err)
	}
	askTable(ctx, t, c, a)
	eventually(t, 3*time.Second, "a pulls c's new ad back", func() bool {
		e, ok := a.Table().Get(c.ID())
		return ok && e.Ad.Seq == self.seq
	})
}

// askTable sends from's table request to to over a stream of its own and
// returns the answer.
func askTable(ctx context.Context, t *testing.T, from, to *Node) *pb.TableResponse {
	t.Helper()
	s, err := from.Host().NewStream(ctx, to.ID(), protocol.TableProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := protocol.WriteMsg(s, from.tableRequest()); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	var resp pb.TableResponse
	if err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTableResponse, &resp); err != nil {
		t.Fatal(err)
	}
	return &resp
}

// slowAdNodes starts count nodes whose ad interval is far longer than a
// test, so that no periodic ad spreads what only table sync should.
func slowAdNodes(t *testing.T, count int) []*Node {
	t.Helper()
	dir := t.TempDir()
	out := make([]*Node, count)
	for i := range out {
		out[i] = testNode(t, filepath.Join(dir, fmt.Sprint(i)), func(c *Config) { c.AdInterval = time.Minute })
	}
	return out
}

func mustConnect(ctx context.Context, t *testing.T, from, to *Node) {
	t.Helper()
	if err := from.Connect(ctx, to.Addrs()[0]); err != nil {
		t.Fatal(err)
	}
}

// mustSeeEachOther waits until a and b hold each other's ads.
func mustSeeEachOther(t *testing.T, a, b *Node) {
	t.Helper()
	eventually(t, 5*time.Second, "a and b see each other", func() bool {
		_, ab := a.Table().Get(b.ID())
		_, ba := b.Table().Get(a.ID())
		return ab && ba
	})
}
