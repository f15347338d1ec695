package node

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// Provider side: answers bid requests, queues assignments, runs them with
// an executor under the app contract, turns output/ into a UnixFS DAG and
// reports a signed result on the assignment's stream.

const (
	heartbeatEvery   = 2 * time.Second
	reservationTTL   = 5 * time.Second // a bid round ends within 2 s; assignments follow at once
	maxLogInUpdate   = 32 << 10
	progressInterval = 200 * time.Millisecond
	defaultTaskLimit = time.Hour
)

// taskKey names one attempt of one task.
type taskKey struct {
	job, task string
	attempt   int32
}

// provKey names a task on a provider: the submitter that assigned it and
// its IDs. Another peer that reuses the same IDs (they are not secret:
// every provider asked for a bid learns a job's) has tasks of its own,
// which can neither refuse the owner's as duplicates nor join its batches.
type provKey struct {
	from peer.ID
	taskKey
}

// providerTask is an accepted assignment, queued or running.
type providerTask struct {
	a       *pb.Assignment
	tmpl    *jobspec.Template // resolved and checked when the assignment came
	from    peer.ID
	ctx     context.Context
	cancel  context.CancelFunc
	updates chan *pb.TaskUpdate // to the submitter, closed after the final one
	queued  time.Time
}

type provider struct {
	n      *Node
	reg    *jobspec.Registry
	policy scheduler.BidPolicy
	execs  map[string]inference.Executor
	// warmTemplates run these templates' process apps on a warm worker
	// pool instead of a fresh process per task.
	warmTemplates map[string]inference.Executor
	taskRoot      string

	// Assignments taken on task sessions and on streams of their own
	// (tests).
	sessionTasks, streamTasks atomic.Int64

	mu      sync.Mutex
	queue   *scheduler.Queue
	tasks   map[provKey]*providerTask
	running int
	wake    chan struct{}
}

func newProvider(n *Node, reg *jobspec.Registry, execs map[string]inference.Executor) *provider {
	slots := n.defaultSlots()
	p := &provider{
		n:   n,
		reg: reg,
		policy: scheduler.BidPolicy{
			AllowTemplates:     n.cfg.Templates,
			AllowImages:        n.cfg.AllowImages,
			MaxQueue:           4 * slots,
			PricePerTaskMicros: n.cfg.PricePerTaskMicros,
			Slots:              slots,
		},
		execs:    execs,
		taskRoot: cmp.Or(n.cfg.TaskDir, filepath.Join(n.cfg.DataDir, "tasks")),
		queue:    scheduler.NewQueue(5 * slots),
		tasks:    map[provKey]*providerTask{},
		wake:     make(chan struct{}, 1),
	}
	n.SetLoadFunc(p.load)
	return p
}

func (p *provider) start(sessions bool) {
	p.n.host.SetStreamHandler(protocol.TaskProtocol, p.handleStream)
	if sessions {
		p.n.host.SetStreamHandler(protocol.TaskSessionProtocol, p.handleSession)
	}
	for i := 0; i < p.policy.Slots; i++ {
		p.n.goRun("task-worker", p.workerLoop)
	}
}

func (p *provider) load() api.Load {
	p.mu.Lock()
	defer p.mu.Unlock()
	return api.Load{Running: p.running, Queued: p.queue.Len(), Slots: p.policy.Slots}
}

