package stablediffusion

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swarmgen/swarmgen/inference"
)

// Defaults for WarmConfig fields left zero.
const (
	DefaultMaxIdle      = 10 * time.Minute
	DefaultStartTimeout = 3 * time.Minute
	// MaxBatch bounds the task dirs of one RunBatch (worker.py's limit).
	MaxBatch = 64
	// DefaultMaxMergeImages is worker.py's default images per pipeline call
	// (SWARMGEN_SD_MAX_BATCH).
	DefaultMaxMergeImages = 8
)

// ErrBatch reports a RunBatch call that cannot run as one batch.
var ErrBatch = errors.New("invalid batch")

// WarmConfig configures a WarmPool.
type WarmConfig struct {
	// Python is the interpreter with torch and diffusers. Default: env
	// SWARMGEN_PYTHON, else "python3".
	Python string
	// WorkerScript is the path of worker.py (required).
	WorkerScript string
	// GPUs lists device ids a worker may be pinned to (CUDA_VISIBLE_DEVICES);
	// "" means CPU and "mps" Apple's GPU. Default: [""] (CPU only).
	GPUs []string
	// MaxIdle stops a worker that has served nothing for this long
	// (default DefaultMaxIdle).
	MaxIdle time.Duration
	// StartTimeout bounds the wait for a new worker's "ready" event
	// (default DefaultStartTimeout; importing torch is slow).
	StartTimeout time.Duration
	// Env adds environment variables to every worker (e.g. HF_HOME,
	// HF_HUB_OFFLINE, SWARMGEN_SD_MODEL_ROOTS).
	Env map[string]string
	// LogCap caps each task's log (default inference.DefaultLogCap).
	LogCap int
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// MaxMergeImages bounds the images of calls merged into one worker
	// request (see WarmPool). Default: SWARMGEN_SD_MAX_BATCH from Env or
	// the environment, else DefaultMaxMergeImages — the worker's own
	// per-call limit, which exists for GPU memory, so a merged request is
	// never split into several pipeline calls. 1 turns merging off.
	MaxMergeImages int
}

type workerKey struct{ model, gpu string }

// worker is the pool's slot for one (model, GPU): at most one process, used
// by one request at a time (the holder of slot).
type worker struct {
	key  workerKey
	slot chan struct{} // buffered(1): holding a token grants use of p

	p *proc // guarded by slot

	mu       sync.Mutex // guards the fields below (read by Stats without the slot)
	queue    []*call    // calls waiting for slot, oldest first
	pid      int
	loads    int
	tasks    int
	requests int
	merged   int
	starts   int
	served   bool // a request completed since the last start: the model is loaded
	lastUsed time.Time
	removed  bool // the reaper took it out of the pool
}

// WorkerStats describes one warm worker, for ads and tests.
type WorkerStats struct {
	Model    string
	GPU      string
	PID      int  // 0 when no process is running
	Loaded   bool // the process has served a request, so its model is in memory
	Loads    int  // pipelines loaded by the current process
	Tasks    int  // tasks served, over all processes
	Requests int  // task requests the pool made of processes; a merged one counts once
	Merged   int  // Run/RunBatch calls served inside another call's request
	Restarts int  // processes started after the first one (crash, cancel, idle stop)
	LastUsed time.Time
}

// WarmPool keeps long-lived `worker.py --serve` processes, one per (model,
// GPU), starts them lazily, restarts them after a crash, stops them after
// MaxIdle and on Close. It implements inference.Executor for single Stable
// Diffusion tasks (Kind is inference.KindProcess: it runs local processes)
// and RunBatch for replicas of one prompt. A task that is cancelled or
// times out has its worker killed (the only way to stop a pipeline call
// mid-step); the next task for that model starts a fresh one.
//
// A WarmPool is safe for concurrent use; calls for the same worker queue.
// When the worker becomes free, the queued call that gets it takes every
// other queued call that can share its pipeline call (same app params but
// seed and num_images; up to MaxBatch task dirs and MaxMergeImages images)
// and sends them as one request, so replicas that reach a busy provider as
// separate Run calls still run as one batch. A call that finds the worker
// free runs at once, alone: nothing ever waits for company.
// It owns every process and goroutine it starts; Close ends them all.
type WarmPool struct {
	cfg         WarmConfig
	log         *slog.Logger
	mergeImages int

	mu      sync.Mutex
	workers map[workerKey]*worker
	closed  bool
	availOK bool

	stop     chan struct{}
	inflight sync.WaitGroup
	reaper   sync.WaitGroup
}

