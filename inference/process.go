package inference

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Defaults of ProcessConfig and DockerConfig.
const (
	DefaultOutputCap = 1 << 30
	DefaultKillGrace = 2 * time.Second
	// SwarmgenPlaceholder in App.Command[0] is replaced by the swarmgen
	// binary path.
	SwarmgenPlaceholder = "{swarmgen}"
	// minimalPath is the PATH apps get: the host's PATH is not leaked.
	minimalPath = "/usr/local/bin:/usr/bin:/bin"
	// pipeDrainGrace bounds how long Run waits for stdout/stderr to close
	// after the process group is killed (a process that left the group with
	// setsid may hold them open).
	pipeDrainGrace = 2 * time.Second
)

// ProcessConfig configures the process executor. Zero values take defaults.
type ProcessConfig struct {
	// SwarmgenBinary replaces "{swarmgen}" in App.Command[0]; default: the
	// running executable.
	SwarmgenBinary string
	// LogCap is how many bytes of the log tail are kept (default 256 KiB).
	LogCap int
	// OutputCap is the most bytes output/ may hold (default 1 GiB).
	OutputCap int64
	// Env is added to every app's environment (App.Env wins over it; the
	// SWARMGEN_* contract variables win over both).
	Env map[string]string
	// KillGrace is the time between SIGTERM and SIGKILL (default 2s).
	KillGrace time.Duration
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

// Process runs apps as child processes on the host, each in its own process
// group so that a timeout or cancellation kills the whole tree. It gives no
// isolation beyond that: use it for trusted apps (the built-in ones). A
// process that leaves its group (setsid) escapes the kill; the docker
// executor does not have that hole. Safe for concurrent use.
type Process struct {
	cfg ProcessConfig
	log *slog.Logger
}

var _ Executor = (*Process)(nil)

// NewProcess returns a process executor with cfg's zero fields defaulted.
func NewProcess(cfg ProcessConfig) *Process {
	if cfg.LogCap <= 0 {
		cfg.LogCap = DefaultLogCap
	}
	if cfg.OutputCap <= 0 {
		cfg.OutputCap = DefaultOutputCap
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.SwarmgenBinary == "" {
		if exe, err := os.Executable(); err == nil {
			cfg.SwarmgenBinary = exe
		}
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Process{cfg: cfg, log: l.With("executor", KindProcess)}
}

// Kind returns KindProcess.
func (p *Process) Kind() string { return KindProcess }

// Available reports an error when process groups are not supported on this
// platform or the swarmgen binary is not an executable file.
func (p *Process) Available(ctx context.Context) error {
	if !processGroupsSupported {
		return fmt.Errorf("process executor needs process groups (unix): %w", ErrUnavailable)
	}
	if p.cfg.SwarmgenBinary != "" {
		fi, err := os.Stat(p.cfg.SwarmgenBinary)
		if err != nil {
			return fmt.Errorf("swarmgen binary: %w: %w", ErrUnavailable, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("swarmgen binary %s is not an executable file: %w", p.cfg.SwarmgenBinary, ErrUnavailable)
		}
	}
	return nil
}

// ContractEnv returns the SWARMGEN_* variables of the app contract for a
// task directory seen by the app at dir.
func ContractEnv(dir string) map[string]string {
	return map[string]string{
		"SWARMGEN_TASK_DIR": dir,
		"SWARMGEN_PARAMS":   filepath.Join(dir, ParamsFile),
		"SWARMGEN_INPUT":    filepath.Join(dir, InputDir),
		"SWARMGEN_OUTPUT":   filepath.Join(dir, OutputDir),
	}
}

// buildEnv merges layers (later wins) into a sorted KEY=VALUE list after
// validating every key and value.
func buildEnv(layers ...map[string]string) ([]string, error) {
	merged := map[string]string{}
	for _, l := range layers {
		for k, v := range l {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return nil, fmt.Errorf("env var name %q is empty or has '=' or NUL: %w", k, ErrInvalidTask)
			}
			if strings.ContainsRune(v, 0) {
				return nil, fmt.Errorf("env var %s value has NUL: %w", k, ErrInvalidTask)
			}
			merged[k] = v
		}
	}
	out := make([]string, 0, len(merged))
	for k, v := range merged {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// checkLoaderEnv refuses task env vars that make the dynamic loader run
// other code (LD_PRELOAD and friends): App.Env comes from the job, and on
// the host that would turn params into code execution.
func checkLoaderEnv(env map[string]string) error {
	for k := range env {
		if strings.HasPrefix(k, "LD_") || strings.HasPrefix(k, "DYLD_") {
			return fmt.Errorf("env var %s is not allowed for host processes: %w", k, ErrInvalidTask)
		}
	}
	return nil
}

// argv returns the command with the swarmgen placeholder substituted.
func (p *Process) argv(t *Task) ([]string, error) {
	if len(t.App.Command) == 0 || t.App.Command[0] == "" {
		return nil, fmt.Errorf("app command is empty: %w", ErrInvalidTask)
	}
	argv := append([]string(nil), t.App.Command...)
	if strings.Contains(argv[0], SwarmgenPlaceholder) {
		if p.cfg.SwarmgenBinary == "" {
			return nil, fmt.Errorf("command uses %s but no swarmgen binary is known: %w", SwarmgenPlaceholder, ErrUnavailable)
		}
		argv[0] = strings.ReplaceAll(argv[0], SwarmgenPlaceholder, p.cfg.SwarmgenBinary)
	}
	for i, a := range argv {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("command arg %d has NUL: %w", i, ErrInvalidTask)
		}
	}
	return argv, nil
}

// Run runs t's command with dir (from PrepareTaskDir) as working directory.
// It returns a non-nil Result whenever the process was started, also
// together with an error (ErrExit, ErrTimeout, ErrCancelled,
// ErrOutputTooBig, ErrBadOutput). On return no process of the task's
// process group is left.
func (p *Process) Run(ctx context.Context, t *Task, dir string, progress Progress) (*Result, error) {
	argv, err := p.argv(t)
	if err != nil {
		return nil, err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("task dir %q: %w", dir, err)
	}
	if err := checkLoaderEnv(t.App.Env); err != nil {
		return nil, err
	}
	env, err := buildEnv(
		map[string]string{"PATH": minimalPath, "HOME": absDir},
		p.cfg.Env, t.App.Env, ContractEnv(absDir))
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	log := p.log.With("job", t.JobID, "task", t.TaskID, "attempt", t.Attempt)

	tlog := NewTaskLog(p.cfg.LogCap, progress)
	// Own pipes, not exec's copier goroutines: cmd.Wait would otherwise
	// block until every grandchild holding stdout has exited.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = absDir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = outW, errW
	setProcessGroup(cmd)

	res := &Result{Started: time.Now()}
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], startErr)
	}
	pgid := cmd.Process.Pid
	log.Debug("app started", "pid", pgid, "argv0", argv[0])

	var copiers sync.WaitGroup
	copiers.Add(2)
	go func() { defer copiers.Done(); io.Copy(tlog.Stdout(), outR) }()
	go func() { defer copiers.Done(); io.Copy(tlog.Stderr(), errR) }()

	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	var timeoutC <-chan time.Time
	if t.Timeout > 0 {
		timer := time.NewTimer(t.Timeout)
		defer timer.Stop()
		timeoutC = timer.C
	}
	var stopErr error
	var waitErr error
	select {
	case waitErr = <-waitDone:
	case <-timeoutC:
		stopErr = fmt.Errorf("after %s: %w", t.Timeout, ErrTimeout)
		waitErr = p.terminate(pgid, waitDone, log)
	case <-ctx.Done():
		stopErr = fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
		waitErr = p.terminate(pgid, waitDone, log)
	}
	// The leader is gone; kill whatever it left behind in its group.
	killGroup(pgid, true)

	drained := make(chan struct{})
	go func() { copiers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(pipeDrainGrace):
		log.Warn("app output still open after its process group was killed; closing")
	}
	outR.Close() // unblocks the copiers if they are still reading
	errR.Close()
	<-drained
	tlog.Close()

	res.Finished = time.Now()
	res.Log = tlog.Tail.Bytes()
	res.ExitCode = exitCode(cmd.ProcessState, waitErr)
	if stopErr != nil {
		log.Info("app stopped", "reason", stopErr)
		return res, fmt.Errorf("process %s: %w", argv[0], stopErr)
	}
	if res.ExitCode != 0 {
		return res, fmt.Errorf("process %s: exit code %d: %w", argv[0], res.ExitCode, ErrExit)
	}
	return res, checkOutput(absDir, p.cfg.OutputCap, res)
}

// terminate sends SIGTERM to the group, waits the grace period for the
// leader, then SIGKILLs the group. It returns the leader's wait error.
func (p *Process) terminate(pgid int, waitDone <-chan error, log *slog.Logger) error {
	killGroup(pgid, false)
	grace := time.NewTimer(p.cfg.KillGrace)
	defer grace.Stop()
	select {
	case err := <-waitDone:
		return err
	case <-grace.C:
		log.Debug("app ignored SIGTERM; killing", "pgid", pgid)
		killGroup(pgid, true)
		return <-waitDone
	}
}

// exitCode returns the exit status, or 128+signal for a signalled process
// (as shells and docker report it).
func exitCode(ps *os.ProcessState, waitErr error) int {
	if ps == nil {
		if waitErr != nil {
			return -1
		}
		return 0
	}
	if sig, ok := signalOf(ps); ok {
		return 128 + sig
	}
	return ps.ExitCode()
}

// checkOutput measures output/ into res and applies the cap.
func checkOutput(dir string, limit int64, res *Result) error {
	n, err := outputSize(dir, limit)
	res.OutputBytes = n
	if err != nil {
		return err
	}
	if n > limit {
		return fmt.Errorf("output is over %d bytes: %w", limit, ErrOutputTooBig)
	}
	return nil
}