func (p *provider) localState() scheduler.LocalState {
	// Read before p.mu: nextAd holds adMu while it calls load (p.mu), so
	// taking adMu under p.mu would invert the lock order.
	freeMem := p.n.freeMemory()
	p.mu.Lock()
	defer p.mu.Unlock()
	// Expired reservations must not count: a provider whose bids were not
	// used would otherwise refuse every later bid as full, and the only
	// Expire was behind an accepted bid.
	p.queue.Expire(p.n.now())
	ls := scheduler.LocalState{
		Running:    p.running,
		Queued:     p.queue.Len() + p.queue.Reserved(),
		FreeMemory: freeMem,
		CPUs:       p.n.probe.CPUMillis,
		GPUs:       len(p.n.probe.GPUs),
		WarmModels: p.n.warmFn(),
	}
	for k := range p.execs {
		ls.Executors = append(ls.Executors, k)
	}
	slices.Sort(ls.Executors)
	if len(p.n.probe.GPUs) > 0 {
		ls.GPUMemory = p.n.probe.GPUs[0].Memory
		for _, g := range p.n.probe.GPUs {
			ls.GPUMemory = min(ls.GPUMemory, g.Memory)
		}
	}
	return ls
}

// handleStream serves one TaskProtocol stream from a submitter.
func (p *provider) handleStream(s network.Stream) {
	p.serve(s.Conn().RemotePeer(), s, s.Reset)
}

// serve reads one request from rw and answers it. reset aborts the stream.
func (p *provider) serve(from peer.ID, rw streamLike, reset func() error) {
	defer rw.Close()
	var req pb.TaskRequest
	if err := protocol.ReadMsg(bufio.NewReader(rw), protocol.MaxTaskRequest, &req); err != nil {
		p.n.log.Debug("task request", "peer", from, "err", err)
		_ = reset()
		return
	}
	switch b := req.Body.(type) {
	case *pb.TaskRequest_BidRequest:
		_ = protocol.WriteMsg(rw, p.bid(from, b.BidRequest))
	case *pb.TaskRequest_Cancel:
		p.cancel(from, b.Cancel.JobId, b.Cancel.TaskId, b.Cancel.Attempt)
	case *pb.TaskRequest_Assignment:
		p.assign(from, b.Assignment, rw)
	default:
		_ = reset()
	}
}

// streamLike is a libp2p stream or, for tasks a node places on itself, one
// end of an in-memory pipe.
type streamLike interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}

func (p *provider) bid(from peer.ID, req *pb.BidRequest) *pb.Bid {
	if !p.n.cfg.Provide {
		return &pb.Bid{Reason: "node does not provide"}
	}
	if t, ok := p.reg.Get(req.TemplateId); !ok || !p.offers(t.ID) {
		return &pb.Bid{Reason: string(scheduler.ReasonTemplateNotAllowed)}
	}
	now := p.n.now()
	b := p.policy.Decide(req, p.localState(), now)
	if b.Accept {
		p.mu.Lock() // localState expired what had expired
		b.Slots = int32(p.queue.Reserve(from, req.JobId, int(b.Slots), now.Add(reservationTTL)))
		p.mu.Unlock()
		if b.Slots == 0 {
			return &pb.Bid{Reason: string(scheduler.ReasonFull)}
		}
	}
	return b
}

// cancel stops the tasks of jobID (taskID "" = all, attempt 0 = every
// attempt) that from assigned: a running one through its context, a queued
// one by taking it out of the queue and reporting it cancelled. Only the
// submitter that assigned a task can cancel it.
func (p *provider) cancel(from peer.ID, jobID, taskID string, attempt int32) {
	p.mu.Lock()
	var dequeued []*providerTask
	for k, t := range p.tasks {
		if k.job != jobID || (taskID != "" && k.task != taskID) || (attempt != 0 && k.attempt != attempt) || t.from != from {
			continue
		}
		t.cancel()
		if p.queue.RemoveAssignment(k.from, k.job, k.task, k.attempt) {
			delete(p.tasks, k)
			dequeued = append(dequeued, t)
		}
	}
	if taskID == "" {
		// The whole job: the slots its bids reserved for from go too.
		p.queue.Release(from, jobID)
	}
	p.mu.Unlock()
	for _, t := range dequeued {
		p.report(t, p.newResult(t), nil, inference.ErrCancelled)
		close(t.updates)
	}
	if len(dequeued) > 0 {
		p.n.AdChanged()
	}
}

