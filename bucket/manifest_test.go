package bucket

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestManifestEncode: Encode is json.Marshal laid out one task per line,
// and it decodes back to the same manifest.
func TestManifestEncode(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	task := func(i int, params string) ManifestTask {
		mt := ManifestTask{Index: i, TaskID: "t-" + strings.Repeat("x", i), Seed: int64(-i), Provider: "12D3KooWprov", Attempt: i + 1,
			CID: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", StartedAt: at, FinishedAt: at.Add(time.Second), DurationMs: 1000}
		if params != "" {
			mt.Params = json.RawMessage(params)
		}
		return mt
	}
	cases := map[string]Manifest{
		"no tasks":    {Job: "j", Template: "noop", CreatedAt: at},
		"empty tasks": {Job: "j", Template: "noop", CreatedAt: at, Tasks: []ManifestTask{}},
		"tasks": {Job: `j "<&>" ü`, Template: "stable-diffusion", CreatedAt: at, Tasks: []ManifestTask{
			task(0, `{ "prompt" : "a red fox <b>in</b> snow\n", "steps": 20 }`), task(1, ""), task(2, `[1, 2]`)}},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, got); err != nil {
				t.Fatalf("Encode wrote invalid JSON: %v\n%s", err, got)
			}
			if !bytes.Equal(compact.Bytes(), want) {
				t.Fatalf("compacted Encode differs from json.Marshal:\n%s\n%s", compact.Bytes(), want)
			}
			if lines := strings.Count(string(got), "\n"); lines < 5+len(m.Tasks) {
				t.Fatalf("%d lines, want fields and tasks one per line:\n%s", lines, got)
			}
			back, err := DecodeManifest(got)
			if err != nil {
				t.Fatal(err)
			}
			var again Manifest
			if err := json.Unmarshal(want, &again); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, &again) {
				t.Fatalf("round trip: %+v, want %+v", back, again)
			}
		})
	}
}
