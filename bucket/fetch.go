package bucket

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Fetch copies the whole DAG under root from peer `from` into the local
// blockstore and pins it for the result TTL. The primary path is a CAR
// stream over protocol.FetchProtocol; if the stream fails or ends early the
// rest comes over a bitswap session with the already connected peer (no
// content routing). Every block is hashed against its CID and must be linked
// from blocks verified before it; at most maxBytes of block data are
// accepted (<= 0: the serve default).
//
// Errors wrap ErrCorruptBlock (a block that does not match its CID or that
// the DAG does not need: no fallback, the peer is not trusted further),
// ErrMissingBlock (the peer could not deliver a block), ErrTooLarge, or the
// context's error.
func (s *Store) Fetch(ctx context.Context, root cid.Cid, from peer.ID, maxBytes int64) error {
	if s.host == nil {
		return errors.New("fetch: store has no libp2p host")
	}
	if err := checkPrefix(root); err != nil {
		return fmt.Errorf("fetch %s: %w", root, err)
	}
	if maxBytes <= 0 {
		maxBytes = s.cfg.serveMaxBytes
	}
	// No GC lock while waiting on the peer (see blockHold): each stored
	// batch and the pin take it; what is stored meanwhile is held from GC.
	// enter makes Close wait for us before it closes the datastore.
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	hold := s.newHold()
	defer hold.release()
	// Close must not wait for a slow peer: closing the Store cancels us.
	ctx, cancel := s.linkCtx(ctx)
	defer cancel()
	log := s.log.With("root", root, "from", from)
	start := time.Now()
	v := newDAGVerifier(root, maxBytes)
	err := s.fetchCAR(ctx, root, from, v, hold)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("fetch %s from %s: %w", root, from, ctx.Err())
	}
	if errors.Is(err, errFetchStore) {
		// Blocks the verifier accepted were not stored: the bitswap
		// fallback would not ask for them again and the pin would cover a
		// DAG with holes.
		return fmt.Errorf("fetch %s from %s: %w", root, from, err)
	}
	if errors.Is(err, ErrCorruptBlock) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnsupported) {
		log.Warn("fetch refused peer data", "err", err, "blocks", v.blocks, "bytes", v.total)
		return fmt.Errorf("fetch %s from %s: %w", root, from, err)
	}
	if err != nil || !v.done() {
		log.Info("fetch stream incomplete, falling back to bitswap",
			"err", err, "blocks", v.blocks, "bytes", v.total, "missing", len(v.needed))
		if err := s.fetchBitswap(ctx, from, v, hold); err != nil {
			return fmt.Errorf("fetch %s from %s: %w", root, from, err)
		}
	}
	err = hold.locked(func(func(mh.Multihash)) error {
		return s.pin(ctx, root, s.cfg.resultTTL, "fetched")
	})
	if err != nil {
		return err
	}
	d := time.Since(start)
	log.Debug("fetched", "blocks", v.blocks, "bytes", v.total, "took", d,
		"MBps", float64(v.total)/1e6/max(d.Seconds(), 1e-9))
	return nil
}

// errFetchStore: fetchCAR could not store blocks it had verified.
var errFetchStore = errors.New("store fetched blocks")