var _ inference.Executor = (*WarmPool)(nil)

// NewWarmPool returns a pool for cfg; no process starts until the first task.
func NewWarmPool(cfg WarmConfig) *WarmPool {
	if cfg.Python == "" {
		cfg.Python = os.Getenv("SWARMGEN_PYTHON")
	}
	if cfg.Python == "" {
		cfg.Python = "python3"
	}
	if len(cfg.GPUs) == 0 {
		cfg.GPUs = []string{""}
	}
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = DefaultMaxIdle
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.LogCap <= 0 {
		cfg.LogCap = inference.DefaultLogCap
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxMergeImages <= 0 {
		cfg.MaxMergeImages = DefaultMaxMergeImages
		v, ok := cfg.Env["SWARMGEN_SD_MAX_BATCH"]
		if !ok {
			v = os.Getenv("SWARMGEN_SD_MAX_BATCH")
		}
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			cfg.MaxMergeImages = n
		}
	}
	p := &WarmPool{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "sd-warm-pool"),
		mergeImages: cfg.MaxMergeImages,
		workers:     make(map[workerKey]*worker),
		stop:        make(chan struct{}),
	}
	p.reaper.Add(1)
	go p.reap()
	return p
}

// Kind returns inference.KindProcess.
func (p *WarmPool) Kind() string { return inference.KindProcess }

// Available checks that the worker script exists and that the interpreter
// imports torch and diffusers (checked once; a failure is re-checked).
func (p *WarmPool) Available(ctx context.Context) error {
	p.mu.Lock()
	ok, closed := p.availOK, p.closed
	p.mu.Unlock()
	if closed {
		return fmt.Errorf("%w: warm pool closed", inference.ErrUnavailable)
	}
	if ok {
		return nil
	}
	if p.cfg.WorkerScript == "" {
		return fmt.Errorf("%w: WarmConfig.WorkerScript not set", inference.ErrUnavailable)
	}
	if _, err := os.Stat(p.cfg.WorkerScript); err != nil {
		return fmt.Errorf("%w: worker script: %w", inference.ErrUnavailable, err)
	}
	if err := checkPython(ctx, p.cfg.Python); err != nil {
		return fmt.Errorf("%w: %w", inference.ErrUnavailable, err)
	}
	p.mu.Lock()
	p.availOK = true
	p.mu.Unlock()
	return nil
}

// Run runs one task on a warm worker; see inference.Executor. A task the
// worker rejects returns its Result (ExitCode 2 bad params, 3 model
// unavailable, 1 other) and an error wrapping inference.ErrExit. While the
// worker is busy, Run may be merged with other waiting calls (see WarmPool
// and RunBatch for what that means for progress and cancellation).
func (p *WarmPool) Run(ctx context.Context, t *inference.Task, dir string, progress inference.Progress) (*inference.Result, error) {
	var pf func(int, float64)
	if progress != nil {
		pf = func(_ int, f float64) { progress(f) }
	}
	res, msgs, err := p.runBatch(ctx, []*inference.Task{t}, []string{dir}, pf)
	if err != nil {
		if len(res) == 1 {
			return res[0], err
		}
		return nil, err
	}
	if res[0].ExitCode != 0 {
		return res[0], fmt.Errorf("%w: sd worker exit code %d: %s", inference.ErrExit, res[0].ExitCode, msgs[0])
	}
	return res[0], nil
}

