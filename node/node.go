package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/bucket"
	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/inference/stablediffusion"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/scheduler"
)

// Option changes how New builds a node.
type Option func(*options)

type options struct {
	log   *slog.Logger
	execs map[string]inference.Executor
	sched scheduler.Config
	// afterImport, if set, sees every task output this node imports as a
	// provider (tests use it to play a provider that serves bad blocks).
	afterImport func(ctx context.Context, store *bucket.Store, root cid.Cid)
	// noTaskSessions: the provider does not serve task sessions, as a
	// node of an older version (tests of the per-task stream fallback).
	noTaskSessions bool
}

// WithLogger sets the node's logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Node is one running swarmgen node. Its methods are safe for concurrent use.
// Every goroutine it starts is owned by it and stops in Close.
type Node struct {
	cfg   Config
	log   *slog.Logger
	key   crypto.PrivKey
	id    peer.ID
	host  host.Host
	ps    *pubsub.PubSub
	topic *pubsub.Topic
	table *scheduler.Table

	adStats AdStats
	syncSem chan struct{}
	// pullBacksWaiting counts pull-backs started and not yet holding a
	// sync slot (see pullBack).
	pullBacksWaiting atomic.Int32
	probe            Probe
	execs            []string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	adMu      sync.Mutex
	self      *selfAd
	adTrigger chan struct{}
	loadFn    func() api.Load // current load, set by the provider side
	warmFn    func() []string // warm models, set by the provider side

	tableMu     sync.Mutex
	tableChange chan struct{} // closed and replaced on every table change

	syncedMu sync.Mutex
	synced   map[peer.ID]time.Time // last pull on connect per peer, bounded (onConnected)
	tsync    syncSched             // anti-entropy plan and pull-back limits (tablesync.go)
	faults   syncFaults            // peers that served invalid ads by table sync (syncfault.go)
	keys     *protocol.KeyCache    // peers' expanded keys: their ads and results are checked again and again

	registry    *jobspec.Registry
	results     *results
	provider    *provider
	submitter   *submitter
	warm        *stablediffusion.WarmPool
	sdOff       atomic.Bool // no usable Python/diffusers (yet): stable-diffusion not offered
	gatewayAddr net.Addr

	apiServer *http.Server
	apiAddr   net.Addr
	closeOnce sync.Once
	closeErr  error
	closers   []func() error         // run in reverse order by Close
	routes    []func(*http.ServeMux) // extra API routes (jobs, templates)
}

// New starts a node: host, gossip, table sync, discovery and the HTTP API.
// ctx bounds start-up only; the node runs until Close.
func New(ctx context.Context, cfg Config, opts ...Option) (*Node, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if cfg.AdTTL == 0 {
		cfg.AdTTL = 3 * cfg.AdInterval
		if cfg.AdTTL < protocol.MinAdTTL {
			cfg.AdTTL = protocol.MinAdTTL
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data-dir: %w", err)
	}
	key, id, err := LoadOrCreateIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:         cfg,
		log:         o.log.With("node", id.ShortString()),
		key:         key,
		id:          id,
		table:       scheduler.NewTable(),
		syncSem:     make(chan struct{}, maxSyncInFlight),
		ctx:         runCtx,
		cancel:      cancel,
		adTrigger:   make(chan struct{}, 1),
		tableChange: make(chan struct{}),
		synced:      map[peer.ID]time.Time{},
		keys:        protocol.NewKeyCache(0),
		loadFn:      func() api.Load { return api.Load{} },
		warmFn:      func() []string { return nil },
	}
	if err := n.start(ctx, &o); err != nil {
		_ = n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context, o *options) error {
	var err error
	if n.probe, err = probeMachine(ctx, &n.cfg); err != nil {
		return err
	}
	if n.host, err = newHost(&n.cfg, n.key, n.log); err != nil {
		return err
	}
	n.closers = append(n.closers, n.host.Close)
	n.host.SetStreamHandler(protocol.TableProtocol, n.handleTableStream)
	n.host.Network().Notify(&network.NotifyBundle{ConnectedF: n.onConnected})

	topicName := protocol.CapacityTopic(n.cfg.Pool)
	if n.ps, err = newPubSub(n.ctx, n.host, &n.cfg, topicName, n.appScore); err != nil {
		return err
	}
	if err := n.ps.RegisterTopicValidator(topicName, n.adValidator); err != nil {
		return fmt.Errorf("topic validator: %w", err)
	}
	if n.topic, err = n.ps.Join(topicName); err != nil {
		return fmt.Errorf("join %s: %w", topicName, err)
	}
	n.closers = append(n.closers, n.topic.Close)
	sub, err := n.topic.Subscribe()
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", topicName, err)
	}
	n.goRun("read-ads", func(ctx context.Context) { n.readAds(ctx, sub) })
	n.goRun("expire-ads", n.expireLoop)
	n.goRun("anti-entropy", n.antiEntropyLoop)
	if len(n.cfg.Bootstrap) > 0 {
		n.goRun("bootstrap", n.bootstrapLoop)
	}
	if n.cfg.MDNS {
		if err := n.startMDNS(); err != nil {
			n.log.Warn("mdns discovery off", "err", err)
		}
	}
	if n.cfg.DHT {
		if err := n.startDHT(); err != nil {
			return err
		}
	}
	if err := n.startJobs(ctx, o); err != nil {
		return err
	}
	if n.cfg.API != "" {
		if err := n.startAPI(); err != nil {
			return err
		}
	}
	n.goRun("publish-ads", n.publishLoop)
	n.log.Info("node started", "peer", n.id, "addrs", n.host.Addrs(), "pool", n.cfg.Pool, "api", n.APIAddr())
	return nil
}

