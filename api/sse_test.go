package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func collect(t *testing.T, in string) ([]Event, error) {
	t.Helper()
	var got []Event
	err := ReadEvents(strings.NewReader(in), func(e Event) error {
		got = append(got, e)
		return nil
	})
	return got, err
}

func TestReadEvents(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		want  []string // "type/status/seq"
		isErr bool
	}{
		{"lf", "event: job\ndata: {\"seq\":1,\"status\":\"running\"}\n\n", []string{"job/running/1"}, false},
		{"crlf", "event: job\r\ndata: {\"seq\":1}\r\n\r\n", []string{"job//1"}, false},
		{"cr", "event: job\rdata: {\"seq\":1}\r\r", []string{"job//1"}, false},
		{"bom+comment", "\ufeff: hi\ndata: {\"type\":\"task\",\"seq\":2}\n\n", []string{"task//2"}, false},
		{"json type wins", "event: job\ndata: {\"type\":\"task\"}\n\n", []string{"task//0"}, false},
		{"message name ignored", "event: message\ndata: {}\n\n", []string{"//0"}, false},
		{"no space after colon", "event:log\ndata:{\"seq\":9}\n\n", []string{"log//9"}, false},
		{"blank lines only", "\n\n\n", nil, false},
		{"unterminated dropped", "data: {\"seq\":1}", nil, false},
		{"field without colon", "data\n\n", nil, true}, // data is "" → not JSON
		{"bad json", "data: {nope\n\n", nil, true},
		{"too long line", "data: " + strings.Repeat("x", MaxSSELine+10) + "\n\n", nil, true},
		{"two events", "data: {\"seq\":1}\n\ndata: {\"seq\":2}\n\n", []string{"//1", "//2"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(t, tc.in)
			if (err != nil) != tc.isErr {
				t.Fatalf("err = %v, want error %v", err, tc.isErr)
			}
			var s []string
			for _, e := range got {
				s = append(s, e.Type+"/"+e.Status+"/"+strconv.FormatUint(e.Seq, 10))
			}
			if strings.Join(s, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("events %v, want %v", s, tc.want)
			}
		})
	}
}

func TestReadEventsEventSizeLimit(t *testing.T) {
	// Many short data lines that add up past MaxSSEEvent.
	line := "data: " + strings.Repeat("x", 1000) + "\n"
	in := strings.Repeat(line, MaxSSEEvent/1000+2) + "\n"
	_, err := collect(t, in)
	if !errors.Is(err, ErrSSETooLarge) {
		t.Fatalf("err = %v, want ErrSSETooLarge", err)
	}
	_, err = collect(t, "data: "+strings.Repeat("x", MaxSSELine+10)+"\n\n")
	if !errors.Is(err, ErrSSETooLarge) {
		t.Fatalf("long line err = %v, want ErrSSETooLarge", err)
	}
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte("event: job\ndata: {\"seq\":1,\"status\":\"running\"}\n\n"))
	f.Add([]byte("event: task\r\ndata: {\"taskId\":\"t\"}\r\n\r\n: c\r\r"))
	f.Add([]byte("\ufeffdata: {\n\ndata:\"x\"\n\nid: 1\nretry: 5\n\n"))
	f.Add([]byte("data: {\"progress\":1e400}\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var got []Event
		err := ReadEvents(bytes.NewReader(in), func(e Event) error {
			got = append(got, e)
			return nil
		})
		if len(got) > len(in)/2+1 {
			t.Fatalf("%d events from %d bytes", len(got), len(in))
		}
		if err != nil && !errors.Is(err, ErrSSETooLarge) && !strings.Contains(err.Error(), "decoding event data") {
			t.Fatalf("unexpected error kind: %v", err)
		}
		// Whatever was accepted survives a round trip through the writer's
		// format unchanged.
		var buf bytes.Buffer
		for _, e := range got {
			b, jerr := json.Marshal(e)
			if jerr != nil {
				t.Fatal(jerr)
			}
			fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", strings.NewReplacer("\n", "", "\r", "").Replace(e.Type), b)
		}
		var again []Event
		if err := ReadEvents(&buf, func(e Event) error { again = append(again, e); return nil }); err != nil {
			t.Fatalf("re-reading accepted events: %v", err)
		}
		if len(again) != len(got) {
			t.Fatalf("round trip: %d events, then %d", len(got), len(again))
		}
		for k := range got {
			if !reflect.DeepEqual(normalize(got[k]), normalize(again[k])) {
				t.Fatalf("round trip changed event %d:\n%+v\n%+v", k, got[k], again[k])
			}
		}
	})
}

// normalize drops what JSON cannot round-trip exactly (monotonic clock
// readings, time zones).
func normalize(e Event) Event {
	e.Time = e.Time.UTC().Round(0)
	return e
}