// RunBatch runs replicas of one prompt (tasks that all ask for the same
// model; dirs[i] is tasks[i]'s prepared task directory) as one request to
// one worker. Tasks that share prompt, size, steps, guidance, scheduler and
// LoRA become one pipeline call with a generator per task seed, so each
// image equals its unbatched run within floating-point tolerance.
// progress(i, f) reports task i (may be nil); it is called from one
// goroutine at a time — another caller's when this call was merged into
// its request — and never after RunBatch returns.
//
// A call waiting for a busy worker may be merged with other waiting calls
// into one worker request (see WarmPool). A call cancelled while it waits
// just leaves. Once its request runs, the worker is killed only when every
// call in the request has been cancelled or timed out (as for the tasks of
// one RunBatch); a call that ends alone waits for the request to finish so
// that nothing still writes into its task dirs after it returns, then
// returns ErrCancelled or ErrTimeout with failed results.
//
// A task the worker rejects has ExitCode != 0 and the reason in its
// Log; err is nil then. err is non-nil when the batch as a whole failed
// (invalid batch, cancel → inference.ErrCancelled, timeout →
// inference.ErrTimeout, worker crash → inference.ErrExit, no worker →
// inference.ErrUnavailable); the results are then nil or all failed. The
// timeout is the longest Timeout among the tasks.
func (p *WarmPool) RunBatch(ctx context.Context, tasks []*inference.Task, dirs []string, progress func(i int, f float64)) ([]*inference.Result, error) {
	res, _, err := p.runBatch(ctx, tasks, dirs, progress)
	return res, err
}

func (p *WarmPool) runBatch(ctx context.Context, tasks []*inference.Task, dirs []string, progress func(int, float64)) ([]*inference.Result, []string, error) {
	if len(tasks) == 0 || len(tasks) != len(dirs) {
		return nil, nil, fmt.Errorf("%w: %d tasks for %d dirs", ErrBatch, len(tasks), len(dirs))
	}
	if len(tasks) > MaxBatch {
		return nil, nil, fmt.Errorf("%w: %d tasks, limit %d", ErrBatch, len(tasks), MaxBatch)
	}
	model := ""
	var timeout time.Duration
	abs := make([]string, len(dirs))
	for i, t := range tasks {
		m, err := modelOf(t.Params)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: task %d: %w", ErrBatch, i, err)
		}
		if i > 0 && m != model {
			return nil, nil, fmt.Errorf("%w: task %d asks for model %q, task 0 for %q", ErrBatch, i, m, model)
		}
		model = m
		timeout = max(timeout, t.Timeout)
		if abs[i], err = filepath.Abs(dirs[i]); err != nil {
			return nil, nil, fmt.Errorf("%w: dir %d: %w", ErrBatch, i, err)
		}
	}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: warm pool closed", inference.ErrUnavailable)
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()

	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, inference.ErrTimeout)
		defer cancel()
	}
	key, images := mergeKeyOf(tasks)
	c := &call{ctx: ctx, tasks: tasks, dirs: abs, progress: progress, key: key, images: images,
		claimedCh: make(chan struct{}), done: make(chan struct{})}
	return p.runQueued(model, c)
}

// Preload starts a worker for model (if none runs) and loads the model
// into it ahead of tasks, so that the node can advertise it as warm. It
// waits for the load; cancel kills the worker like a cancelled task. A model
// the worker cannot load returns an error wrapping inference.ErrExit
// (ErrUnavailable when no worker starts).
func (p *WarmPool) Preload(ctx context.Context, model string) error {
	if model == "" || len(model) > maxModelRef {
		return fmt.Errorf("%w: model name length %d out of range [1, %d]", ErrBatch, len(model), maxModelRef)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return fmt.Errorf("%w: warm pool closed", inference.ErrUnavailable)
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()
	w, err := p.acquire(ctx, model)
	if err != nil {
		return ctxErr(ctx, err)
	}
	defer p.release(w)
	if err := p.ensure(ctx, w); err != nil {
		return ctxErr(ctx, err)
	}
	pr := w.p
	id := "load-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := pr.send(request{ID: id, Op: "load", Model: model}); err != nil {
		p.kill(w, "write failed")
		return fmt.Errorf("%w: %w", inference.ErrExit, err)
	}
	for {
		select {
		case ev, ok := <-pr.events:
			if !ok {
				<-pr.exited
				msg := pr.exitText()
				p.kill(w, "crashed")
				return fmt.Errorf("%w: sd worker exited while loading %s: %s", inference.ErrExit, model, msg)
			}
			if ev.ID != id {
				continue
			}
			if ev.Event == evError {
				return fmt.Errorf("%w: sd worker cannot load %s (exit code %d): %s", inference.ErrExit, model, ev.Exit, ev.Error)
			}
			if ev.Event == evLoaded {
				w.mu.Lock()
				w.loads, w.served = ev.Loads, true
				w.mu.Unlock()
				p.log.Info("preloaded model", "model", model, "gpu", w.key.gpu, "load_s", ev.LoadS)
				return nil
			}
		case <-ctx.Done():
			p.kill(w, "preload cancelled")
			return ctxErr(ctx, errors.New("sd worker killed"))
		}
	}
}

