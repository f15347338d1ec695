package inference

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"
)

// Container labels the docker executor sets, so leftovers can be found.
const (
	LabelJob      = "swarmgen.job"
	LabelTask     = "swarmgen.task"
	LabelAttempt  = "swarmgen.attempt"
	LabelInstance = "swarmgen.instance"
)

// Paths inside the container.
const (
	ContainerTaskDir   = "/task"
	ContainerModelsDir = "/models"
)

// Docker defaults.
const (
	DefaultDockerUser = "65534:65534" // nobody:nogroup
	DefaultTmpfsSize  = 256 << 20
	DefaultPidsLimit  = 1024
	// cleanupTimeout bounds removing a container after the run.
	cleanupTimeout = 30 * time.Second
)

// DockerConfig configures the docker executor. Zero values take defaults.
type DockerConfig struct {
	// Host is the daemon address (e.g. unix:///var/run/docker.sock);
	// default: DOCKER_HOST or the platform socket.
	Host string
	// ModelCacheDir, when set, is bind-mounted read-write at /models and
	// HF_HOME=/models is set; it must be writable by User. Created (and,
	// when swarmgen runs as root, given to User) if missing.
	ModelCacheDir string
	// User is the uid:gid the app runs as (default 65534:65534). Numeric
	// only: a FROM scratch image has no /etc/passwd to resolve names.
	User string
	// LogCap and OutputCap as in ProcessConfig.
	LogCap    int
	OutputCap int64
	// Env is added to every container's environment (App.Env wins).
	Env map[string]string
	// KillGrace is the time between SIGTERM and SIGKILL (default 2s).
	KillGrace time.Duration
	// TmpfsSize is the size of the tmpfs at /tmp (default 256 MiB).
	TmpfsSize int64
	// PidsLimit caps processes in the container (default 1024).
	PidsLimit int64
	// Instance, when set, is stored in the swarmgen.instance label and
	// limits ReapOrphans to this instance's containers (several nodes may
	// share one daemon).
	Instance string
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

// Docker runs apps in containers through the Docker Engine API, sandboxed:
// no network (unless App.Network), read-only root filesystem, non-root user,
// all capabilities dropped, no-new-privileges, cpu/memory/pids limits. It
// never pulls images. Safe for concurrent use.
type Docker struct {
	cfg      DockerConfig
	uid, gid int
	cli      *client.Client
	log      *slog.Logger
}

var _ Executor = (*Docker)(nil)

// NewDocker returns a docker executor. It does not contact the daemon (see
// Available).
func NewDocker(cfg DockerConfig) (*Docker, error) {
	if cfg.User == "" {
		cfg.User = DefaultDockerUser
	}
	uid, gid, err := parseUser(cfg.User)
	if err != nil {
		return nil, err
	}
	if cfg.LogCap <= 0 {
		cfg.LogCap = DefaultLogCap
	}
	if cfg.OutputCap <= 0 {
		cfg.OutputCap = DefaultOutputCap
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.TmpfsSize <= 0 {
		cfg.TmpfsSize = DefaultTmpfsSize
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = DefaultPidsLimit
	}
	if cfg.Instance != "" {
		if err := ValidateID("instance", cfg.Instance); err != nil {
			return nil, err
		}
	}
	if cfg.ModelCacheDir != "" {
		abs, err := filepath.Abs(cfg.ModelCacheDir)
		if err != nil {
			return nil, fmt.Errorf("model cache dir: %w", err)
		}
		cfg.ModelCacheDir = abs
		if _, err := os.Stat(abs); os.IsNotExist(err) {
			if err := os.MkdirAll(abs, 0o755); err != nil {
				return nil, fmt.Errorf("create model cache dir: %w", err)
			}
			if err := giveTo(abs, uid, gid); err != nil {
				return nil, fmt.Errorf("model cache dir: %w", err)
			}
		}
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Docker{cfg: cfg, uid: uid, gid: gid, cli: cli, log: l.With("executor", KindDocker)}, nil
}

// parseUser parses a numeric "uid:gid". Root is refused: the sandbox
// relies on a non-root user.
func parseUser(u string) (int, int, error) {
	us, gs, ok := strings.Cut(u, ":")
	uid, err1 := strconv.Atoi(us)
	gid, err2 := strconv.Atoi(gs)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("docker user %q: want numeric uid:gid", u)
	}
	if uid == 0 {
		return 0, 0, fmt.Errorf("docker user %q: apps must not run as root", u)
	}
	return uid, gid, nil
}

// giveTo makes dir writable by uid:gid: chown when we are root, else
// world-writable (we cannot chown).
func giveTo(dir string, uid, gid int) error {
	if os.Geteuid() == 0 {
		return os.Chown(dir, uid, gid)
	}
	return os.Chmod(dir, 0o777)
}

// Close releases the client's connections.
func (d *Docker) Close() error { return d.cli.Close() }

// Kind returns KindDocker.
func (d *Docker) Kind() string { return KindDocker }

// Available pings the daemon.
func (d *Docker) Available(ctx context.Context) error {
	if _, err := d.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker daemon at %s: %w: %w", d.cli.DaemonHost(), ErrUnavailable, err)
	}
	return nil
}

// Labels returns the labels a container for t gets.
func (d *Docker) Labels(t *Task) map[string]string {
	l := map[string]string{LabelJob: t.JobID, LabelTask: t.TaskID, LabelAttempt: strconv.Itoa(t.Attempt)}
	if d.cfg.Instance != "" {
		l[LabelInstance] = d.cfg.Instance
	}
	return l
}

// ContainerSpec returns the container and host config the executor uses
// for t with host task directory dir. Exposed so the sandbox settings can
// be inspected and tested without a daemon.
func (d *Docker) ContainerSpec(t *Task, dir string) (*container.Config, *container.HostConfig, error) {
	if t.App.Image == "" {
		return nil, nil, fmt.Errorf("docker app has no image: %w", ErrInvalidTask)
	}
	for i, a := range t.App.Command {
		if strings.ContainsRune(a, 0) {
			return nil, nil, fmt.Errorf("command arg %d has NUL: %w", i, ErrInvalidTask)
		}
	}
	base := map[string]string{"HOME": "/tmp"}
	if d.cfg.ModelCacheDir != "" {
		base["HF_HOME"] = ContainerModelsDir
	}
	env, err := buildEnv(base, d.cfg.Env, t.App.Env, ContractEnv(ContainerTaskDir))
	if err != nil {
		return nil, nil, err
	}
	cfg := &container.Config{
		Image:      t.App.Image,
		Env:        env,
		User:       d.cfg.User,
		WorkingDir: ContainerTaskDir,
		Labels:     d.Labels(t),
		// Attach before start so no output is lost.
		AttachStdout: true,
		AttachStderr: true,
	}
	if len(t.App.Command) > 0 {
		cfg.Entrypoint = t.App.Command[:1]
		cfg.Cmd = t.App.Command[1:]
	}
	pids := d.cfg.PidsLimit
	hc := &container.HostConfig{
		// Mounts, not Binds: a host path with ':' cannot break the syntax.
		Mounts:         []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: ContainerTaskDir}},
		NetworkMode:    "none",
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": "rw,nosuid,nodev,size=" + strconv.FormatInt(d.cfg.TmpfsSize, 10)},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Resources: container.Resources{
			NanoCPUs:  t.Resources.CPUMillis * 1_000_000,
			Memory:    t.Resources.Memory,
			PidsLimit: &pids,
		},
	}
	if t.Resources.Memory > 0 {
		// No swap beyond the limit: over the limit means OOM, not thrashing.
		hc.Resources.MemorySwap = t.Resources.Memory
	}
	if t.App.Network {
		hc.NetworkMode = "bridge"
	}
	if d.cfg.ModelCacheDir != "" {
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: d.cfg.ModelCacheDir, Target: ContainerModelsDir})
	}
	if t.Resources.GPUs > 0 {
		hc.Resources.DeviceRequests = []container.DeviceRequest{{
			Driver: "nvidia", Count: t.Resources.GPUs, Capabilities: [][]string{{"gpu"}},
		}}
	}
	return cfg, hc, nil
}

