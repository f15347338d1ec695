package jobspec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Bounds on parts of a body that the Limits do not cover.
const (
	maxListItems   = 256
	maxLabels      = 64
	maxLabelLen    = 256
	maxURLLen      = 4096
	maxPathLen     = 4096
	maxFileNameLen = 255
	maxOpenParams  = 64
	maxGPUs        = 64
	maxPriority    = 100
	maxBucketTTL   = 10 * 365 * 24 * time.Hour
	maxPriceMicros = 1 << 53
)

// Parse parses and validates a job body. reg resolves the template. The
// error, if any, is a *FieldError for the first bad field in document order
// (the template is resolved first, since the app params depend on it).
func Parse(body []byte, reg *Registry, lim Limits) (*Spec, error) {
	lim = lim.withDefaults()
	if len(body) > lim.MaxBodyBytes {
		return nil, fieldErr("", "body too large: %d bytes, limit %d", len(body), lim.MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fieldErr("", "body is not JSON: %v", err)
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		return nil, fieldErr("", "trailing data after the JSON object: %q", truncate(string(rest), 20))
	}
	top, err := objectMembers(raw, "")
	if err != nil {
		return nil, err
	}
	p := &parser{lim: lim, spec: &Spec{maxTasks: lim.MaxTasks, maxPromptLen: lim.MaxPromptLen}}
	if err := p.template(top, reg); err != nil {
		return nil, err
	}
	for _, m := range top {
		if err := p.topField(m); err != nil {
			return nil, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return p.spec, nil
}

type parser struct {
	lim  Limits
	spec *Spec
	// what the body set explicitly, for defaults and cross-field checks
	setTimeout, setTaskTimeout, setAttempts, setGPU bool
	setReplicas, setType                            bool
	sawTemplateKey                                  bool
}

var topKeys = []string{"templateID", "dataSource", "dataDestination", "params", "resources",
	"timeout", "taskTimeout", "maxAttempts", "constraints", "seed", "priority"}

// template resolves templateID (or templateId) before anything else.
func (p *parser) template(top []member, reg *Registry) error {
	for _, m := range top {
		if m.key != "templateID" && m.key != "templateId" {
			continue
		}
		id, err := asString(m.val, m.key, 128)
		if err != nil {
			return err
		}
		t, ok := reg.Get(id)
		if !ok {
			return fieldErr(m.key, "unknown template %q (known: %s)", truncate(id, 64), knownList(reg.IDs()))
		}
		p.spec.Template, p.spec.TemplateID, p.spec.RequestedTemplate = t, t.ID, id
		p.spec.Resources = t.Resources
		p.spec.PreferGPU = t.PreferGPU
		p.spec.Partitioner.Type = t.Partitioner
		return nil
	}
	return fieldErr("templateID", "required (known: %s)", knownList(reg.IDs()))
}

func (p *parser) topField(m member) error {
	s := p.spec
	var err error
	switch m.key {
	case "templateID", "templateId":
		if p.sawTemplateKey {
			return fieldErr(m.key, "template given twice (templateID and templateId)")
		}
		p.sawTemplateKey = true
		return nil // resolved already by template()
	case "dataSource":
		return p.dataSource(m.val, m.key)
	case "dataDestination":
		return p.dataDestination(m.val, m.key)
	case "params":
		return p.params(m.val, m.key)
	case "resources":
		return p.resources(m.val, m.key)
	case "timeout":
		s.Timeout, err = durationValue(m.val, m.key, p.lim.MaxTimeout)
		p.setTimeout = true
	case "taskTimeout":
		s.TaskTimeout, err = durationValue(m.val, m.key, p.lim.MaxTimeout)
		p.setTaskTimeout = true
	case "maxAttempts":
		var n int64
		n, err = asInt(m.val, m.key, 1, int64(p.lim.MaxAttempts))
		s.MaxAttempts, p.setAttempts = int(n), true
	case "constraints":
		return p.constraints(m.val, m.key)
	case "seed":
		s.Seed, err = asInt(m.val, m.key, 0, MaxSeed)
		s.SeedSet = true
	case "priority":
		var n int64
		n, err = asInt(m.val, m.key, -maxPriority, maxPriority)
		s.Priority = int(n)
	default:
		return fieldErr(m.key, "unknown field (known: %s)", knownList(topKeys))
	}
	return err
}

func (p *parser) dataSource(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	ds := &p.spec.DataSource
	ds.Descriptor = SourceBypass
	// The descriptor decides which other keys are allowed, so read it first.
	for _, m := range ms {
		if m.key == "dataSourceDescriptor" {
			if ds.Descriptor, err = asString(m.val, join(at, m.key), 32); err != nil {
				return err
			}
		}
	}
	allowed := map[string][]string{
		SourceBypass: {"dataSourceDescriptor"},
		SourceFile:   {"dataSourceDescriptor", "files"},
		SourceURL:    {"dataSourceDescriptor", "url"},
		SourceIPFS:   {"dataSourceDescriptor", "cid"},
	}
	keys, ok := allowed[ds.Descriptor]
	if !ok {
		return fieldErr(join(at, "dataSourceDescriptor"), "unknown data source %q (known: bypass, file, url, ipfs)", truncate(ds.Descriptor, 32))
	}
	for _, m := range ms {
		path := join(at, m.key)
		switch {
		case !contains(keys, m.key):
			return fieldErr(path, "unknown field for data source %q (known: %s)", ds.Descriptor, knownList(keys))
		case m.key == "files":
			if ds.Files, err = p.files(m.val, path); err != nil {
				return err
			}
		case m.key == "url":
			s, err := asString(m.val, path, maxURLLen)
			if err != nil {
				return err
			}
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fieldErr(path, "%q is not an http or https URL", truncate(s, 64))
			}
			ds.URL = s
		case m.key == "cid":
			s, err := asString(m.val, path, 256)
			if err != nil {
				return err
			}
			if _, err := cid.Decode(s); err != nil {
				return fieldErr(path, "%q is not a CID: %v", truncate(s, 64), err)
			}
			ds.CID = s
		}
	}
	switch {
	case ds.Descriptor == SourceFile && len(ds.Files) == 0:
		return fieldErr(join(at, "files"), "required for data source \"file\" (at least one file)")
	case ds.Descriptor == SourceURL && ds.URL == "":
		return fieldErr(join(at, "url"), "required for data source \"url\"")
	case ds.Descriptor == SourceIPFS && ds.CID == "":
		return fieldErr(join(at, "cid"), "required for data source \"ipfs\"")
	}
	return nil
}

// files decodes inline input files: [{"name": "a.txt", "content": "..."}]
// or {"name", "base64": "..."}.
func (p *parser) files(raw json.RawMessage, at string) ([]InputFile, error) {
	items, err := arrayItems(raw, at, p.lim.MaxTasks)
	if err != nil {
		return nil, err
	}
	out := make([]InputFile, 0, len(items))
	names := map[string]bool{}
	for i, it := range items {
		ip := index(at, i)
		ms, err := objectMembers(it, ip)
		if err != nil {
			return nil, err
		}
		var f InputFile
		hasData := false
		for _, m := range ms {
			path := join(ip, m.key)
			switch m.key {
			case "name":
				if f.Name, err = asString(m.val, path, maxFileNameLen); err != nil {
					return nil, err
				}
				if err := checkFileName(f.Name); err != nil {
					return nil, fieldErr(path, "%v", err)
				}
				if names[f.Name] {
					return nil, fieldErr(path, "duplicate file name %q", f.Name)
				}
				names[f.Name] = true
			case "content":
				s, err := asString(m.val, path, 0)
				if err != nil {
					return nil, err
				}
				f.Data, hasData = []byte(s), true
			case "base64":
				s, err := asString(m.val, path, 0)
				if err != nil {
					return nil, err
				}
				if f.Data, err = base64.StdEncoding.DecodeString(s); err != nil {
					return nil, fieldErr(path, "not standard base64: %v", err)
				}
				hasData = true
			default:
				return nil, fieldErr(path, "unknown field (known: name, content, base64)")
			}
		}
		if f.Name == "" {
			return nil, fieldErr(join(ip, "name"), "required")
		}
		if !hasData {
			return nil, fieldErr(join(ip, "content"), "required (or base64)")
		}
		out = append(out, f)
	}
	return out, nil
}

// checkFileName accepts a relative slash-separated path that stays inside
// the task's input directory.
func checkFileName(name string) error {
	switch {
	case name == "":
		return errMsg("must not be empty")
	case strings.HasPrefix(name, "/") || strings.Contains(name, "\\"):
		return errMsg("must be a relative path with / separators")
	case path.Clean(name) != name || name == "." || strings.HasPrefix(name, "../") || name == "..":
		return errMsg("must be a clean relative path without .. (got " + name + ")")
	}
	return nil
}

type errMsg string

func (e errMsg) Error() string { return string(e) }

func (p *parser) dataDestination(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	dd := &p.spec.DataDestination
	for _, m := range ms {
		path := join(at, m.key)
		switch m.key {
		case "dataSourceDescriptor":
			if dd.Descriptor, err = asString(m.val, path, 32); err != nil {
				return err
			}
			if dd.Descriptor != DestBucket && dd.Descriptor != DestLocal {
				return fieldErr(path, "unknown data destination %q (known: bucket, local)", truncate(dd.Descriptor, 32))
			}
		case "ttl":
			if dd.TTL, err = durationValue(m.val, path, maxBucketTTL); err != nil {
				return err
			}
		case "path":
			if dd.Path, err = asString(m.val, path, maxPathLen); err != nil {
				return err
			}
			if !strings.HasPrefix(dd.Path, "/") {
				return fieldErr(path, "must be an absolute path")
			}
		default:
			return fieldErr(path, "unknown field (known: dataSourceDescriptor, ttl, path)")
		}
	}
	if dd.Descriptor == "" {
		dd.Descriptor = DestBucket
	}
	if dd.Descriptor == DestLocal && dd.Path == "" {
		return fieldErr(join(at, "path"), "required for data destination \"local\"")
	}
	if dd.Descriptor == DestBucket && dd.Path != "" {
		return fieldErr(join(at, "path"), "only for data destination \"local\"")
	}
	return nil
}

func (p *parser) params(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	for _, m := range ms {
		path := join(at, m.key)
		switch m.key {
		case "partitioner":
			if err := p.partitioner(m.val, path); err != nil {
				return err
			}
		case "app":
			if err := p.app(m.val, path); err != nil {
				return err
			}
		default:
			return fieldErr(path, "unknown field (known: partitioner, app)")
		}
	}
	return nil
}

func (p *parser) partitioner(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	ps := &p.spec.Partitioner
	for _, m := range ms {
		path := join(at, m.key)
		switch m.key {
		case "type", "name":
			if ps.Type, err = asString(m.val, path, 32); err != nil {
				return err
			}
			if ps.Type != PartitionReplicas && ps.Type != PartitionPrompts && ps.Type != PartitionFiles {
				return fieldErr(path, "unknown partitioner %q (known: replicas, prompts, files)", truncate(ps.Type, 32))
			}
			p.setType = true
		case "num_replicas", "numReplicas", "replicas":
			n, err := asInt(m.val, path, 1, MaxSeed)
			if err != nil {
				return err
			}
			if n > int64(p.lim.MaxTasks) {
				return fieldErr(path, "too many tasks: %d, limit %d", n, p.lim.MaxTasks)
			}
			ps.NumReplicas, p.setReplicas = int(n), true
		case "prompts":
			items, err := arrayItems(m.val, path, p.lim.MaxTasks)
			if err != nil {
				return err
			}
			ps.Prompts = make([]string, len(items))
			for i, it := range items {
				if ps.Prompts[i], err = p.prompt(it, index(path, i)); err != nil {
					return err
				}
			}
			if len(ps.Prompts) == 0 {
				return fieldErr(path, "must list at least one prompt")
			}
			if !p.setType {
				ps.Type = PartitionPrompts
			}
		default:
			return fieldErr(path, "unknown field (known: type, num_replicas, prompts)")
		}
	}
	return nil
}

// prompt decodes one prompt: a non-blank string within MaxPromptLen.
func (p *parser) prompt(raw json.RawMessage, at string) (string, error) {
	s, err := asString(raw, at, 0)
	if err != nil {
		return "", err
	}
	if len(s) > p.lim.MaxPromptLen {
		return "", fieldErr(at, "prompt too long: %d bytes, limit %d", len(s), p.lim.MaxPromptLen)
	}
	if strings.TrimSpace(s) == "" {
		return "", fieldErr(at, "prompt must not be empty")
	}
	return s, nil
}

// app validates the app params against the template's schema.
func (p *parser) app(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	t := p.spec.Template
	p.spec.App = map[string]json.RawMessage{}
	open := 0
	for _, m := range ms {
		path := join(at, m.key)
		ps := t.Param(m.key)
		if ps == nil {
			if !t.OpenParams {
				return fieldErr(path, "unknown parameter of template %s (known: %s)", t.ID, knownList(t.ParamNames()))
			}
			if open++; open > maxOpenParams {
				return fieldErr(path, "too many parameters, limit %d", maxOpenParams)
			}
			p.spec.App[m.key] = m.val
			continue
		}
		if isNull(m.val) {
			continue // null = not set: the default applies
		}
		maxStr := p.lim.MaxPromptLen
		if ps.MaxLen > 0 {
			maxStr = ps.MaxLen
		}
		if ps.Type == TypeString && ps.MaxLen == 0 && kindOf(m.val) == "a string" {
			var s string
			if json.Unmarshal(m.val, &s) == nil && len(s) > p.lim.MaxPromptLen {
				return fieldErr(path, "too long: %d bytes, limit %d", len(s), p.lim.MaxPromptLen)
			}
		}
		v, err := ps.check(m.val, path, maxStr)
		if err != nil {
			return err
		}
		if m.key == "prompt" {
			if s, _ := v.(string); strings.TrimSpace(s) == "" {
				return fieldErr(path, "prompt must not be empty")
			}
		}
		enc, _ := json.Marshal(v)
		p.spec.App[m.key] = enc
	}
	return nil
}

func (p *parser) resources(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	r := &p.spec.Resources
	for _, m := range ms {
		path := join(at, m.key)
		switch m.key {
		case "cpu":
			r.CPUMillis, err = cpuValue(m.val, path)
		case "memory":
			r.Memory, err = bytesValue(m.val, path)
		case "gpu", "gpus":
			var n int64
			n, err = asInt(m.val, path, 0, maxGPUs)
			r.GPUs, p.setGPU = int(n), true
		case "gpuMemory":
			r.GPUMemory, err = bytesValue(m.val, path)
		default:
			return fieldErr(path, "unknown field (known: cpu, memory, gpu, gpuMemory)")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) constraints(raw json.RawMessage, at string) error {
	ms, err := objectMembers(raw, at)
	if err != nil {
		return err
	}
	c := &p.spec.Constraints
	for _, m := range ms {
		path := join(at, m.key)
		switch m.key {
		case "labels":
			c.Labels, err = asStringMap(m.val, path, maxLabels, maxLabelLen)
		case "peers":
			c.Peers, err = peerList(m.val, path)
		case "excludePeers":
			c.ExcludePeers, err = peerList(m.val, path)
		case "maxPricePerTaskMicros":
			c.MaxPricePerTaskMicros, err = asInt(m.val, path, 0, maxPriceMicros)
		default:
			return fieldErr(path, "unknown field (known: labels, peers, excludePeers, maxPricePerTaskMicros)")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func peerList(raw json.RawMessage, at string) ([]string, error) {
	ids, err := asStringList(raw, at, maxListItems, 128)
	if err != nil {
		return nil, err
	}
	for i, s := range ids {
		if _, err := peer.Decode(s); err != nil {
			return nil, fieldErr(index(at, i), "%q is not a peer ID", truncate(s, 64))
		}
	}
	return ids, nil
}

// finish applies defaults and checks what spans several fields.
func (p *parser) finish() error {
	s, t := p.spec, p.spec.Template
	if s.DataDestination.Descriptor == "" {
		s.DataDestination.Descriptor = DestBucket
	}
	if s.DataSource.Descriptor == "" {
		s.DataSource.Descriptor = SourceBypass
	}
	if !p.setTimeout {
		s.Timeout = p.lim.DefaultTimeout
	}
	if !p.setTaskTimeout {
		s.TaskTimeout = s.Timeout
	}
	if s.TaskTimeout > s.Timeout {
		return fieldErr("taskTimeout", "%s is longer than the job timeout %s", s.TaskTimeout, s.Timeout)
	}
	if !p.setAttempts {
		s.MaxAttempts = p.lim.DefaultAttempts
	}
	// An app-level seed with no job seed is the job seed: task seeds are
	// derived from it, so a one-task job reproduces that exact seed.
	if raw, ok := s.App["seed"]; ok && !s.SeedSet {
		if err := json.Unmarshal(raw, &s.Seed); err == nil && s.Seed >= 0 && s.Seed <= MaxSeed {
			s.SeedSet = true
		}
	}
	if s.Resources.GPUs > 0 {
		s.PreferGPU = false // required, not just preferred
	}
	if s.App == nil {
		s.App = map[string]json.RawMessage{}
	}
	ps := &s.Partitioner
	if ps.NumReplicas == 0 {
		ps.NumReplicas = 1
	}
	hasInput := s.DataSource.Descriptor != SourceBypass
	switch ps.Type {
	case PartitionPrompts:
		if len(ps.Prompts) == 0 && !hasInput {
			return fieldErr("params.partitioner.prompts", "required by the prompts partitioner (or give a file data source with one prompt per line)")
		}
	case PartitionFiles:
		if !hasInput {
			return fieldErr("dataSource.dataSourceDescriptor", "the files partitioner needs a file, url or ipfs data source")
		}
		if len(ps.Prompts) > 0 {
			return fieldErr("params.partitioner.prompts", "only for the prompts partitioner")
		}
	case PartitionReplicas:
		if len(ps.Prompts) > 0 {
			return fieldErr("params.partitioner.prompts", "only for the prompts partitioner")
		}
	}
	// Required params: the prompts partitioner supplies "prompt" per task.
	for _, prm := range t.Params {
		if !prm.Required || (prm.Name == "prompt" && ps.Type == PartitionPrompts) {
			continue
		}
		if _, ok := s.App[prm.Name]; !ok && len(prm.Default) == 0 {
			return fieldErr("params.app."+prm.Name, "required by template %s", t.ID)
		}
	}
	if n, path := s.taskCount(); n > p.lim.MaxTasks {
		return fieldErr(path, "too many tasks: %d, limit %d", n, p.lim.MaxTasks)
	}
	return nil
}

// taskCount returns how many tasks the job makes as far as the body tells
// (input files not inline count later, in Partition), and the field that
// drives the count.
func (s *Spec) taskCount() (int, string) {
	ps := s.Partitioner
	switch ps.Type {
	case PartitionPrompts:
		return len(ps.Prompts) * ps.NumReplicas, "params.partitioner.num_replicas"
	case PartitionFiles:
		return len(s.DataSource.Files), "dataSource.files"
	}
	return ps.NumReplicas, "params.partitioner.num_replicas"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