// ctxErr maps a context error to the executor sentinels.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if errors.Is(context.Cause(ctx), inference.ErrTimeout) {
		return fmt.Errorf("%w: %w", inference.ErrTimeout, err)
	}
	return fmt.Errorf("%w: %w", inference.ErrCancelled, err)
}

// serveRequest sends one request to w's process (starting it if needed) and
// collects its events. The caller holds w's slot.
func (p *WarmPool) serveRequest(ctx context.Context, w *worker, tasks []*inference.Task, dirs []string, progress func(int, float64)) ([]*inference.Result, []string, error) {
	started := time.Now()
	if err := p.ensure(ctx, w); err != nil {
		return nil, nil, ctxErr(ctx, err)
	}
	pr := w.p
	capture := inference.NewTailBuffer(p.cfg.LogCap)
	pr.setCapture(capture)
	defer pr.setCapture(nil)

	index := make(map[string]int, len(dirs))
	for i, d := range dirs {
		index[d] = i
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := pr.send(request{ID: id, TaskDirs: dirs}); err != nil {
		p.kill(w, "write failed")
		return nil, nil, fmt.Errorf("%w: %w", inference.ErrExit, err)
	}
	for {
		select {
		case ev, ok := <-pr.events:
			if !ok {
				<-pr.exited
				code := pr.exitCode()
				p.log.Warn("sd worker died during a request", "model", w.key.model, "gpu", w.key.gpu, "pid", pr.pid, "exit", pr.exitText())
				p.kill(w, "crashed")
				msg := fmt.Sprintf("sd worker (pid %d) exited during the task: %s", pr.pid, pr.exitText())
				return p.failAll(dirs, started, code, msg, capture), nil, fmt.Errorf("%w: %s", inference.ErrExit, msg)
			}
			switch {
			case ev.Event == evProgress && ev.ID == id:
				if i, found := index[ev.TaskDir]; found && progress != nil {
					progress(i, ev.Value)
				}
			case ev.Event == evDone && ev.ID == id:
				return p.results(w, ev, dirs, started, capture)
			case ev.Event == evError && (ev.ID == id || ev.ID == ""):
				p.kill(w, "protocol error")
				return nil, nil, fmt.Errorf("%w: sd worker rejected the request: %s", inference.ErrExit, ev.Error)
			}
		case <-ctx.Done():
			// A pipeline call cannot be interrupted between steps from the
			// outside; killing the worker is the only prompt way out.
			p.kill(w, "task cancelled")
			err := ctxErr(ctx, errors.New("sd worker killed"))
			return p.failAll(dirs, started, -1, err.Error(), capture), nil, err
		}
	}
}

// results turns a done event into per-task results.
func (p *WarmPool) results(w *worker, ev event, dirs []string, started time.Time, capture *inference.TailBuffer) ([]*inference.Result, []string, error) {
	byDir := make(map[string]taskResult, len(ev.Results))
	for _, r := range ev.Results {
		byDir[r.TaskDir] = r
	}
	now := time.Now()
	logs := capture.Bytes()
	res := make([]*inference.Result, len(dirs))
	msgs := make([]string, len(dirs))
	for i, d := range dirs {
		r, ok := byDir[d]
		if !ok {
			r = taskResult{TaskDir: d, ExitCode: 1, Error: "sd worker returned no result for this task"}
		}
		var line string
		if r.OK {
			line = fmt.Sprintf("sd: ok %v (load %.2fs, infer %.2fs, batch of %d images)\n", r.Files, r.LoadS, r.InferS, r.BatchImages)
		} else {
			if r.ExitCode == 0 {
				r.ExitCode = 1
			}
			line = "sd: " + r.Error + "\n"
			msgs[i] = r.Error
		}
		out, _ := inference.OutputSize(d)
		code := 0
		if !r.OK {
			code = r.ExitCode
		}
		res[i] = &inference.Result{
			ExitCode:    code,
			Log:         capLog(logs, line, p.cfg.LogCap),
			OutputBytes: out,
			Started:     started,
			Finished:    now,
		}
	}
	w.mu.Lock()
	w.loads = ev.Loads
	w.tasks += len(dirs)
	w.served = true
	w.mu.Unlock()
	return res, msgs, nil
}

func (p *WarmPool) failAll(dirs []string, started time.Time, code int, msg string, capture *inference.TailBuffer) []*inference.Result {
	now := time.Now()
	res := make([]*inference.Result, len(dirs))
	for i, d := range dirs {
		out, _ := inference.OutputSize(d)
		res[i] = &inference.Result{ExitCode: code, Log: capLog(capture.Bytes(), "sd: "+msg+"\n", p.cfg.LogCap), OutputBytes: out, Started: started, Finished: now}
	}
	return res
}

// capLog appends line to logs, keeping at most capBytes from the end.
func capLog(logs []byte, line string, capBytes int) []byte {
	b := append(append([]byte(nil), logs...), line...)
	if len(b) > capBytes {
		b = b[len(b)-capBytes:]
	}
	return b
}

// acquire picks the worker for model and takes its slot.
func (p *WarmPool) acquire(ctx context.Context, model string) (*worker, error) {
	for {
		w, err := p.pick(model)
		if err != nil {
			return nil, err
		}
		select {
		case w.slot <- struct{}{}:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		w.mu.Lock()
		removed := w.removed
		w.mu.Unlock()
		if !removed {
			return w, nil
		}
		<-w.slot // the reaper retired it while we waited; pick again
	}
}

func (p *WarmPool) release(w *worker) {
	w.mu.Lock()
	w.lastUsed = time.Now()
	w.mu.Unlock()
	<-w.slot
}

// pick chooses the GPU for model: a free worker that has it, else a GPU
// with no worker at all, else the model's worker with the least waiting
// (queueing), else the GPU with the fewest workers.
func (p *WarmPool) pick(model string) (*worker, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("%w: warm pool closed", inference.ErrUnavailable)
	}
	var mine []*worker
	perGPU := make(map[string]int)
	for k, w := range p.workers {
		perGPU[k.gpu]++
		if k.model == model {
			mine = append(mine, w)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].key.gpu < mine[j].key.gpu })
	for _, w := range mine {
		if len(w.slot) == 0 {
			return w, nil
		}
	}
	for _, g := range p.cfg.GPUs {
		if perGPU[g] == 0 {
			return p.newWorkerLocked(workerKey{model, g}), nil
		}
	}
	if len(mine) > 0 {
		return mine[0], nil
	}
	best := p.cfg.GPUs[0]
	for _, g := range p.cfg.GPUs {
		if perGPU[g] < perGPU[best] {
			best = g
		}
	}
	return p.newWorkerLocked(workerKey{model, best}), nil
}

