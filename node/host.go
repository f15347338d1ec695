package node

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// maxPSKFile bounds the swarm key file we read.
const maxPSKFile = 1024

// LoadPSK reads a swarm key in the format IPFS private networks use:
//
//	/key/swarm/psk/1.0.0/
//	/base16/
//	<64 hex digits>
func LoadPSK(path string) (pnet.PSK, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("psk-file: %w", err)
	}
	if len(b) > maxPSKFile {
		return nil, fmt.Errorf("psk-file %s: %d bytes, not a swarm key", path, len(b))
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("psk-file %s: %w", path, err)
	}
	return psk, nil
}

// newHost builds the libp2p host: TCP and QUIC, Noise and TLS, yamux, a
// connection manager, the resource manager, optional PSK and NAT traversal.
func newHost(cfg *Config, key crypto.PrivKey, log *slog.Logger) (host.Host, error) {
	listen := cfg.Listen
	var psk pnet.PSK
	if cfg.PSKFile != "" {
		var err error
		if psk, err = LoadPSK(cfg.PSKFile); err != nil {
			return nil, err
		}
		// QUIC does its own encryption handshake and cannot be wrapped in
		// the PSK's stream cipher, so a private network runs on TCP only.
		var kept []string
		for _, a := range listen {
			if strings.Contains(a, "/quic") {
				log.Warn("private network: QUIC cannot run under a PSK, not listening on it; using TCP", "addr", a)
				continue
			}
			kept = append(kept, a)
		}
		listen = kept
	}
	cm, err := connmgr.NewConnManager(100, 400, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("connection manager: %w", err)
	}
	limiter := rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale())
	// Metrics off: nothing exports them (the host runs DisableMetrics too),
	// and their trace hook costs a timestamp format per stream event.
	rm, err := rcmgr.NewResourceManager(limiter, rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(tls.ID, tls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.UserAgent("swarmgen/" + Version),
		libp2p.DisableMetrics(),
	}
	if psk != nil {
		opts = append(opts, libp2p.PrivateNetwork(psk))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	if cfg.NAT {
		opts = append(opts, libp2p.NATPortMap(), libp2p.EnableHolePunching(), libp2p.EnableNATService(), libp2p.EnableAutoNATv2())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("libp2p host: %w", err)
	}
	return h, nil
}
