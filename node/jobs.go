package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/swarmgen/swarmgen/bucket"
	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/inference/stablediffusion"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/scheduler"
)

// Limits on what a submitter pulls in for a job's input.
const (
	maxInputBytes  = 256 << 20
	inputTimeout   = 2 * time.Minute
	maxResultBytes = 4 << 30
	// fetchStreams bounds the result/input fetch streams a node serves at
	// once. A provider with many slots answers a burst of small fetches as
	// results come in; beyond the bound a fetch falls back to bitswap.
	fetchStreams = 64
)

// WithExecutor makes the node run kind's tasks with ex (e.g. an in-process
// executor in benchmarks) instead of the one it would build.
func WithExecutor(kind string, ex inference.Executor) Option {
	return func(o *options) {
		if o.execs == nil {
			o.execs = map[string]inference.Executor{}
		}
		o.execs[kind] = ex
	}
}

// WithSchedulerConfig tunes the submitter's coordinator (tests use short
// timeouts).
func WithSchedulerConfig(c scheduler.Config) Option {
	return func(o *options) { o.sched = c }
}

// startJobs opens the result store and state, and starts the provider,
// the submitter and the gateway.
func (n *Node) startJobs(ctx context.Context, o *options) error {
	reg := jobspec.Builtin()
	if n.cfg.TemplateDir != "" {
		if err := reg.LoadDir(n.cfg.TemplateDir); err != nil {
			return fmt.Errorf("template-dir: %w", err)
		}
	}
	n.registry = reg
	store, err := bucket.New(ctx, n.host, n.cfg.DataDir, bucket.WithLogger(n.log), bucket.WithDeferredSync(), bucket.WithFetchStreams(fetchStreams))
	if err != nil {
		return fmt.Errorf("result store: %w", err)
	}
	n.closers = append(n.closers, store.Close)
	n.results = &results{n: n, store: store, resultTTL: 24 * time.Hour, maxFetch: maxResultBytes, afterImport: o.afterImport}

	execs, err := n.buildExecutors(ctx, o)
	if err != nil {
		return err
	}
	n.provider = newProvider(n, reg, execs)
	if n.warm != nil {
		n.provider.warmTemplates = map[string]inference.Executor{"stable-diffusion": n.warm}
		n.SetWarmFunc(n.warm.WarmModels)
	}
	n.provider.start(!o.noTaskSessions)

	db, err := openStateDB(filepath.Join(n.cfg.DataDir, "state"))
	if err != nil {
		return err
	}
	n.closers = append(n.closers, db.Close)
	n.submitter = newSubmitter(n, reg, db, o.sched)
	if err := n.submitter.start(); err != nil {
		return err
	}
	n.routes = append(n.routes, n.jobRoutes)
	if n.cfg.Gateway != "" {
		if err := n.startGateway(store); err != nil {
			return err
		}
	}
	return nil
}

// buildExecutors returns the executors this node offers, by kind.
func (n *Node) buildExecutors(ctx context.Context, o *options) (map[string]inference.Executor, error) {
	execs := map[string]inference.Executor{}
	bin := n.cfg.SwarmgenBinary
	if bin == "" {
		if exe, err := os.Executable(); err == nil {
			bin = exe
		}
	}
	execs[inference.KindProcess] = inference.NewProcess(inference.ProcessConfig{SwarmgenBinary: bin, Logger: n.log})
	if dockerReachable(ctx) {
		d, err := inference.NewDocker(inference.DockerConfig{
			ModelCacheDir: filepath.Join(n.cfg.DataDir, "models"),
			Instance:      n.id.String(),
			Logger:        n.log,
		})
		if err != nil {
			n.log.Warn("docker executor off", "err", err)
		} else {
			n.closers = append(n.closers, d.Close)
			if k, err := d.ReapOrphans(ctx); err == nil && k > 0 {
				n.log.Info("removed leftover task containers", "count", k)
			}
			execs[inference.KindDocker] = d
		}
	} else if n.cfg.Executor == inference.KindDocker {
		n.log.Warn("executor docker requested but the docker daemon does not answer")
	}
	// Stable Diffusion is offered once a check shows that the Python
	// environment imports torch and diffusers (seconds: it runs in the
	// background so the node starts at once).
	n.sdOff.Store(true)
	if n.cfg.Python != "" {
		if worker := n.sdWorkerPath(); worker == "" {
			n.log.Warn("stable diffusion off: worker.py not found (set SWARMGEN_SDWORKER)")
		} else {
			var gpus []string // one warm worker per GPU; none = CPU
			for i := range n.probe.GPUs {
				gpus = append(gpus, strconv.Itoa(i))
			}
			n.warm = stablediffusion.NewWarmPool(stablediffusion.WarmConfig{
				Python: n.cfg.Python, WorkerScript: worker, Logger: n.log, GPUs: gpus,
				Env: map[string]string{"HF_HOME": filepath.Join(n.cfg.DataDir, "models")},
			})
			n.closers = append(n.closers, n.warm.Close)
			n.goRun("python-check", func(ctx context.Context) {
				if err := pythonHasDiffusers(ctx, n.cfg.Python); err != nil {
					if ctx.Err() == nil {
						n.log.Warn("stable diffusion off: the python environment cannot run it", "python", n.cfg.Python, "err", err)
					}
					return
				}
				n.sdOff.Store(false)
				n.log.Info("stable diffusion on", "python", n.cfg.Python, "worker", worker)
				n.AdChanged()
			})
		}
	}

	for k, ex := range o.execs {
		execs[k] = ex
	}
	var kinds []string
	for k := range execs {
		kinds = append(kinds, k)
	}
	n.execs = kinds
	return execs, nil
}

