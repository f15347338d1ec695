package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/api"
)

// sdPython returns a Python that can run the Stable Diffusion worker, or
// skips (fails under SWARMGEN_REQUIRE_ALL=1).
func sdPython(t *testing.T) string {
	t.Helper()
	py := os.Getenv("SWARMGEN_PYTHON")
	if py == "" {
		py = "../.venv/bin/python"
	}
	abs, _ := filepath.Abs(py)
	if err := exec.Command(abs, "-c", "import torch, diffusers").Run(); err != nil {
		if os.Getenv("SWARMGEN_REQUIRE_ALL") == "1" {
			t.Fatalf("python with torch and diffusers needed (SWARMGEN_PYTHON=%s): %v", abs, err)
		}
		t.Skipf("no python with torch and diffusers (%s): %v", abs, err)
	}
	return abs
}

// The example body, unchanged, on a 3-node devnet with real warm Python
// workers: the default model is mapped to a tiny random-weight pipeline
// built here (the Hub is unreachable), and 5 PNGs with their metadata land
// in the bucket.
func TestStableDiffusionExampleOnDevnet(t *testing.T) {
	py := sdPython(t)
	tiny := filepath.Join(t.TempDir(), "tiny-sd")
	if out, err := exec.Command(py, "../inference/stablediffusion/make_tiny_pipeline.py", tiny).CombinedOutput(); err != nil {
		t.Fatalf("make_tiny_pipeline: %v\n%s", err, out)
	}
	worker, _ := filepath.Abs("../inference/stablediffusion/worker.py")
	t.Setenv("SWARMGEN_SDWORKER", worker)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := StartDevnet(ctx, DevnetConfig{Nodes: 3, API: "127.0.0.1:0", Gateway: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quietLogger(),
		Configure: func(i int, c *Config) {
			c.Python = py
			c.ModelMap = map[string]string{"stabilityai/sd-turbo": tiny}
		},
		Options: []Option{WithSchedulerConfig(fastScheduler())}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	apiAddr := d.Nodes()[0].APIAddr()
	body, err := os.ReadFile("../examples/create-job.json")
	if err != nil {
		t.Fatal(err)
	}
	// Nodes offer Stable Diffusion once their Python check passed.
	deadline := time.Now().Add(2 * time.Minute)
	for _, n := range d.Nodes() {
		for n.sdOff.Load() {
			if time.Now().After(deadline) {
				t.Fatal("stable diffusion never came on")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	code, created := postJob(t, apiAddr, body)
	if code != http.StatusCreated {
		t.Fatalf("POST example body: %d %v", code, created)
	}
	j := waitJob(t, apiAddr, created["id"].(string), 8*time.Minute, api.JobCompleted, api.JobFailed)
	if j.Status != api.JobCompleted || len(j.Tasks) != 5 {
		t.Fatalf("job %s with %d tasks: %+v", j.Status, len(j.Tasks), j)
	}
	for i := 0; i < 5; i++ {
		base := j.Bucket.URL + "task-" + string(rune('0'+i)) + "/"
		png := get(t, base+"image-0.png")
		if len(png) < 8 || string(png[:4]) != "\x89PNG" {
			t.Fatalf("task %d: image-0.png is not a PNG", i)
		}
		var meta map[string]any
		if err := json.Unmarshal(get(t, base+"metadata.json"), &meta); err != nil {
			t.Fatalf("task %d metadata: %v", i, err)
		}
		if meta["prompt"] == nil || meta["seed"] == nil || meta["model"] != tiny {
			t.Fatalf("task %d metadata: %v", i, meta)
		}
	}
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}
