package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// DevnetConfig configures StartDevnet.
type DevnetConfig struct {
	Nodes      int           // number of nodes, >= 1
	API        string        // node 0's API address
	Gateway    string        // node 0's gateway address; empty = off
	DataDir    string        // root of the nodes' data dirs; empty = a temp dir removed on Close
	Pool       string        // default "devnet"
	AdInterval time.Duration // default 2s
	Logger     *slog.Logger
	// Configure, if set, adjusts each node's config before it starts.
	Configure func(i int, c *Config)
	// Options are passed to every node; PerNode adds options for node i.
	Options []Option
	PerNode func(i int) []Option
}

// Devnet is N real libp2p nodes in one process on loopback, connected,
// node 0 serving the API (and gateway).
type Devnet struct {
	nodes   []*Node
	tempDir string
}

// devnetMeshNodes: up to this many nodes a devnet is a full mesh; a larger
// one connects each node to node 0 (the submitter and API, which dials
// every provider directly) and to devnetLinks earlier nodes picked by a
// seeded shuffle, as a real pool grows from bootstrap peers. A full mesh of
// 51 nodes is 1275 handshakes and table syncs at start, which on two cores
// timed out under load.
const (
	devnetMeshNodes = 8
	devnetLinks     = 4
)

// StartDevnet starts the nodes and connects them (see devnetMeshNodes).
func StartDevnet(ctx context.Context, dc DevnetConfig) (*Devnet, error) {
	if dc.Nodes < 1 || dc.Nodes > 256 {
		return nil, fmt.Errorf("devnet: nodes %d: want 1..256", dc.Nodes)
	}
	if dc.Pool == "" {
		dc.Pool = "devnet"
	}
	if dc.AdInterval == 0 {
		dc.AdInterval = 2 * time.Second
	}
	if dc.Logger == nil {
		dc.Logger = slog.Default()
	}
	d := &Devnet{}
	if dc.DataDir == "" {
		tmp, err := os.MkdirTemp("", "swarmgen-devnet-")
		if err != nil {
			return nil, fmt.Errorf("devnet: %w", err)
		}
		dc.DataDir, d.tempDir = tmp, tmp
	}
	for i := 0; i < dc.Nodes; i++ {
		cfg := DefaultConfig()
		cfg.DataDir = filepath.Join(dc.DataDir, fmt.Sprintf("node-%d", i))
		cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
		cfg.Pool = dc.Pool
		cfg.AdInterval = dc.AdInterval
		cfg.MDNS, cfg.NAT = false, false
		cfg.API, cfg.Gateway = "", ""
		if i == 0 {
			cfg.API, cfg.Gateway = dc.API, dc.Gateway
		}
		if dc.Configure != nil {
			dc.Configure(i, &cfg)
		}
		opts := append([]Option{WithLogger(dc.Logger.With("devnet", i))}, dc.Options...)
		if dc.PerNode != nil {
			opts = append(opts, dc.PerNode(i)...)
		}
		n, err := New(ctx, cfg, opts...)
		if err != nil {
			_ = d.Close()
			return nil, fmt.Errorf("devnet node %d: %w", i, err)
		}
		d.nodes = append(d.nodes, n)
		for _, prev := range devnetPeers(d.nodes[:i], dc.Nodes, i) {
			if err := n.Connect(ctx, prev.Addrs()[0]); err != nil {
				_ = d.Close()
				return nil, fmt.Errorf("devnet: connect node %d to %s: %w", i, prev.ID(), err)
			}
		}
	}
	return d, nil
}

// Nodes returns the devnet's nodes; node 0 serves the API.
func (d *Devnet) Nodes() []*Node { return d.nodes }

// WaitConverged waits until every node's table holds every other node.
func (d *Devnet) WaitConverged(ctx context.Context) error {
	for _, n := range d.nodes {
		for n.table.Len() < len(d.nodes)-1 {
			ch := n.TableChanged()
			if n.table.Len() >= len(d.nodes)-1 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("devnet: node %s sees %d of %d peers: %w", n.ID(), n.table.Len(), len(d.nodes)-1, ctx.Err())
			case <-ch:
			}
		}
	}
	return nil
}

// Close stops every node, last first, and removes a temp data dir.
func (d *Devnet) Close() error {
	var errs []error
	for i := len(d.nodes) - 1; i >= 0; i-- {
		if err := d.nodes[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.tempDir != "" {
		if err := os.RemoveAll(d.tempDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// devnetPeers picks which earlier nodes node i dials (see devnetMeshNodes).
func devnetPeers(earlier []*Node, total, i int) []*Node {
	if total <= devnetMeshNodes || len(earlier) <= devnetLinks+1 {
		return earlier
	}
	rest := slices.Clone(earlier[1:])
	r := rand.New(rand.NewPCG(uint64(total), uint64(i)))
	r.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
	return append([]*Node{earlier[0]}, rest[:devnetLinks]...)
}
