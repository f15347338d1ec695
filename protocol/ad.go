package protocol

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Reasons an ad is rejected. Each is a sentinel so that callers can count
// rejections by kind (errors.Is).
var (
	ErrAdOversized = errors.New("ad oversized")
	ErrAdMalformed = errors.New("ad malformed")
	ErrAdSignature = errors.New("ad signature invalid")
	ErrAdWrongPeer = errors.New("ad peer does not match sender")
	ErrAdVersion   = errors.New("ad version unsupported")
	ErrAdWrongPool = errors.New("ad for another pool")
	ErrAdFuture    = errors.New("ad timestamp in the future")
	ErrAdExpired   = errors.New("ad expired")
	ErrAdBadValue  = errors.New("ad value out of range")
)

// AdReasons lists the rejection sentinels in a stable order, for metrics.
var AdReasons = []error{ErrAdOversized, ErrAdMalformed, ErrAdSignature, ErrAdWrongPeer,
	ErrAdVersion, ErrAdWrongPool, ErrAdFuture, ErrAdExpired, ErrAdBadValue}

// Bounds on advertised values; anything outside is hostile or broken.
const (
	MaxClockSkew = 30 * time.Second
	MinAdTTL     = time.Second
	MaxAdTTL     = 10 * time.Minute
	maxCPUMillis = 1 << 24 // 16k cores
	maxBytes     = 1 << 56 // 64 PiB
	maxSlots     = 1 << 16
)

// SignAd marshals ad and signs it with key.
func SignAd(key crypto.PrivKey, ad *pb.CapacityAd) (*pb.SignedAd, error) {
	b, err := proto.Marshal(ad)
	if err != nil {
		return nil, fmt.Errorf("marshal ad: %w", err)
	}
	sig, err := sign(key, domainAd, b)
	if err != nil {
		return nil, err
	}
	return &pb.SignedAd{Ad: b, Signature: sig}, nil
}

// MarshalSignedAd returns the bytes that travel on the capacity topic.
func MarshalSignedAd(s *pb.SignedAd) ([]byte, error) { return proto.Marshal(s) }

// AdID identifies the SignedAd encoded in data by what validation reads of
// it, its ad bytes and its signature, not by how the wrapper is encoded:
// a relay that adds unknown fields, reorders or repeats fields, or writes a
// length as a longer varint passes an ad that still validates, and must not
// make it a new message (the GossipSub message ID, see node.adMessageID).
// The ad bytes are signed, so nobody but the advertiser can change them;
// the signature is not malleable by anyone else (canonical S and R
// required), and it is part of the ID so that a copy with a broken
// signature never shares the valid ad's ID. Data that does not decode to
// a SignedAd with both parts is identified by its bytes (it is rejected
// anyway). The two are hashed under different prefixes.
func AdID(data []byte) [sha256.Size]byte {
	var s pb.SignedAd
	if len(data) > MaxAdSize || proto.Unmarshal(data, &s) != nil || len(s.Ad) == 0 || len(s.Signature) == 0 {
		h := sha256.New()
		h.Write([]byte("swarmgen-ad-id-raw:"))
		h.Write(data)
		return [sha256.Size]byte(h.Sum(nil))
	}
	h := sha256.New()
	h.Write([]byte("swarmgen-ad-id:"))
	h.Write(binary.AppendUvarint(nil, uint64(len(s.Ad))))
	h.Write(s.Ad)
	h.Write(s.Signature)
	return [sha256.Size]byte(h.Sum(nil))
}

// VerifiedAd is an ad that passed every check, with the signed form kept
// for relaying.
type VerifiedAd struct {
	Ad     *pb.CapacityAd
	Signed *pb.SignedAd
	Peer   peer.ID
}

