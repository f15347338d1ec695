package protocol

import (
	"errors"
	"testing"
)

// TestKeyCacheVerifies: checks through a cache, before and after a key is
// expanded and in batches mixing expanded and plain keys, accept what the
// uncached path accepts and refuse what it refuses; the cache stays within
// its bound.
func TestKeyCacheVerifies(t *testing.T) {
	k := NewKeyCache(3)
	key, id := testKey(t)
	other, otherID := testKey(t)
	payload := []byte("result bytes")
	good, _ := sign(key, domainResult, payload)
	byOther, _ := sign(other, domainResult, payload)
	for i := range 4 { // the first check leaves the key plain, the next ones expanded
		if err := verify(k, id, domainResult, payload, good); err != nil {
			t.Fatalf("check %d: good signature refused: %v", i, err)
		}
		if err := verify(k, id, domainResult, payload, byOther); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("check %d: another key's signature: %v", i, err)
		}
		if err := verify(k, id, domainAd, payload, good); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("check %d: signature replayed across domains: %v", i, err)
		}
	}
	if k.m[id] == nil {
		t.Fatal("a key checked four times is not expanded")
	}
	// A batch mixing an expanded key (id), a plain one (otherID, first
	// sighting) and a bad signature: only the bad one fails.
	checks := []sigCheck{
		{id, domainResult, payload, good},
		{otherID, domainResult, payload, byOther},
		{id, domainResult, []byte("tampered"), good},
	}
	errs := verifyAll(k, checks)
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrBadSignature) {
		t.Fatalf("mixed batch: %v", errs)
	}
	// All expanded now: the precomputed batch path.
	errs = verifyAll(k, checks)
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrBadSignature) {
		t.Fatalf("expanded batch: %v", errs)
	}
	// Forgeries under made-up signers are not recorded.
	before := k.Len()
	for range 10 {
		_, forged := testKey(t)
		_ = verify(k, forged, domainResult, payload, good)
	}
	if k.Len() != before {
		t.Fatalf("forged signatures added %d keys", k.Len()-before)
	}
	for range 10 {
		key, id := testKey(t)
		sig, _ := sign(key, domainResult, payload)
		if err := verify(k, id, domainResult, payload, sig); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.Len(); n != 3 {
		t.Fatalf("cache holds %d keys, want its bound 3", n)
	}
	var nilCache *KeyCache
	if err := verify(nilCache, id, domainResult, payload, good); err != nil || nilCache.Len() != 0 {
		t.Fatalf("nil cache: %v", err)
	}
}

// BenchmarkVerifyResult: one provider's results checked one by one, as a
// submitter does, with and without the provider's expanded key.
//
//	go test -run '^$' -bench VerifyResult ./protocol
func BenchmarkVerifyResult(b *testing.B) {
	key, id := testKey(b)
	payload := make([]byte, 300)
	sig, _ := sign(key, domainResult, payload)
	for _, c := range []struct {
		name string
		keys *KeyCache
	}{{"plain", nil}, {"cached", NewKeyCache(0)}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := verify(c.keys, id, domainResult, payload, sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
