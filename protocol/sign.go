package protocol

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Signing domains keep a signature over one message kind from being
// replayed as another.
const (
	domainAd     = "swarmgen-capacity-ad:"
	domainResult = "swarmgen-task-result:"
)

// ErrBadSignature is returned when a signature does not verify.
var ErrBadSignature = errors.New("bad signature")

func sign(key crypto.PrivKey, domain string, payload []byte) ([]byte, error) {
	sig, err := key.Sign(append([]byte(domain), payload...))
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// verify checks sig over payload with the public key embedded in signer.
// Only peer IDs that embed their key (Ed25519, as swarmgen nodes use) verify.
func verify(signer peer.ID, domain string, payload, sig []byte) error {
	pub, err := signer.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("public key of %s: %w", signer, err)
	}
	ok, err := pub.Verify(append([]byte(domain), payload...), sig)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}
