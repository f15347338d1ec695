package node

import (
	"context"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/api"
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

// Bid reservations a job did not use are released, not held (denying other
// jobs' bids that capacity) until they expire: a 2-task job gets bids of 2
// slots from each of three providers, 6 reserved for 2 used. A provider
// drops them when the job's last task with it ends, and the submitter
// releases them on every peer it asked when the job ends.
func TestProviderReleasesUnusedReservations(t *testing.T) {
	d := inProcessDevnet(t, 4, func(i int, c *Config) {
		c.Provide = i > 0
		c.Slots = 2
	})
	api0 := d.Nodes()[0].APIAddr()
	reserved := func() int {
		n := 0
		for _, pn := range d.Nodes()[1:] {
			pn.provider.mu.Lock()
			n += pn.provider.queue.Reserved()
			pn.provider.mu.Unlock()
		}
		return n
	}
	for round := 0; round < 3; round++ {
		code, m := postJob(t, api0, []byte(`{"templateID":"noop","params":{"partitioner":{"num_replicas":2},"app":{}}}`))
		if code != 201 {
			t.Fatalf("submit: %d %v", code, m)
		}
		j := waitJob(t, api0, m["id"].(string), 30*time.Second, api.JobCompleted, api.JobFailed)
		if j.Status != api.JobCompleted {
			t.Fatalf("job %s: %s", j.Status, j.Error)
		}
		// Well inside the 5 s a reservation would otherwise live.
		eventually(t, time.Second, "reservations released", func() bool { return reserved() == 0 })
	}
}
