package inference

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireAll reports whether CI demands every optional dependency.
func requireAll() bool { return os.Getenv("SWARMGEN_REQUIRE_ALL") == "1" }

// skipOrFail skips the test, or fails it when SWARMGEN_REQUIRE_ALL=1.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if requireAll() {
		t.Fatalf("required dependency missing (SWARMGEN_REQUIRE_ALL=1): "+format, args...)
	}
	t.Skipf(format, args...)
}

var (
	testappOnce sync.Once
	testappPath string
	testappErr  error
	testappDir  string
)

// testapp builds inference/testdata/testapp once per test binary as a
// static binary (so the docker tests can put it in a FROM scratch image),
// or returns $SWARMGEN_TESTAPP when set.
func testapp(t testing.TB) string {
	t.Helper()
	testappOnce.Do(func() {
		// A prebuilt static testapp, for machines without a Go toolchain.
		if p := os.Getenv("SWARMGEN_TESTAPP"); p != "" {
			testappPath = p
			return
		}
		testappDir, testappErr = os.MkdirTemp("", "swarmgen-testapp-")
		if testappErr != nil {
			return
		}
		testappPath = filepath.Join(testappDir, "testapp")
		cmd := exec.Command(goTool(), "build", "-o", testappPath, "./testdata/testapp")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			testappErr = err
			testappPath = string(out)
		}
	})
	if testappErr != nil {
		t.Fatalf("build testapp: %v\n%s", testappErr, testappPath)
	}
	return testappPath
}

func goTool() string {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testappDir != "" {
		os.RemoveAll(testappDir)
	}
	os.Exit(code)
}

// newTask returns a task running testapp with args.
func newTask(t testing.TB, args ...string) *Task {
	return &Task{
		JobID: "job1", TaskID: strings.ReplaceAll(t.Name(), "/", "_"), Index: 2, Count: 5, Attempt: 1, Seed: 42,
		App:    App{Kind: KindProcess, Command: append([]string{"{swarmgen}"}, args...)},
		Params: []byte(`{"width":32}`),
	}
}

// prepare makes a task dir under a test temp dir.
func prepare(t testing.TB, task *Task) string {
	t.Helper()
	dir, err := PrepareTaskDir(t.TempDir(), task)
	if err != nil {
		t.Fatalf("PrepareTaskDir: %v", err)
	}
	return dir
}

// processAlive reports whether pid is a live (non-zombie) process.
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

func itoa(n int) string { return strconv.Itoa(n) }

// waitDead waits up to d for pid to die.
func waitDead(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !processAlive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return !processAlive(pid)
}
