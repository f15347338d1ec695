package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// TestTableForgetsOldSeqs: a departed peer's seq is kept while a replay of
// one of its older ads could still pass the time checks, then dropped (a
// stream of one-off identities must not grow the table's memory for good).
func TestTableForgetsOldSeqs(t *testing.T) {
	tb := NewTable()
	now := time.Now()
	for i := range 1000 {
		ad := &pb.CapacityAd{Seq: 5, TimestampMs: now.UnixMilli(), TtlMs: 1000}
		tb.Upsert(peer.ID(fmt.Sprintf("p-%d", i)), ad, nil, now)
	}
	tb.Expire(now.Add(2 * time.Second))
	if tb.Len() != 0 || tb.Seq("p-1") != 5 {
		t.Fatalf("after expiry: %d entries, seq %d (want it kept)", tb.Len(), tb.Seq("p-1"))
	}
	old := &pb.CapacityAd{Seq: 4, TimestampMs: now.UnixMilli(), TtlMs: 600000}
	if r := tb.Upsert("p-1", old, nil, now.Add(3*time.Second)); r != Stale {
		t.Fatalf("replay of an older ad while it is still valid: %v", r)
	}
	tb.Expire(now.Add(protocol.MaxAdTTL + protocol.MaxClockSkew + time.Second))
	if n := len(tb.seen); n != 0 {
		t.Fatalf("%d seqs of peers gone long ago kept", n)
	}
}

// TestTableBounded: the table holds at most MaxEntries peers; ads of the
// peers it holds still update them.
func TestTableBounded(t *testing.T) {
	tb := NewTable()
	now := time.Now()
	ad := func(seq uint64) *pb.CapacityAd {
		return &pb.CapacityAd{Seq: seq, TimestampMs: now.UnixMilli(), TtlMs: 60000}
	}
	for i := range MaxEntries {
		if r := tb.Upsert(peer.ID(fmt.Sprintf("p-%d", i)), ad(1), nil, now); r != Added {
			t.Fatalf("peer %d: %v", i, r)
		}
	}
	if r := tb.Upsert("one-too-many", ad(1), nil, now); r != Full {
		t.Fatalf("peer past the bound: %v", r)
	}
	if r := tb.Upsert("p-7", ad(2), nil, now); r != Updated {
		t.Fatalf("update of a held peer at the bound: %v", r)
	}
	if tb.Len() != MaxEntries || len(tb.Digest())+1 > protocol.MaxTableEntries {
		t.Fatalf("len %d, digest %d", tb.Len(), len(tb.Digest()))
	}
}
