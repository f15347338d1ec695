package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const identityFile = "identity.key"

// LoadOrCreateIdentity returns the node's Ed25519 key from dataDir, creating
// and persisting one (mode 0600) if absent, so a restart keeps the peer ID.
func LoadOrCreateIdentity(dataDir string) (crypto.PrivKey, peer.ID, error) {
	path := filepath.Join(dataDir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(b) > 4096 {
			return nil, "", fmt.Errorf("identity %s: %d bytes, not a key file", path, len(b))
		}
		key, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, "", fmt.Errorf("identity %s: %w", path, err)
		}
		if key.Type() != crypto.Ed25519 {
			return nil, "", fmt.Errorf("identity %s: key type %s, want Ed25519", path, key.Type())
		}
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			slog.Warn("identity key is readable by others", "path", path, "mode", st.Mode().Perm())
		}
		pid, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, "", fmt.Errorf("identity %s: %w", path, err)
		}
		return key, pid, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("identity: generate: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("identity: marshal: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	pid, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	return key, pid, nil
}