func (p *WarmPool) newWorkerLocked(k workerKey) *worker {
	w := &worker{key: k, slot: make(chan struct{}, 1), lastUsed: time.Now()}
	p.workers[k] = w
	return w
}

// ensure starts w's process if it has none or it died. Caller holds the slot.
func (p *WarmPool) ensure(ctx context.Context, w *worker) error {
	if w.p != nil && w.p.alive() {
		return nil
	}
	if w.p != nil {
		p.log.Warn("restarting sd worker that exited", "model", w.key.model, "gpu", w.key.gpu, "pid", w.p.pid, "exit", w.p.exitText())
		w.p.kill()
		w.p = nil
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return fmt.Errorf("%w: warm pool closed", inference.ErrUnavailable)
	}
	pr, err := startProc(ctx, &p.cfg, w.key, p.log.With("model", w.key.model, "gpu", w.key.gpu))
	if err != nil {
		return err
	}
	// Close may have run while the process started; don't leak it.
	p.mu.Lock()
	closed = p.closed
	p.mu.Unlock()
	if closed {
		pr.kill()
		return fmt.Errorf("%w: warm pool closed", inference.ErrUnavailable)
	}
	w.p = pr
	w.mu.Lock()
	w.pid, w.loads, w.served = pr.pid, 0, false
	w.starts++
	w.mu.Unlock()
	return nil
}