// DecodeAd decodes and fully validates the bytes of a SignedAd received from
// the network. from, when not empty, is an authenticated sender that must
// be the advertiser; gossip and table sync pass none, since relaying is
// allowed and the ad's own signature attributes it. now is the receiver's
// clock.
func DecodeAd(data []byte, from peer.ID, pool string, now time.Time) (*VerifiedAd, error) {
	if len(data) > MaxAdSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrAdOversized, len(data), MaxAdSize)
	}
	var s pb.SignedAd
	if err := proto.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAdMalformed, err)
	}
	return VerifyAd(&s, from, pool, now)
}

// VerifyAd validates an already decoded SignedAd; see DecodeAd.
func VerifyAd(s *pb.SignedAd, from peer.ID, pool string, now time.Time) (*VerifiedAd, error) {
	return (*KeyCache)(nil).VerifyAd(s, from, pool, now)
}

// VerifyAd is the package's VerifyAd with the keys of k (a node checks
// each peer's ad again every ad interval).
func (k *KeyCache) VerifyAd(s *pb.SignedAd, from peer.ID, pool string, now time.Time) (*VerifiedAd, error) {
	vs, errs := k.VerifyAds([]*pb.SignedAd{s}, from, pool, now)
	return vs[0], errs[0]
}

// VerifyAds is VerifyAd for many ads at once, such as a table-sync
// response: their signatures are checked as one batch, at about 40% of the
// cost of checking them one by one. ads[i] yields either vs[i] or errs[i];
// a bad ad does not affect the others.
func VerifyAds(ads []*pb.SignedAd, from peer.ID, pool string, now time.Time) (vs []*VerifiedAd, errs []error) {
	return (*KeyCache)(nil).VerifyAds(ads, from, pool, now)
}

// VerifyAds is the package's VerifyAds with the keys of k.
func (k *KeyCache) VerifyAds(ads []*pb.SignedAd, from peer.ID, pool string, now time.Time) (vs []*VerifiedAd, errs []error) {
	vs = make([]*VerifiedAd, len(ads))
	errs = make([]error, len(ads))
	checks := make([]sigCheck, 0, len(ads))
	idx := make([]int, 0, len(ads))
	for i, s := range ads {
		ad, pid, err := decodeAd(s, from)
		if err != nil {
			errs[i] = err
			continue
		}
		if len(s.ProtoReflect().GetUnknown()) > 0 {
			// What a relay added to the wrapper is not kept, nor served on
			// by table sync: only the two fields count (see AdID).
			s = &pb.SignedAd{Ad: s.Ad, Signature: s.Signature}
		}
		vs[i] = &VerifiedAd{Ad: ad, Signed: s, Peer: pid}
		checks = append(checks, sigCheck{pid, domainAd, s.Ad, s.Signature})
		idx = append(idx, i)
	}
	for j, err := range verifyAll(k, checks) {
		i := idx[j]
		if err == nil {
			err = checkAd(vs[i].Ad, pool, now)
		} else {
			err = fmt.Errorf("%w: %v", ErrAdSignature, err)
		}
		if err != nil {
			vs[i], errs[i] = nil, err
		}
	}
	return vs, errs
}

// decodeAd runs the checks that come before the signature: sizes, the
// encoding, the version and who the ad names.
func decodeAd(s *pb.SignedAd, from peer.ID) (*pb.CapacityAd, peer.ID, error) {
	if s == nil || len(s.Ad) == 0 || len(s.Signature) == 0 {
		return nil, "", fmt.Errorf("%w: empty ad or signature", ErrAdMalformed)
	}
	if len(s.Ad)+len(s.Signature) > MaxAdSize {
		return nil, "", fmt.Errorf("%w: %d bytes, limit %d", ErrAdOversized, len(s.Ad)+len(s.Signature), MaxAdSize)
	}
	var ad pb.CapacityAd
	if err := proto.Unmarshal(s.Ad, &ad); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrAdMalformed, err)
	}
	if ad.Version != Version {
		return nil, "", fmt.Errorf("%w: version %d, want %d", ErrAdVersion, ad.Version, Version)
	}
	pid, err := peer.IDFromBytes(ad.PeerId)
	if err != nil {
		return nil, "", fmt.Errorf("%w: peer_id: %v", ErrAdMalformed, err)
	}
	if from != "" && from != pid {
		return nil, "", fmt.Errorf("%w: ad names %s, sent by %s", ErrAdWrongPeer, pid, from)
	}
	return &ad, pid, nil
}

