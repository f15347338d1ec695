package jobspec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swarmgen/swarmgen/inference"
)

func TestBuiltinTemplates(t *testing.T) {
	reg := Builtin()
	if got := strings.Join(reg.IDs(), ","); got != "fractal,noop,stable-diffusion" {
		t.Fatalf("IDs = %s", got)
	}
	for _, alias := range []string{"img-gen-fiffusers-template", "img-gen-diffusers-template", "stable-diffusion-txt2img", "sd", "SD"} {
		if tm, ok := reg.Get(alias); !ok || tm.ID != "stable-diffusion" {
			t.Errorf("alias %q does not resolve to stable-diffusion", alias)
		}
	}
	sd, _ := reg.Get("stable-diffusion")
	if sd.ModelParam != "model" || !sd.PreferGPU || sd.Image() != "swarmgen/sd-worker:latest" {
		t.Errorf("sd = %+v", sd)
	}
	if app, ok := sd.AppFor(inference.KindDocker); !ok || app.Image == "" || len(app.Command) != 0 {
		t.Errorf("docker app = %+v %v", app, ok)
	}
	if ex := sd.Executors(); len(ex) != 2 {
		t.Errorf("executors = %v", ex)
	}
	fr, _ := reg.Get("fractal")
	if p := fr.Param("width"); p == nil || *p.Min != 16 || *p.Max != 4096 || string(p.Default) != "256" {
		t.Errorf("fractal width = %+v", p)
	}
	if _, err := reg.Lookup("nope"); !errors.Is(err, ErrUnknownTemplate) || !strings.Contains(err.Error(), "fractal, noop, stable-diffusion") {
		t.Errorf("Lookup(nope) = %v", err)
	}
	noop, _ := reg.Get("noop")
	if noop.App.Command[0] != "{swarmgen}" || !noop.OpenParams {
		t.Errorf("noop = %+v", noop)
	}
	// The API form round-trips through the file form.
	for _, tm := range reg.List() {
		a := tm.ToAPI()
		if a.Source != "builtin" || !json.Valid(a.Params) || !json.Valid(a.Resources) || !json.Valid(a.App) {
			t.Errorf("%s: api form %+v", tm.ID, a)
		}
		b, err := json.Marshal(tm)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeTemplate(b)
		if err != nil {
			t.Fatalf("%s: file form does not decode: %v\n%s", tm.ID, err, b)
		}
		if back.Resources != tm.Resources || len(back.Params) != len(tm.Params) || back.PreferGPU != tm.PreferGPU {
			t.Errorf("%s: round trip differs: %+v vs %+v", tm.ID, back, tm)
		}
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	good := `{"id": "upscale", "aliases": ["esrgan"], "description": "x", "app": {"kind": "docker", "image": "me/upscale:1"},
	  "params": [{"name": "scale", "type": "int", "default": 2, "min": 2, "max": 4}], "resources": {"memory": "2Gi", "gpu": 1}}`
	if err := os.WriteFile(filepath.Join(dir, "a.json"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := Builtin()
	if err := reg.LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	tm, ok := reg.Get("esrgan")
	if !ok || tm.Resources.Memory != 2<<30 || tm.Resources.GPUs != 1 || tm.Partitioner != PartitionReplicas || tm.Source != filepath.Join(dir, "a.json") {
		t.Fatalf("loaded = %+v", tm)
	}
	bad := map[string]string{
		`{"id": "x", "app": {"kind": "process"}}`:          "app.command",
		`{"id": "x", "app": {"kind": "vm", "image": "a"}}`: "app.kind",
		`{"id": "x", "app": {"kind": "docker", "image": "a"}, "params": [{"name": "n", "type": "int", "default": "two"}]}`:   "params[0].default",
		`{"id": "x", "app": {"kind": "docker", "image": "a"}, "params": [{"name": "n", "type": "float"}]}`:                   "params[0].type",
		`{"id": "x", "app": {"kind": "docker", "image": "a"}, "bogus": 1}`:                                                   "bogus",
		`{"id": "x", "app": {"kind": "docker", "image": "a"}, "modelParam": "m"}`:                                            "modelParam",
		`{"id": "X Y", "app": {"kind": "docker", "image": "a"}}`:                                                             "id",
		`{"id": "x", "aliases": ["sd"], "app": {"kind": "docker", "image": "a"}}`:                                            "already an alias",
		`{"id": "x", "app": {"kind": "docker", "image": "a"}, "params": [{"name": "a", "type": "int", "min": 5, "max": 1}]}`: "params[0].min",
	}
	for body, want := range bad {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "bad.json"), []byte(body), 0o644)
		err := Builtin().LoadDir(d)
		if err == nil || !strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadDir(%s) = %v, want error naming bad.json and %q", body, err, want)
		}
	}
}

func FuzzDecodeTemplate(f *testing.F) {
	for _, name := range []string{"noop", "fractal", "stable-diffusion"} {
		b, _ := builtinFS.ReadFile("templates/" + name + ".json")
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tm, err := DecodeTemplate(data)
		if err != nil {
			return
		}
		if err := tm.Validate(); err != nil {
			t.Fatalf("decoded template fails Validate: %v", err)
		}
		b, err := json.Marshal(tm)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeTemplate(b); err != nil {
			t.Fatalf("re-encoded template does not decode: %v\n%s", err, b)
		}
	})
}

func TestLoadDirOverridesBuiltin(t *testing.T) {
	dir := t.TempDir()
	body := `{"id": "fractal", "description": "site version", "app": {"kind": "docker", "image": "site/fractal:2"}, "params": []}`
	os.WriteFile(filepath.Join(dir, "fractal.json"), []byte(body), 0o644)
	reg := Builtin()
	if err := reg.LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	tm, _ := reg.Get("fractal")
	if tm.Image() != "site/fractal:2" {
		t.Fatalf("not overridden: %+v", tm)
	}
	if _, ok := reg.Get("mandelbrot"); ok {
		t.Fatal("old aliases survive the override")
	}
}
