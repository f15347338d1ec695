package bucket

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ipfs/boxo/bitswap"
	"github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	pebbleds "github.com/ipfs/go-ds-pebble"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/libp2p/go-libp2p/core/host"
	mh "github.com/multiformats/go-multihash"

	"github.com/swarmgen/swarmgen/protocol"
)

// Defaults for Store options.
const (
	DefaultResultTTL      = 24 * time.Hour
	DefaultGCInterval     = 10 * time.Minute
	DefaultFetchStreams   = 8
	DefaultServeMaxBytes  = int64(64) << 30
	DefaultBlockTimeout   = 30 * time.Second
	DefaultStreamIdle     = 30 * time.Second
	DefaultMaxExportBytes = int64(64) << 30
	DefaultMaxDirEntries  = 10000
	DefaultMaxDepth       = 64
	ChunkSize             = 256 << 10
	maxBlockSize          = 2 << 20 // bitswap's own limit; our blocks are <= 256 KiB + links
	bitswapProtocolPrefix = "/swarmgen"
	fetchWriteBufferSize  = 1 << 20
	fetchReadBufferSize   = 1 << 20
	fetchPutBatchBytes    = 8 << 20
)

// cidBuilder is the one CID format this package writes: CIDv1, sha2-256.
var cidBuilder = cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}

type config struct {
	resultTTL     time.Duration
	gcInterval    time.Duration
	logger        *slog.Logger
	now           func() time.Time
	fetchStreams  int
	serveMaxBytes int64
	blockTimeout  time.Duration
	streamIdle    time.Duration
	maxExport     int64
	maxDirEntries int
	inMemory      bool
	deferSync     bool
}

// Option configures a Store.
type Option func(*config)

// WithResultTTL sets how long results imported by ImportDir or obtained by
// Fetch stay pinned (default 24h).
func WithResultTTL(d time.Duration) Option { return func(c *config) { c.resultTTL = d } }

// WithGCInterval sets how often the GC loop runs (default 10m; <= 0 turns the
// loop off, GC can still be called directly).
func WithGCInterval(d time.Duration) Option { return func(c *config) { c.gcInterval = d } }

// WithLogger sets the structured logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithClock replaces time.Now for pin expiry (tests).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithFetchStreams bounds how many fetch streams the Store serves at once
// (default 8); further requests are reset.
func WithFetchStreams(n int) Option { return func(c *config) { c.fetchStreams = n } }

// WithServeMaxBytes bounds the bytes one served fetch stream may carry
// (default 64 GiB).
func WithServeMaxBytes(n int64) Option { return func(c *config) { c.serveMaxBytes = n } }

// WithBlockTimeout bounds how long Fetch's bitswap fallback waits without
// receiving any block before it gives up with ErrMissingBlock (default 30s).
func WithBlockTimeout(d time.Duration) Option { return func(c *config) { c.blockTimeout = d } }

// WithMaxExportBytes bounds the bytes ExportDir writes (default 64 GiB).
func WithMaxExportBytes(n int64) Option { return func(c *config) { c.maxExport = n } }

// WithInMemory keeps the blockstore in memory (pebble on an in-memory
// filesystem, pack files in memory): nothing persists after Close. For
// tests, benchmarks and throwaway devnets.
func WithInMemory() Option { return func(c *config) { c.inMemory = true } }

