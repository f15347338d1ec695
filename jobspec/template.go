package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/inference"
)

// Param types of a template's parameter schema.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeNumber = "number"
	TypeBool   = "bool"
	TypeList   = "list" // a list of strings
)

// Partitioner names.
const (
	PartitionReplicas = "replicas"
	PartitionPrompts  = "prompts"
	PartitionFiles    = "files"
)

// AssemblerBucket is the only assembler: every task's output/ becomes a
// directory of the job's bucket.
const AssemblerBucket = "bucket"

// maxTemplateString bounds free-text string params that set no MaxLen.
const maxTemplateString = 64 << 10

// ParamSpec describes one app parameter of a template.
type ParamSpec struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Default, when set, is merged into every task's params unless the job
	// sets the param.
	Default json.RawMessage `json:"default,omitempty"`
	// Min and Max bound int and number params.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// MaxLen bounds a string's bytes or a list's items (0: the job limits).
	MaxLen int `json:"maxLen,omitempty"`
	// MultipleOf, for ints, requires value % MultipleOf == 0.
	MultipleOf int64 `json:"multipleOf,omitempty"`
	// Enum lists the allowed values of a string param.
	Enum        []string `json:"enum,omitempty"`
	Required    bool     `json:"required,omitempty"`
	Description string   `json:"description,omitempty"`
}

// Template is a named, parameterised app: what runs, which params a job may
// set, how a job is split and what it needs. Templates are immutable once
// added to a Registry; share them freely.
type Template struct {
	ID          string
	Aliases     []string
	Description string
	// App is the preferred way to run the template.
	App inference.App
	// Alternatives run the same app with another executor kind (e.g. the
	// docker image of a process app); see AppFor.
	Alternatives []inference.App
	Params       []ParamSpec
	// OpenParams lets a job pass app params the schema does not list
	// (still size-limited); for test apps that ignore their params.
	OpenParams  bool
	Partitioner string
	Assembler   string
	// Resources are the defaults a job may override.
	Resources inference.Resources
	// PreferGPU: the app runs on CPU but much faster on a GPU, so the
	// scheduler ranks GPU peers first without requiring one.
	PreferGPU bool
	// ModelParam names the param that selects the model, so that peers
	// with the model loaded (warm) rank first. Empty: no model.
	ModelParam string
	// Source is "builtin" or the file the template came from.
	Source string
}

// templateFile is the on-disk and wire form of a Template.
type templateFile struct {
	ID           string          `json:"id"`
	Aliases      []string        `json:"aliases,omitempty"`
	Description  string          `json:"description"`
	App          inference.App   `json:"app"`
	Alternatives []inference.App `json:"alternatives,omitempty"`
	Params       []ParamSpec     `json:"params"`
	OpenParams   bool            `json:"openParams,omitempty"`
	Partitioner  string          `json:"partitioner"`
	Assembler    string          `json:"assembler"`
	Resources    resourcesFile   `json:"resources"`
	ModelParam   string          `json:"modelParam,omitempty"`
}

// resourcesFile is the human form of resources: cores, "4Gi".
type resourcesFile struct {
	CPU          float64   `json:"cpu,omitempty"`
	Memory       byteField `json:"memory,omitempty"`
	GPU          int       `json:"gpu,omitempty"`
	GPUMemory    byteField `json:"gpuMemory,omitempty"`
	GPUPreferred bool      `json:"gpuPreferred,omitempty"`
}

// byteField is a size written as "4Gi" or a number of bytes.
type byteField int64

func (b byteField) MarshalJSON() ([]byte, error) { return json.Marshal(FormatBytes(int64(b))) }

func (b *byteField) UnmarshalJSON(data []byte) error {
	n, err := bytesValue(data, "")
	if err != nil {
		return errors.New(err.(*FieldError).Msg)
	}
	*b = byteField(n)
	return nil
}

// MarshalJSON writes the template in its file form, which LoadDir reads.
func (t *Template) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.file())
}