// kill ends w's process; the next request starts a fresh one. Caller holds
// the slot.
func (p *WarmPool) kill(w *worker, why string) {
	if w.p == nil {
		return
	}
	p.log.Info("killing sd worker", "model", w.key.model, "gpu", w.key.gpu, "pid", w.p.pid, "why", why)
	w.p.kill()
	w.p = nil
	w.mu.Lock()
	w.pid, w.loads, w.served = 0, 0, false
	w.mu.Unlock()
}

// reap stops workers idle for longer than MaxIdle.
func (p *WarmPool) reap() {
	defer p.reaper.Done()
	every := min(max(p.cfg.MaxIdle/4, 50*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		var idle []*worker
		for _, w := range p.workers {
			w.mu.Lock()
			if time.Since(w.lastUsed) > p.cfg.MaxIdle {
				idle = append(idle, w)
			}
			w.mu.Unlock()
		}
		p.mu.Unlock()
		for _, w := range idle {
			select {
			case w.slot <- struct{}{}:
			default:
				continue // busy: not idle after all
			}
			w.mu.Lock()
			stillIdle := time.Since(w.lastUsed) > p.cfg.MaxIdle
			if stillIdle {
				w.removed = true
			}
			w.mu.Unlock()
			if stillIdle {
				p.mu.Lock()
				if p.workers[w.key] == w {
					delete(p.workers, w.key)
				}
				p.mu.Unlock()
				if w.p != nil {
					p.log.Info("stopping idle sd worker", "model", w.key.model, "gpu", w.key.gpu, "pid", w.p.pid, "idle", p.cfg.MaxIdle)
					w.p.stop(10 * time.Second)
					w.p = nil
				}
			}
			<-w.slot
		}
	}
}

// WarmModels returns the models that a running worker has loaded, sorted
// and without duplicates (for the capacity ad's warmModels).
func (p *WarmPool) WarmModels() []string {
	seen := map[string]bool{}
	for _, s := range p.Stats() {
		if s.PID != 0 && s.Loaded {
			seen[s.Model] = true
		}
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Stats returns one entry per worker, sorted by model then GPU.
func (p *WarmPool) Stats() []WorkerStats {
	p.mu.Lock()
	ws := make([]*worker, 0, len(p.workers))
	for _, w := range p.workers {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	out := make([]WorkerStats, 0, len(ws))
	for _, w := range ws {
		w.mu.Lock()
		out = append(out, WorkerStats{
			Model: w.key.model, GPU: w.key.gpu, PID: w.pid, Loaded: w.served, Loads: w.loads,
			Tasks: w.tasks, Requests: w.requests, Merged: w.merged, Restarts: max(w.starts-1, 0), LastUsed: w.lastUsed,
		})
		w.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Model != out[j].Model {
			return out[i].Model < out[j].Model
		}
		return out[i].GPU < out[j].GPU
	})
	return out
}

// Close stops every worker (killing ones busy with a task, whose Run then
// fails) and waits for all of the pool's goroutines and processes to end.
// Later calls return ErrUnavailable. Close is idempotent.
func (p *WarmPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ws := make([]*worker, 0, len(p.workers))
	for _, w := range p.workers {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	close(p.stop)
	p.reaper.Wait()
	for _, w := range ws {
		select {
		case w.slot <- struct{}{}:
			// Idle: stop gracefully.
			if w.p != nil {
				w.p.stop(5 * time.Second)
				w.p = nil
			}
			<-w.slot
		default:
			// Busy: kill the process under the request, which then returns.
			p.killBusy(w)
		}
	}
	p.inflight.Wait()
	return nil
}

// killBusy kills the process of a worker whose slot is held by a request;
// the request sees the exit and cleans up (w.p is only touched under the
// slot, so the pid is signalled rather than the proc reaped here).
func (p *WarmPool) killBusy(w *worker) {
	w.mu.Lock()
	pid := w.pid
	w.mu.Unlock()
	if pid > 0 {
		killPID(pid)
	}
}

// checkPython verifies that python imports torch and diffusers.
func checkPython(ctx context.Context, python string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import torch, diffusers").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot import torch and diffusers: %w: %s", python, err, tail(out, 500))
	}
	return nil
}

// jsonLine encodes v as one JSON line.
func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode sd worker request: %w", err)
	}
	return append(b, '\n'), nil
}