// validateAssignment checks what the submitter sent before anything runs.
func (p *provider) validateAssignment(a *pb.Assignment) (*jobspec.Template, error) {
	for name, v := range map[string]string{"job_id": a.JobId, "task_id": a.TaskId} {
		if v == "" || len(v) > protocol.MaxIDLength || strings.ContainsAny(v, "/\\\x00") || v == "." || v == ".." {
			return nil, fmt.Errorf("assignment %s %q (%d bytes): empty, too long or has path characters", name, clipString(v, 64), len(v))
		}
	}
	if a.Attempt < 1 || a.Index < 0 || a.Count < 1 || a.Index >= a.Count {
		return nil, fmt.Errorf("assignment: attempt %d, index %d of %d out of range", a.Attempt, a.Index, a.Count)
	}
	if len(a.AppParams) > protocol.MaxAppParams {
		return nil, fmt.Errorf("assignment: app params %d bytes, limit %d", len(a.AppParams), protocol.MaxAppParams)
	}
	if err := inference.ValidateParams(a.AppParams); err != nil {
		return nil, fmt.Errorf("assignment: %w", err)
	}
	if a.TimeoutMs < 0 {
		return nil, fmt.Errorf("assignment: timeout %dms negative", a.TimeoutMs)
	}
	if len(a.InputCid) > 0 {
		if _, err := cid.Cast(a.InputCid); err != nil {
			return nil, fmt.Errorf("assignment: input_cid: %w", err)
		}
		if _, err := peer.IDFromBytes(a.InputFrom); err != nil {
			return nil, fmt.Errorf("assignment: input_from: %w", err)
		}
	}
	t, ok := p.reg.Get(a.TemplateId)
	if !ok {
		return nil, fmt.Errorf("assignment: template %q unknown on this node", clipString(a.TemplateId, 64))
	}
	if !p.offers(t.ID) {
		return nil, fmt.Errorf("assignment: template %q not offered by this node", t.ID)
	}
	if len(p.n.cfg.Templates) > 0 && !slices.Contains(p.n.cfg.Templates, t.ID) {
		return nil, fmt.Errorf("assignment: template %q not allowed on this node", t.ID)
	}
	if _, _, ok := p.pickExecutor(t); !ok {
		return nil, fmt.Errorf("assignment: no executor here can run template %q (wants %v)", t.ID, t.Executors())
	}
	return t, nil
}

// offers reports whether this node runs template id: allowed by the
// operator and runnable here (Stable Diffusion needs a Python environment
// with diffusers).
func (p *provider) offers(id string) bool {
	if len(p.n.cfg.Templates) > 0 && !slices.Contains(p.n.cfg.Templates, id) {
		return false
	}
	return !(id == sdTemplate && p.n.sdOff.Load())
}

// offeredTemplates lists what the capacity ad advertises: nil (any) when
// the node runs every template it knows.
func (p *provider) offeredTemplates() []string {
	if len(p.n.cfg.Templates) == 0 && !p.n.sdOff.Load() {
		return nil
	}
	var out []string
	for _, id := range p.reg.IDs() {
		if p.offers(id) {
			out = append(out, id)
		}
	}
	return out
}

