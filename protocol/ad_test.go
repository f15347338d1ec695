package protocol

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

func testKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func validAd(id peer.ID, now time.Time) *pb.CapacityAd {
	return &pb.CapacityAd{
		Version: Version, PeerId: []byte(id), Pool: "p", Seq: 1,
		TimestampMs: now.UnixMilli(), TtlMs: 30000,
		Capacity:  &pb.Capacity{CpuMillis: 4000, MemoryTotal: 8 << 30, MemoryFree: 4 << 30, DiskFree: 1 << 30},
		Executors: []string{"process"},
		Load:      &pb.Load{Slots: 4},
	}
}

func encode(t testing.TB, k crypto.PrivKey, ad *pb.CapacityAd) []byte {
	s, err := SignAd(k, ad)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := MarshalSignedAd(s)
	return b
}

func TestDecodeAdAcceptsValid(t *testing.T) {
	k, id := testKey(t)
	now := time.Now()
	v, err := DecodeAd(encode(t, k, validAd(id, now)), id, "p", now)
	if err != nil {
		t.Fatal(err)
	}
	if v.Peer != id || v.Ad.Capacity.CpuMillis != 4000 {
		t.Fatalf("decoded %v", v)
	}
}

type hostileAd struct {
	name string
	data []byte
	from peer.ID
	want error
}

// hostileAds are ads, signed by k for id unless said otherwise, that a
// receiver at now in pool "p" must refuse, each with the error it must give.
func hostileAds(t *testing.T, k crypto.PrivKey, id peer.ID, now time.Time) []hostileAd {
	other, otherID := testKey(t)
	mut := func(f func(*pb.CapacityAd)) []byte {
		ad := validAd(id, now)
		f(ad)
		return encode(t, k, ad)
	}
	badSig := func() []byte {
		s, _ := SignAd(k, validAd(id, now))
		s.Signature[0] ^= 0xff
		b, _ := proto.Marshal(s)
		return b
	}()
	return []hostileAd{
		{"oversized", bytes.Repeat([]byte{1}, MaxAdSize+1), id, ErrAdOversized},
		{"garbage", []byte("\xff\xff\xff"), id, ErrAdMalformed},
		{"empty", nil, id, ErrAdMalformed},
		{"wrong signature", badSig, id, ErrAdSignature},
		{"signed by another key", encode(t, other, validAd(id, now)), id, ErrAdSignature},
		{"sent by another peer", encode(t, k, validAd(id, now)), otherID, ErrAdWrongPeer},
		{"future timestamp", mut(func(a *pb.CapacityAd) { a.TimestampMs = now.Add(time.Hour).UnixMilli() }), id, ErrAdFuture},
		{"expired", mut(func(a *pb.CapacityAd) { a.TimestampMs = now.Add(-time.Hour).UnixMilli() }), id, ErrAdExpired},
		{"negative cpu", mut(func(a *pb.CapacityAd) { a.Capacity.CpuMillis = -1 }), id, ErrAdBadValue},
		{"negative memory", mut(func(a *pb.CapacityAd) { a.Capacity.MemoryTotal = -5 }), id, ErrAdBadValue},
		{"negative gpu memory", mut(func(a *pb.CapacityAd) { a.Capacity.Gpus = []*pb.GPU{{Name: "x", Memory: -1}} }), id, ErrAdBadValue},
		{"negative load", mut(func(a *pb.CapacityAd) { a.Load.Running = -3 }), id, ErrAdBadValue},
		{"negative price", mut(func(a *pb.CapacityAd) { a.Price = &pb.PricePolicy{PerTaskMicros: -1} }), id, ErrAdBadValue},
		{"huge ttl", mut(func(a *pb.CapacityAd) { a.TtlMs = int64(time.Hour / time.Millisecond) }), id, ErrAdBadValue},
		{"zero seq", mut(func(a *pb.CapacityAd) { a.Seq = 0 }), id, ErrAdBadValue},
		{"no capacity", mut(func(a *pb.CapacityAd) { a.Capacity = nil }), id, ErrAdBadValue},
		{"wrong version", mut(func(a *pb.CapacityAd) { a.Version = 9 }), id, ErrAdVersion},
		{"wrong pool", mut(func(a *pb.CapacityAd) { a.Pool = "q" }), id, ErrAdWrongPool},
		{"bad peer id", mut(func(a *pb.CapacityAd) { a.PeerId = []byte("nope") }), id, ErrAdMalformed},
		{"empty executor", mut(func(a *pb.CapacityAd) { a.Executors = []string{""} }), id, ErrAdBadValue},
		{"long executor", mut(func(a *pb.CapacityAd) { a.Executors = []string{strings.Repeat("x", MaxStringField+1)} }), id, ErrAdBadValue},
		{"too big once signed", mut(func(a *pb.CapacityAd) {
			a.WarmModels = []string{strings.Repeat("m", 1000), strings.Repeat("n", 1000), strings.Repeat("o", 1000), strings.Repeat("p", 1000)}
		}), id, ErrAdOversized},
	}
}

