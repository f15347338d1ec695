package stablediffusion

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestDecodeEvent(t *testing.T) {
	good := []string{
		`{"event":"ready","pid":3,"device":"cpu","dtype":"fp32"}`,
		`{"id":"a","event":"progress","task_dir":"/t","value":0.5}`,
		`{"id":"a","event":"done","results":[{"task_dir":"/t","ok":true}],"loads":1}`,
		`{"event":"error","error":"bad"}`,
	}
	for _, g := range good {
		if _, err := decodeEvent([]byte(g)); err != nil {
			t.Errorf("%s: %v", g, err)
		}
	}
	bad := map[string]string{
		`not json`:                              "invalid character",
		`{"event":"boom"}`:                      "unknown event",
		`{"event":"progress","value":1.5}`:      "out of [0,1]",
		`{"event":"progress","value":-0.1}`:     "out of [0,1]",
		`{"event":"done","results":[]}`:         "without id",
		`{"event":"done","id":"x","loads":"1"}`: "cannot unmarshal",
		strings.Repeat(" ", MaxEventLine+1):     "over",
	}
	for in, want := range bad {
		_, err := decodeEvent([]byte(in))
		if !errors.Is(err, errBadEvent) || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: err = %v, want %q", in, err, want)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"id":"a","event":"done","results":[{"task_dir":"/t","ok":true,"files":["a"]}],"loads":1}`))
	f.Add([]byte(`{"id":"a","event":"progress","task_dir":"/t","value":0.25}`))
	f.Add([]byte(`{"event":"ready"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(b)
		if err != nil {
			return
		}
		if ev.Event == evProgress && (ev.Value < 0 || ev.Value > 1) {
			t.Fatalf("accepted progress %v", ev.Value)
		}
		if ev.Event == evDone && ev.ID == "" {
			t.Fatal("accepted done without id")
		}
	})
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 100)
	in := "a\r\n" + long + "\nb\n\nlast"
	lr := newLineReader(strings.NewReader(in), 10)
	var got []string
	var tooLong int
	for {
		line, err := lr.next()
		if errors.Is(err, errLineTooLong) {
			tooLong++
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(line))
	}
	if strings.Join(got, "|") != "a|b||last" || tooLong != 1 {
		t.Fatalf("got %q, %d too long", got, tooLong)
	}
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n"), 4)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		lr := newLineReader(bytes.NewReader(in), max)
		for range len(in) + 2 {
			line, err := lr.next()
			if err != nil && !errors.Is(err, errLineTooLong) {
				return
			}
			if len(line) > max+1 {
				t.Fatalf("line of %d bytes with max %d", len(line), max)
			}
		}
		if _, err := lr.next(); !errors.Is(err, io.EOF) {
			t.Fatalf("reader did not reach EOF: %v", err)
		}
	})
}

func TestModelOf(t *testing.T) {
	for in, want := range map[string]string{``: DefaultModel, `{}`: DefaultModel, `{"model":"a/b"}`: "a/b", `{"model":null}`: ""} {
		got, err := modelOf([]byte(in))
		if want == "" {
			if err == nil {
				t.Errorf("%s: no error", in)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: %q, %v", in, got, err)
		}
	}
	for _, in := range []string{`[]`, `{"model":5}`, `{"model":""}`, `{"model":"` + strings.Repeat("m", 600) + `"}`} {
		if _, err := modelOf([]byte(in)); err == nil || !strings.Contains(err.Error(), "param app") {
			t.Errorf("%s: err = %v", in, err)
		}
	}
}

func FuzzModelOf(f *testing.F) {
	f.Add([]byte(`{"model":"org/name","prompt":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := modelOf(b)
		if err == nil && (m == "" || len(m) > maxModelRef) {
			t.Fatalf("accepted model %q", m)
		}
	})
}