// checkAd runs the checks that come after the signature: the pool, the
// values and the clock.
func checkAd(ad *pb.CapacityAd, pool string, now time.Time) error {
	if ad.Pool != pool {
		return fmt.Errorf("%w: %q, this node is in %q", ErrAdWrongPool, ad.Pool, pool)
	}
	if err := checkAdValues(ad); err != nil {
		return err
	}
	ts := time.UnixMilli(ad.TimestampMs)
	if ts.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("%w: %s ahead of this node's clock", ErrAdFuture, ts.Sub(now).Round(time.Millisecond))
	}
	if !ts.Add(time.Duration(ad.TtlMs) * time.Millisecond).After(now) {
		return fmt.Errorf("%w: signed %s ago with ttl %dms", ErrAdExpired, now.Sub(ts).Round(time.Millisecond), ad.TtlMs)
	}
	return nil
}

func badValue(field string, v any) error {
	return fmt.Errorf("%w: %s = %v", ErrAdBadValue, field, v)
}

func inRange(v, max int64) bool { return v >= 0 && v <= max }

func checkAdValues(ad *pb.CapacityAd) error {
	ttl := time.Duration(ad.TtlMs) * time.Millisecond
	if ttl < MinAdTTL || ttl > MaxAdTTL {
		return badValue("ttl_ms", ad.TtlMs)
	}
	if ad.Seq == 0 {
		return badValue("seq", ad.Seq)
	}
	if ad.Capacity == nil {
		return badValue("capacity", "missing")
	}
	c := ad.Capacity
	switch {
	case !inRange(c.CpuMillis, maxCPUMillis):
		return badValue("capacity.cpu_millis", c.CpuMillis)
	case !inRange(c.MemoryTotal, maxBytes):
		return badValue("capacity.memory_total", c.MemoryTotal)
	case !inRange(c.MemoryFree, maxBytes):
		return badValue("capacity.memory_free", c.MemoryFree)
	case !inRange(c.DiskFree, maxBytes):
		return badValue("capacity.disk_free", c.DiskFree)
	case len(c.Gpus) > MaxGPUsPerNode:
		return badValue("capacity.gpus", len(c.Gpus))
	}
	for i, g := range c.Gpus {
		if !inRange(g.Memory, maxBytes) {
			return badValue(fmt.Sprintf("capacity.gpus[%d].memory", i), g.Memory)
		}
		if len(g.Name) > MaxStringField || len(g.Uuid) > MaxStringField {
			return badValue(fmt.Sprintf("capacity.gpus[%d].name", i), "too long")
		}
	}
	if l := ad.Load; l != nil {
		if !inRange(int64(l.Running), maxSlots) || !inRange(int64(l.Queued), maxSlots) || !inRange(int64(l.Slots), maxSlots) {
			return badValue("load", fmt.Sprintf("running=%d queued=%d slots=%d", l.Running, l.Queued, l.Slots))
		}
	}
	if p := ad.Price; p != nil && (p.PerTaskMicros < 0 || p.PerSecondMicros < 0) {
		return badValue("price", fmt.Sprintf("per_task=%d per_second=%d", p.PerTaskMicros, p.PerSecondMicros))
	}
	for name, list := range map[string][]string{"executors": ad.Executors, "warm_models": ad.WarmModels, "templates": ad.Templates} {
		if len(list) > MaxListField {
			return badValue(name, len(list))
		}
		for _, s := range list {
			if s == "" || len(s) > MaxStringField {
				return badValue(name, "empty or too long entry")
			}
		}
	}
	if len(ad.Labels) > MaxLabels {
		return badValue("labels", len(ad.Labels))
	}
	return nil
}
