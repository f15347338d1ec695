package bucket

import (
	"bytes"
	"context"
	"sync/atomic"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"

	ipld "github.com/ipfs/go-ipld-format"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func ipldIsNotFound(err error) bool { return ipld.IsNotFound(err) }

// batchDAG is a DAGService whose writes are batched (one blockstore write
// per few MiB instead of one per block). A small import (a task's result)
// is stored in one synchronous AddMany at Commit; once more than half a
// batch's worth is added, each such batch goes to a committer goroutine,
// which stores it while the caller chunks and hashes what follows. The
// committer belongs to the import: Commit and Wait return only once it has
// stopped, so no write lands after the caller released the store's write
// lock (ipld.Batch, used before, returned from Commit on the first error or
// a cancelled context with commits still running). Not safe for
// concurrent use.
type batchDAG struct {
	ipld.DAGService
	ctx   context.Context
	nodes []ipld.Node
	size  int
	work  chan []ipld.Node // to the committer; nil until the import outgrows one batch
	done  chan struct{}    // closed once the committer has stopped
	err   atomic.Pointer[error]
	ended bool // Commit or Wait ran
	// stored, if set (tests), runs after each batch the committer stored.
	stored func()
}

func newBatchDAG(ctx context.Context, d ipld.DAGService) *batchDAG {
	return &batchDAG{DAGService: d, ctx: ctx}
}

func (d *batchDAG) Add(ctx context.Context, n ipld.Node) error {
	if err := d.err.Load(); err != nil {
		return *err
	}
	d.nodes = append(d.nodes, n)
	d.size += len(n.RawData())
	if d.size < fetchPutBatchBytes/2 {
		return nil
	}
	if d.work == nil {
		d.work, d.done = make(chan []ipld.Node, 1), make(chan struct{})
		go d.commit()
	}
	select {
	case d.work <- d.nodes:
	case <-ctx.Done():
		return ctx.Err()
	}
	d.nodes, d.size = nil, 0
	return nil
}

// commit stores the batches it gets until work is closed; after an error
// it drops the rest.
func (d *batchDAG) commit() {
	defer close(d.done)
	for ns := range d.work {
		if d.err.Load() != nil {
			continue
		}
		if err := d.DAGService.AddMany(d.ctx, ns); err != nil {
			d.err.Store(&err)
		} else if d.stored != nil {
			d.stored()
		}
	}
}

func (d *batchDAG) AddMany(ctx context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		if err := d.Add(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// Commit stores everything added and waits for it.
func (d *batchDAG) Commit() error {
	d.ended = true
	if d.work == nil {
		if len(d.nodes) == 0 {
			return nil
		}
		err := d.DAGService.AddMany(d.ctx, d.nodes)
		d.nodes, d.size = nil, 0
		return err
	}
	if len(d.nodes) > 0 {
		d.work <- d.nodes // the committer drains work until it is closed
		d.nodes, d.size = nil, 0
	}
	close(d.work)
	<-d.done
	if err := d.err.Load(); err != nil {
		return *err
	}
	return nil
}

// Wait is for an import that failed: it drops what was not handed to the
// committer yet and waits for the committer to stop. What it stored is
// unpinned, and GC collects it. A no-op after Commit; callers defer it.
func (d *batchDAG) Wait() {
	if d.ended {
		return
	}
	d.ended = true
	d.nodes = nil
	if d.work != nil {
		close(d.work)
		<-d.done
	}
}

// dshelpKey is the blockstore's datastore key (below "/blocks") for c.
func dshelpKey(c cid.Cid) ds.Key { return dshelp.MultihashToDsKey(c.Hash()) }