// fetchCAR runs the primary path: one stream, one CAR. Every verified
// block is stored and held in hold.
func (s *Store) fetchCAR(ctx context.Context, root cid.Cid, from peer.ID, v *dagVerifier, hold *blockHold) error {
	st, err := s.host.NewStream(ctx, from, protocol.FetchProtocol)
	if err != nil {
		return fmt.Errorf("open fetch stream: %w", err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if err := protocol.WriteMsg(st, &pb.FetchRequest{RootCid: root.Bytes(), MaxBytes: v.max}); err != nil {
		st.Reset()
		return err
	}
	if err := st.CloseWrite(); err != nil {
		st.Reset()
		return fmt.Errorf("close fetch request: %w", err)
	}
	idle := s.cfg.streamIdle
	// Storing overlaps receiving: verified regions go to a writer goroutine
	// (owned here, joined before return) that appends them to a pack while
	// the next slab fills. fetchSlabs slabs in all: the receiver waits for
	// the writer to hand one back, which bounds memory and dirty data.
	regions := make(chan carRegion, fetchSlabs)
	free := make(chan []byte, fetchSlabs)
	var werr atomic.Pointer[error]
	done := make(chan struct{})
	go func() {
		defer close(done)
		for reg := range regions {
			if werr.Load() == nil {
				err := hold.locked(func(add func(mh.Multihash)) error {
					if err := s.packs.appendSections(reg.buf, reg.entries); err != nil {
						return err
					}
					// Also the blocks appendSections skipped as held
					// already: nothing may pin them, and the fetch's pin
					// will link them.
					for _, e := range reg.entries {
						add(e.hash)
					}
					return nil
				})
				if err != nil {
					werr.Store(&err)
				} else if s.testHookFetchStored != nil {
					s.testHookFetchStored()
				}
			}
			free <- reg.slab
		}
	}()
	allocated := 0
	getSlab := func() ([]byte, error) {
		select {
		case b := <-free:
			return b, nil
		default:
		}
		if allocated < fetchSlabs {
			allocated++
			return getFetchSlab(), nil
		}
		select {
		case b := <-free:
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	emit := func(reg carRegion) error {
		if p := werr.Load(); p != nil {
			return fmt.Errorf("%w: %w", errFetchStore, *p)
		}
		select {
		case regions <- reg:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err = receiveCAR(st, root, v, getSlab, emit, func() { _ = st.SetReadDeadline(time.Now().Add(idle)) })
	close(regions)
	<-done
	close(free)
	for b := range free {
		putFetchSlab(b)
	}
	// Also after a stream error: a region queued before it may have
	// failed to store, and the fallback must not take its blocks as had.
	if p := werr.Load(); p != nil && !errors.Is(err, errFetchStore) {
		err = errors.Join(err, fmt.Errorf("%w: %w", errFetchStore, *p))
	}
	if err != nil {
		st.Reset()
	}
	return err
}

// Fetch receive buffers: a slab must hold the largest section; 4 MiB keeps
// pack appends large. Slabs are reused across fetches.
const (
	fetchSlabSize = 4 << 20
	fetchSlabs    = 4
)

var fetchSlabPool sync.Pool

func getFetchSlab() []byte {
	if b, ok := fetchSlabPool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, fetchSlabSize)
}

func putFetchSlab(b []byte) { fetchSlabPool.Put(&b) }

// fetchBitswap fetches what v still needs over a bitswap session, level by
// level, verifying each block with v as well (bitswap already rejects data
// that does not hash to a wanted CID), and holds each in hold. It gives up
// with ErrMissingBlock after the block timeout passes without progress.
func (s *Store) fetchBitswap(ctx context.Context, from peer.ID, v *dagVerifier, hold *blockHold) error {
	if s.host.Network().Connectedness(from) != network.Connected {
		if err := s.host.Connect(ctx, peer.AddrInfo{ID: from}); err != nil {
			return fmt.Errorf("%w: %s unreachable for bitswap: %w", ErrMissingBlock, from, err)
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ses := blockservice.NewSession(sctx, s.bsvc)
	for !v.done() {
		want := v.missing()
		wctx, wcancel := context.WithCancel(sctx)
		timer := time.AfterFunc(s.cfg.blockTimeout, wcancel)
		var got int
		var verr error
		for blk := range ses.GetBlocks(wctx, want) {
			timer.Reset(s.cfg.blockTimeout)
			if verr != nil {
				continue
			}
			if err := v.accept(blk.Cid(), blk.RawData()); err != nil {
				verr = err
				wcancel()
				continue
			}
			// Bitswap stored the block before it handed it over, but
			// without the GC lock: a GC may have swept it since. Put
			// skips it if it is still there.
			err := hold.locked(func(add func(mh.Multihash)) error {
				if err := s.bs.Put(ctx, blk); err != nil {
					return err
				}
				add(blk.Cid().Hash())
				return nil
			})
			if err != nil {
				verr = fmt.Errorf("store fetched block: %w", err)
				wcancel()
				continue
			}
			got++
		}
		timer.Stop()
		wcancel()
		if verr != nil {
			return verr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if got < len(want) {
			return fmt.Errorf("%w: %d of %d blocks not delivered by %s within %s (first: %s)",
				ErrMissingBlock, len(v.needed), len(want), from, s.cfg.blockTimeout, v.missing()[0])
		}
	}
	return nil
}

// handleFetchStream serves one FetchRequest: the DAG under root as a CARv1
// in depth-first pre-order, each block once, stopping at the smaller of the
// request's and the server's byte limit. A root this node does not have, a
// missing block or a full server resets the stream; the client then falls
// back to bitswap and reports what is missing.
func (s *Store) handleFetchStream(st network.Stream) {
	if !s.enter() {
		st.Reset()
		return
	}
	defer s.leave()
	select {
	case s.serveSem <- struct{}{}:
		defer func() { <-s.serveSem }()
	default:
		s.log.Warn("fetch stream refused: too many concurrent streams", "peer", st.Conn().RemotePeer())
		st.Reset()
		return
	}
	log := s.log.With("peer", st.Conn().RemotePeer())
	if err := s.serveFetch(st); err != nil {
		log.Info("fetch stream aborted", "err", err)
		st.Reset()
		return
	}
	st.Close()
}

func (s *Store) serveFetch(st network.Stream) error {
	idle := s.cfg.streamIdle
	_ = st.SetReadDeadline(time.Now().Add(idle))
	var req pb.FetchRequest
	if err := protocol.ReadMsg(bufio.NewReaderSize(st, protocol.MaxFetchRequest+16), protocol.MaxFetchRequest, &req); err != nil {
		return fmt.Errorf("read fetch request: %w", err)
	}
	root, err := cid.Cast(req.GetRootCid())
	if err != nil {
		return fmt.Errorf("fetch request root: %w", err)
	}
	if err := checkPrefix(root); err != nil {
		return fmt.Errorf("fetch request root: %w", err)
	}
	limit := s.cfg.serveMaxBytes
	if m := req.GetMaxBytes(); m > 0 && m < limit {
		limit = m
	}
	ctx := s.ctx
	if ok, err := s.bs.Has(ctx, root); err != nil || !ok {
		return fmt.Errorf("%w: root %s not held here", ErrMissingBlock, root)
	}
	// Sections are assembled in out and written in large writes; block
	// data is read from its pack straight into out.
	out := make([]byte, 0, fetchWriteBufferSize)
	send := func() error {
		if len(out) == 0 {
			return nil
		}
		_ = st.SetWriteDeadline(time.Now().Add(idle))
		_, err := st.Write(out)
		out = out[:0]
		return err
	}
	out = append(out, carHeader(root)...)
	var big []byte // for a block larger than out
	err = s.walkDAG(ctx, root, limit, func(c cid.Cid, n int) ([]byte, error) {
		// The block is read straight into out, after its section header;
		// one larger than out gets its own buffer and write.
		if cap(out)-len(out) < n+maxSectionHeader {
			if err := send(); err != nil {
				return nil, fmt.Errorf("write fetch stream: %w", err)
			}
		}
		out = sectionHeader(out, c, n)
		fits := n+maxSectionHeader <= cap(out)
		var data []byte
		if fits {
			data = out[len(out) : len(out)+n]
		} else {
			if cap(big) < n {
				big = make([]byte, n)
			}
			data = big[:n]
		}
		if err := s.pbs.readInto(ctx, c, data); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMissingBlock, c, err)
		}
		if fits {
			out = out[:len(out)+n]
			return data, nil
		}
		if err := send(); err != nil {
			return nil, fmt.Errorf("write fetch stream: %w", err)
		}
		_ = st.SetWriteDeadline(time.Now().Add(idle))
		if _, err := st.Write(data); err != nil {
			return nil, fmt.Errorf("write block %s: %w", c, err)
		}
		return data, nil
	})
	if err != nil {
		return err
	}
	return send()
}
