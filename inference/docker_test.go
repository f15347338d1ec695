package inference

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

var (
	imageOnce sync.Once
	imageRef  string
	imageErr  error
)

// testInstance scopes this test binary's containers (other packages' tests
// may use the daemon at the same time).
var testInstance = fmt.Sprintf("inference-test-%d", os.Getpid())

// newDocker returns a docker executor, skipping (or failing under
// SWARMGEN_REQUIRE_ALL=1) when no daemon answers. After the test it
// asserts that no container of this test binary is left.
func newDocker(t testing.TB, cfg DockerConfig) *Docker {
	t.Helper()
	cfg.Instance = testInstance
	d, err := NewDocker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Available(ctx); err != nil {
		d.Close()
		skipOrFail(t, "docker daemon not available: %v", err)
	}
	t.Cleanup(func() {
		defer d.Close()
		f := client.Filters{}
		f.Add("label", LabelInstance+"="+testInstance)
		list, err := d.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			t.Errorf("list containers: %v", err)
			return
		}
		if len(list.Items) != 0 {
			t.Errorf("%d container(s) with our label left behind", len(list.Items))
			d.ReapOrphans(context.Background())
		}
	})
	return d
}

// testImage builds (once per test binary) a FROM scratch image holding the
// static testapp, via the Engine API with a tar context made here.
func testImage(t testing.TB, d *Docker) string {
	t.Helper()
	bin := testapp(t)
	imageOnce.Do(func() {
		body, err := os.ReadFile(bin)
		if err != nil {
			imageErr = err
			return
		}
		sum := sha256.Sum256(body)
		imageRef = "swarmgen-inference-testapp:" + hex.EncodeToString(sum[:6])
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := d.cli.ImageInspect(ctx, imageRef); err == nil {
			return // built by an earlier run with the same binary
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		dockerfile := "FROM scratch\nCOPY testapp /testapp\nENTRYPOINT [\"/testapp\"]\n"
		for _, f := range []struct {
			name string
			mode int64
			data []byte
		}{{"Dockerfile", 0o644, []byte(dockerfile)}, {"testapp", 0o755, body}} {
			if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
				imageErr = err
				return
			}
			tw.Write(f.data)
		}
		tw.Close()
		res, err := d.cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{imageRef}, Remove: true, ForceRemove: true})
		if err != nil {
			imageErr = fmt.Errorf("image build: %w", err)
			return
		}
		defer res.Body.Close()
		dec := json.NewDecoder(res.Body)
		for {
			var m struct {
				Stream string `json:"stream"`
				Error  string `json:"error"`
			}
			if err := dec.Decode(&m); err == io.EOF {
				break
			} else if err != nil {
				imageErr = fmt.Errorf("image build output: %w", err)
				return
			}
			if m.Error != "" {
				imageErr = fmt.Errorf("image build: %s", m.Error)
				return
			}
		}
		if _, err := d.cli.ImageInspect(ctx, imageRef); err != nil {
			imageErr = fmt.Errorf("built image missing: %w", err)
		}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageRef
}

// dockerTask returns a task running the test image with args.
func dockerTask(t testing.TB, image string, args ...string) *Task {
	task := newTask(t, args...)
	task.App = App{Kind: KindDocker, Image: image, Command: append([]string{"/testapp"}, args...)}
	return task
}

func TestDockerSuccess(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "ok")
	dir := prepare(t, task)
	var prog []float64
	var mu sync.Mutex
	res, err := d.Run(context.Background(), task, dir, func(f float64) { mu.Lock(); prog = append(prog, f); mu.Unlock() })
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "output", "ok.txt")); string(b) != "hello\n" {
		t.Fatalf("output = %q", b)
	}
	if !bytes.Contains(res.Log, []byte("done on stderr")) || res.OutputBytes != 6 {
		t.Fatalf("result %+v log %q", res, res.Log)
	}
	if len(prog) != 1 || prog[0] != 0.5 {
		t.Fatalf("progress %v", prog)
	}
}

func logOf(r *Result) string {
	if r == nil {
		return "<no result>"
	}
	return string(r.Log)
}

func TestDockerRunsAsNonRoot(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "whoami")
	dir := prepare(t, task)
	res, err := d.Run(context.Background(), task, dir, nil)
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	if !bytes.Contains(res.Log, []byte("uid=65534 gid=65534")) {
		t.Fatalf("log %q, want uid=65534 gid=65534", res.Log)
	}
}

