package bucket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/ipfs/go-cid"
)

// Small results travel inline: a provider puts the CAR of a small result
// DAG in the message that reports it, so the submitter needs no fetch
// stream. The receiving side is the same verifier a fetch uses: every block
// hashed against its CID, only blocks the DAG needs, a byte budget.

// ExportCAR returns the DAG under root as a CARv1 with root as its only
// root, blocks in pre-order DFS (the order a fetch stream uses). It fails
// with ErrTooLarge once the blocks exceed maxBytes and with ErrMissingBlock
// when a block is not held here.
func (s *Store) ExportCAR(ctx context.Context, root cid.Cid, maxBytes int64) ([]byte, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.leave()
	if err := checkPrefix(root); err != nil {
		return nil, err
	}
	car := carHeader(root)
	err := s.walkDAG(ctx, root, maxBytes, func(c cid.Cid, n int) ([]byte, error) {
		car = slices.Grow(sectionHeader(car, c, n), n)
		data := car[len(car) : len(car)+n]
		if err := s.pbs.readInto(ctx, c, data); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMissingBlock, c, err)
		}
		car = car[:len(car)+n]
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return car, nil
}

// ImportCAR verifies car, a CAR of root's whole DAG from an untrusted
// peer, stores its blocks and pins root for the result TTL, like a Fetch
// that already has the bytes. Errors wrap ErrCorruptBlock (a block that
// does not match its CID, that the DAG does not need, or a header that does
// not name root), ErrTooLarge (over maxBytes) or ErrMissingBlock (the CAR
// ends before the DAG is complete); nothing is stored then.
func (s *Store) ImportCAR(ctx context.Context, root cid.Cid, car []byte, maxBytes int64) error {
	unlock, err := s.lockWrite()
	if err != nil {
		return err
	}
	defer unlock()
	if maxBytes <= 0 {
		maxBytes = s.cfg.serveMaxBytes
	}
	if err := checkPrefix(root); err != nil {
		return fmt.Errorf("inline result %s: %w", root, err)
	}
	header := carHeader(root)
	if !bytes.HasPrefix(car, header) {
		return fmt.Errorf("inline result %s: %w: CAR header does not name root %s as its only root", root, ErrCorruptBlock, root)
	}
	// Verified in place; the body is then appended to a pack as is.
	body := car[len(header):]
	v := newDAGVerifier(root, maxBytes)
	n, entries, err := verifySections(body, 0, v, nil)
	if err == nil && n < len(body) {
		err = fmt.Errorf("read CAR section: %w", io.ErrUnexpectedEOF)
	}
	if err != nil {
		if !errors.Is(err, ErrCorruptBlock) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsupported) {
			// A CAR cut short or garbled: the whole message is bad.
			err = fmt.Errorf("%w: malformed CAR: %w", ErrCorruptBlock, err)
		}
		return fmt.Errorf("inline result %s: %w", root, err)
	}
	if !v.done() {
		return fmt.Errorf("inline result %s: %w: %d blocks not in the CAR", root, ErrMissingBlock, len(v.needed))
	}
	if err := s.packs.appendSections(body, entries); err != nil {
		return fmt.Errorf("inline result %s: store: %w", root, err)
	}
	return s.pin(ctx, root, s.cfg.resultTTL, "fetched")
}
