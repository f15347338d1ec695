package inference

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestParseProgress(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"::progress 0.42", 0.42, true},
		{"::progress 1", 1, true},
		{"::progress 3", 1, true},
		{"::progress -1", 0, true},
		{"::progress  0.5 \r", 0.5, true},
		{"::progress NaN", 0, false},
		{"::progress +Inf", 0, false},
		{"::progress 0.5x", 0, false},
		{"::progress", 0, false},
		{"progress 0.5", 0, false},
		{" ::progress 0.5", 0, false},
		{"::progress " + strings.Repeat("0", MaxProgressLine), 0, false},
	} {
		got, ok := ParseProgress([]byte(c.in))
		if ok != c.ok || got != c.want {
			t.Errorf("ParseProgress(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestProgressWriterSplitsWrites(t *testing.T) {
	var got []float64
	w := NewProgressWriter(func(f float64) { got = append(got, f) })
	input := "noise\n::progress 0.1\n::prog" + "ress 0.2\n" + strings.Repeat("y", 5000) + "::progress 0.9\n::progress 0.3"
	for i := 0; i < len(input); i += 7 {
		w.Write([]byte(input[i:min(i+7, len(input))]))
	}
	w.Flush()
	if fmt.Sprint(got) != "[0.1 0.2 0.3]" {
		t.Fatalf("got %v", got)
	}
}

func TestTailBuffer(t *testing.T) {
	var all bytes.Buffer
	b := NewTailBuffer(64)
	for i := 0; i < 100; i++ {
		s := fmt.Sprintf("line %d;", i)
		all.WriteString(s)
		b.Write([]byte(s))
		want := all.Bytes()
		if len(want) > 64 {
			want = want[len(want)-64:]
		}
		if got := b.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("after %d writes: %q, want %q", i+1, got, want)
		}
	}
	if b.Dropped() != int64(all.Len()-64) {
		t.Fatalf("Dropped = %d, want %d", b.Dropped(), all.Len()-64)
	}
	big := bytes.Repeat([]byte("z"), 200)
	big[199] = '!'
	b.Write(big)
	if got := b.Bytes(); len(got) != 64 || got[63] != '!' {
		t.Fatalf("after big write: %q", got)
	}
}

func FuzzProgressLine(f *testing.F) {
	for _, s := range []string{"::progress 0.5", "::progress NaN", "::progress 1e308", "::progress -0", "x", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		v, ok := ParseProgress(line)
		if ok && (v < 0 || v > 1 || v != v) {
			t.Fatalf("ParseProgress(%q) = %v outside [0,1]", line, v)
		}
		if !ok && v != 0 {
			t.Fatalf("rejected line returned %v", v)
		}
		// The streaming writer agrees with the line parser and stays bounded.
		var got []float64
		w := NewProgressWriter(func(f float64) { got = append(got, f) })
		w.Write(line)
		w.Write([]byte("\n"))
		if !bytes.Contains(line, []byte("\n")) {
			if ok != (len(got) == 1) || (ok && got[0] != v) {
				t.Fatalf("writer got %v, parser %v %v", got, v, ok)
			}
		}
		if cap(w.line) > 2*MaxProgressLine+len(line) {
			t.Fatalf("line buffer grew to %d", cap(w.line))
		}
	})
}

func FuzzTailBuffer(f *testing.F) {
	f.Add([]byte("hello world"), uint8(4), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, capB, chunk uint8) {
		c := int(capB%64) + 1
		step := int(chunk%16) + 1
		b := NewTailBuffer(c)
		for i := 0; i < len(data); i += step {
			b.Write(data[i:min(i+step, len(data))])
		}
		want := data
		if len(want) > c {
			want = want[len(want)-c:]
		}
		if !bytes.Equal(b.Bytes(), want) {
			t.Fatalf("tail %q, want %q", b.Bytes(), want)
		}
	})
}
