package node

import (
	"context"
	"testing"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
)

// fakeExecutor stands in for an executor whose choice is under test; it is
// never run.
type fakeExecutor struct{ kind string }

func (f fakeExecutor) Kind() string                    { return f.kind }
func (f fakeExecutor) Available(context.Context) error { return nil }
func (f fakeExecutor) Run(context.Context, *inference.Task, string, inference.Progress) (*inference.Result, error) {
	return nil, nil
}

// --allow-images: the docker executor runs only listed images; a template
// that names a process app too falls back to it, one that does not is
// refused.
func TestAllowImagesRestrictsDocker(t *testing.T) {
	both, err := jobspec.DecodeTemplate([]byte(`{"id": "both", "app": {"kind": "docker", "image": "site/both:1"},
		"alternatives": [{"kind": "process", "command": ["{swarmgen}", "app", "noop"]}], "params": []}`))
	if err != nil {
		t.Fatal(err)
	}
	only, err := jobspec.DecodeTemplate([]byte(`{"id": "only", "app": {"kind": "docker", "image": "site/only:1"}, "params": []}`))
	if err != nil {
		t.Fatal(err)
	}
	execs := map[string]inference.Executor{inference.KindDocker: fakeExecutor{inference.KindDocker}, inference.KindProcess: fakeExecutor{inference.KindProcess}}
	for _, c := range []struct {
		allow    []string
		tmpl     *jobspec.Template
		wantKind string // "" = refused
	}{
		{nil, both, inference.KindDocker},
		{[]string{"site/both:1"}, both, inference.KindDocker},
		{[]string{"other:1"}, both, inference.KindProcess},
		{[]string{"other:1"}, only, ""},
		{[]string{"site/only:1"}, only, inference.KindDocker},
	} {
		p := &provider{n: &Node{cfg: Config{AllowImages: c.allow}}, execs: execs}
		ex, app, ok := p.pickExecutor(c.tmpl)
		got := ""
		if ok {
			got = ex.Kind()
			if app.Kind != got {
				t.Errorf("%s with %v: executor %s but app %s", c.tmpl.ID, c.allow, got, app.Kind)
			}
		}
		if got != c.wantKind {
			t.Errorf("%s with allow %v: picked %q, want %q", c.tmpl.ID, c.allow, got, c.wantKind)
		}
	}
}
