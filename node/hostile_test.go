package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

func testNode(t *testing.T, dir string, mod func(*Config), opts ...Option) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Pool = "test"
	cfg.AdInterval = time.Second
	cfg.MDNS, cfg.NAT, cfg.API = false, false, ""
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(context.Background(), cfg, append([]Option{WithLogger(quietLogger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A hostile peer joins the topic with a real GossipSub and publishes bad
// ads; the node rejects each, counts it by reason, and keeps serving.
func TestHostileAdsRejectedAndCounted(t *testing.T) {
	n := testNode(t, t.TempDir(), nil)
	h, key := hostileHost(t)
	id := h.ID()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps, err := pubsub.NewGossipSub(ctx, h, adWireOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(protocol.CapacityTopic("test"))
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := topic.Subscribe()
	defer sub.Cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "topic peer", func() bool { return len(topic.ListPeers()) > 0 })

	now := time.Now()
	ad := func(seq uint64, f func(*pb.CapacityAd)) *pb.CapacityAd {
		a := &pb.CapacityAd{Version: protocol.Version, PeerId: []byte(id), Pool: "test", Seq: seq,
			TimestampMs: now.UnixMilli(), TtlMs: 30000,
			Capacity: &pb.Capacity{CpuMillis: 1000, MemoryTotal: 1 << 30}, Load: &pb.Load{Slots: 1}}
		if f != nil {
			f(a)
		}
		return a
	}
	publishAs := func(key crypto.PrivKey, a *pb.CapacityAd, corrupt bool) {
		s, err := protocol.SignAd(key, a)
		if err != nil {
			t.Fatal(err)
		}
		if corrupt {
			s.Signature[0] ^= 0xff
		}
		b, _ := proto.Marshal(s)
		if err := topic.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(a *pb.CapacityAd, corrupt bool) { publishAs(key, a, corrupt) }
	// One valid ad first, so the replay below has something to be stale against.
	// Gossip may drop a publish made before the mesh forms: repeat with a
	// newer seq until it lands.
	seq := uint64(100)
	eventually(t, 10*time.Second, "valid hostile-peer ad accepted", func() bool {
		if _, ok := n.Table().Get(id); ok {
			return true
		}
		seq++
		publish(ad(seq, nil), false)
		time.Sleep(200 * time.Millisecond)
		_, ok := n.Table().Get(id)
		return ok
	})
	good, _ := n.Table().Get(id)
	publish(ad(50, nil), false)   // replay of an older seq: ignored, counted stale
	publish(ad(seq+1, nil), true) // wrong signature
	publish(ad(seq+2, func(a *pb.CapacityAd) { a.Capacity.CpuMillis = -4000 }), false)
	publish(ad(seq+3, func(a *pb.CapacityAd) { a.TimestampMs = now.Add(time.Hour).UnixMilli() }), false)
	publish(ad(seq+4, func(a *pb.CapacityAd) {
		a.WarmModels = []string{strings.Repeat("m", 1000), strings.Repeat("n", 1000), strings.Repeat("o", 1000), strings.Repeat("p", 1000)}
	}), false)

	// Gossip messages carry no author: an ad is attributed to its origin by
	// its own signature alone. Relaying another node's ad is allowed; an ad
	// that names another node but is signed by the relay is a forgery (a
	// higher seq than the relayed one, so it is checked in either order).
	otherKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	other, _ := peer.IDFromPrivateKey(otherKey)
	forged := ad(seq+7, func(a *pb.CapacityAd) { a.PeerId = []byte(other) })
	publishAs(key, forged, false)
	relayed := ad(seq+6, func(a *pb.CapacityAd) { a.PeerId = []byte(other) })
	publishAs(otherKey, relayed, false)

	want := map[string]int64{
		protocol.ErrAdSignature.Error(): 2,
		protocol.ErrAdBadValue.Error():  1,
		protocol.ErrAdFuture.Error():    1,
		protocol.ErrAdOversized.Error(): 1,
	}
	eventually(t, 5*time.Second, "rejections counted", func() bool {
		got := n.AdStats().Rejected()
		for k, v := range want {
			if got[k] < v {
				return false
			}
		}
		return n.AdStats().Stale.Load() >= 1
	})
	e, _ := n.Table().Get(id)
	if e.Ad.Seq != good.Ad.Seq || e.Ad.Capacity.CpuMillis != 1000 {
		t.Fatalf("table entry changed by hostile ads: seq %d cpu %d", e.Ad.Seq, e.Ad.Capacity.CpuMillis)
	}
	eventually(t, 5*time.Second, "relayed ad of another node accepted", func() bool {
		_, ok := n.Table().Get(other)
		return ok
	})
	if e, _ := n.Table().Get(other); e.Ad.Seq != relayed.Seq {
		t.Fatalf("other node's entry has seq %d, want the relayed ad's %d (the forged one is %d)", e.Ad.Seq, relayed.Seq, forged.Seq)
	}
}

func TestKilledNodeLeavesTableWithinTTL(t *testing.T) {
	dir := t.TempDir()
	a := testNode(t, filepath.Join(dir, "a"), nil)
	b := testNode(t, filepath.Join(dir, "b"), nil)
	c := testNode(t, filepath.Join(dir, "c"), nil)
	ctx := context.Background()
	for _, x := range []*Node{b, c} {
		if err := x.Connect(ctx, a.Addrs()[0]); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "convergence", func() bool {
		return a.Table().Len() == 2 && b.Table().Len() == 2 && c.Table().Len() == 2
	})
	killed := time.Now()
	c.Close()
	ttl := c.Config().AdTTL
	eventually(t, ttl+2*time.Second, "killed node to leave tables", func() bool {
		_, inA := a.Table().Get(c.ID())
		_, inB := b.Table().Get(c.ID())
		return !inA && !inB
	})
	if took := time.Since(killed); took > ttl+time.Second {
		t.Errorf("left after %s, TTL %s", took, ttl)
	}
}

func TestRestartKeepsPeerID(t *testing.T) {
	dir := t.TempDir()
	n := testNode(t, dir, nil)
	id := n.ID()
	n.Close()
	again := testNode(t, dir, nil)
	if again.ID() != id {
		t.Fatalf("peer ID changed across restart: %s -> %s", id, again.ID())
	}
	st, err := os.Stat(filepath.Join(dir, identityFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("identity key mode %v, want 0600", st.Mode().Perm())
	}
}

func writePSK(t *testing.T, dir string) string {
	b := make([]byte, 32)
	rand.Read(b)
	p := filepath.Join(dir, "swarm.key")
	if err := os.WriteFile(p, []byte("/key/swarm/psk/1.0.0/\n/base16/\n"+hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPSKIsolatesPools(t *testing.T) {
	dir := t.TempDir()
	keyA, keyB := writePSK(t, dir), writePSK(t, filepath.Join(t.TempDir()))
	withPSK := func(k string) func(*Config) {
		return func(c *Config) {
			c.PSKFile = k
			c.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
		}
	}
	a1 := testNode(t, filepath.Join(dir, "a1"), withPSK(keyA))
	a2 := testNode(t, filepath.Join(dir, "a2"), withPSK(keyA))
	b := testNode(t, filepath.Join(dir, "b"), withPSK(keyB))
	open := testNode(t, filepath.Join(dir, "open"), nil)
	for _, a := range a1.Addrs() {
		if strings.Contains(a, "quic") {
			t.Fatalf("private node listens on QUIC: %s", a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a2.Connect(ctx, a1.Addrs()[0]); err != nil {
		t.Fatalf("same key: %v", err)
	}
	if err := b.Connect(ctx, a1.Addrs()[0]); err == nil {
		t.Fatal("a node with another PSK connected")
	}
	if err := open.Connect(ctx, a1.Addrs()[0]); err == nil {
		t.Fatal("a node without a PSK connected")
	}
	eventually(t, 5*time.Second, "a1 and a2 to see each other", func() bool { return a1.Table().Len() == 1 && a2.Table().Len() == 1 })
	time.Sleep(time.Second)
	if b.Table().Len() != 0 || open.Table().Len() != 0 {
		t.Fatalf("outsiders see peers: b=%d open=%d", b.Table().Len(), open.Table().Len())
	}
	if _, ok := a1.Table().Get(b.ID()); ok {
		t.Fatal("pool member sees the outsider")
	}
}

func TestConfigValidateNamesBadSetting(t *testing.T) {
	cases := map[string]func(*Config){
		"pool":        func(c *Config) { c.Pool = "a/b" },
		"listen":      func(c *Config) { c.Listen = []string{"not-a-multiaddr"} },
		"bootstrap":   func(c *Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1"} },
		"api":         func(c *Config) { c.API = "nohostport" },
		"executor":    func(c *Config) { c.Executor = "vm" },
		"cpus":        func(c *Config) { c.CPUs = -1 },
		"memory":      func(c *Config) { c.Memory = -1 },
		"ad-interval": func(c *Config) { c.AdInterval = time.Millisecond },
		"gpus":        func(c *Config) { c.GPUs = "0,,1" },
	}
	for name, f := range cases {
		c := DefaultConfig()
		f(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := LoadPSK(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing psk file accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("/key/swarm/psk/1.0.0/\n/base16/\nzz\n"), 0o600)
	if _, err := LoadPSK(bad); err == nil {
		t.Error("malformed psk accepted")
	}
}

func FuzzParseSMI(f *testing.F) {
	f.Add("NVIDIA H100 80GB HBM3, 81559, GPU-abc\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, g := range parseSMI(s) {
			if g.Memory < 0 {
				t.Fatal("negative memory")
			}
		}
	})
}