// call is one Run or RunBatch waiting for, or being served by, a worker.
// Calls that wait for the same worker and share a merge key are served as
// one worker request (one pipeline call for the worker).
type call struct {
	ctx      context.Context // the caller's, with the tasks' timeout
	tasks    []*inference.Task
	dirs     []string // absolute
	progress func(int, float64)
	key      string // merge key; "" never merges
	images   int

	claimed   bool          // guarded by the worker's mu: a leader took it into its batch
	claimedCh chan struct{} // closed when claimed is set

	// Set by the leader before done is closed.
	done chan struct{}
	res  []*inference.Result
	msgs []string
	err  error
}

// runQueued runs c on model's worker. c waits in the worker's queue; whichever
// waiting call gets the worker first (the leader) takes every compatible
// waiting call along (see collectLocked) and serves them as one request. A
// call that is alone runs at once: merging happens only while the worker is
// busy anyway, so it adds no latency.
func (p *WarmPool) runQueued(model string, c *call) ([]*inference.Result, []string, error) {
	for {
		w, err := p.pick(model)
		if err != nil {
			return nil, nil, ctxErr(c.ctx, err)
		}
		w.mu.Lock()
		w.queue = append(w.queue, c)
		w.mu.Unlock()
		select {
		case w.slot <- struct{}{}:
		case <-c.claimedCh:
			<-c.done
			return c.res, c.msgs, c.err
		case <-c.ctx.Done():
			w.mu.Lock()
			claimed := c.claimed
			if !claimed {
				w.dequeueLocked(c)
			}
			w.mu.Unlock()
			if claimed { // taken into a batch just now: its leader answers
				<-c.done
				return c.res, c.msgs, c.err
			}
			return nil, nil, ctxErr(c.ctx, context.Cause(c.ctx))
		}
		// We hold the slot, so nobody can claim c from here on.
		w.mu.Lock()
		if c.claimed { // select picked the slot though c was claimed too
			w.mu.Unlock()
			<-w.slot
			<-c.done
			return c.res, c.msgs, c.err
		}
		w.dequeueLocked(c)
		if w.removed { // the reaper retired it while we waited; pick again
			w.mu.Unlock()
			<-w.slot
			continue
		}
		if c.ctx.Err() != nil {
			w.mu.Unlock()
			<-w.slot
			return nil, nil, ctxErr(c.ctx, context.Cause(c.ctx))
		}
		batch := p.collectLocked(w, c)
		w.mu.Unlock()
		p.serveBatch(w, batch)
		p.release(w)
		return c.res, c.msgs, c.err
	}
}

// dequeueLocked removes c from w's queue. Caller holds w.mu.
func (w *worker) dequeueLocked(c *call) {
	for i, q := range w.queue {
		if q == c {
			w.queue = append(w.queue[:i], w.queue[i+1:]...)
			return
		}
	}
}

// collectLocked returns leader followed by the waiting calls it takes along,
// oldest first: calls with leader's merge key whose context is live, while
// the batch stays within MaxBatch task dirs and the pool's merge limit in
// images. It marks them claimed and removes them from the queue. Caller
// holds w.mu and w's slot.
func (p *WarmPool) collectLocked(w *worker, leader *call) []*call {
	batch := []*call{leader}
	if leader.key == "" {
		return batch
	}
	dirs, images := len(leader.dirs), leader.images
	kept := w.queue[:0]
	for _, q := range w.queue {
		if q.key == leader.key && q.ctx.Err() == nil && dirs+len(q.dirs) <= MaxBatch && images+q.images <= p.mergeImages {
			dirs += len(q.dirs)
			images += q.images
			q.claimed = true
			close(q.claimedCh)
			batch = append(batch, q)
			continue
		}
		kept = append(kept, q)
	}
	clear(w.queue[len(kept):])
	w.queue = kept
	return batch
}

