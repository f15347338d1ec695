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

// batchDAG is a DAGService whose writes go through an ipld.Batch (one
// datastore batch per few MiB instead of one write per block).
type batchDAG struct {
	ipld.DAGService
	b *ipld.Batch
}

func newBatchDAG(ctx context.Context, d ipld.DAGService) batchDAG {
	return batchDAG{DAGService: d, b: ipld.NewBatch(ctx, d, ipld.MaxSizeBatchOption(fetchPutBatchBytes))}
}

func (d batchDAG) Add(ctx context.Context, n ipld.Node) error        { return d.b.Add(ctx, n) }
func (d batchDAG) AddMany(ctx context.Context, ns []ipld.Node) error { return d.b.AddMany(ctx, ns) }
func (d batchDAG) Commit() error                                     { return d.b.Commit() }

// dshelpKey is the blockstore's datastore key (below "/blocks") for c.
func dshelpKey(c cid.Cid) ds.Key { return dshelp.MultihashToDsKey(c.Hash()) }
