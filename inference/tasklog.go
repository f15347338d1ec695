package inference

import (
	"bytes"
	"io"
	"math"
	"strconv"
	"sync"
)

// DefaultLogCap is the task log cap when a config leaves it zero.
const DefaultLogCap = 256 << 10

// MaxProgressLine bounds the length of a stdout line the progress parser
// looks at; longer lines are logged but never parsed.
const MaxProgressLine = 256

// progressPrefix starts a progress line on stdout.
const progressPrefix = "::progress "

// ParseProgress parses one stdout line (without its newline) of the form
// "::progress 0.42". It returns the fraction clamped to [0,1] and true, or
// false for anything else (other text, NaN, Inf, trailing garbage, lines over
// MaxProgressLine bytes).
func ParseProgress(line []byte) (float64, bool) {
	if len(line) > MaxProgressLine {
		return 0, false
	}
	line = bytes.TrimRight(line, "\r")
	if !bytes.HasPrefix(line, []byte(progressPrefix)) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(line[len(progressPrefix):])), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return min(max(f, 0), 1), true
}

// TailBuffer keeps the last Cap bytes written to it: a task log that cannot
// grow without bound. Safe for concurrent use (stdout and stderr copiers
// write to one buffer).
type TailBuffer struct {
	mu      sync.Mutex
	cap     int
	buf     []byte // ring of len cap once full
	start   int    // index of the oldest byte when full
	full    bool
	dropped int64
}

// NewTailBuffer returns a buffer keeping the last capBytes bytes
// (capBytes <= 0: DefaultLogCap).
func NewTailBuffer(capBytes int) *TailBuffer {
	if capBytes <= 0 {
		capBytes = DefaultLogCap
	}
	return &TailBuffer{cap: capBytes}
}

// Write appends p, dropping the oldest bytes beyond the cap. It never fails.
func (b *TailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) >= b.cap {
		b.dropped += int64(b.size() + len(p) - b.cap)
		b.buf = append(b.buf[:0], p[len(p)-b.cap:]...)
		b.start, b.full = 0, true
		return n, nil
	}
	if !b.full {
		room := b.cap - len(b.buf)
		if len(p) <= room {
			b.buf = append(b.buf, p...)
			if len(b.buf) == b.cap {
				b.full = true
			}
			return n, nil
		}
		b.buf = append(b.buf, p[:room]...)
		p = p[room:]
		b.full = true
	}
	// Full ring: overwrite from start, wrapping.
	b.dropped += int64(len(p))
	for len(p) > 0 {
		c := copy(b.buf[b.start:], p)
		p = p[c:]
		b.start = (b.start + c) % b.cap
	}
	return n, nil
}

func (b *TailBuffer) size() int { return len(b.buf) }

// Bytes returns a copy of the kept tail, oldest byte first.
func (b *TailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]byte, 0, len(b.buf))
	out = append(out, b.buf[b.start:]...)
	return append(out, b.buf[:b.start]...)
}

// Dropped returns how many bytes were dropped from the head so far.
func (b *TailBuffer) Dropped() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// ProgressWriter splits what is written to it into lines and calls the
// callback for each "::progress" line (see ParseProgress). Lines longer than
// MaxProgressLine are skipped up to their newline, so memory stays bounded.
// Not safe for concurrent use: give each stream its own writer.
type ProgressWriter struct {
	fn      Progress
	line    []byte
	tooLong bool
}

// NewProgressWriter returns a writer reporting to fn (nil: parse nothing).
func NewProgressWriter(fn Progress) *ProgressWriter {
	return &ProgressWriter{fn: fn}
}

// Write consumes p; it never fails.
func (w *ProgressWriter) Write(p []byte) (int, error) {
	n := len(p)
	if w.fn == nil {
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !w.tooLong {
			if len(w.line)+len(chunk) > MaxProgressLine {
				w.tooLong, w.line = true, w.line[:0]
			} else {
				w.line = append(w.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !w.tooLong {
			if f, ok := ParseProgress(w.line); ok {
				w.fn(f)
			}
		}
		w.line, w.tooLong = w.line[:0], false
		p = p[i+1:]
	}
	return n, nil
}

// Flush parses a final line that had no newline.
func (w *ProgressWriter) Flush() {
	if w.fn != nil && !w.tooLong && len(w.line) > 0 {
		if f, ok := ParseProgress(w.line); ok {
			w.fn(f)
		}
	}
	w.line, w.tooLong = w.line[:0], false
}

// TaskLog is the log sink every executor uses: stdout and stderr go into one
// capped TailBuffer; stdout is also parsed for progress lines.
type TaskLog struct {
	Tail     *TailBuffer
	progress *ProgressWriter
}

// NewTaskLog returns a log keeping capBytes (<= 0: DefaultLogCap) and
// reporting progress to fn (may be nil).
func NewTaskLog(capBytes int, fn Progress) *TaskLog {
	return &TaskLog{Tail: NewTailBuffer(capBytes), progress: NewProgressWriter(fn)}
}

// Stdout returns the writer for the app's stdout. Use from one goroutine.
func (l *TaskLog) Stdout() io.Writer { return io.MultiWriter(l.Tail, l.progress) }

// Stderr returns the writer for the app's stderr.
func (l *TaskLog) Stderr() io.Writer { return l.Tail }

// Close flushes a trailing progress line; call once stdout is drained.
func (l *TaskLog) Close() { l.progress.Flush() }
