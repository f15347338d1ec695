package bucket

import (
	"bytes"
	"context"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"

	ipld "github.com/ipfs/go-ipld-format"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func ipldIsNotFound(err error) bool { return ipld.IsNotFound(err) }

// batchDAG is a DAGService whose writes are batched (one blockstore write
// per few MiB instead of one per block). A small import (a task's result)
// is stored in one synchronous AddMany at Commit; once more than a batch's
// worth is added, the rest goes through an ipld.Batch, whose background
// commits overlap storing with the chunking and hashing of what follows.
// Not safe for concurrent use.
type batchDAG struct {
	ipld.DAGService
	ctx   context.Context
	nodes []ipld.Node
	size  int
	big   *ipld.Batch // nil until the import outgrows one batch
}

func newBatchDAG(ctx context.Context, d ipld.DAGService) *batchDAG {
	return &batchDAG{DAGService: d, ctx: ctx}
}

func (d *batchDAG) Add(ctx context.Context, n ipld.Node) error {
	if d.big != nil {
		return d.big.Add(ctx, n)
	}
	d.nodes = append(d.nodes, n)
	d.size += len(n.RawData())
	if d.size < fetchPutBatchBytes/2 {
		return nil
	}
	d.big = ipld.NewBatch(d.ctx, d.DAGService, ipld.MaxSizeBatchOption(fetchPutBatchBytes))
	err := d.big.AddMany(ctx, d.nodes)
	d.nodes = nil
	return err
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
	if d.big != nil {
		return d.big.Commit()
	}
	if len(d.nodes) == 0 {
		return nil
	}
	err := d.DAGService.AddMany(d.ctx, d.nodes)
	d.nodes, d.size = nil, 0
	return err
}

// dshelpKey is the blockstore's datastore key (below "/blocks") for c.
func dshelpKey(c cid.Cid) ds.Key { return dshelp.MultihashToDsKey(c.Hash()) }