// mapModel applies the node's model map to the template's model param.
func (p *provider) mapModel(t *jobspec.Template, params []byte) []byte {
	if t.ModelParam == "" || len(p.n.cfg.ModelMap) == 0 {
		return params
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(params, &m) != nil {
		return params
	}
	var model string
	if raw, ok := m[t.ModelParam]; !ok || json.Unmarshal(raw, &model) != nil {
		if d := t.Param(t.ModelParam); d != nil {
			_ = json.Unmarshal(d.Default, &model)
		}
	}
	to, ok := p.n.cfg.ModelMap[model]
	if !ok {
		return params
	}
	m[t.ModelParam], _ = json.Marshal(to)
	out, err := json.Marshal(m)
	if err != nil {
		return params
	}
	return out
}

const sdTemplate = "stable-diffusion"

// pickExecutor chooses the first of the template's executor kinds that this
// node has.
func (p *provider) pickExecutor(t *jobspec.Template) (inference.Executor, inference.App, bool) {
	if ex, ok := p.warmTemplates[t.ID]; ok {
		if app, ok := t.AppFor(inference.KindProcess); ok {
			return ex, app, true
		}
	}
	for _, kind := range t.Executors() {
		if ex, ok := p.execs[kind]; ok {
			app, _ := t.AppFor(kind)
			if kind == inference.KindDocker && len(p.n.cfg.AllowImages) > 0 && !slices.Contains(p.n.cfg.AllowImages, app.Image) {
				continue // the operator does not run this image
			}
			return ex, app, true
		}
	}
	return nil, inference.App{}, false
}

// admit checks an assignment and queues its task, or says why not. The
// task runs under the node's context until it ends or its cancel is called.
func (p *provider) admit(from peer.ID, a *pb.Assignment) (*providerTask, string) {
	if !p.n.cfg.Provide {
		return nil, "node does not provide"
	}
	if p.n.ctx.Err() != nil {
		// Its workers may have stopped: nothing would run or end it.
		return nil, "node stopping"
	}
	tmpl, err := p.validateAssignment(a)
	if err != nil {
		return nil, clipString(err.Error(), protocol.MaxStringField)
	}
	ctx, cancel := context.WithCancel(p.n.ctx)
	t := &providerTask{a: a, tmpl: tmpl, from: from, ctx: ctx, cancel: cancel, updates: make(chan *pb.TaskUpdate, 16), queued: p.n.now()}
	k := provKey{from, taskKey{a.JobId, a.TaskId, a.Attempt}}
	p.mu.Lock()
	// Reservations past their expiry no longer hold room.
	p.queue.Expire(p.n.now())
	if _, dup := p.tasks[k]; dup {
		p.mu.Unlock()
		cancel()
		return nil, "duplicate assignment"
	}
	if err := p.queue.Push(from, a); err != nil {
		p.mu.Unlock()
		cancel()
		return nil, err.Error()
	}
	p.tasks[k] = t
	p.mu.Unlock()
	p.n.AdChanged()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return t, ""
}

// assign queues a, then streams the task's updates to the submitter until
// the final one. If the submitter goes away, the task is cancelled.
func (p *provider) assign(from peer.ID, a *pb.Assignment, rw streamLike) {
	p.streamTasks.Add(1)
	t, reason := p.admit(from, a)
	if t == nil {
		_ = protocol.WriteMsg(rw, &pb.TaskUpdate{State: pb.TaskState_TASK_STATE_REJECTED, Message: reason})
		return
	}
	// As a Cancel would: a queued task leaves the queue at once.
	cancel := func() { p.cancel(from, a.JobId, a.TaskId, a.Attempt) }
	defer cancel()
	// Updates already waiting when one is written go out in the same
	// stream write (one frame, one encryption, one syscall): a short task's
	// accepted, running and final updates often travel together.
	bw := bufio.NewWriter(rw)
	write := func(u *pb.TaskUpdate) error {
		if err := protocol.WriteMsg(bw, u); err != nil {
			return err
		}
		if len(t.updates) > 0 {
			return nil
		}
		return bw.Flush()
	}
	if err := write(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_ACCEPTED}); err != nil {
		cancel()
	}
	// The submitter may send nothing more; a read returning means it
	// closed or reset the stream: cancel the task.
	go func() {
		var b [1]byte
		if _, err := rw.Read(b[:]); err != nil {
			cancel()
		}
	}()
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	for {
		select {
		case u, ok := <-t.updates:
			if !ok {
				return
			}
			if err := write(u); err != nil {
				cancel()
				p.drain(t)
				return
			}
		case <-hb.C:
			if err := write(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_HEARTBEAT}); err != nil {
				cancel()
				p.drain(t)
				return
			}
		}
	}
}

