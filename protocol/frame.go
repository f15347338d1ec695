package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

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
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("read %T body: %w", m, err)
	}
	if err := proto.Unmarshal(buf, m); err != nil {
		return fmt.Errorf("decode %T: %w", m, err)
	}
	return nil
}