func TestDockerEnv(t *testing.T) {
	d := newDocker(t, DockerConfig{ModelCacheDir: filepath.Join(t.TempDir(), "models")})
	task := dockerTask(t, testImage(t, d), "env")
	task.App.Env = map[string]string{"FROM_APP": "a"}
	dir := prepare(t, task)
	if res, err := d.Run(context.Background(), task, dir, nil); err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "output", "env.txt"))
	for _, want := range []string{"SWARMGEN_TASK_DIR=/task\n", "SWARMGEN_PARAMS=/task/params.json\n", "SWARMGEN_INPUT=/task/input\n",
		"SWARMGEN_OUTPUT=/task/output\n", "FROM_APP=a\n", "HF_HOME=/models\n", "CWD=/task\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("env lacks %q:\n%s", want, b)
		}
	}
}

func TestDockerExitCode(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "exit", "3")
	res, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrExit) || res == nil || res.ExitCode != 3 {
		t.Fatalf("err = %v, result %+v; want ErrExit with code 3", err, res)
	}
	if !bytes.Contains(res.Log, []byte("exiting with 3")) {
		t.Fatalf("log %q", res.Log)
	}
}

func TestDockerTimeoutAndCancel(t *testing.T) {
	d := newDocker(t, DockerConfig{KillGrace: time.Second})
	image := testImage(t, d)
	task := dockerTask(t, image, "sleep", "1h")
	task.Timeout = 2 * time.Second
	start := time.Now()
	res, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrTimeout) || res == nil {
		t.Fatalf("timeout: err = %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("timeout took %s", took)
	}
	if !bytes.Contains(res.Log, []byte("sleeping")) {
		t.Fatalf("log %q", res.Log)
	}

	task = dockerTask(t, image, "sleep", "1h")
	task.TaskID += "-cancel"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := d.Run(ctx, task, prepare(t, task), nil); !errors.Is(err, ErrCancelled) {
		t.Fatalf("cancel: err = %v", err)
	}
}

func TestDockerMemoryLimit(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "oom", "512")
	task.Resources.Memory = 64 << 20
	res, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrExit) || res == nil || res.ExitCode == 0 {
		t.Fatalf("err = %v, log %s; want non-zero exit over the memory limit", err, logOf(res))
	}
	if bytes.Contains(res.Log, []byte("allocated")) {
		t.Fatal("app allocated past the memory limit")
	}
	t.Logf("over-limit run: %v", err)
}

func TestDockerNoNetwork(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "nonet")
	start := time.Now()
	res, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	if !bytes.Contains(res.Log, []byte("interfaces: lo\n")) {
		t.Fatalf("want only the loopback interface; log %q", res.Log)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("dial did not fail quickly: %s", took)
	}
}

func TestDockerReadOnlyRootfs(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "writeroot")
	res, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	if !bytes.Contains(res.Log, []byte("read-only file system")) || !bytes.Contains(res.Log, []byte("tmp write ok")) {
		t.Fatalf("log %q", res.Log)
	}
}

func TestDockerNoImage(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, "swarmgen-no-such-image:v0", "ok")
	_, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if !errors.Is(err, ErrNoImage) || !strings.Contains(err.Error(), "swarmgen-no-such-image:v0") {
		t.Fatalf("err = %v, want ErrNoImage naming the image", err)
	}
}

func TestDockerOutputCapAndSymlink(t *testing.T) {
	d := newDocker(t, DockerConfig{OutputCap: 1000})
	image := testImage(t, d)
	task := dockerTask(t, image, "bigout", "5000")
	if _, err := d.Run(context.Background(), task, prepare(t, task), nil); !errors.Is(err, ErrOutputTooBig) {
		t.Fatalf("bigout: err = %v", err)
	}
	task = dockerTask(t, image, "symlink")
	if _, err := d.Run(context.Background(), task, prepare(t, task), nil); !errors.Is(err, ErrBadOutput) {
		t.Fatalf("symlink: err = %v", err)
	}
}

func TestDockerFractalApp(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "app", "fractal")
	task.Params = json.RawMessage(`{"width":48,"height":32,"iterations":60}`)
	dir := prepare(t, task)
	var n int
	res, err := d.Run(context.Background(), task, dir, func(float64) { n++ })
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	if _, err := os.Stat(filepath.Join(dir, "output", "fractal.png")); err != nil || n != 2 {
		t.Fatalf("png: %v, %d progress reports", err, n)
	}
}

func TestDockerReapOrphans(t *testing.T) {
	d := newDocker(t, DockerConfig{})
	image := testImage(t, d)
	task := dockerTask(t, image, "sleep", "1h")
	cfg, hc, err := d.ContainerSpec(task, prepare(t, task))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: containerName(task)}); err != nil {
		t.Fatal(err)
	}
	n, err := d.ReapOrphans(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ReapOrphans = %d, %v; want 1", n, err)
	}
}

