package bucket

import (
	"context"
	"fmt"

	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
)

// walkDAG visits every block of root's DAG held here once, in pre-order
// DFS (the order of a fetch stream and of ExportCAR), failing with
// ErrTooLarge once the blocks pass limit bytes and with ErrMissingBlock for
// a block not held. For each block it calls read with the block's size;
// read puts the data wherever its caller wants it and returns it, so that
// the walk can follow the block's links.
func (s *Store) walkDAG(ctx context.Context, root cid.Cid, limit int64, read func(c cid.Cid, n int) ([]byte, error)) error {
	var sent int64
	seen := map[string]struct{}{root.KeyString(): {}}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n, err := s.bs.GetSize(ctx, c)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrMissingBlock, c, err)
		}
		sent += int64(n)
		if sent > limit {
			return fmt.Errorf("%w: DAG %s exceeds %d bytes", ErrTooLarge, root, limit)
		}
		data, err := read(c, n)
		if err != nil {
			return err
		}
		if stack, err = pushLinks(stack, seen, c, data); err != nil {
			return err
		}
	}
	return nil
}

// pushLinks pushes the links of block c (data) not seen before onto the
// DFS stack, in reverse so that the first link is visited first. Raw
// blocks have no links.
func pushLinks(stack []cid.Cid, seen map[string]struct{}, c cid.Cid, data []byte) ([]cid.Cid, error) {
	if c.Type() != cid.DagProtobuf {
		return stack, nil
	}
	nd, err := merkledag.DecodeProtobuf(data)
	if err != nil {
		return stack, fmt.Errorf("decode %s: %w", c, err)
	}
	links := nd.Links()
	for i := len(links) - 1; i >= 0; i-- {
		k := links[i].Cid.KeyString()
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = struct{}{}
		stack = append(stack, links[i].Cid)
	}
	return stack, nil
}