// serveBatch sends the calls of batch as one request to w and hands each
// call its own results, messages and error, then closes its done channel.
// Progress goes to each call's callback (from this goroutine, while its
// caller waits). The request is cancelled (the worker killed) only when
// every call's context has ended — as RunBatch does for its tasks; a call
// whose context ended while the others' work went on gets failed results
// and ErrCancelled or ErrTimeout when the request ends. Caller holds w's
// slot.
func (p *WarmPool) serveBatch(w *worker, batch []*call) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var live atomic.Int32
	live.Store(int32(len(batch)))
	var tasks []*inference.Task
	var dirs []string
	offsets := make([]int, len(batch))
	for i, c := range batch {
		stop := context.AfterFunc(c.ctx, func() {
			if live.Add(-1) == 0 {
				cancel(context.Cause(c.ctx))
			}
		})
		defer stop()
		offsets[i] = len(dirs)
		tasks = append(tasks, c.tasks...)
		dirs = append(dirs, c.dirs...)
	}
	progress := func(i int, f float64) {
		j := sort.Search(len(offsets), func(j int) bool { return offsets[j] > i }) - 1
		if c := batch[j]; c.progress != nil {
			c.progress(i-offsets[j], f)
		}
	}
	if len(batch) > 1 {
		p.log.Debug("merged waiting requests", "model", w.key.model, "gpu", w.key.gpu, "calls", len(batch), "tasks", len(dirs))
	}
	w.mu.Lock()
	w.requests++
	w.merged += len(batch) - 1
	w.mu.Unlock()

	res, msgs, err := p.serveRequest(ctx, w, tasks, dirs, progress)
	for i, c := range batch {
		lo, hi := offsets[i], offsets[i]+len(c.dirs)
		switch {
		case err != nil && ctx.Err() != nil:
			// Every call's context ended and the worker was killed (or
			// never started): each caller gets its own reason.
			c.err = ctxErr(c.ctx, errors.New("sd worker killed"))
			if res != nil {
				c.res = res[lo:hi]
			}
		case c.ctx.Err() != nil:
			// The others' work went on (or failed on its own); this call's
			// outputs may exist but its caller gave up on them.
			cause := err
			if cause == nil {
				cause = errors.New("ended while its merged request ran on")
			}
			c.err = ctxErr(c.ctx, cause)
			if res != nil {
				c.res = make([]*inference.Result, 0, hi-lo)
				for _, r := range res[lo:hi] {
					f := *r
					f.ExitCode = -1
					f.Log = capLog(r.Log, "sd: "+c.err.Error()+"\n", p.cfg.LogCap)
					c.res = append(c.res, &f)
				}
			}
		default:
			c.err = err
			if res != nil {
				c.res = res[lo:hi]
			}
			if msgs != nil {
				c.msgs = msgs[lo:hi]
			}
		}
		close(c.done)
	}
}

// mergeKeyOf returns the key under which a call's tasks may share a
// pipeline call with other calls' tasks, and how many images they make. The
// key is the tasks' app params without what a batch may vary per task
// (seed, num_images; model is the worker's key already), compacted, with
// keys sorted. It is "" — never merge — when the tasks disagree or a
// params object does not decode; worker.py then judges them alone. Equal
// keys imply equal sdparams.batch_key; the converse need not hold (a
// default spelled out differs from one left out), which only costs a merge.
func mergeKeyOf(tasks []*inference.Task) (string, int) {
	key, images := "", 0
	for i, t := range tasks {
		k, n := mergeKey(t.Params)
		if k == "" || (i > 0 && k != key) {
			return "", 0
		}
		key = k
		images += n
	}
	return key, images
}

func mergeKey(params json.RawMessage) (string, int) {
	var app map[string]json.RawMessage
	if len(params) == 0 || json.Unmarshal(params, &app) != nil || app == nil {
		return "", 0
	}
	images := 1
	if raw, ok := app["num_images"]; ok {
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 1 || n > MaxBatch {
			return "", 0
		}
		images = n
	}
	delete(app, "seed")
	delete(app, "num_images")
	delete(app, "model")
	for k, v := range app {
		var b bytes.Buffer
		if json.Compact(&b, v) != nil {
			return "", 0
		}
		app[k] = b.Bytes()
	}
	b, err := json.Marshal(app) // sorts the keys
	if err != nil {
		return "", 0
	}
	return string(b), images
}