// Store is a node's blockstore with bitswap, pins and the fetch protocol.
// All methods are safe for concurrent use. Close stops every goroutine the
// Store started.
type Store struct {
	cfg   config
	log   *slog.Logger
	host  host.Host
	ds    *pebbleds.Datastore
	packs *packStore
	pbs   *packBlockstore
	bs    blockstore.Blockstore // pbs
	bswap *bitswap.Bitswap
	bsvc  blockservice.BlockService // network-backed (bitswap)
	local blockservice.BlockService // offline: never leaves this node
	dag   ipld.DAGService           // offline DAG service used for import and reads

	// gcMu orders writers against the collector: an operation that writes
	// blocks holds it for reading until its root is pinned, except those
	// that wait on the network (Fetch, FetchURL), which hold it only around
	// each batch and keep their blocks in a blockHold in between; GC holds
	// it for writing while it marks and sweeps.
	gcMu sync.RWMutex
	// holdMu guards holds: the blockHolds of writes in progress.
	holdMu sync.Mutex
	holds  map[*blockHold]struct{}
	// pinMu serialises read-modify-write of pin records and guards pinned.
	pinMu sync.Mutex
	// pinned holds the key of every pin record written since it was built
	// (deleted ones stay until a rebuild); nil until the first pin.
	pinned *keyFilter
	// writeGen counts pin-record writes; flushMu and flushedGen let
	// concurrent pins share one memtable flush (see flush).
	writeGen   atomic.Uint64
	flushMu    sync.Mutex
	flushedGen uint64

	serveSem chan struct{}
	// serveMu guards serveClosed; serveWG counts running stream handlers so
	// Close can wait for them before closing the datastore.
	serveMu     sync.Mutex
	serveClosed bool
	serveWG     sync.WaitGroup

	// testHookFetchStored, if set (tests), runs after a fetch (Fetch,
	// FetchURL) stored a batch.
	testHookFetchStored func()

	ctx       context.Context // cancelled by Close; parent of every goroutine
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New opens (or creates) the blockstore under dataDir (pebble in
// dataDir/blocks: pins and the block index; block data in dataDir/packs),
// starts bitswap
// (client and server) on h, registers the FetchProtocol handler on h and
// starts the GC loop. h may be nil for a Store without networking (import,
// export and gateway only). Close releases everything.
func New(ctx context.Context, h host.Host, dataDir string, opts ...Option) (*Store, error) {
	cfg := config{
		resultTTL:     DefaultResultTTL,
		gcInterval:    DefaultGCInterval,
		logger:        slog.Default(),
		now:           time.Now,
		fetchStreams:  DefaultFetchStreams,
		serveMaxBytes: DefaultServeMaxBytes,
		blockTimeout:  DefaultBlockTimeout,
		streamIdle:    DefaultStreamIdle,
		maxExport:     DefaultMaxExportBytes,
		maxDirEntries: DefaultMaxDirEntries,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.fetchStreams < 1 {
		cfg.fetchStreams = 1
	}
	dir := filepath.Join(dataDir, "blocks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bucket: create %s: %w", dir, err)
	}
	po := pebbleOptions()
	if cfg.inMemory {
		po.FS = vfs.NewMem()
	}
	d, err := pebbleds.NewDatastore(dir, pebbleds.WithPebbleOpts(po))
	if err != nil {
		return nil, fmt.Errorf("bucket: open blockstore %s: %w", dir, err)
	}
	s := &Store{cfg: cfg, log: cfg.logger.With("component", "bucket"), host: h, ds: d}
	var pd packDir = newMemPackDir()
	packPath := filepath.Join(dataDir, "packs")
	if !cfg.inMemory {
		if pd, err = newOSPackDir(packPath, cfg.deferSync); err != nil {
			d.Close()
			return nil, fmt.Errorf("bucket: %w", err)
		}
	}
	s.packs, err = openPackStore(pd, d.DB, s.log)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("bucket: open packs %s: %w", packPath, err)
	}
	// legacy: blocks that earlier versions kept in pebble. WriteThrough: no
	// Has() before a Put (nothing is put there any more anyway).
	s.pbs = &packBlockstore{packs: s.packs, legacy: blockstore.NewBlockstore(d, blockstore.WriteThrough(true)), log: s.log}
	held, err := legacyHeld(d.DB)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("bucket: %w", err)
	}
	s.pbs.legacyHeld.Store(held)
	s.bs = s.pbs
	// WriteThrough: the blockstore's PutMany skips blocks it holds already;
	// a blockservice check first would look each one up a second time.
	s.local = blockservice.New(s.bs, offline.Exchange(s.bs), blockservice.WriteThrough(true))
	s.dag = merkledag.NewDAGService(s.local)
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.serveSem = make(chan struct{}, cfg.fetchStreams)

	if h != nil {
		net := bsnet.NewFromIpfsHost(h, bsnet.Prefix(bitswapProtocolPrefix))
		// No provider finder: results are fetched from the peer named in the
		// signed result, never searched for in a DHT.
		s.bswap = bitswap.New(s.ctx, net, nil, s.bs)
		s.bsvc = blockservice.New(s.bs, s.bswap)
		h.SetStreamHandler(protocol.FetchProtocol, s.handleFetchStream)
	}
	if cfg.gcInterval > 0 {
		s.wg.Add(1)
		go s.gcLoop()
	}
	return s, nil
}

