package bucket

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
)

// ManifestName is the file name of the manifest at the root of a bucket.
const ManifestName = "manifest.json"

// MaxManifestSize bounds manifest.json (bytes).
const MaxManifestSize = 8 << 20

// MaxManifestTasks bounds the number of tasks a manifest may list.
const MaxManifestTasks = 100000

// Manifest describes a job bucket: manifest.json at the bucket root. The
// node fills it; the gateway reads it for the gallery. The format is
// documented in docs/bucket.md.
type Manifest struct {
	Job       string         `json:"job"`
	Template  string         `json:"template"`
	CreatedAt time.Time      `json:"createdAt"`
	Tasks     []ManifestTask `json:"tasks"`
}

// ManifestTask is one task's entry in the manifest. Its output is the
// bucket directory "task-<index>".
type ManifestTask struct {
	Index      int             `json:"index"`
	TaskID     string          `json:"taskId"`
	Seed       int64           `json:"seed"`
	Params     json.RawMessage `json:"params,omitempty"` // the task's app params, e.g. {"prompt": ...}
	Provider   string          `json:"provider"`         // peer ID that ran it
	Attempt    int             `json:"attempt"`
	CID        string          `json:"cid"` // root CID of the task's output directory
	StartedAt  time.Time       `json:"startedAt"`
	FinishedAt time.Time       `json:"finishedAt"`
	DurationMs int64           `json:"durationMs"`
}

// Encode returns manifest.json as a bucket holds it: the manifest's fields
// one per line and the tasks one per line, compact. A file of a few
// thousand tasks stays readable and greppable line by line, and encoding it
// costs half as much as json.MarshalIndent, which marshals and then
// re-parses the whole document to indent it. Compacted, the output is
// exactly json.Marshal(m) (TestManifestEncode).
func (m *Manifest) Encode() ([]byte, error) {
	b := bytes.NewBuffer(make([]byte, 0, 256+len(m.Tasks)*320))
	b.WriteString("{\n")
	for _, f := range []struct {
		name string
		v    any
	}{{"job", m.Job}, {"template", m.Template}, {"createdAt", m.CreatedAt}} {
		v, err := json.Marshal(f.v)
		if err != nil {
			return nil, fmt.Errorf("manifest: %s: %w", f.name, err)
		}
		fmt.Fprintf(b, "  %q: %s,\n", f.name, v)
	}
	if m.Tasks == nil {
		b.WriteString("  \"tasks\": null\n}\n")
		return b.Bytes(), nil
	}
	b.WriteString("  \"tasks\": [")
	for i := range m.Tasks {
		t, err := json.Marshal(&m.Tasks[i])
		if err != nil {
			return nil, fmt.Errorf("manifest: task %d: %w", m.Tasks[i].Index, err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		b.Write(t)
	}
	if len(m.Tasks) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("]\n}\n")
	return b.Bytes(), nil
}

// TaskDirName is the bucket directory name of the task with this index.
func TaskDirName(index int) string { return fmt.Sprintf("task-%d", index) }

// DecodeManifest parses and validates manifest bytes (untrusted: they may
// come from a bucket fetched from anywhere).
func DecodeManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("manifest: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxManifestSize)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: decode: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks field sizes and formats.
func (m *Manifest) Validate() error {
	if m.Job == "" || len(m.Job) > 128 {
		return fmt.Errorf("manifest: job: must be 1-128 bytes, got %d", len(m.Job))
	}
	if len(m.Template) > 128 {
		return fmt.Errorf("manifest: template: %d bytes, limit 128", len(m.Template))
	}
	if len(m.Tasks) > MaxManifestTasks {
		return fmt.Errorf("manifest: tasks: %w: %d entries, limit %d", ErrTooLarge, len(m.Tasks), MaxManifestTasks)
	}
	for i, t := range m.Tasks {
		if t.Index < 0 {
			return fmt.Errorf("manifest: tasks[%d].index: negative", i)
		}
		if t.Attempt < 0 {
			return fmt.Errorf("manifest: tasks[%d].attempt: negative", i)
		}
		if len(t.TaskID) > 128 || len(t.Provider) > 128 {
			return fmt.Errorf("manifest: tasks[%d]: taskId or provider over 128 bytes", i)
		}
		if t.CID != "" {
			if _, err := cid.Decode(t.CID); err != nil {
				return fmt.Errorf("manifest: tasks[%d].cid: %w", i, err)
			}
		}
		if len(t.Params) > 0 && !json.Valid(t.Params) {
			return fmt.Errorf("manifest: tasks[%d].params: invalid JSON", i)
		}
	}
	return nil
}

// Prompt returns params.prompt when it is a string (for the gallery).
func (t ManifestTask) Prompt() string {
	var p struct {
		Prompt any `json:"prompt"`
	}
	if json.Unmarshal(t.Params, &p) != nil {
		return ""
	}
	s, _ := p.Prompt.(string)
	return s
}