// drain discards the rest of a task's updates once nobody listens.
// It ends when the task closes updates or the node stops (the task's sends
// give up then too, and one admitted as the workers stopped never closes
// updates). A plain goroutine, not goRun: stream handlers call this, and
// they may run while Close waits for the node's goroutines.
func (p *provider) drain(t *providerTask) {
	go func() {
		for {
			select {
			case _, ok := <-t.updates:
				if !ok {
					return
				}
			case <-p.n.ctx.Done():
				return
			}
		}
	}()
}

func (p *provider) workerLoop(ctx context.Context) {
	for {
		p.mu.Lock()
		owner, a, ok := p.queue.Pop()
		var t *providerTask
		if ok {
			t = p.tasks[provKey{owner, taskKey{a.JobId, a.TaskId, a.Attempt}}]
			p.running++
		}
		p.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		// Wake another worker in case more is queued.
		select {
		case p.wake <- struct{}{}:
		default:
		}
		p.n.AdChanged()
		batch := []*providerTask{t}
		var br batchRunner
		batched := false
		if t != nil {
			br, batched = p.batchRunnerFor(t.tmpl)
		}
		if batched {
			p.mu.Lock()
			for _, more := range p.queue.PopJob(owner, a.JobId, a.TemplateId, maxBatch-1) {
				if mt := p.tasks[provKey{owner, taskKey{more.JobId, more.TaskId, more.Attempt}}]; mt != nil {
					batch = append(batch, mt)
					p.running++
				}
			}
			p.mu.Unlock()
		}
		switch {
		case t == nil:
		case len(batch) > 1:
			p.runBatch(br, batch)
		default:
			p.runTask(t)
		}
		p.mu.Lock()
		for _, bt := range batch {
			if bt == nil {
				continue
			}
			p.running--
			delete(p.tasks, provKey{bt.from, taskKey{bt.a.JobId, bt.a.TaskId, bt.a.Attempt}})
		}
		if t != nil {
			p.releaseIfDrained(t.from, t.a.JobId)
		}
		p.mu.Unlock()
		p.n.AdChanged()
	}
}

// releaseIfDrained drops a job's bid reservations once none of its tasks
// is queued or running here. The submitter placed what it wanted from
// those bids long ago (a job's later tasks come on the lease, without a
// bid); what is left is capacity it will never use, and it counted
// against every other bid until it expired: after each 1000-task job of
// BenchmarkSchedulingThroughput 27–32 of 160 slots at 10 providers, 128 of
// 800 at 50, held for 5 s, so the next job ran on 80–85 % of the pool.
// Reservations are the submitter's (owner's), and so is the check. p.mu is
// held.
func (p *provider) releaseIfDrained(owner peer.ID, jobID string) {
	for k, t := range p.tasks {
		if k.job == jobID && t.from == owner {
			return
		}
	}
	p.queue.Release(owner, jobID)
}

// batchRunner is an executor that runs several tasks of one job as one
// batch (the warm Stable Diffusion pool: replicas of one prompt become one
// pipeline call).
type batchRunner interface {
	RunBatch(ctx context.Context, tasks []*inference.Task, dirs []string, progress func(i int, f float64)) ([]*inference.Result, error)
}

// maxBatch bounds how many queued replicas of one job run as one batch.
const maxBatch = 4

// runTask runs one assignment and sends its updates, ending with a signed
// result. It always closes t.updates.
func (p *provider) runTask(t *providerTask) {
	defer close(t.updates)
	res := p.newResult(t)
	task, dir, ex, err := p.prepare(t)
	var out *inference.Result
	if err == nil {
		var lastProgress time.Time
		out, err = ex.Run(t.ctx, task, dir, func(f float64) { p.progress(t, &lastProgress, f) })
	}
	logTail, err := p.complete(t, res, dir, out, err)
	p.report(t, res, logTail, err)
}

