package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/protobuf/proto"
)

// ErrTooLarge is returned when a frame announces more bytes than allowed.
var ErrTooLarge = errors.New("message too large")

// WriteMsg writes m as one varint-length-prefixed frame.
func WriteMsg(w io.Writer, m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	if _, err := w.Write(append(hdr[:n:n], b...)); err != nil {
		return fmt.Errorf("write %T: %w", m, err)
	}
	return nil
}

// ReadMsg reads one varint-length-prefixed frame of at most max bytes into m.
// A frame over max is rejected before its body is read.
func ReadMsg(r *bufio.Reader, max int, m proto.Message) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("read %T length: %w", m, err)
	}
	if n > uint64(max) {
		return fmt.Errorf("read %T: %d bytes announced, limit %d: %w", m, n, max, ErrTooLarge)
	}
	buf, err := readBody(r, int(n))
	if err != nil {
		return fmt.Errorf("read %T body: %w", m, err)
	}
	if err := proto.Unmarshal(buf, m); err != nil {
		return fmt.Errorf("decode %T: %w", m, err)
	}
	return nil
}

// eagerBody: a body up to this size is allocated whole at once. A larger
// one grows as its bytes arrive, so that a peer that announces the limit
// and sends nothing holds this much of the reader's memory, not the limit,
// for as long as its stream stays open.
const eagerBody = 64 << 10

// readBody reads exactly n bytes.
func readBody(r io.Reader, n int) ([]byte, error) {
	if n <= eagerBody {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf := make([]byte, 0, eagerBody)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), n-len(buf)))
		}
		k, err := io.ReadFull(r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}
