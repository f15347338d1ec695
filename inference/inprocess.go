package inference

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"
)

// AppEnv is what an app sees of the contract: the task directory paths
// (same values as the SWARMGEN_* variables) and its stdout, where
// "::progress" lines go.
type AppEnv struct {
	TaskDir string
	Params  string
	Input   string
	Output  string
	Stdout  io.Writer
}

// NewAppEnv returns the AppEnv of a task directory writing to stdout.
func NewAppEnv(dir string, stdout io.Writer) AppEnv {
	e := ContractEnv(dir)
	return AppEnv{
		TaskDir: e["SWARMGEN_TASK_DIR"],
		Params:  e["SWARMGEN_PARAMS"],
		Input:   e["SWARMGEN_INPUT"],
		Output:  e["SWARMGEN_OUTPUT"],
		Stdout:  stdout,
	}
}

// AppFunc is an app run in-process. It must return soon after ctx is done.
type AppFunc func(ctx context.Context, env AppEnv) error

// InProcessConfig configures the in-process executor; zero values take the
// same defaults as ProcessConfig.
type InProcessConfig struct {
	LogCap    int
	OutputCap int64
}

// InProcess runs Go app functions in the calling process under the app
// contract (task dir, params.json, progress lines, log cap, output cap).
// It exists so scheduler benchmarks measure scheduling rather than
// fork/exec; it isolates nothing, and an app that ignores ctx keeps Run
// waiting. Its Kind is KindProcess so it can stand in for Process. Safe for
// concurrent use.
type InProcess struct {
	apps map[string]AppFunc
	cfg  InProcessConfig
}

var _ Executor = (*InProcess)(nil)

// NewInProcess returns an executor for apps (name → function). The map is
// copied.
func NewInProcess(apps map[string]AppFunc, cfg ...InProcessConfig) *InProcess {
	e := &InProcess{apps: make(map[string]AppFunc, len(apps))}
	for k, v := range apps {
		e.apps[k] = v
	}
	if len(cfg) > 0 {
		e.cfg = cfg[0]
	}
	if e.cfg.LogCap <= 0 {
		e.cfg.LogCap = DefaultLogCap
	}
	if e.cfg.OutputCap <= 0 {
		e.cfg.OutputCap = DefaultOutputCap
	}
	return e
}

// Kind returns KindProcess.
func (e *InProcess) Kind() string { return KindProcess }

// Available always succeeds.
func (e *InProcess) Available(ctx context.Context) error { return nil }

// AppName returns the app a command names: "<x> app <name> …" gives name
// (the form "{swarmgen} app noop"), otherwise the first element.
func AppName(cmd []string) string {
	if len(cmd) >= 3 && cmd[1] == "app" {
		return cmd[2]
	}
	if len(cmd) > 0 {
		return cmd[0]
	}
	return ""
}

// Run calls the app named by t.App.Command (see AppName). An app error is
// reported as ErrExit with exit code 1, a panic as ErrExit with exit code 2.
func (e *InProcess) Run(ctx context.Context, t *Task, dir string, progress Progress) (*Result, error) {
	name := AppName(t.App.Command)
	fn, ok := e.apps[name]
	if !ok {
		return nil, fmt.Errorf("in-process app %q is not known: %w", name, ErrInvalidTask)
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("task dir %q: %w", dir, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if t.Timeout > 0 {
		var c2 context.CancelFunc
		runCtx, c2 = context.WithTimeoutCause(runCtx, t.Timeout, ErrTimeout)
		defer c2()
	}
	tlog := NewTaskLog(e.cfg.LogCap, progress)
	res := &Result{Started: time.Now()}
	// Apps may write from several goroutines; the progress parser may not.
	stdout := &lockedWriter{w: tlog.Stdout()}
	appErr := callApp(runCtx, fn, NewAppEnv(absDir, stdout))
	tlog.Close()
	res.Finished = time.Now()

	if appErr != nil {
		fmt.Fprintf(tlog.Stderr(), "%v\n", appErr)
	}
	res.Log = tlog.Tail.Bytes()
	switch {
	case ctx.Err() != nil:
		res.ExitCode = -1
		return res, fmt.Errorf("in-process %s: %w: %w", name, ErrCancelled, context.Cause(ctx))
	case errors.Is(context.Cause(runCtx), ErrTimeout):
		res.ExitCode = -1
		return res, fmt.Errorf("in-process %s: after %s: %w", name, t.Timeout, ErrTimeout)
	case appErr != nil:
		res.ExitCode = 1
		var pe panicError
		if errors.As(appErr, &pe) {
			res.ExitCode = 2
		}
		return res, fmt.Errorf("in-process %s: %w: %w", name, ErrExit, appErr)
	}
	return res, checkOutput(absDir, e.cfg.OutputCap, res)
}

type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("app panicked: %v", p.v) }

// callApp runs fn, turning a panic into an error.
func callApp(ctx context.Context, fn AppFunc, env AppEnv) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	return fn(ctx, env)
}

// lockedWriter serialises writes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
