package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/bucket"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// results connects the job flow to the content-addressed store: provider
// outputs become DAGs, submitters fetch them straight from the provider
// that made them, inputs travel the same way.
type results struct {
	n         *Node
	store     *bucket.Store
	resultTTL time.Duration
	maxFetch  int64
	// afterImport is a test hook (see options.afterImport).
	afterImport func(ctx context.Context, store *bucket.Store, root cid.Cid)
	// Results this submitter received inline or fetched (/v1/stats).
	inlined, fetched atomic.Int64
}

// importOutput turns a task's output/ into a pinned UnixFS DAG and returns
// its root CID bytes and size.
func (r *results) importOutput(ctx context.Context, dir string, a *pb.Assignment) ([]byte, int64, error) {
	root, size, err := r.store.ImportDirPinned(ctx, dir, r.resultTTL, fmt.Sprintf("result %s/%s#%d", a.JobId, a.TaskId, a.Attempt))
	if err != nil {
		return nil, 0, err
	}
	if r.afterImport != nil {
		r.afterImport(ctx, r.store, root)
	}
	return root.Bytes(), size, nil
}

// fetchInput fetches a task's input DAG from the submitter and writes it
// into dir.
func (r *results) fetchInput(ctx context.Context, a *pb.Assignment, dir string) error {
	c, err := cid.Cast(a.InputCid)
	if err != nil {
		return fmt.Errorf("input cid: %w", err)
	}
	from, err := peer.IDFromBytes(a.InputFrom)
	if err != nil {
		return fmt.Errorf("input peer: %w", err)
	}
	if from != r.n.id {
		if err := r.store.Fetch(ctx, c, from, r.maxFetch); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return r.store.ExportDir(ctx, c, dir)
}

// fetchResult gets a result DAG from the provider that made it; every block
// is verified against its CID by the store.
func (r *results) fetchResult(ctx context.Context, root []byte, from peer.ID) error {
	c, err := cid.Cast(root)
	if err != nil {
		return fmt.Errorf("result cid: %w", err)
	}
	if from == r.n.id {
		return nil // made here: the blocks are in this store already
	}
	if err := r.store.Fetch(ctx, c, from, r.maxFetch); err != nil {
		return err
	}
	r.fetched.Add(1)
	return nil
}

// inlineCAR returns a small result DAG as a CAR to send with the result,
// or nil (the submitter then fetches it).
func (r *results) inlineCAR(ctx context.Context, root []byte) []byte {
	c, err := cid.Cast(root)
	if err != nil {
		return nil
	}
	car, err := r.store.ExportCAR(ctx, c, protocol.MaxInlineResult)
	if err != nil {
		r.n.log.Debug("result not sent inline", "root", c, "err", err)
		return nil
	}
	return car
}

// importInline verifies and stores a result sent inline.
func (r *results) importInline(ctx context.Context, root []byte, car []byte) error {
	c, err := cid.Cast(root)
	if err != nil {
		return fmt.Errorf("result cid: %w", err)
	}
	if err := r.store.ImportCAR(ctx, c, car, protocol.MaxInlineResult); err != nil {
		return err
	}
	r.inlined.Add(1)
	return nil
}

// importInput stores one task's input file as a directory holding it.
func (r *results) importInput(ctx context.Context, name string, data []byte) (cid.Cid, error) {
	c, _, err := r.store.ImportFiles(ctx, map[string][]byte{name: data})
	return c, err
}

// assemble builds and pins the job bucket and, for dataDestination local,
// writes it to a directory too.
func (r *results) assemble(ctx context.Context, entries []bucket.Entry, manifest *bucket.Manifest, ttl time.Duration, localDir string) (cid.Cid, error) {
	root, err := r.store.Assemble(ctx, entries, manifest, ttl)
	if err != nil {
		return cid.Undef, err
	}
	if localDir != "" {
		if err := os.MkdirAll(filepath.Dir(localDir), 0o755); err != nil {
			return root, fmt.Errorf("local destination: %w", err)
		}
		if err := r.store.WriteLocal(ctx, root, localDir); err != nil {
			return root, fmt.Errorf("local destination: %w", err)
		}
	}
	return root, nil
}
