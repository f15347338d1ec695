package bucket

import (
	"hash/maphash"
	"math/bits"
)

// keyFilter is a Bloom filter over the multihashes in the pack index. Most
// lookups of a put are for blocks the store does not hold (every block of a
// new result), and each used to cost a pebble Get — several per block,
// ~15 % of a provider's CPU per tiny task. A "no" from the filter is
// certain, so those lookups stop here; a "maybe" (a held block, a deleted
// one, or a false positive, ~1 % at capacity) goes to the index as before.
//
// Keys are only ever added: a deleted block stays a "maybe" until the filter
// is rebuilt. Not safe for concurrent use: packStore guards it with mu.
type keyFilter struct {
	bits     []uint64
	mask     uint64 // len(bits)*64 - 1; the bit count is a power of two
	n        int    // keys added
	capacity int    // keys it was sized for; past this the error rate rises
	seed     maphash.Seed
}

// Filter sizing: 16 bits and 6 probes per key give ~0.1 % false positives
// at capacity (rounding the bit count up to a power of two only lowers it);
// 2 bytes a key, 2 MiB per million blocks.
const (
	filterBitsPerKey = 16
	filterProbes     = 6
)

// filterMinKeys is the smallest capacity (a variable for tests).
var filterMinKeys = 1 << 14

// newKeyFilter returns an empty filter sized for at least capacity keys.
func newKeyFilter(capacity int) *keyFilter {
	capacity = max(capacity, filterMinKeys)
	nbits := uint64(1) << bits.Len64(uint64(capacity*filterBitsPerKey-1))
	return &keyFilter{bits: make([]uint64, nbits/64), mask: nbits - 1, capacity: capacity, seed: maphash.MakeSeed()}
}

// probes derives the filter's bit positions from one 64-bit hash of h
// (double hashing: h1 + i·h2; h2 odd, so the probes differ).
func (f *keyFilter) probes(h []byte) (h1, h2 uint64) {
	x := maphash.Bytes(f.seed, h)
	return x, bits.RotateLeft64(x, 32) | 1
}

// add records h. A nil filter (one whose rebuild failed) records nothing.
func (f *keyFilter) add(h []byte) {
	if f == nil {
		return
	}
	h1, h2 := f.probes(h)
	for i := uint64(0); i < filterProbes; i++ {
		b := (h1 + i*h2) & f.mask
		f.bits[b/64] |= 1 << (b % 64)
	}
	f.n++
}

// mayHave reports false if h was certainly never added. A nil filter
// answers true: it rules nothing out.
func (f *keyFilter) mayHave(h []byte) bool {
	if f == nil {
		return true
	}
	h1, h2 := f.probes(h)
	for i := uint64(0); i < filterProbes; i++ {
		b := (h1 + i*h2) & f.mask
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// full reports whether more keys were added than the filter was sized for,
// or there is no filter.
func (f *keyFilter) full() bool { return f == nil || f.n > f.capacity }
