package protocol

import (
	"crypto/rand"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestSignMatchesLibp2p: the voi signing path makes the same bytes as
// libp2p's own Ed25519 signing, and they verify; other key types still
// sign through libp2p.
func TestSignMatchesLibp2p(t *testing.T) {
	for i := 0; i < 20; i++ {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, i*37)
		rand.Read(payload)
		got, err := sign(key, domainResult, payload)
		if err != nil {
			t.Fatal(err)
		}
		want, err := key.Sign(append([]byte(domainResult), payload...))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("key %d: voi signature differs from libp2p's", i)
		}
		id, _ := peer.IDFromPrivateKey(key)
		if err := verify(nil, id, domainResult, payload, got); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	k, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sign(k, domainAd, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	if err := verify(nil, id, domainAd, []byte("x"), sig); err != nil {
		t.Fatalf("secp256k1: %v", err)
	}
}

// BenchmarkSign: one result-sized signature, voi against libp2p's
// crypto/ed25519 path.
//
//	go test -run '^$' -bench Sign ./protocol
func BenchmarkSign(b *testing.B) {
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	payload := make([]byte, 300)
	b.Run("voi", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := sign(key, domainResult, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("libp2p", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := key.Sign(append([]byte(domainResult), payload...)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
