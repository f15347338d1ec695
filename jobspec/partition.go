package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/swarmgen/swarmgen/protocol"
)

// TaskSpec is one task of a job as the partitioner made it.
type TaskSpec struct {
	Index int   `json:"index"`
	Seed  int64 `json:"seed"`
	// Params are the app params of the task, merged: template defaults <
	// job app params < per-task values (prompt, seed).
	Params json.RawMessage `json:"params"`
	// Input is the task's share of the job input (files partitioner).
	Input *InputFile `json:"input,omitempty"`
}

// ErrNoSeed: Partition was called before the job seed was set.
var ErrNoSeed = errors.New("job seed not set (call Spec.SetSeed)")

// TaskSeed derives the seed of the replica'th copy of a job: jobSeed +
// replica, wrapped to [0, MaxSeed]. Adjacent seeds (as image UIs do for a
// batch) rather than a hash, so resubmitting with a task's seed and one
// replica reproduces that task exactly.
func TaskSeed(jobSeed int64, replica int) int64 { return (jobSeed + int64(replica)) & MaxSeed }

// Partition splits a job into tasks. tmpl is the job's template (nil: the
// spec's). inputs is the job input the caller resolved from the data source
// (the inline files for "file"; the downloaded or fetched files for "url" and
// "ipfs"); nil for "file" means the spec's inline files.
//
//   - replicas: num_replicas tasks, task i with seed TaskSeed(seed, i).
//   - prompts: every prompt (the "prompts" list, else the non-blank lines
//     of the input files) × num_replicas; task p*n+r has prompt p and seed
//     TaskSeed(seed, r), so every prompt is drawn with the same seeds.
//   - files: one task per input file, in order, seed TaskSeed(seed, i).
//
// Errors are *FieldError (too many tasks, a prompt line too long) or
// ErrNoSeed.
func Partition(spec *Spec, tmpl *Template, inputs []InputFile) ([]TaskSpec, error) {
	if tmpl == nil {
		tmpl = spec.Template
	}
	if tmpl == nil {
		return nil, errors.New("partition: no template")
	}
	if !spec.SeedSet {
		return nil, ErrNoSeed
	}
	maxTasks, maxPrompt := spec.maxTasks, spec.maxPromptLen
	if maxTasks <= 0 {
		maxTasks = DefaultLimits().MaxTasks
	}
	if maxPrompt <= 0 {
		maxPrompt = DefaultLimits().MaxPromptLen
	}
	if inputs == nil && spec.DataSource.Descriptor == SourceFile {
		inputs = spec.DataSource.Files
	}
	base := map[string]json.RawMessage{}
	for _, p := range tmpl.Params {
		if len(p.Default) > 0 && !isNull(p.Default) {
			base[p.Name] = p.Default
		}
	}
	for k, v := range spec.App {
		base[k] = v
	}
	_, hasSeedParam := base["seed"]
	hasSeedParam = hasSeedParam || tmpl.Param("seed") != nil
	n := max(spec.Partitioner.NumReplicas, 1)

	type unit struct {
		prompt  *string
		input   *InputFile
		replica int
	}
	var units []unit
	switch spec.Partitioner.Type {
	case PartitionReplicas, "":
		if n > maxTasks {
			return nil, fieldErr("params.partitioner.num_replicas", "too many tasks: %d, limit %d", n, maxTasks)
		}
		for r := range n {
			units = append(units, unit{replica: r})
		}
	case PartitionPrompts:
		prompts := spec.Partitioner.Prompts
		if len(prompts) == 0 {
			var err error
			if prompts, err = promptLines(inputs, maxPrompt, maxTasks); err != nil {
				return nil, err
			}
		}
		if len(prompts)*n > maxTasks {
			return nil, fieldErr("params.partitioner.num_replicas", "too many tasks: %d prompts × %d replicas, limit %d", len(prompts), n, maxTasks)
		}
		for i := range prompts {
			for r := range n {
				units = append(units, unit{prompt: &prompts[i], replica: r})
			}
		}
	case PartitionFiles:
		if len(inputs) == 0 {
			return nil, fieldErr("dataSource", "the files partitioner found no input files")
		}
		if len(inputs) > maxTasks {
			return nil, fieldErr("dataSource", "too many tasks: %d input files, limit %d", len(inputs), maxTasks)
		}
		for i := range inputs {
			units = append(units, unit{input: &inputs[i], replica: i})
		}
	default:
		return nil, fieldErr("params.partitioner.type", "unknown partitioner %q", spec.Partitioner.Type)
	}

	tasks := make([]TaskSpec, len(units))
	for i, u := range units {
		seed := TaskSeed(spec.Seed, u.replica)
		params := make(map[string]json.RawMessage, len(base)+2)
		for k, v := range base {
			params[k] = v
		}
		if u.prompt != nil {
			params["prompt"], _ = json.Marshal(*u.prompt)
		}
		if hasSeedParam {
			params["seed"], _ = json.Marshal(seed)
		}
		enc, err := json.Marshal(params)
		if err != nil {
			return nil, fieldErr("params.app", "cannot encode: %v", err)
		}
		if len(enc) > protocol.MaxAppParams {
			return nil, fieldErr("params.app", "task %d params are %d bytes, limit %d", i, len(enc), protocol.MaxAppParams)
		}
		var in *InputFile
		if u.input != nil {
			f := *u.input
			in = &f
		}
		tasks[i] = TaskSpec{Index: i, Seed: seed, Params: enc, Input: in}
	}
	return tasks, nil
}

// promptLines reads one prompt per non-blank line of the input files.
func promptLines(inputs []InputFile, maxPrompt, maxTasks int) ([]string, error) {
	var out []string
	for _, f := range inputs {
		for i, line := range strings.Split(string(bytes.ReplaceAll(f.Data, []byte("\r\n"), []byte("\n"))), "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if len(line) > maxPrompt {
				return nil, fieldErr("dataSource", "%s line %d: prompt too long: %d bytes, limit %d", f.Name, i+1, len(line), maxPrompt)
			}
			if len(out) == maxTasks {
				return nil, fieldErr("dataSource", "too many prompts in the input, limit %d", maxTasks)
			}
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return nil, fieldErr("dataSource", "the prompts partitioner found no prompt lines in the input")
	}
	return out, nil
}
