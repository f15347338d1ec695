package apps

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/swarmgen/swarmgen/inference"
)

// runApp prepares a task dir with params and runs the named app in-process.
func runApp(t testing.TB, name string, seed int64, params string) (string, string, error) {
	t.Helper()
	dir, err := inference.PrepareTaskDir(t.TempDir(), &inference.Task{
		JobID: "j", TaskID: "t", Seed: seed, Params: json.RawMessage(params),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = Funcs()[name](context.Background(), inference.NewAppEnv(dir, &out))
	return dir, out.String(), err
}

func TestNames(t *testing.T) {
	if got := strings.Join(Names(), ","); got != "fractal,noop" {
		t.Fatalf("Names = %s", got)
	}
	if s, ok := Schema("fractal"); !ok || len(s) != 5 {
		t.Fatalf("fractal schema = %v, %v", s, ok)
	}
	if _, ok := Schema("nope"); ok {
		t.Fatal("unknown app has a schema")
	}
}

func TestNoop(t *testing.T) {
	dir, out, err := runApp(t, "noop", 9, `{"anything":[1,2]}`)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		App    string
		Params inference.Task
		Raw    map[string]json.RawMessage `json:"-"`
	}
	body, err := os.ReadFile(filepath.Join(dir, "output", "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.App != "noop" || r.Params.Seed != 9 || string(r.Params.Params) != `{"anything":[1,2]}` {
		t.Fatalf("result.json = %s", body)
	}
	if !strings.Contains(out, "::progress 1\n") {
		t.Fatalf("stdout = %q", out)
	}
}

func readPNG(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "output", "fractal.png"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFractalDeterministic(t *testing.T) {
	for _, kind := range []string{"mandelbrot", "julia"} {
		params := `{"width":64,"height":48,"iterations":100,"prompt":"a red fox","kind":"` + kind + `"}`
		d1, out, err := runApp(t, "fractal", 1234, params)
		if err != nil {
			t.Fatal(err)
		}
		d2, _, err := runApp(t, "fractal", 1234, params)
		if err != nil {
			t.Fatal(err)
		}
		a, b := readPNG(t, d1), readPNG(t, d2)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: same seed gave different PNGs", kind)
		}
		m1, _ := os.ReadFile(filepath.Join(d1, "output", "metadata.json"))
		m2, _ := os.ReadFile(filepath.Join(d2, "output", "metadata.json"))
		if !bytes.Equal(m1, m2) || !bytes.Contains(m1, []byte(`"prompt": "a red fox"`)) {
			t.Fatalf("metadata differs or lacks the prompt: %s", m1)
		}
		img, err := png.Decode(bytes.NewReader(a))
		if err != nil {
			t.Fatal(err)
		}
		if r := img.Bounds(); r.Dx() != 64 || r.Dy() != 48 {
			t.Fatalf("size %v, want 64x48", r)
		}
		if strings.Count(out, "::progress ") != 3 || !strings.HasSuffix(out, "::progress 1.0000\n") {
			t.Fatalf("progress lines: %q", out)
		}
		// Different seeds and different prompts pick other regions.
		d3, _, err := runApp(t, "fractal", 1235, params)
		if err != nil {
			t.Fatal(err)
		}
		d4, _, err := runApp(t, "fractal", 1234, strings.Replace(params, "fox", "cat", 1))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(a, readPNG(t, d3)) || bytes.Equal(a, readPNG(t, d4)) {
			t.Fatalf("%s: different seed or prompt gave the same image", kind)
		}
	}
}

// TestFractalGolden pins the bytes so a change to the renderer (or a
// platform rendering differently) is noticed: peers compare output hashes.
// fractalGolden is the SHA-256 of the PNG below, rendered on linux/amd64.
const fractalGolden = "b926cb3942ad1a9de6b0d567e0e01405dddf06175bbc963a312042fcf8c57e43"

func TestFractalGolden(t *testing.T) {
	spec, err := NewFractalSpec(18, json.RawMessage(`{"width":32,"height":32,"iterations":200}`))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := RenderFractal(context.Background(), spec, &buf, nil); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if got := hex.EncodeToString(sum[:]); got != fractalGolden {
		t.Errorf("fractal seed 18 32x32 sha256 = %s, want %s (renderer changed, or this platform renders differently)", got, fractalGolden)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// Distinct colours prove it is not a flat image.
	colours := map[[4]uint32]bool{}
	for y := 0; y < 32; y++ {
		for x := 0; x < 32; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, b, a}] = true
		}
	}
	if len(colours) < 8 {
		t.Fatalf("only %d colours in the image", len(colours))
	}
}

