// Package inference runs apps under the swarmgen app contract: the Executor
// interface, the process and docker executors, and warm workers.
//
// The app contract: a task directory holds params.json
// ({"job","task","index","count","attempt","seed","app":{…}}), input/ and
// output/. The app runs with that directory as working directory (the docker
// executor mounts it at /task) and the env vars SWARMGEN_TASK_DIR,
// SWARMGEN_PARAMS, SWARMGEN_INPUT, SWARMGEN_OUTPUT. stdout/stderr become the
// task log (size-capped); a stdout line "::progress 0.42" reports progress.
// Exit 0 is success.
package inference

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Executor kinds.
const (
	KindProcess = "process"
	KindDocker  = "docker"
)

// Sentinel errors an Executor returns (wrapped) so callers can tell failures
// apart.
var (
	ErrTimeout      = errors.New("task timed out")
	ErrCancelled    = errors.New("task cancelled")
	ErrExit         = errors.New("app exited with non-zero status")
	ErrOutputTooBig = errors.New("task output over limit")
	ErrUnavailable  = errors.New("executor unavailable")
	ErrNoImage      = errors.New("image not present")
	// ErrInvalidTask: the task cannot be run as given (bad ids, empty
	// command, malformed env or params); nothing was started.
	ErrInvalidTask = errors.New("invalid task")
	// ErrBadOutput: output/ holds something other than regular files and
	// directories (a symlink, a device, a fifo); such output is rejected,
	// not skipped, so nothing outside the task dir can be exported.
	ErrBadOutput = errors.New("task output invalid")
)

// Resources a task asks for; zero means "no limit / none".
type Resources struct {
	CPUMillis int64 `json:"cpuMillis,omitempty"`
	Memory    int64 `json:"memory,omitempty"`    // bytes
	GPUs      int   `json:"gpus,omitempty"`      // count
	GPUMemory int64 `json:"gpuMemory,omitempty"` // bytes per GPU
}

// App says what to run. Command may start with the placeholder "{swarmgen}",
// replaced by the path of the swarmgen binary (Config.SwarmgenBinary).
type App struct {
	Kind    string            `json:"kind"`              // KindProcess or KindDocker
	Command []string          `json:"command,omitempty"` // argv; for docker, overrides the image's entrypoint+cmd when set
	Image   string            `json:"image,omitempty"`   // docker image reference
	Env     map[string]string `json:"env,omitempty"`     // extra environment
	Network bool              `json:"network,omitempty"` // docker: allow network (default off)
}

// Task is one unit of work handed to an executor.
type Task struct {
	JobID     string          `json:"job"`
	TaskID    string          `json:"task"`
	Index     int             `json:"index"`
	Count     int             `json:"count"`
	Attempt   int             `json:"attempt"`
	Seed      int64           `json:"seed"`
	App       App             `json:"-"`
	Params    json.RawMessage `json:"app"` // the app's parameters, a JSON object
	Resources Resources       `json:"-"`
	Timeout   time.Duration   `json:"-"`
}

// Result describes a finished run. Log holds the tail of stdout+stderr, at
// most the executor's log cap.
type Result struct {
	ExitCode    int
	Log         []byte
	OutputBytes int64
	Started     time.Time
	Finished    time.Time
}

// Progress receives progress reports in [0,1] from "::progress" lines. An
// executor calls it from one goroutine at a time, not necessarily the one
// that called Run; it should return quickly.
type Progress func(fraction float64)

// Executor runs one task in a prepared task directory (see PrepareTaskDir).
// Run blocks until the app exits, the task's timeout passes (ErrTimeout) or
// ctx is cancelled (ErrCancelled); on return no process or container of the
// task is left running. Implementations are safe for concurrent use.
type Executor interface {
	// Kind returns KindProcess or KindDocker.
	Kind() string
	// Available reports whether the executor can run tasks on this machine
	// (e.g. the docker daemon answers); the error says why not.
	Available(ctx context.Context) error
	// Run runs t with dir as its task directory.
	Run(ctx context.Context, t *Task, dir string, progress Progress) (*Result, error)
}
