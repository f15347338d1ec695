package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Server-sent event limits. The stream comes from the network: a line or an
// event past these is an error, not an allocation.
const (
	MaxSSELine  = 64 << 10 // bytes in one line
	MaxSSEEvent = 1 << 20  // bytes of data in one event
)

// ErrSSETooLarge is wrapped by ReadEvents when a line or event exceeds the
// limits.
var ErrSSETooLarge = errors.New("server-sent event too large")

// ReadEvents parses a text/event-stream (the WHATWG format: "event:",
// "data:", "id:", "retry:" fields, ":" comments, events ended by a blank
// line; \n, \r\n and \r line ends) whose data fields hold Event JSON, and
// calls fn for each event. The SSE event name fills Event.Type when the JSON
// leaves it empty. It returns nil at the end of the stream, fn's error if fn
// fails, and an error naming the problem for an oversized or malformed
// event.
func ReadEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxSSELine+1)
	sc.Split(scanSSELines)
	var (
		data    bytes.Buffer
		name    string
		hasData bool
		line    int
		first   = true
	)
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if first {
			b = bytes.TrimPrefix(b, []byte("\ufeff"))
			first = false
		}
		if len(b) > MaxSSELine {
			return fmt.Errorf("line %d: %w: line longer than %d bytes", line, ErrSSETooLarge, MaxSSELine)
		}
		if len(b) == 0 {
			if hasData {
				if err := dispatchSSE(name, data.Bytes(), fn); err != nil {
					return fmt.Errorf("event ending at line %d: %w", line, err)
				}
			}
			data.Reset()
			name, hasData = "", false
			continue
		}
		if b[0] == ':' {
			continue // comment, e.g. a keepalive
		}
		field, value := b, []byte(nil)
		if i := bytes.IndexByte(b, ':'); i >= 0 {
			field, value = b[:i], b[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			// The format decodes the stream as UTF-8 with replacement.
			name = strings.ToValidUTF8(string(value), "\uFFFD")
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			if data.Len()+len(value) > MaxSSEEvent {
				return fmt.Errorf("line %d: %w: event data longer than %d bytes", line, ErrSSETooLarge, MaxSSEEvent)
			}
			data.Write(value)
			hasData = true
		case "id", "retry":
			// Reconnection is the caller's business (it re-reads the job).
		default:
			// Unknown fields are ignored, as the format requires.
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: %w: line longer than %d bytes", line+1, ErrSSETooLarge, MaxSSELine)
		}
		return fmt.Errorf("reading event stream: %w", err)
	}
	// An event not ended by a blank line is incomplete and dropped, as the
	// format requires.
	return nil
}

func dispatchSSE(name string, data []byte, fn func(Event) error) error {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("decoding event data: %w", err)
	}
	if ev.Type == "" && name != "message" {
		ev.Type = name
	}
	return fn(ev)
}

// scanSSELines splits on \n, \r\n or a lone \r.
func scanSSELines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		// \r: a following \n belongs to the same line end.
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // need one more byte to tell \r from \r\n
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}