// TestDockerGPU runs a container with Resources.GPUs=1 and checks that a
// GPU device node shows up inside. It needs an NVIDIA GPU and the nvidia
// container runtime, so it runs only with SWARMGEN_TEST_GPU=1 (CI machines
// have no GPU; TestDockerSpec covers the request itself).
func TestDockerGPU(t *testing.T) {
	if os.Getenv("SWARMGEN_TEST_GPU") != "1" {
		t.Skip("set SWARMGEN_TEST_GPU=1 on a host with an NVIDIA GPU and the nvidia container runtime")
	}
	d := newDocker(t, DockerConfig{})
	task := dockerTask(t, testImage(t, d), "gpu")
	task.Resources.GPUs = 1
	res, err := d.Run(context.Background(), task, prepare(t, task), nil)
	if err != nil {
		t.Fatalf("Run: %v\nlog: %s", err, logOf(res))
	}
	t.Logf("log: %s", res.Log)
	task = dockerTask(t, testImage(t, d), "gpu")
	task.TaskID += "-nogpu"
	if _, err := d.Run(context.Background(), task, prepare(t, task), nil); !errors.Is(err, ErrExit) {
		t.Fatalf("without GPUs: err = %v, want ErrExit (no device visible)", err)
	}
}

// TestDockerSpec checks the sandbox settings, GPU requests included (no
// GPU is needed to build the spec).
func TestDockerSpec(t *testing.T) {
	d, err := NewDocker(DockerConfig{ModelCacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	task := &Task{JobID: "j", TaskID: "t", App: App{Kind: KindDocker, Image: "img", Command: []string{"python", "-m", "w"}},
		Resources: Resources{CPUMillis: 1500, Memory: 1 << 30, GPUs: 2}}
	cfg, hc, err := d.ContainerSpec(task, "/tmp/x")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "65534:65534" || cfg.WorkingDir != "/task" || cfg.Labels[LabelJob] != "j" || cfg.Labels[LabelTask] != "t" ||
		strings.Join(cfg.Entrypoint, " ") != "python" || strings.Join(cfg.Cmd, " ") != "-m w" {
		t.Fatalf("config %+v", cfg)
	}
	if hc.NetworkMode != "none" || !hc.ReadonlyRootfs || hc.CapDrop[0] != "ALL" || hc.SecurityOpt[0] != "no-new-privileges" ||
		hc.NanoCPUs != 1_500_000_000 || hc.Memory != 1<<30 || hc.MemorySwap != 1<<30 || *hc.PidsLimit != DefaultPidsLimit ||
		len(hc.Mounts) != 2 || hc.Mounts[0].Source != "/tmp/x" || hc.Mounts[0].Target != "/task" || hc.Mounts[0].ReadOnly ||
		hc.Mounts[1].Target != "/models" || hc.Tmpfs["/tmp"] == "" || len(hc.Binds) != 0 {
		t.Fatalf("host config %+v", hc)
	}
	want := []container.DeviceRequest{{Driver: "nvidia", Count: 2, Capabilities: [][]string{{"gpu"}}}}
	if fmt.Sprint(hc.DeviceRequests) != fmt.Sprint(want) {
		t.Fatalf("device requests %+v", hc.DeviceRequests)
	}
	task.App.Network = true
	task.Resources = Resources{}
	_, hc, _ = d.ContainerSpec(task, "/tmp/x")
	if hc.NetworkMode != "bridge" || hc.DeviceRequests != nil || hc.Memory != 0 {
		t.Fatalf("host config %+v", hc)
	}
	if _, err := NewDocker(DockerConfig{User: "0:0"}); err == nil {
		t.Fatal("root user accepted")
	}
	if _, err := NewDocker(DockerConfig{User: "nobody"}); err == nil {
		t.Fatal("non-numeric user accepted")
	}
}

// BenchmarkDockerNoop measures one task through the docker executor:
// image check, create, attach, start, wait, remove (FROM scratch image,
// vfs storage driver here).
func BenchmarkDockerNoop(b *testing.B) {
	d := newDocker(b, DockerConfig{})
	task := dockerTask(b, testImage(b, d), "app", "noop")
	root := b.TempDir()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir, err := PrepareTaskDir(root, task)
		if err != nil {
			b.Fatal(err)
		}
		if res, err := d.Run(context.Background(), task, dir, nil); err != nil {
			b.Fatalf("%v: %s", err, logOf(res))
		}
		CleanupTaskDir(dir)
	}
}