// UnmarshalJSON reads the file form strictly (unknown fields are errors)
// and validates the result.
func (t *Template) UnmarshalJSON(data []byte) error {
	var f templateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return &FieldError{Msg: fmt.Sprintf("invalid template JSON: %v", err)}
	}
	if dec.More() {
		return &FieldError{Msg: "data after the template object"}
	}
	nt := Template{
		ID: f.ID, Aliases: f.Aliases, Description: f.Description, App: f.App,
		Alternatives: f.Alternatives, Params: f.Params, OpenParams: f.OpenParams,
		Partitioner: f.Partitioner, Assembler: f.Assembler, ModelParam: f.ModelParam,
		Resources: inference.Resources{
			CPUMillis: int64(math.Round(f.Resources.CPU * 1000)),
			Memory:    int64(f.Resources.Memory),
			GPUs:      f.Resources.GPU,
			GPUMemory: int64(f.Resources.GPUMemory),
		},
		PreferGPU: f.Resources.GPUPreferred,
	}
	if nt.Partitioner == "" {
		nt.Partitioner = PartitionReplicas
	}
	if nt.Assembler == "" {
		nt.Assembler = AssemblerBucket
	}
	if err := nt.Validate(); err != nil {
		return err
	}
	*t = nt
	return nil
}

func (t *Template) file() templateFile {
	return templateFile{
		ID: t.ID, Aliases: t.Aliases, Description: t.Description, App: t.App,
		Alternatives: t.Alternatives, Params: t.Params, OpenParams: t.OpenParams,
		Partitioner: t.Partitioner, Assembler: t.Assembler, ModelParam: t.ModelParam,
		Resources: resourcesFile{
			CPU:          float64(t.Resources.CPUMillis) / 1000,
			Memory:       byteField(t.Resources.Memory),
			GPU:          t.Resources.GPUs,
			GPUMemory:    byteField(t.Resources.GPUMemory),
			GPUPreferred: t.PreferGPU,
		},
	}
}

var templateID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Validate checks a template; the error is a *FieldError whose path is
// relative to the template object ("params[2].min").
func (t *Template) Validate() error {
	if !templateID.MatchString(t.ID) {
		return fieldErr("id", "%q must match %s", t.ID, templateID)
	}
	for i, a := range t.Aliases {
		if !templateID.MatchString(a) {
			return fieldErr(index("aliases", i), "%q must match %s", a, templateID)
		}
	}
	if err := validateApp(t.App, "app"); err != nil {
		return err
	}
	for i, a := range t.Alternatives {
		if err := validateApp(a, index("alternatives", i)); err != nil {
			return err
		}
	}
	switch t.Partitioner {
	case PartitionReplicas, PartitionPrompts, PartitionFiles:
	default:
		return fieldErr("partitioner", "unknown partitioner %q (known: replicas, prompts, files)", t.Partitioner)
	}
	if t.Assembler != AssemblerBucket {
		return fieldErr("assembler", "unknown assembler %q (known: bucket)", t.Assembler)
	}
	r := t.Resources
	if r.CPUMillis < 0 || r.Memory < 0 || r.GPUs < 0 || r.GPUs > 64 || r.GPUMemory < 0 {
		return fieldErr("resources", "values must be non-negative (gpu at most 64)")
	}
	seen := map[string]bool{}
	for i, p := range t.Params {
		path := index("params", i)
		if err := p.validate(path); err != nil {
			return err
		}
		if seen[p.Name] {
			return fieldErr(join(path, "name"), "duplicate param %q", p.Name)
		}
		seen[p.Name] = true
	}
	if t.ModelParam != "" {
		p := t.Param(t.ModelParam)
		if p == nil || p.Type != TypeString {
			return fieldErr("modelParam", "%q is not a string param of the template", t.ModelParam)
		}
	}
	return nil
}

func validateApp(a inference.App, path string) error {
	switch a.Kind {
	case inference.KindProcess:
		if len(a.Command) == 0 {
			return fieldErr(join(path, "command"), "a process app needs a command")
		}
	case inference.KindDocker:
		if a.Image == "" {
			return fieldErr(join(path, "image"), "a docker app needs an image")
		}
	default:
		return fieldErr(join(path, "kind"), "unknown executor kind %q (known: process, docker)", a.Kind)
	}
	return nil
}

var paramName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

func (p *ParamSpec) validate(path string) error {
	if !paramName.MatchString(p.Name) {
		return fieldErr(join(path, "name"), "%q must match %s", p.Name, paramName)
	}
	switch p.Type {
	case TypeString, TypeInt, TypeNumber, TypeBool, TypeList:
	default:
		return fieldErr(join(path, "type"), "unknown type %q (known: string, int, number, bool, list)", p.Type)
	}
	if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
		return fieldErr(join(path, "min"), "min %v is above max %v", *p.Min, *p.Max)
	}
	if p.MaxLen < 0 || p.MultipleOf < 0 {
		return fieldErr(join(path, "maxLen"), "must not be negative")
	}
	if len(p.Default) > 0 && !isNull(p.Default) {
		if _, err := p.check(p.Default, join(path, "default"), maxTemplateString); err != nil {
			return err
		}
	}
	return nil
}