func TestFractalDefaults(t *testing.T) {
	spec, err := NewFractalSpec(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Width != 256 || spec.Height != 256 || spec.Iterations != 200 || spec.Kind != "mandelbrot" {
		t.Fatalf("defaults = %+v", spec)
	}
}

func TestFractalBadParams(t *testing.T) {
	for _, c := range []struct{ params, mention string }{
		{`{"width":8}`, "width"},
		{`{"width":5000}`, "width"},
		{`{"height":"big"}`, "height"},
		{`{"iterations":0}`, "iterations"},
		{`{"iterations":100001}`, "iterations"},
		{`{"iterations":1.5}`, "iterations"},
		{`{"kind":"sierpinski"}`, "kind"},
		{`{"colour":"red"}`, "colour"},
		{`{"prompt":7}`, "prompt"},
		{`[1]`, "object"},
	} {
		_, _, err := runApp(t, "fractal", 1, "{}")
		if err != nil {
			t.Fatal(err)
		}
		_, err = NewFractalSpec(1, json.RawMessage(c.params))
		if !errors.Is(err, ErrBadParams) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("params %s: err = %v, want ErrBadParams naming %q", c.params, err, c.mention)
		}
	}
}

func TestFractalCancelled(t *testing.T) {
	spec, _ := NewFractalSpec(1, json.RawMessage(`{"width":512,"height":512,"iterations":100000}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := RenderFractal(ctx, spec, &bytes.Buffer{}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestRunNeedsContractEnv(t *testing.T) {
	t.Setenv("SWARMGEN_TASK_DIR", "")
	if err := Run(context.Background(), "noop", &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "SWARMGEN_TASK_DIR") {
		t.Fatalf("err = %v", err)
	}
	if err := Run(context.Background(), "nope", &bytes.Buffer{}); !errors.Is(err, ErrUnknownApp) {
		t.Fatalf("err = %v, want ErrUnknownApp", err)
	}
}

func TestRunFromEnv(t *testing.T) {
	dir, err := inference.PrepareTaskDir(t.TempDir(), &inference.Task{JobID: "j", TaskID: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range inference.ContractEnv(dir) {
		t.Setenv(k, v)
	}
	if err := Run(context.Background(), "noop", &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "output", "result.json")); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecodeContract(f *testing.F) {
	f.Add([]byte(`{"job":"j","task":"t","index":1,"count":2,"attempt":0,"seed":5,"app":{"width":64}}`))
	f.Add([]byte(`{"app":[]}{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := DecodeContract(body)
		if err == nil && c == nil {
			t.Fatal("nil contract without error")
		}
		if err != nil && !errors.Is(err, ErrBadParams) {
			t.Fatalf("error does not wrap ErrBadParams: %v", err)
		}
	})
}

func FuzzFractalParams(f *testing.F) {
	f.Add([]byte(`{"width":64,"height":64,"iterations":10,"kind":"julia","prompt":"x"}`))
	f.Add([]byte(`{"width":1e400}`))
	f.Add([]byte(`{"width":-9223372036854775809}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		spec, err := NewFractalSpec(3, raw)
		if err != nil {
			if !errors.Is(err, ErrBadParams) {
				t.Fatalf("error does not wrap ErrBadParams: %v", err)
			}
			return
		}
		if spec.Width < 16 || spec.Width > 4096 || spec.Height < 16 || spec.Height > 4096 ||
			spec.Iterations < 1 || spec.Iterations > 100000 || (spec.Kind != "mandelbrot" && spec.Kind != "julia") {
			t.Fatalf("accepted out-of-range spec %+v from %s", spec, raw)
		}
	})
}