// runBatch runs assignments of one job on a batchRunner as one batch and
// reports each task on its own. It always closes every t.updates.
func (p *provider) runBatch(br batchRunner, ts []*providerTask) {
	ctx, cancel := context.WithCancel(p.n.ctx)
	defer cancel()
	var tasks []*inference.Task
	var dirs []string
	var ok []*providerTask
	results := map[*providerTask]*pb.TaskResult{}
	for _, t := range ts {
		res := p.newResult(t)
		results[t] = res
		task, dir, _, err := p.prepare(t)
		if err != nil {
			logTail, err := p.complete(t, res, dir, nil, err)
			p.report(t, res, logTail, err)
			close(t.updates)
			continue
		}
		tasks, dirs, ok = append(tasks, task), append(dirs, dir), append(ok, t)
	}
	if len(ok) == 0 {
		return
	}
	// The batch stops only when every one of its tasks is cancelled.
	var cancelled atomic.Int32
	for _, t := range ok {
		stop := context.AfterFunc(t.ctx, func() {
			if int(cancelled.Add(1)) == len(ok) {
				cancel()
			}
		})
		defer stop()
	}
	last := make([]time.Time, len(ok))
	outs, err := br.RunBatch(ctx, tasks, dirs, func(i int, f float64) {
		if i >= 0 && i < len(ok) {
			p.progress(ok[i], &last[i], f)
		}
	})
	for i, t := range ok {
		var out *inference.Result
		terr := err
		if err == nil && i < len(outs) {
			out = outs[i]
			if out != nil && out.ExitCode != 0 {
				terr = fmt.Errorf("%w: exit code %d", inference.ErrExit, out.ExitCode)
			}
		}
		if t.ctx.Err() != nil && terr == nil {
			terr = inference.ErrCancelled
		}
		logTail, terr := p.complete(t, results[t], dirs[i], out, terr)
		p.report(t, results[t], logTail, terr)
		close(t.updates)
	}
}

func (p *provider) newResult(t *providerTask) *pb.TaskResult {
	a := t.a
	return &pb.TaskResult{JobId: a.JobId, TaskId: a.TaskId, Attempt: a.Attempt, Provider: []byte(p.n.id),
		Stats: &pb.TaskStats{QueuedMs: t.queued.UnixMilli(), StartedMs: p.n.now().UnixMilli()}}
}

func (p *provider) progress(t *providerTask, last *time.Time, f float64) {
	if now := time.Now(); now.Sub(*last) >= progressInterval || f >= 1 {
		*last = now
		p.send(t, &pb.TaskUpdate{State: pb.TaskState_TASK_STATE_RUNNING, Progress: f})
	}
}

// report signs the result and sends the final update.
func (p *provider) report(t *providerTask, res *pb.TaskResult, logTail []byte, err error) {
	a := t.a
	res.Stats.FinishedMs = p.n.now().UnixMilli()
	state := pb.TaskState_TASK_STATE_SUCCEEDED
	switch {
	case err != nil && t.ctx.Err() != nil:
		state = pb.TaskState_TASK_STATE_CANCELLED
		res.Error = "cancelled"
	case err != nil:
		state = pb.TaskState_TASK_STATE_FAILED
		res.Error = clipString(err.Error(), protocol.MaxStringField*2)
	default:
		res.Success = true
	}
	p.n.log.Info("task finished", "job", a.JobId, "task", a.TaskId, "attempt", a.Attempt, "state", state, "err", err,
		"took", time.Duration(res.Stats.FinishedMs-res.Stats.StartedMs)*time.Millisecond)
	signed, serr := protocol.SignResult(p.n.key, res)
	if serr != nil {
		p.n.log.Error("sign result", "err", serr)
		return
	}
	u := &pb.TaskUpdate{State: state, Result: signed, Message: string(tailBytes(logTail, maxLogInUpdate))}
	if res.Success && res.Stats.OutputBytes <= protocol.MaxInlineResult {
		u.InlineCar = p.n.results.inlineCAR(t.ctx, res.RootCid)
	}
	select {
	case t.updates <- u:
	case <-p.n.ctx.Done():
	}
}

