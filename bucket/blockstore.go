package bucket

import (
	"context"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/boxo/blockstore"
	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// packBlockstore is the Store's blockstore: new blocks go to pack files
// (packStore); blocks written by earlier versions into pebble's "/blocks"
// namespace (legacy) are still read, listed and deleted there. Like boxo's
// blockstore it is keyed by multihash. Safe for concurrent use.
type packBlockstore struct {
	packs  *packStore
	legacy blockstore.Blockstore
	log    *slog.Logger
	// legacyHeld: the legacy namespace held a block when the store was
	// opened. Nothing writes there any more, so when it was empty every
	// legacy lookup (a pebble Get each) is skipped.
	legacyHeld atomic.Bool
}

var _ blockstore.Blockstore = (*packBlockstore)(nil)

// Get returns the block, reading the pack (data checked against its CRC).
func (b *packBlockstore) Get(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	if !c.Defined() {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	data, ok, err := b.packs.read(c.Hash(), nil, true)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", c, err)
	}
	if !ok {
		if !b.legacyHeld.Load() {
			return nil, ipld.ErrNotFound{Cid: c}
		}
		return b.legacy.Get(ctx, c)
	}
	return blocks.NewBlockWithCid(data, c)
}

// readInto is Get for the fetch server's hot loop: the block's data is
// read into dst, whose length must be the block's (GetSize). The CRC is not
// checked: the fetching peer hashes every block anyway.
func (b *packBlockstore) readInto(ctx context.Context, c cid.Cid, dst []byte) error {
	_, ok, err := b.packs.read(c.Hash(), dst, false)
	if err != nil {
		return fmt.Errorf("get %s: %w", c, err)
	}
	if ok {
		return nil
	}
	if !b.legacyHeld.Load() {
		return ipld.ErrNotFound{Cid: c}
	}
	blk, err := b.legacy.Get(ctx, c)
	if err != nil {
		return err
	}
	if len(blk.RawData()) != len(dst) {
		return fmt.Errorf("%w: %s: stored block is %d bytes, not %d", ErrCorruptBlock, c, len(blk.RawData()), len(dst))
	}
	copy(dst, blk.RawData())
	return nil
}

// Has reports whether the block is held.
func (b *packBlockstore) Has(ctx context.Context, c cid.Cid) (bool, error) {
	ok, err := b.packs.has(c.Hash())
	if err != nil || ok || !b.legacyHeld.Load() {
		return ok, err
	}
	return b.legacy.Has(ctx, c)
}

// GetSize returns the block's size.
func (b *packBlockstore) GetSize(ctx context.Context, c cid.Cid) (int, error) {
	n, ok, err := b.packs.size(c.Hash())
	if err != nil {
		return 0, err
	}
	if ok {
		return n, nil
	}
	if !b.legacyHeld.Load() {
		return -1, ipld.ErrNotFound{Cid: c}
	}
	return b.legacy.GetSize(ctx, c)
}

// Put stores one block (see PutMany).
func (b *packBlockstore) Put(ctx context.Context, blk blocks.Block) error {
	return b.PutMany(ctx, []blocks.Block{blk})
}

// PutMany appends the blocks not held yet to the current pack in one write.
// They are readable at once and durable after the next Store flush (a pin).
// The data is stored as given: callers verify blocks they did not make.
func (b *packBlockstore) PutMany(ctx context.Context, blks []blocks.Block) error {
	var buf []byte
	var entries []packEntry
	seen := map[string]bool{}
	for _, blk := range blks {
		c := blk.Cid()
		h := c.Hash()
		if seen[string(h)] {
			continue
		}
		seen[string(h)] = true
		if ok, err := b.Has(ctx, c); err != nil {
			return err
		} else if ok {
			continue
		}
		data := blk.RawData()
		if len(data) > maxBlockSize {
			return fmt.Errorf("put %s: %w: block of %d bytes, limit %d", c, ErrTooLarge, len(data), maxBlockSize)
		}
		buf = sectionHeader(buf, c, len(data))
		entries = append(entries, packEntry{hash: h, loc: packLoc{
			off: int64(len(buf)), n: uint32(len(data)), crc: crc32.Checksum(data, castagnoli),
		}})
		buf = append(buf, data...)
	}
	if len(entries) == 0 {
		return nil
	}
	if err := b.packs.appendSections(buf, entries); err != nil {
		return fmt.Errorf("put %d blocks: %w", len(entries), err)
	}
	return nil
}

// DeleteBlock removes the block wherever it is.
func (b *packBlockstore) DeleteBlock(ctx context.Context, c cid.Cid) error {
	if _, err := b.packs.delete(c.Hash()); err != nil {
		return fmt.Errorf("delete %s: %w", c, err)
	}
	if !b.legacyHeld.Load() {
		return nil
	}
	return b.legacy.DeleteBlock(ctx, c)
}

// AllKeysChan lists every block as a CIDv1 raw CID of its multihash (the
// store keeps no codec), packs first, then legacy blocks. The interface
// has no way to report an error: one that ends the listing early is
// logged, and the channel closes. Callers that must not take a partial
// listing for the whole store (GC) use allKeys.
func (b *packBlockstore) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	out := make(chan cid.Cid, 64)
	// Owned by the consumer: it ends when the listing is done or ctx is.
	go func() {
		defer close(out)
		err := b.allKeys(ctx, func(c cid.Cid) bool {
			select {
			case out <- c:
				return true
			case <-ctx.Done():
				return false
			}
		})
		if err != nil && ctx.Err() == nil {
			b.log.Error("list blocks: listing ended early, the channel holds only part of the store", "err", err)
		}
	}()
	return out, nil
}

// allKeys calls fn with every block (as AllKeysChan lists it) until fn
// returns false. An error means the listing is incomplete: ctx's, or one
// reading the index or the legacy blocks.
func (b *packBlockstore) allKeys(ctx context.Context, fn func(cid.Cid) bool) error {
	stopped := false
	err := b.packs.allKeys(func(h mh.Multihash) bool {
		stopped = !fn(cid.NewCidV1(cid.Raw, h))
		return !stopped
	})
	if err != nil {
		return fmt.Errorf("list pack index: %w", err)
	}
	if stopped {
		return ctx.Err()
	}
	if !b.legacyHeld.Load() {
		return nil
	}
	// pebble directly, not the legacy blockstore's AllKeysChan: that one
	// also ends early without saying so.
	prefix := []byte(blockstore.BlockPrefix.String() + "/")
	it, err := b.packs.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("list legacy blocks: %w", err)
	}
	for ok := it.First(); ok && !stopped; ok = it.Next() {
		k := string(it.Key()[len(prefix)-1:]) // keeps the "/"
		h, err := dshelp.DsKeyToMultihash(ds.NewKey(k))
		if err != nil {
			b.log.Warn("bad legacy block key", "key", it.Key(), "err", err)
			continue
		}
		stopped = !fn(cid.NewCidV1(cid.Raw, h))
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("list legacy blocks: %w", err)
	}
	if stopped {
		return ctx.Err()
	}
	return nil
}

// legacyHeld reports whether pebble holds any block under the blockstore's
// "/blocks" namespace (blocks that earlier versions stored there).
func legacyHeld(db *pebble.DB) (bool, error) {
	prefix := []byte(blockstore.BlockPrefix.String() + "/")
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return false, fmt.Errorf("look for legacy blocks: %w", err)
	}
	held := it.First()
	if err := it.Close(); err != nil {
		return false, fmt.Errorf("look for legacy blocks: %w", err)
	}
	return held, nil
}