// containerName is unique per run: a leftover of an earlier run of the same
// attempt must not block this one.
func containerName(t *Task) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("swarmgen-%s-%s-%d-%s", t.JobID, t.TaskID, t.Attempt, hex.EncodeToString(b[:]))
}

// Run runs t in a fresh container with dir (from PrepareTaskDir) mounted
// at /task. It returns a non-nil Result whenever the container started,
// also together with an error (ErrExit, ErrTimeout, ErrCancelled,
// ErrOutputTooBig, ErrBadOutput). The container is always removed.
func (d *Docker) Run(ctx context.Context, t *Task, dir string, progress Progress) (*Result, error) {
	if _, err := TaskDirName(t); err != nil {
		return nil, err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("task dir %q: %w", dir, err)
	}
	cfg, hc, err := d.ContainerSpec(t, absDir)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	if _, err := d.cli.ImageInspect(ctx, t.App.Image); err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %q (swarmgen never pulls; load or build it first): %w", t.App.Image, ErrNoImage)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
		}
		return nil, fmt.Errorf("inspect image %q: %w: %w", t.App.Image, ErrUnavailable, err)
	}
	if err := giveTo(filepath.Join(absDir, OutputDir), d.uid, d.gid); err != nil {
		return nil, fmt.Errorf("make output writable for %s: %w", d.cfg.User, err)
	}
	log := d.log.With("job", t.JobID, "task", t.TaskID, "attempt", t.Attempt, "image", t.App.Image)

	created, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: containerName(t)})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
		}
		return nil, fmt.Errorf("create container: %w", err)
	}
	id := created.ID
	for _, w := range created.Warnings {
		log.Warn("docker create warning", "warning", w)
	}
	// From here on the container exists: remove it whatever happens, with a
	// context the caller's cancellation cannot cut short.
	defer d.remove(id, log)

	// The daemon-side wait, attach and kill use a context that outlives a
	// cancelled ctx, so the container can still be stopped and waited for.
	opCtx, opCancel := context.WithCancel(context.Background())
	defer opCancel()

	attach, err := d.cli.ContainerAttach(opCtx, id, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, fmt.Errorf("attach container: %w", err)
	}
	defer attach.Close()
	tlog := NewTaskLog(d.cfg.LogCap, progress)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = stdcopy.StdCopy(tlog.Stdout(), tlog.Stderr(), attach.Reader)
	}()

	wait := d.cli.ContainerWait(opCtx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	res := &Result{Started: time.Now()}
	if _, err := d.cli.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		attach.Close()
		<-copied
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
		}
		return nil, fmt.Errorf("start container: %w", err)
	}
	log.Debug("container started", "id", id[:12])

	var timeoutC <-chan time.Time
	if t.Timeout > 0 {
		timer := time.NewTimer(t.Timeout)
		defer timer.Stop()
		timeoutC = timer.C
	}
	var stopErr error
	var status int64 = -1
	var waitErr error
	select {
	case r := <-wait.Result:
		status = r.StatusCode
	case waitErr = <-wait.Error:
	case <-timeoutC:
		stopErr = fmt.Errorf("after %s: %w", t.Timeout, ErrTimeout)
	case <-ctx.Done():
		stopErr = fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	if stopErr != nil {
		status, waitErr = d.stop(id, wait, log)
	}

	// Output ends when the container exits; bound the wait anyway.
	select {
	case <-copied:
	case <-time.After(pipeDrainGrace):
		log.Warn("container output still open after exit; closing")
		attach.Close()
		<-copied
	}
	tlog.Close()
	res.Finished = time.Now()
	res.Log = tlog.Tail.Bytes()
	res.ExitCode = int(status)

	if stopErr != nil {
		log.Info("container stopped", "reason", stopErr)
		return res, fmt.Errorf("container %s: %w", t.App.Image, stopErr)
	}
	if waitErr != nil {
		return res, fmt.Errorf("wait for container: %w", waitErr)
	}
	if status != 0 {
		reason := ""
		if insp, err := d.cli.ContainerInspect(opCtx, id, client.ContainerInspectOptions{}); err == nil &&
			insp.Container.State != nil && insp.Container.State.OOMKilled {
			reason = fmt.Sprintf(" (OOM-killed: memory limit %d bytes)", t.Resources.Memory)
		}
		return res, fmt.Errorf("container %s: exit code %d%s: %w", t.App.Image, status, reason, ErrExit)
	}
	return res, checkOutput(absDir, d.cfg.OutputCap, res)
}

