package jobspec

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/swarmgen/swarmgen/api"
)

//go:embed templates/*.json
var builtinFS embed.FS

// MaxTemplateFile bounds one template file.
const MaxTemplateFile = 256 << 10

// ErrUnknownTemplate: no template has the ID or alias.
var ErrUnknownTemplate = errors.New("unknown template")

// Registry holds templates by ID and alias. It is safe for concurrent use;
// the templates it returns must not be modified.
type Registry struct {
	mu    sync.RWMutex
	byID  map[string]*Template
	alias map[string]string // alias → ID
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byID: map[string]*Template{}, alias: map[string]string{}}
}

// Builtin returns a registry holding the built-in templates (noop, fractal,
// stable-diffusion), read from the files embedded in the binary.
func Builtin() *Registry {
	r := NewRegistry()
	ents, err := builtinFS.ReadDir("templates")
	if err != nil {
		panic(fmt.Sprintf("jobspec: embedded templates: %v", err))
	}
	for _, e := range ents {
		data, err := builtinFS.ReadFile("templates/" + e.Name())
		if err != nil {
			panic(fmt.Sprintf("jobspec: embedded template %s: %v", e.Name(), err))
		}
		t, err := DecodeTemplate(data)
		if err != nil {
			// The embedded files are tested; this is a build defect.
			panic(fmt.Sprintf("jobspec: embedded template %s: %v", e.Name(), err))
		}
		t.Source = "builtin"
		if err := r.Add(t); err != nil {
			panic(fmt.Sprintf("jobspec: embedded template %s: %v", e.Name(), err))
		}
	}
	return r
}

// DecodeTemplate decodes and validates one template file's bytes. The error
// is a *FieldError naming the field.
func DecodeTemplate(data []byte) (*Template, error) {
	if len(data) > MaxTemplateFile {
		return nil, &FieldError{Msg: fmt.Sprintf("template too large: %d bytes, limit %d", len(data), MaxTemplateFile)}
	}
	t := new(Template)
	if err := t.UnmarshalJSON(data); err != nil {
		return nil, err
	}
	return t, nil
}

// Add validates t and adds it. A template with the ID of one already held
// replaces it (an operator may override a built-in); an alias that names
// another template is an error.
func (r *Registry) Add(t *Template) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("template %q: %w", t.ID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range append([]string{t.ID}, t.Aliases...) {
		if owner, ok := r.alias[name]; ok && owner != t.ID {
			return fmt.Errorf("template %q: name %q is already an alias of %q", t.ID, name, owner)
		}
		if name != t.ID {
			if _, ok := r.byID[name]; ok {
				return fmt.Errorf("template %q: alias %q is already a template ID", t.ID, name)
			}
		}
	}
	if old, ok := r.byID[t.ID]; ok {
		for _, a := range old.Aliases {
			delete(r.alias, a)
		}
	}
	r.byID[t.ID] = t
	for _, a := range t.Aliases {
		r.alias[a] = t.ID
	}
	return nil
}

// LoadDir adds every *.json file of dir as a template, in name order. An
// error names the file and the field; templates added before it stay.
func (r *Registry) LoadDir(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return fmt.Errorf("template dir %s: %w", dir, err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		t, err := readTemplateFile(p)
		if err != nil {
			return fmt.Errorf("template file %s: %w", p, err)
		}
		t.Source = p
		if err := r.Add(t); err != nil {
			return fmt.Errorf("template file %s: %w", p, err)
		}
	}
	return nil
}

func readTemplateFile(path string) (*Template, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxTemplateFile+1))
	if err != nil {
		return nil, err
	}
	return DecodeTemplate(data)
}

// Get returns the template with the ID or alias (case-insensitive).
func (r *Registry) Get(idOrAlias string) (*Template, bool) {
	name := strings.ToLower(idOrAlias)
	r.mu.RLock()
	defer r.mu.RUnlock()
	if t, ok := r.byID[name]; ok {
		return t, true
	}
	if id, ok := r.alias[name]; ok {
		return r.byID[id], true
	}
	return nil, false
}

// Lookup is Get with an error that wraps ErrUnknownTemplate and lists the
// known IDs, for "template show" and GET /v1/templates/{id}.
func (r *Registry) Lookup(idOrAlias string) (*Template, error) {
	if t, ok := r.Get(idOrAlias); ok {
		return t, nil
	}
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownTemplate, idOrAlias, strings.Join(r.IDs(), ", "))
}

// IDs returns the template IDs, sorted.
func (r *Registry) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.byID))
	for id := range r.byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// List returns the templates ordered by ID.
func (r *Registry) List() []*Template {
	ids := r.IDs()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Template, 0, len(ids))
	for _, id := range ids {
		if t, ok := r.byID[id]; ok {
			out = append(out, t)
		}
	}
	return out
}

// ToAPI returns every template as GET /v1/templates shows it.
func (r *Registry) ToAPI() []api.Template {
	ts := r.List()
	out := make([]api.Template, len(ts))
	for i, t := range ts {
		out[i] = t.ToAPI()
	}
	return out
}
