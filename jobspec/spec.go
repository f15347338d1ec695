package jobspec

import (
	"encoding/json"
	"time"

	"github.com/swarmgen/swarmgen/inference"
)

// Data source descriptors (dataSource.dataSourceDescriptor).
const (
	SourceBypass = "bypass" // no input: tasks get only their params
	SourceFile   = "file"   // inline files in the body
	SourceURL    = "url"    // one file the submitter's node downloads
	SourceIPFS   = "ipfs"   // a UnixFS file or directory by CID
)

// Data destination descriptors (dataDestination.dataSourceDescriptor).
const (
	DestBucket = "bucket" // the job's bucket, served by the gateway
	DestLocal  = "local"  // additionally copied to a directory of the submitter's node
)

// Limits bound what a job body may ask for. Zero fields take the defaults of
// DefaultLimits.
type Limits struct {
	MaxBodyBytes int           // whole body; default 1 MiB
	MaxTasks     int           // tasks per job; default 1000
	MaxPromptLen int           // bytes of a prompt (and of string params without their own maxLen); default 2000
	MaxAttempts  int           // cap on maxAttempts; default 10
	MaxTimeout   time.Duration // cap on timeout; default 7 days
	// DefaultAttempts is maxAttempts when the body sets none; default 3.
	DefaultAttempts int
	// DefaultTimeout is the job timeout when the body sets none; default 1h.
	DefaultTimeout time.Duration
}

// DefaultLimits returns the limits a public node uses.
func DefaultLimits() Limits {
	return Limits{
		MaxBodyBytes:    1 << 20,
		MaxTasks:        1000,
		MaxPromptLen:    2000,
		MaxAttempts:     10,
		MaxTimeout:      7 * 24 * time.Hour,
		DefaultAttempts: 3,
		DefaultTimeout:  time.Hour,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.MaxTasks <= 0 {
		l.MaxTasks = d.MaxTasks
	}
	if l.MaxPromptLen <= 0 {
		l.MaxPromptLen = d.MaxPromptLen
	}
	if l.MaxAttempts <= 0 {
		l.MaxAttempts = d.MaxAttempts
	}
	if l.MaxTimeout <= 0 {
		l.MaxTimeout = d.MaxTimeout
	}
	if l.DefaultAttempts <= 0 {
		l.DefaultAttempts = min(d.DefaultAttempts, l.MaxAttempts)
	}
	if l.DefaultTimeout <= 0 {
		l.DefaultTimeout = min(d.DefaultTimeout, l.MaxTimeout)
	}
	return l
}

// MaxSeed is the largest job or task seed: seeds stay below 2^53 so that
// JSON readers that use doubles (JavaScript) read them exactly.
const MaxSeed = 1<<53 - 1

// Spec is a parsed and validated job body. All defaults are applied: the
// fields hold what the job will actually use. A Spec is a plain value: read
// it from many goroutines, mutate it (SetSeed) from one.
type Spec struct {
	// TemplateID is the canonical ID of the template; RequestedTemplate is
	// what the body said (maybe an alias).
	TemplateID        string `json:"templateId"`
	RequestedTemplate string `json:"requestedTemplate"`
	// Template is the resolved template (not persisted: look it up again
	// by TemplateID).
	Template        *Template       `json:"-"`
	DataSource      DataSource      `json:"dataSource"`
	DataDestination DataDestination `json:"dataDestination"`
	Partitioner     PartitionerSpec `json:"partitioner"`
	// App holds the app params the job set, each value re-encoded as
	// canonical JSON (template defaults are not merged in; see Partition).
	App map[string]json.RawMessage `json:"app"`
	// Resources: the template's defaults overridden field by field by the
	// body's "resources".
	Resources inference.Resources `json:"resources"`
	// PreferGPU: rank GPU peers first without requiring a GPU (from the
	// template, off when the job requires a GPU anyway).
	PreferGPU bool `json:"preferGpu,omitempty"`
	// Timeout bounds the whole job from submission; TaskTimeout one run of
	// one task (default: Timeout).
	Timeout     time.Duration `json:"timeout"`
	TaskTimeout time.Duration `json:"taskTimeout"`
	MaxAttempts int           `json:"maxAttempts"`
	Constraints Constraints   `json:"constraints"`
	// Seed is the job seed when SeedSet; otherwise the caller picks a
	// random one (SetSeed) and stores it so the job can be replayed.
	Seed     int64 `json:"seed"`
	SeedSet  bool  `json:"seedSet"`
	Priority int   `json:"priority,omitempty"`

	maxTasks, maxPromptLen int
}

// SetSeed sets the job seed (masked to [0, MaxSeed]) if the body set none.
func (s *Spec) SetSeed(seed int64) {
	if !s.SeedSet {
		s.Seed = seed & MaxSeed
		s.SeedSet = true
	}
}

// Model returns the model the job uses (the template's ModelParam, from
// the job or the template default), or "".
func (s *Spec) Model() string {
	if s.Template == nil || s.Template.ModelParam == "" {
		return ""
	}
	raw, ok := s.App[s.Template.ModelParam]
	if !ok {
		if p := s.Template.Param(s.Template.ModelParam); p != nil {
			raw = p.Default
		}
	}
	var m string
	_ = json.Unmarshal(raw, &m)
	return m
}

// DataSource says where the job's input comes from.
type DataSource struct {
	Descriptor string      `json:"dataSourceDescriptor"`
	Files      []InputFile `json:"files,omitempty"` // SourceFile
	URL        string      `json:"url,omitempty"`   // SourceURL
	CID        string      `json:"cid,omitempty"`   // SourceIPFS
}

// DataDestination says where the job's outputs go.
type DataDestination struct {
	Descriptor string        `json:"dataSourceDescriptor"`
	TTL        time.Duration `json:"ttl,omitempty"`  // DestBucket: unpin after; 0 = node default
	Path       string        `json:"path,omitempty"` // DestLocal: absolute directory
}

// PartitionerSpec says how the job splits into tasks.
type PartitionerSpec struct {
	Type        string   `json:"type"`
	NumReplicas int      `json:"num_replicas"`
	Prompts     []string `json:"prompts,omitempty"`
}

// Constraints restrict which peers may run the job's tasks.
type Constraints struct {
	Labels                map[string]string `json:"labels,omitempty"`
	Peers                 []string          `json:"peers,omitempty"`
	ExcludePeers          []string          `json:"excludePeers,omitempty"`
	MaxPricePerTaskMicros int64             `json:"maxPricePerTaskMicros,omitempty"`
}

// InputFile is one file of a job's input.
type InputFile struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}
