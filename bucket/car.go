package bucket

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/ipfs/boxo/ipld/merkledag"
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

// accept verifies one block and records the links it adds to the DAG. It
// neither copies nor keeps data.
func (v *dagVerifier) accept(c cid.Cid, data []byte) error {
	k := c.KeyString()
	if _, ok := v.needed[k]; !ok {
		return fmt.Errorf("%w: %s", ErrUnexpectedBlock, c)
	}
	v.total += int64(len(data))
	if v.total > v.max {
		return fmt.Errorf("%w: DAG exceeds %d bytes", ErrTooLarge, v.max)
	}
	// Every needed CID passed checkPrefix: its multihash is sha2-256, 32
	// bytes (code 0x12, length 0x20, digest).
	h := c.Hash()
	if len(h) != 34 || h[0] != mh.SHA2_256 || h[1] != 32 {
		return fmt.Errorf("%w: %s: not a sha2-256 multihash", ErrCorruptBlock, c)
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], h[2:]) {
		return fmt.Errorf("%w: %s: data hashes to sha2-256 %x", ErrCorruptBlock, c, sum)
	}
	if c.Type() == cid.DagProtobuf {
		nd, err := merkledag.DecodeProtobuf(data)
		if err != nil {
			return fmt.Errorf("%w: %s: undecodable dag-pb: %w", ErrCorruptBlock, c, err)
		}
		for _, l := range nd.Links() {
			if err := checkPrefix(l.Cid); err != nil {
				return fmt.Errorf("%w: %s links to %w", ErrCorruptBlock, c, err)
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
	return nil
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

// carRegion is a run of whole CAR sections exactly as received, every block
// in it verified: it is appended to a pack as is, in one write.
type carRegion struct {
	buf     []byte      // the sections
	entries []packEntry // per block: multihash, data offset in buf, length, CRC
	slab    []byte      // the buffer buf lives in, handed back once written
}

var errVarintOverflow = errors.New("read CAR section length: varint overflows 64 bits")

// verifySections parses the whole CAR sections at the start of buf in
// place, verifying each block with v, and appends an entry per block to
// entries (data offsets relative to buf, plus base). It stops before an
// incomplete section and returns the bytes consumed; on error, what it
// consumed before the bad section.
func verifySections(buf []byte, base int, v *dagVerifier, entries []packEntry) (int, []packEntry, error) {
	pos := 0
	for {
		n, hl := binary.Uvarint(buf[pos:])
		if hl < 0 {
			return pos, entries, errVarintOverflow
		}
		if hl == 0 {
			return pos, entries, nil
		}
		if n == 0 {
			return pos, entries, fmt.Errorf("%w: empty CAR section", ErrCorruptBlock)
		}
		if n > maxCarSection {
			return pos, entries, fmt.Errorf("%w: CAR section of %d bytes, limit %d", ErrTooLarge, n, maxCarSection)
		}
		if uint64(len(buf)-pos-hl) < n {
			return pos, entries, nil
		}
		sec := buf[pos+hl : pos+hl+int(n)]
		cl, c, err := cid.CidFromBytes(sec)
		if err != nil {
			return pos, entries, fmt.Errorf("%w: bad CID in CAR section: %w", ErrCorruptBlock, err)
		}
		data := sec[cl:]
		if err := v.accept(c, data); err != nil {
			return pos, entries, err
		}
		entries = append(entries, packEntry{hash: c.Hash(), loc: packLoc{
			off: int64(base + pos + hl + cl), n: uint32(len(data)), crc: crc32.Checksum(data, castagnoli),
		}})
		pos += hl + int(n)
	}
}

// receiveCAR reads a CAR stream for root from r into v. Bytes land once, in
// slabs from getSlab (each longer than a section can be); sections are
// parsed and verified in place and handed to emit as regions, which then own
// their slab. Only verified blocks are emitted, and every verified block is
// (also before a transport error, so that a fallback need not fetch it
// again); nothing after a block that fails verification is. It returns nil
// at a clean end of stream (v may still miss blocks: the caller decides), or
// the first error. beforeRead (may be nil) runs before each read.
func receiveCAR(r io.Reader, root cid.Cid, v *dagVerifier, getSlab func() ([]byte, error), emit func(carRegion) error, beforeRead func()) error {
	if err := checkPrefix(root); err != nil {
		return err
	}
	slab, err := getSlab()
	if err != nil {
		return err
	}
	if len(slab) < maxCarSection+binary.MaxVarintLen64 {
		return fmt.Errorf("CAR receive buffer of %d bytes is smaller than a section", len(slab))
	}
	// slab[start:pos] holds verified sections not yet emitted, slab[pos:end]
	// bytes not yet parsed.
	var start, pos, end int
	var entries []packEntry
	var eof bool
	flush := func() error {
		if pos == start {
			return nil
		}
		reg := carRegion{buf: slab[start:pos], entries: entries, slab: slab}
		entries = nil
		return emit(reg)
	}
	fill := func() error {
		if beforeRead != nil {
			beforeRead()
		}
		n, err := r.Read(slab[end:])
		end += n
		if errors.Is(err, io.EOF) {
			eof = true
			return nil
		}
		return err
	}
	header := carHeader(root)
	for end < len(header) && !eof {
		if err := fill(); err != nil {
			return fmt.Errorf("read CAR header: %w", err)
		}
	}
	if end < len(header) {
		return fmt.Errorf("read CAR header: %w", io.ErrUnexpectedEOF)
	}
	if !bytes.Equal(slab[:len(header)], header) {
		return fmt.Errorf("%w: CAR header does not name root %s as its only root", ErrCorruptBlock, root)
	}
	start, pos = len(header), len(header)
	for {
		n, more, err := verifySections(slab[pos:end], pos-start, v, entries)
		entries = more
		pos += n
		if err != nil {
			if errors.Is(err, errVarintOverflow) {
				// Garbled framing, not a block that lied: keep what is
				// verified for the fallback.
				return errors.Join(err, flush())
			}
			return err // nothing more from a stream that lied
		}
		need := binary.MaxVarintLen64 // length still incomplete: at most this much
		if sl, hl := binary.Uvarint(slab[pos:end]); hl > 0 {
			need = hl + int(sl)
		}
		// The next section is incomplete.
		if eof {
			if pos == end {
				return flush()
			}
			return errors.Join(fmt.Errorf("read CAR section: %w", io.ErrUnexpectedEOF), flush())
		}
		if pos+need > len(slab) {
			// No room for it here: emit what is verified and carry the
			// partial section over to the front of a fresh slab.
			next := slab
			if pos > start {
				if next, err = getSlab(); err != nil {
					return err
				}
			}
			copy(next, slab[pos:end])
			if err := flush(); err != nil {
				return err
			}
			slab, end, start, pos = next, end-pos, 0, 0
		}
		if err := fill(); err != nil {
			return errors.Join(fmt.Errorf("read CAR stream: %w", err), flush())
		}
	}
}