// stop sends SIGTERM, SIGKILL after the grace period, and waits for exit.
func (d *Docker) stop(id string, wait client.ContainerWaitResult, log *slog.Logger) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.KillGrace+cleanupTimeout)
	defer cancel()
	grace := int(d.cfg.KillGrace.Round(time.Second) / time.Second)
	if _, err := d.cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &grace}); err != nil {
		log.Warn("stop container failed; killing", "err", err)
		_, _ = d.cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"})
	}
	select {
	case r := <-wait.Result:
		return r.StatusCode, nil
	case err := <-wait.Error:
		return -1, err
	case <-ctx.Done():
		return -1, fmt.Errorf("container did not exit after kill: %w", ctx.Err())
	}
}

// remove force-removes the container with a fresh context.
func (d *Docker) remove(id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if _, err := d.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		log.Error("remove container failed; ReapOrphans will retry", "id", id, "err", err)
	}
}

// ReapOrphans force-removes containers carrying the swarmgen.job label (and,
// when Instance is set, this instance's label): leftovers of a crash. It
// returns how many it removed. Call it at start-up, before running tasks.
func (d *Docker) ReapOrphans(ctx context.Context) (int, error) {
	f := client.Filters{}
	f.Add("label", LabelJob)
	if d.cfg.Instance != "" {
		f.Add("label", LabelInstance+"="+d.cfg.Instance)
	}
	list, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	var errs []error
	n := 0
	for _, c := range list.Items {
		if _, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.ID, err))
			continue
		}
		n++
	}
	if n > 0 {
		d.log.Info("reaped orphan containers", "count", n)
	}
	return n, errors.Join(errs...)
}
