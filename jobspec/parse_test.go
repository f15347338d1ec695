package jobspec

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseExampleVerbatim(t *testing.T) {
	body, err := os.ReadFile("testdata/create-job.json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(body, Builtin(), DefaultLimits())
	if err != nil {
		t.Fatalf("example body rejected: %v", err)
	}
	if s.TemplateID != "stable-diffusion" || s.RequestedTemplate != "img-gen-fiffusers-template" {
		t.Errorf("template = %q (asked %q)", s.TemplateID, s.RequestedTemplate)
	}
	if s.Partitioner.Type != PartitionReplicas || s.Partitioner.NumReplicas != 5 {
		t.Errorf("partitioner = %+v", s.Partitioner)
	}
	if s.DataSource.Descriptor != SourceBypass || s.DataDestination.Descriptor != DestBucket {
		t.Errorf("source/dest = %q/%q", s.DataSource.Descriptor, s.DataDestination.Descriptor)
	}
	var prompt string
	if err := json.Unmarshal(s.App["prompt"], &prompt); err != nil || !strings.HasPrefix(prompt, "A peaceful sunset") {
		t.Errorf("prompt = %q (%v)", prompt, err)
	}
	if s.Model() != "stabilityai/sd-turbo" {
		t.Errorf("model = %q", s.Model())
	}
	if s.MaxAttempts != 3 || s.Timeout != time.Hour || s.TaskTimeout != time.Hour {
		t.Errorf("defaults: attempts %d timeout %s task %s", s.MaxAttempts, s.Timeout, s.TaskTimeout)
	}
	if !s.PreferGPU || s.Resources.GPUs != 0 || s.Resources.Memory != 6<<30 {
		t.Errorf("resources = %+v preferGPU %v", s.Resources, s.PreferGPU)
	}
	if s.SeedSet {
		t.Error("seed set without one in the body")
	}
}

func TestParseExtensions(t *testing.T) {
	body := `{
	  "templateID": "fractal",
	  "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "a/b.txt", "content": "hi"}, {"name": "c.bin", "base64": "AAE="}]},
	  "dataDestination": {"dataSourceDescriptor": "local", "path": "/tmp/out"},
	  "params": {"partitioner": {"type": "files"}, "app": {"width": 512, "kind": "julia", "iterations": 50.0}},
	  "resources": {"cpu": "1500m", "memory": "512Mi", "gpu": 1, "gpuMemory": 8589934592},
	  "timeout": 600, "taskTimeout": "2m", "maxAttempts": 5, "seed": 42, "priority": -3,
	  "constraints": {"labels": {"region": "eu"}, "peers": ["12D3KooWLRPJAA5o6XKd5yuDYqyPdvZgB1Wdyz4v6nhHgwS8JA3Z"], "maxPricePerTaskMicros": 100}
	}`
	s, err := Parse([]byte(body), Builtin(), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if s.Resources.CPUMillis != 1500 || s.Resources.Memory != 512<<20 || s.Resources.GPUs != 1 || s.Resources.GPUMemory != 8<<30 {
		t.Errorf("resources = %+v", s.Resources)
	}
	if s.Timeout != 10*time.Minute || s.TaskTimeout != 2*time.Minute || s.MaxAttempts != 5 || s.Seed != 42 || !s.SeedSet || s.Priority != -3 {
		t.Errorf("spec = %+v", s)
	}
	if len(s.DataSource.Files) != 2 || string(s.DataSource.Files[1].Data) != "\x00\x01" {
		t.Errorf("files = %+v", s.DataSource.Files)
	}
	if s.Constraints.Labels["region"] != "eu" || len(s.Constraints.Peers) != 1 || s.Constraints.MaxPricePerTaskMicros != 100 {
		t.Errorf("constraints = %+v", s.Constraints)
	}
	if string(s.App["iterations"]) != "50" {
		t.Errorf("iterations = %s", s.App["iterations"])
	}
}

func TestParseMalformed(t *testing.T) {
	long := strings.Repeat("x", 2001)
	cases := []struct {
		name, body, path, msg string
	}{
		{"not json", `{"templateID": `, "", "not JSON"},
		{"trailing data", `{"templateID": "noop"} {}`, "", "trailing data"},
		{"array body", `[1]`, "", "must be an object"},
		{"missing template", `{"params": {}}`, "templateID", "required"},
		{"template wrong type", `{"templateID": 7}`, "templateID", "must be a string"},
		{"unknown template", `{"templateID": "nope"}`, "templateID", "known: fractal, noop, stable-diffusion"},
		{"unknown top field", `{"templateID": "noop", "replicas": 3}`, "replicas", "unknown field"},
		{"duplicate field", `{"templateID": "noop", "seed": 1, "seed": 2}`, "seed", "duplicate"},
		{"params not object", `{"templateID": "noop", "params": []}`, "params", "must be an object"},
		{"replicas string", `{"templateID": "noop", "params": {"partitioner": {"num_replicas": "5"}}}`, "params.partitioner.num_replicas", "must be an integer"},
		{"replicas zero", `{"templateID": "noop", "params": {"partitioner": {"num_replicas": 0}}}`, "params.partitioner.num_replicas", "out of range"},
		{"replicas fraction", `{"templateID": "noop", "params": {"partitioner": {"num_replicas": 1.5}}}`, "params.partitioner.num_replicas", "must be an integer"},
		{"too many tasks", `{"templateID": "noop", "params": {"partitioner": {"num_replicas": 1001}}}`, "params.partitioner.num_replicas", "too many tasks"},
		{"too many prompt tasks", `{"templateID": "sd", "params": {"partitioner": {"prompts": ["a","b","c"], "num_replicas": 400}}}`, "params.partitioner.num_replicas", "too many tasks"},
		{"unknown partitioner field", `{"templateID": "noop", "params": {"partitioner": {"replica": 2}}}`, "params.partitioner.replica", "unknown field"},
		{"unknown partitioner", `{"templateID": "noop", "params": {"partitioner": {"type": "shards"}}}`, "params.partitioner.type", "unknown partitioner"},
		{"unknown app param", `{"templateID": "sd", "params": {"app": {"prompt": "x", "step": 4}}}`, "params.app.step", "unknown parameter"},
		{"prompt too long", `{"templateID": "sd", "params": {"app": {"prompt": "` + long + `"}}}`, "params.app.prompt", "too long"},
		{"prompt list item too long", `{"templateID": "sd", "params": {"partitioner": {"prompts": ["ok", "` + long + `"]}}}`, "params.partitioner.prompts[1]", "prompt too long"},
		{"prompt required", `{"templateID": "sd", "params": {"app": {"steps": 4}}}`, "params.app.prompt", "required"},
		{"steps out of range", `{"templateID": "sd", "params": {"app": {"prompt": "x", "steps": 151}}}`, "params.app.steps", "out of range"},
		{"width not multiple of 8", `{"templateID": "sd", "params": {"app": {"prompt": "x", "width": 500}}}`, "params.app.width", "multiple of 8"},
		{"scheduler enum", `{"templateID": "sd", "params": {"app": {"prompt": "x", "scheduler": "fast"}}}`, "params.app.scheduler", "not one of"},
		{"guidance wrong type", `{"templateID": "sd", "params": {"app": {"prompt": "x", "guidance_scale": "high"}}}`, "params.app.guidance_scale", "must be a number"},
		{"fractal kind", `{"templateID": "fractal", "params": {"app": {"kind": "sierpinski"}}}`, "params.app.kind", "not one of"},
		{"unknown data source", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "s3"}}`, "dataSource.dataSourceDescriptor", "unknown data source"},
		{"url for file source", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "file", "url": "http://x"}}`, "dataSource.url", "unknown field"},
		{"file without content", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "a"}]}}`, "dataSource.files[0].content", "required"},
		{"file escapes", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "ok", "content": ""}, {"name": "../x", "content": ""}]}}`, "dataSource.files[1].name", "relative path"},
		{"bad base64", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "a", "base64": "!!"}]}}`, "dataSource.files[0].base64", "base64"},
		{"bad url", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "url", "url": "ftp://x/y"}}`, "dataSource.url", "http"},
		{"bad cid", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "ipfs", "cid": "notacid"}}`, "dataSource.cid", "not a CID"},
		{"url missing", `{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "url"}}`, "dataSource.url", "required"},
		{"unknown destination", `{"templateID": "noop", "dataDestination": {"dataSourceDescriptor": "s3"}}`, "dataDestination.dataSourceDescriptor", "unknown data destination"},
		{"local needs path", `{"templateID": "noop", "dataDestination": {"dataSourceDescriptor": "local"}}`, "dataDestination.path", "required"},
		{"relative local path", `{"templateID": "noop", "dataDestination": {"dataSourceDescriptor": "local", "path": "out"}}`, "dataDestination.path", "absolute"},
		{"memory bad", `{"templateID": "noop", "resources": {"memory": "lots"}}`, "resources.memory", "not a size"},
		{"cpu negative", `{"templateID": "noop", "resources": {"cpu": -1}}`, "resources.cpu", "out of range"},
		{"gpu too many", `{"templateID": "noop", "resources": {"gpu": 65}}`, "resources.gpu", "out of range"},
		{"unknown resource", `{"templateID": "noop", "resources": {"disk": "1Gi"}}`, "resources.disk", "unknown field"},
		{"timeout bad", `{"templateID": "noop", "timeout": "soon"}`, "timeout", "not a duration"},
		{"timeout too long", `{"templateID": "noop", "timeout": "8760h"}`, "timeout", "out of range"},
		{"task timeout over job", `{"templateID": "noop", "timeout": "1m", "taskTimeout": "2m"}`, "taskTimeout", "longer than the job timeout"},
		{"attempts over cap", `{"templateID": "noop", "maxAttempts": 11}`, "maxAttempts", "out of range"},
		{"seed negative", `{"templateID": "noop", "seed": -1}`, "seed", "out of range"},
		{"bad peer", `{"templateID": "noop", "constraints": {"excludePeers": ["bob"]}}`, "constraints.excludePeers[0]", "not a peer ID"},
		{"label not string", `{"templateID": "noop", "constraints": {"labels": {"region": 1}}}`, "constraints.labels.region", "must be a string"},
		{"unknown constraint", `{"templateID": "noop", "constraints": {"zone": "a"}}`, "constraints.zone", "unknown field"},
		{"first bad field wins", `{"templateID": "noop", "seed": "x", "maxAttempts": 0}`, "seed", "must be an integer"},
		{"files partitioner needs input", `{"templateID": "noop", "params": {"partitioner": {"type": "files"}}}`, "dataSource.dataSourceDescriptor", "files partitioner"},
		{"template twice", `{"templateId": "noop", "templateID": "noop"}`, "templateID", "twice"},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}
	reg := Builtin()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.body), reg, DefaultLimits())
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *FieldError", err, err)
			}
			if fe.Path != c.path {
				t.Errorf("path = %q, want %q (msg %q)", fe.Path, c.path, fe.Msg)
			}
			if !strings.Contains(fe.Msg, c.msg) {
				t.Errorf("msg = %q, want it to contain %q", fe.Msg, c.msg)
			}
		})
	}
}

func TestParseBodyTooLarge(t *testing.T) {
	lim := DefaultLimits()
	lim.MaxBodyBytes = 100
	body := `{"templateID": "noop", "params": {"app": {"prompt": "` + strings.Repeat("a", 200) + `"}}}`
	_, err := Parse([]byte(body), Builtin(), lim)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "" || !strings.Contains(fe.Msg, "too large") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseNullMeansUnset(t *testing.T) {
	s, err := Parse([]byte(`{"templateID": "fractal", "constraints": null, "seed": null, "params": {"partitioner": null, "app": {"width": null}}}`), Builtin(), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if s.SeedSet || len(s.App) != 0 || s.Partitioner.NumReplicas != 1 {
		t.Fatalf("spec = %+v", s)
	}
	_, err = Parse([]byte(`{"templateID": null}`), Builtin(), DefaultLimits())
	if fe, ok := err.(*FieldError); !ok || fe.Path != "templateID" {
		t.Fatalf("err = %v", err)
	}
}

func TestParseAppSeedIsJobSeed(t *testing.T) {
	s, err := Parse([]byte(`{"templateID": "sd", "params": {"app": {"prompt": "x", "seed": 1234}}}`), Builtin(), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !s.SeedSet || s.Seed != 1234 {
		t.Fatalf("seed = %d set %v", s.Seed, s.SeedSet)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"4Gi": 4 << 30, "512Mi": 512 << 20, "2G": 2e9, "1024": 1024, "1.5Gi": 3 << 29, "10MB": 1e7} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Gi", "-1Gi", "4Xi", "2PiB"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
	if FormatBytes(6<<30) != "6Gi" || FormatBytes(1000) != "1000" {
		t.Errorf("FormatBytes: %s %s", FormatBytes(6<<30), FormatBytes(1000))
	}
}

func FuzzParse(f *testing.F) {
	ex, _ := os.ReadFile("testdata/create-job.json")
	f.Add(ex)
	f.Add([]byte(`{"templateID": "fractal", "params": {"partitioner": {"num_replicas": 3}, "app": {"width": 64}}, "seed": 7}`))
	f.Add([]byte(`{"templateID": "sd", "params": {"partitioner": {"prompts": ["a", "b"]}}, "resources": {"memory": "1Gi"}}`))
	f.Add([]byte(`{"templateID": "noop", "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "p.txt", "content": "a\nb"}]}, "params": {"partitioner": {"type": "prompts"}}}`))
	f.Add([]byte(`[]`))
	reg := Builtin()
	lim := DefaultLimits()
	lim.MaxTasks = 50
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := Parse(body, reg, lim)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error is %T, not *FieldError: %v", err, err)
			}
			return
		}
		if s.Template == nil || s.MaxAttempts < 1 || s.MaxAttempts > lim.MaxAttempts || s.Timeout <= 0 || s.TaskTimeout > s.Timeout {
			t.Fatalf("accepted spec breaks invariants: %+v", s)
		}
		s.SetSeed(99)
		tasks, err := Partition(s, nil, nil)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("partition error is %T: %v", err, err)
			}
			return
		}
		if len(tasks) == 0 || len(tasks) > lim.MaxTasks {
			t.Fatalf("%d tasks", len(tasks))
		}
		for i, ts := range tasks {
			if ts.Index != i || ts.Seed < 0 || ts.Seed > MaxSeed || !json.Valid(ts.Params) {
				t.Fatalf("task %d: %+v", i, ts)
			}
		}
	})
}