// Param returns the schema of the named param, or nil.
func (t *Template) Param(name string) *ParamSpec {
	for i := range t.Params {
		if t.Params[i].Name == name {
			return &t.Params[i]
		}
	}
	return nil
}

// ParamNames lists the schema's param names in schema order.
func (t *Template) ParamNames() []string {
	out := make([]string, len(t.Params))
	for i, p := range t.Params {
		out[i] = p.Name
	}
	return out
}

// Executors lists the executor kinds that can run the template.
func (t *Template) Executors() []string {
	out := []string{t.App.Kind}
	for _, a := range t.Alternatives {
		if !slices.Contains(out, a.Kind) {
			out = append(out, a.Kind)
		}
	}
	return out
}

// AppFor returns how to run the template with the given executor kind.
func (t *Template) AppFor(kind string) (inference.App, bool) {
	if t.App.Kind == kind {
		return t.App, true
	}
	for _, a := range t.Alternatives {
		if a.Kind == kind {
			return a, true
		}
	}
	return inference.App{}, false
}

// Image returns the docker image of the template, if it has one.
func (t *Template) Image() string {
	if a, ok := t.AppFor(inference.KindDocker); ok {
		return a.Image
	}
	return ""
}

// ToAPI returns the template as GET /v1/templates shows it.
func (t *Template) ToAPI() api.Template {
	f := t.file()
	app, _ := json.Marshal(struct {
		inference.App
		Alternatives []inference.App `json:"alternatives,omitempty"`
	}{t.App, t.Alternatives})
	params, _ := json.Marshal(f.Params)
	res, _ := json.Marshal(f.Resources)
	if f.Params == nil {
		params = []byte("[]")
	}
	return api.Template{
		ID: t.ID, Aliases: slices.Clone(t.Aliases), Description: t.Description,
		App: app, Params: params, Partitioner: t.Partitioner, Assembler: t.Assembler,
		Resources: res, Source: t.Source,
	}
}

// check validates one value of the param and returns it decoded: string,
// int64, float64, bool or []string. maxStr bounds strings that set no
// MaxLen.
func (p *ParamSpec) check(raw json.RawMessage, path string, maxStr int) (any, error) {
	switch p.Type {
	case TypeString:
		limit := maxStr
		if p.MaxLen > 0 && p.MaxLen < limit {
			limit = p.MaxLen
		}
		s, err := asString(raw, path, limit)
		if err != nil {
			return nil, err
		}
		if len(p.Enum) > 0 && !slices.Contains(p.Enum, s) {
			return nil, fieldErr(path, "%q is not one of %s", truncate(s, 40), knownList(p.Enum))
		}
		return s, nil
	case TypeInt:
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		if p.Min != nil {
			lo = int64(math.Ceil(*p.Min))
		}
		if p.Max != nil {
			hi = int64(math.Floor(*p.Max))
		}
		n, err := asInt(raw, path, lo, hi)
		if err != nil {
			return nil, err
		}
		if p.MultipleOf > 1 && n%p.MultipleOf != 0 {
			return nil, fieldErr(path, "%d is not a multiple of %d", n, p.MultipleOf)
		}
		return n, nil
	case TypeNumber:
		f, err := asNumber(raw, path)
		if err != nil {
			return nil, err
		}
		if (p.Min != nil && f < *p.Min) || (p.Max != nil && f > *p.Max) {
			return nil, fieldErr(path, "%v out of range [%s, %s]", f, bound(p.Min), bound(p.Max))
		}
		return f, nil
	case TypeBool:
		return asBool(raw, path)
	case TypeList:
		maxItems := 256
		if p.MaxLen > 0 {
			maxItems = p.MaxLen
		}
		return asStringList(raw, path, maxItems, maxStr)
	}
	return nil, fieldErr(path, "param has unknown type %q", p.Type)
}

func bound(f *float64) string {
	if f == nil {
		return "∞"
	}
	return fmt.Sprint(*f)
}