// Close stops the GC loop and the fetch handler, shuts bitswap down and
// closes the datastore. It is safe to call more than once.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.host != nil {
			s.host.RemoveStreamHandler(protocol.FetchProtocol)
		}
		s.serveMu.Lock()
		s.serveClosed = true
		s.serveMu.Unlock()
		s.cancel()
		s.wg.Wait()
		s.serveWG.Wait()
		if s.bswap != nil {
			err = errors.Join(err, s.bswap.Close())
		}
		// Wait for in-flight writers before closing the datastore.
		s.gcMu.Lock()
		if s.cfg.deferSync {
			// No WAL: what was not flushed would be lost.
			err = errors.Join(err, s.flush(cid.Undef))
		}
		// Blocks not yet synced are made durable and indexed (pebble's
		// Close then flushes the index), then the packs are closed.
		err = errors.Join(err, s.packs.close(), s.ds.Close())
		s.gcMu.Unlock()
	})
	return err
}

// Blockstore returns the underlying blockstore (read it; write through the
// Store's methods so GC sees pins).
func (s *Store) Blockstore() blockstore.Blockstore { return s.bs }

// BlockService returns an offline block service over the local blockstore:
// it never fetches from the network.
func (s *Store) BlockService() blockservice.BlockService { return s.local }

// DAG returns an offline DAG service over the local blockstore.
func (s *Store) DAG() ipld.DAGService { return s.dag }

// Has reports whether the block c is stored locally.
func (s *Store) Has(ctx context.Context, c cid.Cid) (bool, error) {
	if !s.enter() {
		return false, ErrClosed
	}
	defer s.leave()
	return s.bs.Has(ctx, c)
}

// lockWrite takes the GC read lock for an operation that writes blocks; it
// fails once the Store is closed.
func (s *Store) lockWrite() (func(), error) {
	if s.ctx.Err() != nil {
		return nil, ErrClosed
	}
	s.gcMu.RLock()
	if s.ctx.Err() != nil {
		s.gcMu.RUnlock()
		return nil, ErrClosed
	}
	return s.gcMu.RUnlock, nil
}

// enter registers a call that reads or writes the datastore without the
// write lock (a reader, Unpin, Sync, a stream handler); false once the
// Store is closing: the caller returns ErrClosed. Close waits for the calls
// in flight before it closes the datastore, so none reaches a closed pebble
// (which panics).
func (s *Store) enter() bool {
	s.serveMu.Lock()
	defer s.serveMu.Unlock()
	if s.serveClosed {
		return false
	}
	s.serveWG.Add(1)
	return true
}

// leave ends a call that enter registered.
func (s *Store) leave() { s.serveWG.Done() }

// pebbleOptions: pebble holds pins, the pack index (small values) and
// legacy blocks (256 KiB values that earlier versions stored in pebble:
// value separation keeps them in blob files that compactions do not
// rewrite). See docs/bucket.md.
func pebbleOptions() *pebble.Options {
	o := &pebble.Options{
		FormatMajorVersion: pebble.FormatValueSeparation,
		MemTableSize:       64 << 20,
		// No WAL: a pin flushes the memtable before it returns (after the
		// pack sync that wrote its blocks' index entries), so everything a
		// pin reaches is durable; index entries and pins lost in a crash
		// before that are garbage anyway.
		DisableWAL: true,
	}
	o.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy {
		return pebble.ValueSeparationPolicy{
			Enabled:               true,
			MinimumSize:           4 << 10,
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     time.Hour,
			TargetGarbageRatio:    0.25,
		}
	}
	return o
}

// linkCtx returns a context cancelled when ctx is or when the Store closes.
func (s *Store) linkCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}
