package bucket

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// The fetch stream carries a CARv1: a header naming the one root, then
// sections (uvarint length, CID, block bytes) in depth-first pre-order with
// each block sent once. See docs/bucket.md.

// maxCarSection bounds one section (CID + block) read from a peer.
const maxCarSection = maxBlockSize + 128

// carHeader returns the length-prefixed CARv1 header for a single root:
// the DAG-CBOR map {"roots": [root], "version": 1}. Keys are in DAG-CBOR
// canonical order (shorter first). The client compares the received header
// with these exact bytes, so no CBOR decoder ever sees peer input.
func carHeader(root cid.Cid) []byte {
	cb := root.Bytes()
	var body []byte
	body = append(body, 0xa2)                          // map(2)
	body = append(body, 0x65, 'r', 'o', 'o', 't', 's') // "roots"
	body = append(body, 0x81)                          // array(1)
	body = append(body, 0xd8, 0x2a)                    // tag(42): CID
	body = appendCBORBytesHead(body, len(cb)+1)
	body = append(body, 0x00) // multibase identity prefix required by tag 42
	body = append(body, cb...)
	body = append(body, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n') // "version"
	body = append(body, 0x01)
	out := binary.AppendUvarint(nil, uint64(len(body)))
	return append(out, body...)
}

func appendCBORBytesHead(b []byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, 0x40|byte(n))
	case n < 256:
		return append(b, 0x58, byte(n))
	default:
		return append(b, 0x59, byte(n>>8), byte(n))
	}
}

// writeCarSection writes one CAR section.
func writeCarSection(w *bufio.Writer, c cid.Cid, data []byte) error {
	cb := c.Bytes()
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(cb)+len(data)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	if _, err := w.Write(cb); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// readCarHeader reads the header and checks that it is exactly the header
// for root.
func readCarHeader(r *bufio.Reader, root cid.Cid) error {
	want := carHeader(root)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		return fmt.Errorf("read CAR header: %w", err)
	}
	if string(got) != string(want) {
		return fmt.Errorf("%w: CAR header does not name root %s as its only root", ErrCorruptBlock, root)
	}
	return nil
}

// readCarSection reads the next section. It returns io.EOF at a clean end
// of stream. The returned data is a fresh slice owned by the caller.
func readCarSection(r *bufio.Reader) (cid.Cid, []byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return cid.Undef, nil, io.EOF
		}
		return cid.Undef, nil, fmt.Errorf("read CAR section length: %w", err)
	}
	if n == 0 {
		return cid.Undef, nil, fmt.Errorf("%w: empty CAR section", ErrCorruptBlock)
	}
	if n > maxCarSection {
		return cid.Undef, nil, fmt.Errorf("%w: CAR section of %d bytes, limit %d", ErrTooLarge, n, maxCarSection)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return cid.Undef, nil, fmt.Errorf("read CAR section: %w", err)
	}
	cl, c, err := cid.CidFromBytes(buf)
	if err != nil {
		return cid.Undef, nil, fmt.Errorf("%w: bad CID in CAR section: %w", ErrCorruptBlock, err)
	}
	return c, buf[cl:], nil
}

// dagVerifier accepts the blocks of one DAG, from any source and in any
// order in which each block is linked from blocks accepted before it. It
// checks every block's hash against its CID, refuses blocks the DAG does not
// need (or needs no more), and enforces a byte budget. It is not safe for
// concurrent use.
type dagVerifier struct {
	needed map[string]cid.Cid // linked from accepted blocks, not yet received
	seen   map[string]struct{}
	total  int64
	max    int64
	blocks int
}

func newDAGVerifier(root cid.Cid, maxBytes int64) *dagVerifier {
	return &dagVerifier{
		needed: map[string]cid.Cid{root.KeyString(): root},
		seen:   map[string]struct{}{},
		max:    maxBytes,
	}
}

// checkPrefix refuses CIDs outside what this package produces and reads:
// CIDv0/v1, dag-pb or raw, sha2-256.
func checkPrefix(c cid.Cid) error {
	p := c.Prefix()
	if p.Codec != cid.DagProtobuf && p.Codec != cid.Raw {
		return fmt.Errorf("%w: %s: codec 0x%x not dag-pb or raw", ErrUnsupported, c, p.Codec)
	}
	if p.MhType != mh.SHA2_256 || p.MhLength != 32 {
		return fmt.Errorf("%w: %s: hash 0x%x/%d is not sha2-256", ErrUnsupported, c, p.MhType, p.MhLength)
	}
	return nil
}

// accept verifies one block and records the links it adds to the DAG.
func (v *dagVerifier) accept(c cid.Cid, data []byte) (blocks.Block, error) {
	k := c.KeyString()
	if _, ok := v.needed[k]; !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnexpectedBlock, c)
	}
	v.total += int64(len(data))
	if v.total > v.max {
		return nil, fmt.Errorf("%w: DAG exceeds %d bytes", ErrTooLarge, v.max)
	}
	sum, err := c.Prefix().Sum(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptBlock, c, err)
	}
	if !sum.Equals(c) {
		return nil, fmt.Errorf("%w: %s: data hashes to %s", ErrCorruptBlock, c, sum)
	}
	if c.Type() == cid.DagProtobuf {
		nd, err := merkledag.DecodeProtobuf(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: undecodable dag-pb: %w", ErrCorruptBlock, c, err)
		}
		for _, l := range nd.Links() {
			if err := checkPrefix(l.Cid); err != nil {
				return nil, fmt.Errorf("%w: %s links to %w", ErrCorruptBlock, c, err)
			}
			lk := l.Cid.KeyString()
			if _, ok := v.seen[lk]; ok {
				continue
			}
			v.needed[lk] = l.Cid
		}
	}
	delete(v.needed, k)
	v.seen[k] = struct{}{}
	v.blocks++
	return blocks.NewBlockWithCid(data, c)
}

// done reports whether every block of the DAG has been accepted.
func (v *dagVerifier) done() bool { return len(v.needed) == 0 }

// missing lists the blocks still needed.
func (v *dagVerifier) missing() []cid.Cid {
	out := make([]cid.Cid, 0, len(v.needed))
	for _, c := range v.needed {
		out = append(out, c)
	}
	return out
}

// receiveCAR reads a CAR stream for root from r into v, handing verified
// blocks to put in batches. It returns nil at a clean end of stream (v may
// still miss blocks: the caller decides), or the first error.
func receiveCAR(r *bufio.Reader, root cid.Cid, v *dagVerifier, batchLimit int, put func([]blocks.Block) error, onSection func()) error {
	if err := checkPrefix(root); err != nil {
		return err
	}
	if err := readCarHeader(r, root); err != nil {
		return err
	}
	var batch []blocks.Block
	var batchBytes int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := put(batch)
		batch, batchBytes = batch[:0], 0
		return err
	}
	for {
		if onSection != nil {
			onSection()
		}
		c, data, err := readCarSection(r)
		if errors.Is(err, io.EOF) {
			return flush()
		}
		if err != nil {
			return errors.Join(err, flush())
		}
		blk, err := v.accept(c, data)
		if err != nil {
			// Do not store anything from a stream that lied.
			return err
		}
		batch = append(batch, blk)
		batchBytes += len(data)
		if batchBytes >= batchLimit {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}