// prepare validates the assignment, makes the task dir, fetches the input
// and says the task runs.
func (p *provider) prepare(t *providerTask) (*inference.Task, string, inference.Executor, error) {
	a, tmpl := t.a, t.tmpl
	ex, app, _ := p.pickExecutor(tmpl)
	app.Command = p.expandCommand(app.Command)
	timeout := time.Duration(a.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = defaultTaskLimit
	}
	task := &inference.Task{
		JobID: a.JobId, TaskID: a.TaskId, Index: int(a.Index), Count: int(a.Count), Attempt: int(a.Attempt),
		Seed: a.Seed, App: app, Params: p.mapModel(tmpl, a.AppParams), Timeout: timeout,
	}
	if r := a.Resources; r != nil {
		task.Resources = inference.Resources{CPUMillis: r.CpuMillis, Memory: r.Memory, GPUs: int(r.Gpus), GPUMemory: r.GpuMemory}
	}
	if err := os.MkdirAll(p.taskRoot, 0o755); err != nil {
		return nil, "", nil, fmt.Errorf("task root: %w", err)
	}
	dir, err := inference.PrepareTaskDir(p.taskRoot, task)
	if err != nil {
		return nil, "", nil, err
	}
	if len(a.InputCid) > 0 {
		if err := p.n.results.fetchInput(t.ctx, a, filepath.Join(dir, "input")); err != nil {
			return nil, dir, nil, fmt.Errorf("input: %w", err)
		}
	}
	p.send(t, &pb.TaskUpdate{State: pb.TaskState_TASK_STATE_RUNNING})
	return task, dir, ex, nil
}

// complete records the run in res, imports output/ on success and removes
// the task dir. It returns the log tail and the task's error.
func (p *provider) complete(t *providerTask, res *pb.TaskResult, dir string, out *inference.Result, runErr error) ([]byte, error) {
	defer func() {
		if dir == "" {
			return
		}
		if err := inference.CleanupTaskDir(dir); err != nil {
			p.n.log.Warn("cleanup task dir", "dir", dir, "err", err)
		}
	}()
	var logTail []byte
	if out != nil {
		logTail = out.Log
		res.Stats.ExitCode = int32(out.ExitCode)
		if !out.Started.IsZero() {
			res.Stats.StartedMs = out.Started.UnixMilli()
		}
	}
	if runErr != nil {
		return logTail, runErr
	}
	root, size, err := p.n.results.importOutput(t.ctx, filepath.Join(dir, "output"), t.a)
	if err != nil {
		return logTail, fmt.Errorf("import output: %w", err)
	}
	res.RootCid = root
	res.Stats.OutputBytes = size
	return logTail, nil
}

// batchRunnerFor returns the executor of template t if it batches.
func (p *provider) batchRunnerFor(t *jobspec.Template) (batchRunner, bool) {
	ex, _, ok := p.pickExecutor(t)
	if !ok {
		return nil, false
	}
	br, ok := ex.(batchRunner)
	return br, ok
}

// send delivers a non-final update unless the task is gone.
func (p *provider) send(t *providerTask, u *pb.TaskUpdate) {
	select {
	case t.updates <- u:
	case <-t.ctx.Done():
	default: // a slow submitter misses a progress tick, not the result
	}
}

// expandCommand fills the placeholders of template commands.
func (p *provider) expandCommand(cmd []string) []string {
	out := make([]string, len(cmd))
	for i, c := range cmd {
		c = strings.ReplaceAll(c, "{python}", p.n.cfg.Python)
		if strings.Contains(c, "{sdworker}") { // resolving it stats files
			c = strings.ReplaceAll(c, "{sdworker}", p.n.sdWorkerPath())
		}
		out[i] = c
	}
	return out
}

func clipString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func tailBytes(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[len(b)-n:]
}

var errNotProvider = errors.New("node does not provide")
