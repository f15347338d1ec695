package jobspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swarmgen/swarmgen/inference/apps"
)

// The fractal template must describe exactly what the fractal app accepts,
// and every task's merged params must pass the app's own validation.
func TestFractalTemplateMatchesApp(t *testing.T) {
	tm, _ := Builtin().Get("fractal")
	schema, ok := apps.Schema("fractal")
	if !ok {
		t.Fatal("no fractal app")
	}
	if len(schema) != len(tm.Params) {
		t.Fatalf("app has %d params, template %d", len(schema), len(tm.Params))
	}
	for _, ap := range schema {
		p := tm.Param(ap.Name)
		if p == nil || p.Type != ap.Type {
			t.Fatalf("param %s: template %+v, app %+v", ap.Name, p, ap)
		}
		def, _ := json.Marshal(ap.Default)
		if string(p.Default) != string(def) {
			t.Errorf("param %s default: template %s, app %s", ap.Name, p.Default, def)
		}
		if ap.Type == apps.TypeInt && (p.Min == nil || p.Max == nil || int64(*p.Min) != *ap.Min || int64(*p.Max) != *ap.Max) {
			t.Errorf("param %s bounds differ", ap.Name)
		}
		if strings.Join(p.Enum, ",") != strings.Join(ap.Enum, ",") {
			t.Errorf("param %s enum: %v vs %v", ap.Name, p.Enum, ap.Enum)
		}
	}
	s := parse(t, `{"templateID": "fractal", "seed": 5, "params": {"partitioner": {"num_replicas": 2}, "app": {"width": 64, "kind": "julia", "prompt": "spiral"}}}`)
	tasks, err := Partition(s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range tasks {
		if _, err := apps.DecodeParams(schema, ts.Params); err != nil {
			t.Fatalf("app rejects task params %s: %v", ts.Params, err)
		}
	}
}

// python finds the interpreter the SD worker runs under.
func python(t *testing.T) string {
	if p := os.Getenv("SWARMGEN_PYTHON"); p != "" {
		return p
	}
	if p, err := filepath.Abs("../.venv/bin/python"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p
	}
	if os.Getenv("SWARMGEN_REQUIRE_ALL") == "1" {
		t.Fatal("no Python found (SWARMGEN_PYTHON, .venv/bin/python, python3)")
	}
	t.Skip("no Python found (SWARMGEN_PYTHON, .venv/bin/python, python3)")
	return ""
}

// Every task the stable-diffusion template makes must pass the worker's own
// params.json validation (sdparams.py, pure Python, no model needed).
func TestStableDiffusionTemplateMatchesWorker(t *testing.T) {
	dir, _ := filepath.Abs("../inference/stablediffusion")
	if _, err := os.Stat(filepath.Join(dir, "sdparams.py")); err != nil {
		if os.Getenv("SWARMGEN_REQUIRE_ALL") == "1" {
			t.Fatal(err)
		}
		t.Skipf("sdparams.py not present: %v", err)
	}
	py := python(t)
	bodies := []string{
		`{"templateID": "img-gen-fiffusers-template", "seed": 9007199254740990, "params": {"partitioner": {"num_replicas": 3}, "app": {"prompt": "a lighthouse"}}}`,
		`{"templateID": "sd", "params": {"partitioner": {"prompts": ["a", "b"]}, "app": {"steps": 30, "guidance_scale": 7.5, "width": 768, "height": 512, "scheduler": "dpm++_2m_karras", "negative_prompt": "blurry", "num_images": 2, "lora_scale": 0.8}}}`,
	}
	var docs []string
	for _, b := range bodies {
		s := parse(t, b)
		s.SetSeed(42)
		tasks, err := Partition(s, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range tasks {
			doc, _ := json.Marshal(map[string]any{"job": "j", "task": fmt.Sprint("t", ts.Index), "index": ts.Index, "count": len(tasks), "attempt": 1, "seed": ts.Seed, "app": ts.Params})
			docs = append(docs, string(doc))
		}
	}
	script := `
import json, sys
sys.path.insert(0, sys.argv[1])
import sdparams
for line in sys.stdin:
    p = sdparams.parse_params_doc(json.loads(line))
    print(p.seed, p.steps, p.width)
`
	cmd := exec.Command(py, "-c", script, dir)
	cmd.Stdin = strings.NewReader(strings.Join(docs, "\n") + "\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("worker validation rejected template params: %v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(docs) {
		t.Fatalf("%d results for %d tasks: %s", len(lines), len(docs), out.String())
	}
	// Replica seeds reach the worker: seed+index, default steps and size.
	if lines[0] != "9007199254740990 4 512" || lines[1] != "9007199254740991 4 512" || lines[2] != "0 4 512" {
		t.Errorf("worker saw %q", lines[:3])
	}
}