// goRun starts fn as a goroutine owned by the node; fn must return when its
// ctx is done. Close waits for it.
func (n *Node) goRun(name string, fn func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				n.log.Error("goroutine panicked", "name", name, "panic", r)
			}
		}()
		fn(n.ctx)
	}()
}

// Close stops every goroutine of the node, the HTTP server and the host.
// It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		if n.apiServer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_ = n.apiServer.Shutdown(ctx)
			cancel()
		}
		n.wg.Wait()
		var errs []error
		for i := len(n.closers) - 1; i >= 0; i-- {
			if err := n.closers[i](); err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.id }

// Host returns the libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Table returns the capacity table.
func (n *Node) Table() *scheduler.Table { return n.table }

// AdStats returns the counters of received ads.
func (n *Node) AdStats() *AdStats { return &n.adStats }

// Config returns the node's effective configuration.
func (n *Node) Config() Config { return n.cfg }

// APIAddr returns the address the HTTP API listens on, or "" when off.
func (n *Node) APIAddr() string {
	if n.apiAddr == nil {
		return ""
	}
	return n.apiAddr.String()
}

// Addrs returns the node's full multiaddrs (ending in /p2p/<id>).
func (n *Node) Addrs() []string {
	p2p, _ := ma.NewComponent("p2p", n.id.String())
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.Encapsulate(p2p.Multiaddr()).String())
	}
	return out
}

// Info is GET /v1/node.
func (n *Node) Info() api.NodeInfo {
	return api.NodeInfo{PeerID: n.id.String(), Addrs: n.Addrs(), Pool: n.cfg.Pool, Version: Version, Gateway: n.GatewayURL()}
}

// Connect dials a peer given as a full multiaddr.
func (n *Node) Connect(ctx context.Context, addr string) error {
	pi, err := peer.AddrInfoFromString(addr)
	if err != nil {
		return fmt.Errorf("connect %q: %w", addr, err)
	}
	if err := n.host.Connect(ctx, *pi); err != nil {
		return fmt.Errorf("connect %s: %w", pi.ID, err)
	}
	return nil
}

func (n *Node) now() time.Time { return time.Now() }

// notifyTable wakes everyone waiting for a table change.
func (n *Node) notifyTable() {
	n.tableMu.Lock()
	close(n.tableChange)
	n.tableChange = make(chan struct{})
	n.tableMu.Unlock()
}

// TableChanged returns a channel closed at the next change of the table.
func (n *Node) TableChanged() <-chan struct{} {
	n.tableMu.Lock()
	defer n.tableMu.Unlock()
	return n.tableChange
}

// syncOnConnectEvery bounds pulls on connect to one per peer per period;
// maxSyncedPeers bounds the map that enforces it (see claimPeer). Past it
// within one period a new connection does not pull: the connection manager
// keeps far fewer peers than that, and anti-entropy reaches them anyway.
const (
	syncOnConnectEvery = time.Second
	maxSyncedPeers     = 1024
)

// onConnected pulls the table of every peer this node dialled (once a
// second per peer at most, whatever the number of connections). The peer
// that was dialled does not pull in turn: the request it serves lists the
// dialler's own seq, and if that is news it pulls back (pullBack), which
// brings the same ads. Pulling from both ends as well made a third pull per
// new connection; at 100 nodes joining at once that was ~400 pulls of
// ~2100, for nothing new.
func (n *Node) onConnected(_ network.Network, c network.Conn) {
	if c.Stat().Direction != network.DirOutbound {
		return
	}
	p := c.RemotePeer()
	if n.faults.suspended(p, n.now()) {
		return
	}
	n.syncedMu.Lock()
	ok := claimPeer(n.synced, p, time.Now(), syncOnConnectEvery, maxSyncedPeers)
	n.syncedMu.Unlock()
	if !ok {
		return
	}
	select {
	case <-n.ctx.Done():
		return
	default:
	}
	n.goRun("sync-on-connect", func(ctx context.Context) {
		if err := n.syncFrom(ctx, p); err != nil {
			n.log.Debug("table sync on connect", "peer", p, "err", err)
		}
	})
}

// expireLoop drops peers whose ads ran out.
func (n *Node) expireLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if gone := n.table.Expire(n.now()); len(gone) > 0 {
				n.log.Info("peers left capacity table", "peers", gone)
				n.notifyTable()
			}
		}
	}
}

// bootstrapLoop keeps trying the bootstrap peers until connected, and
// reconnects if all connections are lost.
func (n *Node) bootstrapLoop(ctx context.Context) {
	for {
		if len(n.host.Network().Peers()) == 0 {
			for _, a := range n.cfg.Bootstrap {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := n.Connect(cctx, a); err != nil {
					n.log.Warn("bootstrap", "addr", a, "err", err)
				}
				cancel()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
