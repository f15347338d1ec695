package protocol

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// KeyCache keeps the Ed25519 keys of the peers whose signatures a node
// checks again and again, expanded: a node checks each peer's ad once per
// ad interval, a submitter one signed result per task from a few
// providers, and a check with an expanded key costs
// ~40% less (curve25519-voi: ~55 µs against ~90 µs on the 2-core VM, for
// ~11 µs of expansion once). A key is expanded at its signer's second
// good signature, so peers seen once (a joining node checking a whole table of ads)
// cost nothing but a map entry. Each node has its own cache: nodes sharing
// a process (a devnet) must not share each other's work. At most max keys
// are kept (an expanded key is ~1.5 KiB); past that an arbitrary one makes
// room. Safe for concurrent use; a nil *KeyCache caches nothing.
type KeyCache struct {
	mu  sync.Mutex
	max int
	m   map[peer.ID]*voi.ExpandedPublicKey // nil: one good signature so far
}

// DefaultKeyCacheSize bounds a node's KeyCache: a pool's table holds at
// most 4 095 peers, and the ones whose results a node checks are fewer.
const DefaultKeyCacheSize = 1024

// NewKeyCache returns a cache of at most max keys (≤ 0: DefaultKeyCacheSize).
func NewKeyCache(max int) *KeyCache {
	if max <= 0 {
		max = DefaultKeyCacheSize
	}
	return &KeyCache{max: max, m: map[peer.ID]*voi.ExpandedPublicKey{}}
}

// expanded returns signer's expanded key, or nil while it has none.
func (k *KeyCache) expanded(signer peer.ID) *voi.ExpandedPublicKey {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[signer]
}

// verified records a good signature by signer, whose key is pub, and
// expands the key at its second. Only good signatures count, so a peer
// sending forgeries under made-up signers neither gets keys expanded nor
// fills the cache with them.
func (k *KeyCache) verified(signer peer.ID, pub voi.PublicKey) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	exp, seen := k.m[signer]
	switch {
	case !seen:
		if len(k.m) >= k.max {
			for q := range k.m { // map order: an arbitrary victim
				delete(k.m, q)
				break
			}
		}
		k.m[signer] = nil
	case exp == nil:
		// The peer ID embeds the key, so the key cannot change under
		// the same signer.
		if exp, err := voi.NewExpandedPublicKey(pub); err == nil {
			k.m[signer] = exp
		}
	}
}

// Len returns how many keys the cache holds.
func (k *KeyCache) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
