// Package scheduler holds swarmgen's decision logic, free of I/O: the
// capacity table, partitioners, candidate filtering and ranking with
// recorded reasons, the provider's bid policy and the job and task state
// machines. Callers feed it ads, bids and clock readings and read back
// decisions; the node does all networking.
package scheduler

import (
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Entry is one peer's latest accepted capacity ad.
type Entry struct {
	Peer     peer.ID
	Ad       *pb.CapacityAd
	Signed   *pb.SignedAd // kept verbatim so the table can be relayed (table sync)
	Received time.Time
	Expires  time.Time
}

// UpsertResult says what Upsert did with an ad.
type UpsertResult int

const (
	// Added: the peer was not in the table.
	Added UpsertResult = iota
	// Updated: a newer ad replaced the peer's entry.
	Updated
	// Stale: the ad's seq is not newer than the one held (a replay or an
	// old copy arriving late); the table is unchanged.
	Stale
	// Full: the ad is of a peer the table does not hold, and it holds
	// MaxEntries peers already; the table is unchanged.
	Full
)

func (r UpsertResult) String() string {
	return [...]string{"added", "updated", "stale", "full"}[r]
}

// MaxEntries bounds the peers a Table holds: one less than a table-sync
// request may list, so that a node's digest (its table and itself) is
// always a request its peers accept. New identities cost an attacker
// nothing; without a bound, ads of made-up peers could grow the table, and
// the node's digest past what any peer answers, for as long as they came.
const MaxEntries = protocol.MaxTableEntries - 1

// Table is the capacity table: the newest valid ad of every peer in the
// pool, each kept until its TTL runs out. Callers validate ads (protocol.
// VerifyAd) before Upsert. Table is safe for concurrent use.
type Table struct {
	mu      sync.RWMutex
	entries map[peer.ID]*Entry
	// seen remembers the highest seq per peer even after its entry expired,
	// so that a replayed old ad cannot resurrect a departed peer, for as
	// long as such a replay could pass the checks of time: a peer signs its
	// ads in seq order, so an older ad has a timestamp no later than the
	// newest's and is expired by that timestamp + MaxAdTTL (+ the clock
	// skew allowed). Then the record goes, so that a stream of one-off
	// identities does not grow it for the life of the process.
	seen map[peer.ID]seenSeq
}

type seenSeq struct {
	seq   uint64
	until time.Time // when no older ad of the peer can be valid any more
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{entries: map[peer.ID]*Entry{}, seen: map[peer.ID]seenSeq{}}
}

// Upsert stores ad for pid if it is newer than what the table holds.
func (t *Table) Upsert(pid peer.ID, ad *pb.CapacityAd, signed *pb.SignedAd, now time.Time) UpsertResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.seen[pid]; ok && ad.Seq <= last.seq {
		return Stale
	}
	_, had := t.entries[pid]
	if !had && len(t.entries) >= MaxEntries {
		return Full
	}
	signedAt := time.UnixMilli(ad.TimestampMs)
	t.seen[pid] = seenSeq{ad.Seq, signedAt.Add(protocol.MaxAdTTL + protocol.MaxClockSkew)}
	expires := signedAt.Add(time.Duration(ad.TtlMs) * time.Millisecond)
	t.entries[pid] = &Entry{Peer: pid, Ad: ad, Signed: signed, Received: now, Expires: expires}
	if had {
		return Updated
	}
	return Added
}

// Remove drops pid's entry (e.g. the peer left); a later, newer ad adds it
// back.
func (t *Table) Remove(pid peer.ID) {
	t.mu.Lock()
	delete(t.entries, pid)
	t.mu.Unlock()
}

// Expire removes entries whose TTL ran out by now and returns their peers.
func (t *Table) Expire(now time.Time) []peer.ID {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone []peer.ID
	for pid, e := range t.entries {
		if !e.Expires.After(now) {
			delete(t.entries, pid)
			gone = append(gone, pid)
		}
	}
	for pid, s := range t.seen {
		if _, live := t.entries[pid]; !live && !s.until.After(now) {
			delete(t.seen, pid)
		}
	}
	return gone
}

// Get returns pid's entry.
func (t *Table) Get(pid peer.ID) (Entry, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.entries[pid]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Len returns the number of peers in the table.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.entries)
}

// Snapshot returns a copy of every entry, ordered by peer ID.
func (t *Table) Snapshot() []Entry {
	t.mu.RLock()
	out := make([]Entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, *e)
	}
	t.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// Digest returns the seq held per peer, the request side of table sync.
func (t *Table) Digest() []*pb.KnownSeq {
	t.mu.RLock()
	defer t.mu.RUnlock()
	d := make([]*pb.KnownSeq, 0, len(t.entries))
	for pid, e := range t.entries {
		d = append(d, &pb.KnownSeq{PeerId: []byte(pid), Seq: e.Ad.Seq})
	}
	return d
}

// Seq returns the highest seq seen from pid (0 if none), including peers
// whose entry expired.
func (t *Table) Seq(pid peer.ID) uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.seen[pid].seq
}

// Newer returns the signed ads this table holds that are newer than the
// digest known, at most limit of them: the response side of table sync.
func (t *Table) Newer(known map[peer.ID]uint64, limit int) []*pb.SignedAd {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*pb.SignedAd
	for pid, e := range t.entries {
		if seq, ok := known[pid]; ok && seq >= e.Ad.Seq {
			continue
		}
		if len(out) >= limit {
			break
		}
		out = append(out, e.Signed)
	}
	return out
}