// sdWorkerPath finds worker.py: $SWARMGEN_SDWORKER, then beside the binary
// in a source checkout, then the working directory's checkout.
func (n *Node) sdWorkerPath() string {
	cands := []string{os.Getenv("SWARMGEN_SDWORKER")}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "..", "inference", "stablediffusion", "worker.py"))
	}
	cands = append(cands, filepath.Join("inference", "stablediffusion", "worker.py"))
	for _, c := range cands {
		if c == "" {
			continue
		}
		if abs, err := filepath.Abs(c); err == nil {
			if st, err := os.Stat(abs); err == nil && st.Mode().IsRegular() {
				return abs
			}
		}
	}
	return ""
}

// BucketRoot implements bucket.BucketIndex for the gateway: the bucket of
// a completed job submitted here.
func (n *Node) BucketRoot(jobID string) (cid.Cid, bool) {
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	j, ok, err := n.submitter.job(ctx, jobID)
	if err != nil || !ok || j.Bucket == nil || j.Bucket.CID == "" {
		return cid.Undef, false
	}
	c, err := cid.Decode(j.Bucket.CID)
	return c, err == nil
}

func (n *Node) startGateway(store *bucket.Store) error {
	ln, err := net.Listen("tcp", n.cfg.Gateway)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", n.cfg.Gateway, err)
	}
	n.gatewayAddr = ln.Addr()
	srv := &http.Server{
		Handler:           bucket.NewGateway(store, n),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	n.goRun("gateway", func(ctx context.Context) {
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("gateway", "err", err)
		}
	})
	return nil
}

// GatewayURL returns the gateway's base URL, or "" when off.
func (n *Node) GatewayURL() string {
	if n.gatewayAddr == nil {
		return ""
	}
	addr := n.gatewayAddr.(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() { // listening on all interfaces: loopback works from here
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

func (n *Node) bucketURL(jobID string) string {
	if g := n.GatewayURL(); g != "" {
		return g + "/buckets/" + jobID + "/"
	}
	return "/buckets/" + jobID + "/"
}

// jobInputs gathers a job's input files from its data source.
func (n *Node) jobInputs(ctx context.Context, spec *jobspec.Spec) ([]jobspec.InputFile, error) {
	var root cid.Cid
	switch spec.DataSource.Descriptor {
	case jobspec.SourceFile:
		return spec.DataSource.Files, nil
	case jobspec.SourceURL:
		c, err := n.results.store.FetchURL(ctx, spec.DataSource.URL, maxInputBytes, inputTimeout)
		if err != nil {
			return nil, &jobspec.FieldError{Path: "dataSource.url", Msg: err.Error()}
		}
		root = c
	case jobspec.SourceIPFS:
		c, err := cid.Decode(spec.DataSource.CID)
		if err != nil {
			return nil, &jobspec.FieldError{Path: "dataSource.cid", Msg: err.Error()}
		}
		if err := n.fetchAnywhere(ctx, c); err != nil {
			return nil, &jobspec.FieldError{Path: "dataSource.cid", Msg: err.Error()}
		}
		root = c
	default:
		return nil, nil
	}
	dir, err := os.MkdirTemp("", "swarmgen-input-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "in")
	if err := n.results.store.ExportDir(ctx, root, out); err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	var files []jobspec.InputFile
	var total int64
	err = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if total += int64(len(b)); total > maxInputBytes {
			return fmt.Errorf("input over %d bytes", maxInputBytes)
		}
		rel, _ := filepath.Rel(out, p)
		files = append(files, jobspec.InputFile{Name: filepath.ToSlash(rel), Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	return files, nil
}

// fetchAnywhere gets a DAG that is local or held by a peer of the table.
func (n *Node) fetchAnywhere(ctx context.Context, c cid.Cid) error {
	if ok, _ := n.results.store.Has(ctx, c); ok {
		return nil
	}
	var lastErr error = errors.New("no peer to fetch from")
	for i, e := range n.table.Snapshot() {
		if i >= 8 {
			break
		}
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := n.results.store.Fetch(fctx, c, e.Peer, maxInputBytes)
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
	}
	return fmt.Errorf("cid %s not found on this node or its peers: %w", c, lastErr)
}

var (
	pyCheckMu sync.Mutex
	pyChecked = map[string]error{}
)

// pythonHasDiffusers checks once per interpreter that it imports torch and
// diffusers, so a node does not bid for Stable Diffusion tasks it would
// fail.
func pythonHasDiffusers(ctx context.Context, python string) error {
	pyCheckMu.Lock()
	defer pyCheckMu.Unlock()
	if err, ok := pyChecked[python]; ok {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import torch, diffusers").CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(tailBytes(out, 300))))
	}
	if ctx.Err() == nil { // a check cut short by shutdown says nothing
		pyChecked[python] = err
	}
	return err
}
