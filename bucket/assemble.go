package bucket

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// Entry is one task output placed in a bucket: the directory Name (e.g.
// "task-0") pointing at the task's output DAG Root.
type Entry struct {
	Name string
	Root cid.Cid
}

// Assemble builds a job bucket: a UnixFS directory with one subdirectory
// per entry (the task's DAG linked as is: no file data is copied) and
// manifest.json (m, as Manifest.Encode writes it), and pins it for ttl. Every entry's DAG
// must be complete in the local blockstore (fetch it first); m must pass
// Validate. It takes the manifest as a value, not as bytes, because its
// caller builds it: decoding it back to validate it was a fifth of the cost
// of assembling a 1 000-task bucket.
func (s *Store) Assemble(ctx context.Context, entries []Entry, m *Manifest, ttl time.Duration) (cid.Cid, error) {
	if err := m.Validate(); err != nil {
		return cid.Undef, fmt.Errorf("assemble: %w", err)
	}
	manifest, err := m.Encode()
	if err != nil {
		return cid.Undef, fmt.Errorf("assemble: %w", err)
	}
	if len(manifest) > MaxManifestSize {
		return cid.Undef, fmt.Errorf("assemble: manifest: %w: %d bytes, limit %d", ErrTooLarge, len(manifest), MaxManifestSize)
	}
	if len(entries)+1 > s.cfg.maxDirEntries {
		return cid.Undef, fmt.Errorf("assemble: %w: %d entries, limit %d", ErrTooLarge, len(entries), s.cfg.maxDirEntries-1)
	}
	unlock, err := s.lockWrite()
	if err != nil {
		return cid.Undef, err
	}
	defer unlock()
	for _, e := range entries {
		if err := ValidateName(e.Name); err != nil {
			return cid.Undef, fmt.Errorf("assemble: entry: %w", err)
		}
		if e.Name == ManifestName {
			return cid.Undef, fmt.Errorf("assemble: %w: entry named %s", ErrInvalidName, ManifestName)
		}
	}
	links, err := s.entryLinks(ctx, entries, min(runtime.GOMAXPROCS(0), 8, len(entries)/parallelEntries))
	if err != nil {
		return cid.Undef, err
	}
	batch := newBatchDAG(ctx, s.dag)
	defer batch.Wait()
	mf, err := importFile(batch, bytes.NewReader(manifest))
	if err != nil {
		return cid.Undef, fmt.Errorf("assemble: manifest: %w", err)
	}
	ml, err := namedLink(ManifestName, mf)
	if err != nil {
		return cid.Undef, err
	}
	links = append(links, ml)
	root, err := dirNode(ctx, batch, links)
	if err != nil {
		return cid.Undef, fmt.Errorf("assemble: %w", err)
	}
	if err := batch.Commit(); err != nil {
		return cid.Undef, fmt.Errorf("assemble: commit: %w", err)
	}
	if err := s.pin(ctx, root.Cid(), ttl, "bucket"); err != nil {
		return cid.Undef, err
	}
	return root.Cid(), nil
}

// parallelEntries: from this many entries on, Assemble checks them on
// several goroutines. A job's tail is its bucket's assembly on one core
// while the others idle (about 40 ms of a 1 000-task noop job's 500 ms on
// the 2-core VM, most of it reading each task's root block).
const parallelEntries = 64

// entryLinks checks that every entry's DAG is complete and returns its
// links, in entries' order, with room for one more (the manifest), on
// that many goroutines (≤ 1: on the caller's). On
// failure the error is that of the first failing entry in order, whatever
// the goroutines' timing, so that a retry reports the same thing.
func (s *Store) entryLinks(ctx context.Context, entries []Entry, workers int) ([]*ipld.Link, error) {
	links := make([]*ipld.Link, len(entries), len(entries)+1)
	errs := make([]error, len(entries))
	check := func(i int) error {
		nd, err := s.checkComplete(ctx, entries[i].Root)
		if err == nil {
			links[i], err = namedLink(entries[i].Name, nd)
		}
		if err != nil {
			errs[i] = fmt.Errorf("assemble: entry %s: %w", entries[i].Name, err)
		}
		return errs[i]
	}
	if workers <= 1 {
		for i := range entries {
			if err := check(i); err != nil {
				return nil, err
			}
		}
		return links, nil
	}
	// Workers take entries in order from a shared counter; one that fails
	// stops the others taking more. What they hold they finish, under the
	// caller's ctx, so every entry before the failing one has its own
	// outcome and the first error in order is a real one.
	var next atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(entries) {
					return
				}
				if check(i) != nil {
					stop.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return links, nil
}

// checkComplete reports ErrMissingBlock unless every block of the DAG under
// root is stored locally, and returns the root node, read once for both.
// Raw leaves below the root are checked with Has, not read.
func (s *Store) checkComplete(ctx context.Context, root cid.Cid) (ipld.Node, error) {
	var rootNode ipld.Node
	seen := map[string]struct{}{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[c.KeyString()]; ok {
			continue
		}
		seen[c.KeyString()] = struct{}{}
		if c.Type() == cid.Raw && rootNode != nil {
			ok, err := s.bs.Has(ctx, c)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%w: %s", ErrMissingBlock, c)
			}
			continue
		}
		blk, err := s.bs.Get(ctx, c)
		if err != nil {
			if isNotFound(err) {
				return nil, fmt.Errorf("%w: %s", ErrMissingBlock, c)
			}
			return nil, err
		}
		var nd ipld.Node
		switch c.Type() {
		case cid.Raw: // only the root gets here
			nd, err = merkledag.DecodeRawBlock(blk)
		case cid.DagProtobuf:
			nd, err = merkledag.DecodeProtobufBlock(blk)
		default:
			return nil, fmt.Errorf("%w: %s: codec 0x%x", ErrUnsupported, c, c.Type())
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrCorruptBlock, c, err)
		}
		if rootNode == nil {
			rootNode = nd
		}
		for _, l := range nd.Links() {
			stack = append(stack, l.Cid)
		}
	}
	return rootNode, nil
}