func TestDecodeAdRejectsHostile(t *testing.T) {
	k, id := testKey(t)
	now := time.Now()
	for _, c := range hostileAds(t, k, id, now) {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeAd(c.data, c.from, "p", now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestVerifyAdsBatch checks that a batch gives each ad the verdict it gets
// alone: valid ads from many keys pass, each hostile one fails with its own
// error, and one bad signature does not sink the rest of the batch.
func TestVerifyAdsBatch(t *testing.T) {
	now := time.Now()
	k, id := testKey(t)
	var ads []*pb.SignedAd
	var want []error
	for i := 0; i < 20; i++ {
		ki, idi := testKey(t)
		s, err := SignAd(ki, validAd(idi, now))
		if err != nil {
			t.Fatal(err)
		}
		ads, want = append(ads, s), append(want, nil)
		if i%5 == 0 {
			// A node with a secp256k1 identity: checked outside the
			// Ed25519 batch, still checked.
			sk, _, _ := crypto.GenerateSecp256k1Key(rand.Reader)
			sid, _ := peer.IDFromPrivateKey(sk)
			s, err := SignAd(sk, validAd(sid, now))
			if err != nil {
				t.Fatal(err)
			}
			ads, want = append(ads, s), append(want, nil)
		}
	}
	for _, c := range hostileAds(t, k, id, now) {
		var s pb.SignedAd
		if proto.Unmarshal(c.data, &s) != nil || c.want == ErrAdWrongPeer {
			continue // never gets past the decoder; no sender in a batch
		}
		ads, want = append(ads, &s), append(want, c.want)
	}
	for round := 0; round < 3; round++ {
		vs, errs := VerifyAds(ads, "", "p", now)
		for i := range ads {
			switch {
			case want[i] == nil && (errs[i] != nil || vs[i] == nil || vs[i].Signed != ads[i]):
				t.Fatalf("ad %d: valid ad refused: %v", i, errs[i])
			case want[i] != nil && (!errors.Is(errs[i], want[i]) || vs[i] != nil):
				t.Fatalf("ad %d: got %v, want %v", i, errs[i], want[i])
			}
		}
		// Reorder so the bad signatures sit elsewhere in the batch.
		ads = append(ads[1:], ads[0])
		want = append(want[1:], want[0])
	}
	// Only valid ads: the batch path with no fallback.
	vs, errs := VerifyAds(ads[:20], "", "p", now)
	for i := range vs {
		if errs[i] != nil || vs[i] == nil {
			t.Fatalf("ad %d refused in an all-valid batch: %v", i, errs[i])
		}
	}
	// One bad signature among good ones.
	bad := proto.Clone(ads[3]).(*pb.SignedAd)
	bad.Signature[5] ^= 1
	batch := append([]*pb.SignedAd{bad}, ads[:10]...)
	_, errs = VerifyAds(batch, "", "p", now)
	if !errors.Is(errs[0], ErrAdSignature) {
		t.Fatalf("tampered ad in a batch: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Fatalf("ad %d refused beside a tampered one: %v", i+1, err)
		}
	}
}

func FuzzDecodeAd(f *testing.F) {
	k, id := testKey(f)
	now := time.Unix(1_800_000_000, 0)
	f.Add(encode(f, k, validAd(id, now)))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeAd(data, "", "p", now)
		if err == nil && (v == nil || v.Ad.Capacity == nil || v.Ad.Capacity.CpuMillis < 0) {
			t.Fatalf("accepted invalid ad: %v", v)
		}
		if err == nil {
			// However the accepted bytes were encoded, they are the same
			// message as the canonical encoding of what was verified.
			canonical, merr := MarshalSignedAd(v.Signed)
			if merr != nil || AdID(data) != AdID(canonical) {
				t.Fatalf("accepted encoding has another ID than its canonical form (%v)", merr)
			}
		}
	})
}

func TestVerifyResult(t *testing.T) {
	k, id := testKey(t)
	_, other := testKey(t)
	r := &pb.TaskResult{JobId: "j", TaskId: "t", Attempt: 2, Provider: []byte(id), RootCid: []byte{1}, Success: true}
	s, err := SignResult(k, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyResult(s, id, "j", "t", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyResult(s, other, "j", "t", 2); err == nil {
		t.Fatal("accepted a result from the wrong provider")
	}
	if _, err := VerifyResult(s, id, "j", "t", 3); err == nil {
		t.Fatal("accepted a result for another attempt")
	}
	s.Signature[3] ^= 1
	if _, err := VerifyResult(s, id, "j", "t", 2); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered result: %v", err)
	}
}

func FuzzVerifyResult(f *testing.F) {
	k, id := testKey(f)
	s, _ := SignResult(k, &pb.TaskResult{JobId: "j", TaskId: "t", Provider: []byte(id), RootCid: []byte{1}, Success: true})
	f.Add(s.Result, s.Signature)
	f.Fuzz(func(t *testing.T, res, sig []byte) {
		_, _ = VerifyResult(&pb.SignedResult{Result: res, Signature: sig}, id, "j", "t", 0)
	})
}

// An unknown field a relay adds to the SignedAd wrapper does not change the
// ad's ID and is not kept in what VerifyAd returns (which table sync serves
// on).
func TestAdIDAndVerifyIgnoreWrapperFields(t *testing.T) {
	k, id := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	data := encode(t, k, validAd(id, now))
	padded := protowire.AppendBytes(protowire.AppendTag(append([]byte(nil), data...), 99, protowire.BytesType), []byte("relay"))
	if AdID(padded) != AdID(data) {
		t.Fatal("an unknown wrapper field changed the ad's ID")
	}
	v, err := DecodeAd(padded, "", "p", now)
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := MarshalSignedAd(v.Signed); !bytes.Equal(out, data) {
		t.Fatal("the verified ad keeps the relay's wrapper field")
	}
	var s pb.SignedAd
	_ = proto.Unmarshal(data, &s)
	s.Signature[0] ^= 1
	if bad, _ := proto.Marshal(&s); AdID(bad) == AdID(data) {
		t.Fatal("another signature, same ID")
	}
}
