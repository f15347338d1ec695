package protocol

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Signing domains keep a signature over one message kind from being
// replayed as another.
const (
	domainAd     = "swarmgen-capacity-ad:"
	domainResult = "swarmgen-task-result:"
)

// ErrBadSignature is returned when a signature does not verify.
var ErrBadSignature = errors.New("bad signature")

// sign signs domain+payload with key. Ed25519 keys (what nodes use) sign
// through curve25519-voi, about twice as fast here as crypto/ed25519, which
// libp2p's key type calls; Ed25519 signatures are deterministic, so the
// bytes are the same (TestSignMatchesLibp2p). A provider signs every task
// result, so this is on the path of every task.
func sign(key crypto.PrivKey, domain string, payload []byte) ([]byte, error) {
	msg := append([]byte(domain), payload...)
	if key.Type() == cryptopb.KeyType_Ed25519 {
		raw, err := key.Raw()
		if err == nil && len(raw) == voi.PrivateKeySize {
			return voi.Sign(voi.PrivateKey(raw), msg), nil
		}
	}
	sig, err := key.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// Ed25519 signatures are checked with curve25519-voi, not crypto/ed25519:
// it checks a batch (the ads of a table-sync response, ~99 of them when a
// node joins a 100-node pool) at about 40% of the cost of one-by-one
// checks, which is most of a joining node's CPU. Its default options are
// the cofactored equation of RFC 8032 / FIPS 186-5 with small-order public
// keys refused, for single and batch checks alike, so a signature's fate
// does not depend on which path checked it. (crypto/ed25519 is
// cofactorless; the two differ only on signatures crafted under a
// small-order or non-canonical key, which no honest node has and which
// cannot forge another peer's signature.)

// sigCheck is one signature to check: sig by signer over domain+payload.
type sigCheck struct {
	signer       peer.ID
	domain       string
	payload, sig []byte
}

func (c sigCheck) message() []byte { return append([]byte(c.domain), c.payload...) }

// ed25519Key returns the Ed25519 key embedded in signer, or nil with a
// usable crypto.PubKey for other embedded key types (verified the libp2p
// way).
func ed25519Key(signer peer.ID) (voi.PublicKey, crypto.PubKey, error) {
	pub, err := signer.ExtractPublicKey()
	if err != nil {
		return nil, nil, fmt.Errorf("public key of %s: %w", signer, err)
	}
	if pub.Type() != cryptopb.KeyType_Ed25519 {
		return nil, pub, nil
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != voi.PublicKeySize {
		return nil, nil, fmt.Errorf("public key of %s: malformed Ed25519 key", signer)
	}
	return voi.PublicKey(raw), nil, nil
}

// verify checks one signature. Only peer IDs that embed their key
// (Ed25519, as swarmgen nodes use) verify.
func verify(keys *KeyCache, signer peer.ID, domain string, payload, sig []byte) error {
	return verifyAll(keys, []sigCheck{{signer, domain, payload, sig}})[0]
}

// verifyAll checks every signature, with keys' expanded keys where it
// has them; errs[i] is nil where checks[i] verified. The Ed25519 ones go
// through one batch: when all are good, that is the whole cost; when one is
// bad, each is checked on its own.
func verifyAll(keys *KeyCache, checks []sigCheck) []error {
	errs := make([]error, len(checks))
	type pending struct {
		i        int
		signer   peer.ID
		key      voi.PublicKey
		exp      *voi.ExpandedPublicKey
		msg, sig []byte
	}
	var batch []pending
	allExpanded := true
	for i, c := range checks {
		key, other, err := ed25519Key(c.signer)
		switch {
		case err != nil:
			errs[i] = err
		case other != nil:
			ok, err := other.Verify(c.message(), c.sig)
			if err != nil {
				errs[i] = fmt.Errorf("verify: %w", err)
			} else if !ok {
				errs[i] = ErrBadSignature
			}
		default:
			exp := keys.expanded(c.signer)
			allExpanded = allExpanded && exp != nil
			batch = append(batch, pending{i, c.signer, key, exp, c.message(), c.sig})
		}
	}
	switch len(batch) {
	case 0:
	case 1: // a batch of one costs more than a plain check
		p := batch[0]
		ok := false
		if p.exp != nil {
			ok = voi.VerifyExpanded(p.exp, p.msg, p.sig)
		} else {
			ok = voi.Verify(p.key, p.msg, p.sig)
		}
		if !ok {
			errs[p.i] = ErrBadSignature
		}
	default:
		bv := voi.NewBatchVerifierWithCapacity(len(batch))
		if !allExpanded {
			// A key expanded here would be used once, and the expansion
			// costs more than it saves (~10% per signature).
			bv.ForceNoPublicKeyExpansion()
		}
		for _, p := range batch {
			if p.exp != nil {
				bv.AddExpanded(p.exp, p.msg, p.sig)
			} else {
				bv.Add(p.key, p.msg, p.sig)
			}
		}
		// nil: the batch's random coefficients come from crypto/rand.
		_, valid := bv.Verify(nil)
		for j, p := range batch {
			if !valid[j] {
				errs[p.i] = ErrBadSignature
			}
		}
	}
	if keys != nil {
		for _, p := range batch {
			if errs[p.i] == nil {
				keys.verified(p.signer, p.key)
			}
		}
	}
	return errs
}
