package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/bucket"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// Submitter side: the scheduler.Coordinator is driven from one goroutine
// (loop); everything that talks to the network runs in goroutines that
// report back through the inbox. The coordinator's actions are carried out
// by apply.

const (
	tickEvery      = 250 * time.Millisecond
	bidWait        = 2 * time.Second
	defaultJobTTL  = 24 * time.Hour
	inboxCapacity  = 4096
	assignDialWait = 10 * time.Second
	// jobGCEvery: how often finished jobs whose bucket expired are
	// forgotten (coordinator, state DB, logs).
	jobGCEvery = time.Minute
	// persistEvery: how often the snapshots of jobs whose tasks changed
	// are written (a job's status changes are written at once). A
	// snapshot is the whole job, so writing it each tick cost a large
	// job more than its tasks' own bookkeeping; a restart redoes at most
	// this much of the job's progress.
	persistEvery = time.Second
)

type attemptKey struct {
	task    string
	attempt int
}

// jobMeta is what the node keeps about a job beside the coordinator's
// snapshot: the record (tasks, params, inputs) for the manifest and inputs.
type jobMeta struct {
	Record    scheduler.JobRecord `json:"record"`
	Template  string              `json:"template"`
	CreatedAt time.Time           `json:"createdAt"`
	BucketTTL time.Duration       `json:"bucketTtl"`
	LocalDir  string              `json:"localDir,omitempty"`
	// Started/finished times per task index, from results.
	Stats map[int]*pb.TaskStats `json:"stats,omitempty"`
}

type submitter struct {
	n      *Node
	coord  *scheduler.Coordinator
	reg    *jobspec.Registry
	limits jobspec.Limits
	db     *stateDB
	hub    *eventHub
	inbox  chan func(now time.Time) []scheduler.Action

	// Owned by the loop goroutine.
	attempts map[attemptKey]context.CancelFunc
	inputs   map[string]cid.Cid  // task ID → input CID
	dirty    map[string]struct{} // jobs changed since they were last persisted

	// inlined holds the attempts (attemptKey) whose result came inline
	// and is stored already: their FetchResult completes at once.
	inlined sync.Map

	// persistQ carries job state to the persister goroutine, in order.
	// The scheduler goroutine owns the persister: it closes persistQ when
	// its loop ends and waits for the persister to drain it.
	persistQ chan persistBatch

	sessMu         sync.Mutex // guards sessions, noSessions, sessionsClosed and each session's refs and idle timer
	sessions       map[peer.ID]*taskSession
	noSessions     map[peer.ID]time.Time // providers without task sessions, until when
	sessionsClosed bool                  // the node is stopping: no new sessions

	mu        sync.Mutex // guards meta, metaDirty and logs (read by HTTP handlers)
	meta      map[string]*jobMeta
	metaDirty map[string]struct{} // jobs whose task timings changed since the last flush
	logs      map[string]map[string]api.TaskLog
}

func newSubmitter(n *Node, reg *jobspec.Registry, db *stateDB, cfg scheduler.Config) *submitter {
	cfg.Self = n.id
	return &submitter{
		n:          n,
		coord:      scheduler.NewCoordinator(cfg),
		reg:        reg,
		limits:     jobspec.DefaultLimits(),
		db:         db,
		hub:        newEventHub(),
		inbox:      make(chan func(time.Time) []scheduler.Action, inboxCapacity),
		attempts:   map[attemptKey]context.CancelFunc{},
		sessions:   map[peer.ID]*taskSession{},
		noSessions: map[peer.ID]time.Time{},
		inputs:     map[string]cid.Cid{},
		dirty:      map[string]struct{}{},
		meta:       map[string]*jobMeta{},
		metaDirty:  map[string]struct{}{},
		persistQ:   make(chan persistBatch, 64),
		logs:       map[string]map[string]api.TaskLog{},
	}
}

// start restores persisted jobs and starts the loop.
func (s *submitter) start() error {
	metas, snaps, err := s.db.loadJobs()
	if err != nil {
		return fmt.Errorf("restore jobs: %w", err)
	}
	var restored []scheduler.Action
	now := s.n.now()
	for id, snap := range snaps {
		m, ok := metas[id]
		if !ok {
			s.n.log.Warn("job snapshot without metadata, skipped", "job", id)
			continue
		}
		acts, err := s.coord.Restore(now, snap)
		if err != nil {
			s.n.log.Error("restore job", "job", id, "err", err)
			continue
		}
		s.meta[id] = m
		restored = append(restored, acts...)
		if j, ok := s.coord.Job(id); ok {
			for _, t := range j.Tasks {
				if t.Index >= 0 && t.Index < len(m.Record.Tasks) && m.Record.Tasks[t.Index].Input != nil {
					in := m.Record.Tasks[t.Index].Input
					c, err := s.n.results.importInput(context.Background(), in.Name, in.Data)
					if err != nil {
						return fmt.Errorf("restore input of %s: %w", t.ID, err)
					}
					s.inputs[t.ID] = c
				}
			}
		}
		s.n.log.Info("job restored", "job", id)
	}
	s.n.goRun("scheduler", func(ctx context.Context) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.persister()
		}()
		s.apply(ctx, restored)
		s.loop(ctx)
		s.closeSessions()
		close(s.persistQ)
		<-done
	})
	return nil
}

// do runs f on the loop goroutine (f calls the coordinator) and applies the
// actions it returns. It drops f when the node is stopping.
func (s *submitter) do(f func(now time.Time) []scheduler.Action) {
	select {
	case s.inbox <- f:
	case <-s.n.ctx.Done():
	}
}

// call runs f on the loop goroutine and waits for it.
func (s *submitter) call(ctx context.Context, f func(now time.Time) []scheduler.Action) error {
	done := make(chan struct{})
	s.do(func(now time.Time) []scheduler.Action {
		defer close(done)
		return f(now)
	})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.n.ctx.Done():
		return errors.New("node is shutting down")
	}
}

func (s *submitter) loop(ctx context.Context) {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	lastGC, lastFlush := s.n.now(), s.n.now()
	for {
		select {
		case <-ctx.Done():
			for _, cancel := range s.attempts {
				cancel()
			}
			s.flush()
			return
		case f := <-s.inbox:
			s.apply(ctx, f(s.n.now()))
		case <-t.C:
			now := s.n.now()
			// An idle submitter does not copy the capacity table four
			// times a second; submit hands the coordinator a fresh one.
			if s.coord.Live() {
				s.apply(ctx, s.coord.Tick(now, s.tableWithSelf()))
			}
			if now.Sub(lastFlush) >= persistEvery {
				lastFlush = now
				s.flush()
			}
			if now.Sub(lastGC) >= jobGCEvery {
				lastGC = now
				s.gcJobs(now)
			}
		}
	}
}

// tableWithSelf is the capacity table plus this node's own ad, so that a
// node can run its own tasks.
func (s *submitter) tableWithSelf() []scheduler.Entry {
	entries := s.n.table.Snapshot()
	if self := s.n.selfAd(); self != nil && s.n.cfg.Provide {
		now := s.n.now()
		entries = append(entries, scheduler.Entry{Peer: s.n.id, Ad: self.ad, Signed: self.signed, Received: now, Expires: now.Add(s.n.cfg.AdTTL)})
	}
	return entries
}

func (s *submitter) apply(ctx context.Context, acts []scheduler.Action) {
	// Jobs with a job-level change, persisted once every action has been
	// applied: the actions that start network work (bids, assignments) go
	// first, instead of waiting for a 1 000-task snapshot on submit.
	var changed []string
	defer func() {
		if len(changed) == 0 {
			return
		}
		s.flush()
		for _, id := range changed {
			if st, ok := s.coord.Status(id); ok && isTerminal(st) {
				s.forgetAttempts(id)
			}
		}
	}()
	for _, a := range acts {
		switch a := a.(type) {
		case scheduler.RequestBids:
			s.n.goRun("bids", func(ctx context.Context) { s.requestBids(ctx, a) })
		case scheduler.Assign:
			actx, cancel := context.WithCancel(ctx)
			k := attemptKey{a.TaskID, a.Attempt}
			if old, ok := s.attempts[k]; ok {
				old()
			}
			s.attempts[k] = cancel
			if c, ok := s.inputs[a.TaskID]; ok {
				a.Assignment.InputCid = c.Bytes()
				a.Assignment.InputFrom = []byte(s.n.id)
			}
			s.n.goRun("assign", func(context.Context) { s.runAssign(actx, a) })
		case scheduler.CancelTask:
			k := attemptKey{a.TaskID, a.Attempt}
			if cancel, ok := s.attempts[k]; ok {
				cancel()
				delete(s.attempts, k)
			}
			s.n.goRun("cancel", func(ctx context.Context) { s.sendCancel(ctx, a) })
		case scheduler.FetchResult:
			if _, ok := s.inlined.LoadAndDelete(attemptKey{a.TaskID, a.Attempt}); ok {
				s.apply(ctx, s.coord.OnFetched(s.n.now(), a.TaskID, a.Attempt, true, ""))
				continue
			}
			s.n.goRun("fetch", func(ctx context.Context) {
				err := s.n.results.fetchResult(ctx, a.Root, a.Peer)
				msg := ""
				if err != nil {
					msg = err.Error()
					s.n.log.Warn("result fetch failed", "job", a.JobID, "task", a.TaskID, "provider", a.Peer, "err", err)
				}
				s.do(func(now time.Time) []scheduler.Action {
					return s.coord.OnFetched(now, a.TaskID, a.Attempt, err == nil, msg)
				})
			})
		case scheduler.AssembleJob:
			s.n.goRun("assemble", func(ctx context.Context) {
				root, url, err := s.assemble(ctx, a)
				s.do(func(now time.Time) []scheduler.Action {
					return s.coord.OnAssembled(now, a.JobID, root, url, err)
				})
			})
		case scheduler.JobChanged:
			// A snapshot is the whole job, so persisting on every change
			// would cost O(tasks²) per job: changes are batched (persistEvery),
			// and job-level changes (status, terminal) are written at once.
			if a.Event.Type == "job" {
				s.dirty[a.JobID] = struct{}{}
				if !slices.Contains(changed, a.JobID) {
					changed = append(changed, a.JobID)
				}
			} else if a.Event.Type != "progress" {
				s.dirty[a.JobID] = struct{}{}
			}
			s.hub.publish(a.JobID, a.Event)
		}
	}
}

func isTerminal(status string) bool {
	return status == api.JobCompleted || status == api.JobFailed || status == api.JobCancelled
}

// forgetAttempts cancels and forgets the attempts of a job that ended, and
// its tasks' inputs. One
// pass over the attempts (a pass per task made a 1 000-task job's end cost
// a million map steps), and no view of the job is built for it.
func (s *submitter) forgetAttempts(jobID string) {
	s.inlined.Range(func(k, _ any) bool {
		if scheduler.JobOfTask(k.(attemptKey).task) == jobID {
			s.inlined.Delete(k)
		}
		return true
	})
	for k, cancel := range s.attempts {
		if scheduler.JobOfTask(k.task) == jobID {
			cancel()
			delete(s.attempts, k)
		}
	}
	// No attempt will need its task's input again.
	for task := range s.inputs {
		if scheduler.JobOfTask(task) == jobID {
			delete(s.inputs, task)
		}
	}
}

// gcJobs forgets finished jobs whose bucket has expired (the job's bucket
// TTL after it finished): the coordinator's record, the persisted state,
// metadata and logs. Without it a long-running node would keep every job
// it ever ran in memory. It runs on the loop goroutine, and decides from
// each finished job's end time alone: building every retained job's view
// (all its tasks) once a minute to read two fields cost O(all tasks kept).
func (s *submitter) gcJobs(now time.Time) int {
	removed := 0
	var gone []string
	for _, j := range s.coord.Ended() {
		if j.FinishedAt.IsZero() {
			continue
		}
		s.mu.Lock()
		ttl := defaultJobTTL
		if m := s.meta[j.ID]; m != nil && m.BucketTTL > 0 {
			ttl = m.BucketTTL
		}
		s.mu.Unlock()
		if now.Before(j.FinishedAt.Add(ttl)) {
			continue
		}
		s.coord.Remove(j.ID)
		delete(s.dirty, j.ID)
		s.mu.Lock()
		delete(s.meta, j.ID)
		delete(s.metaDirty, j.ID)
		delete(s.logs, j.ID)
		s.mu.Unlock()
		removed++
		gone = append(gone, j.ID)
		s.n.log.Info("job forgotten: its bucket expired", "job", j.ID, "finished", j.FinishedAt)
	}
	if len(gone) > 0 {
		// Through the persister, after any write of these jobs it holds.
		s.persistQ <- persistBatch{deletes: gone}
	}
	return removed
}

// persistBatch is job state for the persister: metadata and snapshots to
// write, jobs to delete.
type persistBatch struct {
	metas, snaps map[string][]byte
	deletes      []string
}

// flush hands the jobs changed since the last flush to the persister. The
// snapshots are taken here, on the loop goroutine; the persister syncs the
// blockstore before it writes them. Results are pinned without waiting for
// the disk (bucket.WithDeferredSync), and every result a snapshot records
// as fetched (or a bucket as assembled) was written before the snapshot was
// taken, so that sync makes them durable before the snapshot claims them.
// One sync covers every result since the last. The loop does not wait for
// the disk: a job's events go out at once.
func (s *submitter) flush() {
	b := persistBatch{snaps: make(map[string][]byte, len(s.dirty))}
	s.mu.Lock()
	b.metas = make(map[string][]byte, len(s.metaDirty))
	for id := range s.metaDirty {
		if m := s.meta[id]; m != nil {
			if mb, err := json.Marshal(m); err == nil {
				b.metas[id] = mb
			} else {
				s.n.log.Error("encode job metadata", "job", id, "err", err)
			}
		}
		delete(s.metaDirty, id)
	}
	s.mu.Unlock()
	for id := range s.dirty {
		snap, err := s.coord.Export(id)
		if err != nil {
			s.n.log.Error("export job", "job", id, "err", err)
		} else {
			b.snaps[id] = snap
		}
		delete(s.dirty, id)
	}
	if len(b.snaps) > 0 || len(b.metas) > 0 {
		s.persistQ <- b
	}
}

// persister writes batches in order until persistQ is closed.
func (s *submitter) persister() {
	for b := range s.persistQ {
		if len(b.snaps) > 0 || len(b.metas) > 0 {
			if err := s.n.results.store.Sync(); err != nil {
				// The old snapshots stay: they do not claim what may be
				// lost. (A failed sync is sticky in the store.)
				s.n.log.Error("sync blockstore; job state not persisted", "err", err)
				continue
			}
		}
		for id, mb := range b.metas {
			if err := s.db.putMetaBytes(id, mb); err != nil {
				s.n.log.Warn("persist task timings", "job", id, "err", err)
			}
		}
		for id, snap := range b.snaps {
			if err := s.db.putSnapshot(id, snap); err != nil {
				s.n.log.Error("persist job", "job", id, "err", err)
			}
		}
		for _, id := range b.deletes {
			if err := s.db.deleteJob(id); err != nil {
				s.n.log.Warn("forget expired job", "job", id, "err", err)
			}
		}
	}
}

func (s *submitter) persist(jobID string) {
	snap, err := s.coord.Export(jobID)
	if err != nil {
		s.n.log.Error("export job", "job", jobID, "err", err)
		return
	}
	if err := s.db.putSnapshot(jobID, snap); err != nil {
		s.n.log.Error("persist job", "job", jobID, "err", err)
	}
}

// dial opens a task stream to p, or an in-memory pipe to this node's own
// provider.
func (s *submitter) dial(ctx context.Context, p peer.ID) (streamLike, func() error, error) {
	if p == s.n.id {
		if s.n.provider == nil {
			return nil, nil, errNotProvider
		}
		a, b := net.Pipe()
		s.n.goRun("self-task", func(context.Context) { s.n.provider.serve(p, b, b.Close) })
		go func() { <-ctx.Done(); a.Close() }()
		return a, a.Close, nil
	}
	dctx, cancel := context.WithTimeout(ctx, assignDialWait)
	defer cancel()
	st, err := s.n.host.NewStream(dctx, p, protocol.TaskProtocol)
	if err != nil {
		return nil, nil, err
	}
	go func() { <-ctx.Done(); st.Reset() }()
	return st, st.Reset, nil
}

func (s *submitter) requestBids(ctx context.Context, a scheduler.RequestBids) {
	ctx, cancel := context.WithTimeout(ctx, bidWait)
	defer cancel()
	var mu sync.Mutex
	bids := map[peer.ID]*pb.Bid{}
	var wg sync.WaitGroup
	for _, p := range a.Peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := s.askBid(ctx, p, a.Req)
			if err != nil {
				s.n.log.Debug("bid request", "peer", p, "err", err)
				return
			}
			mu.Lock()
			bids[p] = b
			mu.Unlock()
		}()
	}
	wg.Wait()
	s.do(func(now time.Time) []scheduler.Action { return s.coord.OnBids(now, a, bids) })
}

func (s *submitter) askBid(ctx context.Context, p peer.ID, req *pb.BidRequest) (*pb.Bid, error) {
	if p == s.n.id {
		if s.n.provider == nil {
			return nil, errNotProvider
		}
		return s.n.provider.bid(s.n.id, req), nil
	}
	st, _, err := s.dial(ctx, p)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := protocol.WriteMsg(st, &pb.TaskRequest{Body: &pb.TaskRequest_BidRequest{BidRequest: req}}); err != nil {
		return nil, err
	}
	var b pb.Bid
	if err := protocol.ReadMsg(bufio.NewReader(st), protocol.MaxTaskUpdate, &b); err != nil {
		return nil, err
	}
	if len(b.Reason) > protocol.MaxStringField || b.Slots < 0 || b.PriceMicros < 0 || b.EtaMs < 0 {
		return nil, fmt.Errorf("bid from %s out of range", p)
	}
	return &b, nil
}

func (s *submitter) sendCancel(ctx context.Context, a scheduler.CancelTask) {
	if a.Peer == s.n.id {
		if s.n.provider != nil {
			s.n.provider.cancel(s.n.id, a.JobID, a.TaskID, int32(a.Attempt))
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, _, err := s.dial(ctx, a.Peer)
	if err != nil {
		return
	}
	defer st.Close()
	_ = protocol.WriteMsg(st, &pb.TaskRequest{Body: &pb.TaskRequest_Cancel{Cancel: &pb.Cancel{JobId: a.JobID, TaskId: a.TaskID, Attempt: int32(a.Attempt)}}})
}

// runAssign sends one assignment and relays the provider's updates to the
// coordinator until the final one, the stream breaking, or ctx (the
// coordinator cancelled the attempt).
func (s *submitter) runAssign(ctx context.Context, a scheduler.Assign) {
	fail := func(reason string) {
		if ctx.Err() != nil {
			return // cancelled by the coordinator: it already moved on
		}
		s.do(func(now time.Time) []scheduler.Action {
			return s.coord.OnAttemptFailed(now, a.TaskID, a.Attempt, a.Peer, reason)
		})
	}
	ts, err := s.session(a.Peer)
	if errors.Is(err, errNoSessions) {
		s.runAssignStream(ctx, a, fail)
		return
	}
	if err != nil {
		fail("dial provider: " + err.Error())
		return
	}
	defer s.release(ts)
	k := taskKey{a.JobID, a.TaskID, int32(a.Attempt)}
	reg, err := ts.register(k)
	if err != nil {
		fail(err.Error())
		return
	}
	done := false
	defer func() {
		ts.unregister(k, reg)
		if !done && !ts.broken() {
			// The coordinator gave up on the attempt: the provider stops
			// it (on a stream of its own, closing the stream said so).
			_ = ts.send(&pb.TaskRequest{Body: &pb.TaskRequest_Cancel{Cancel: &pb.Cancel{JobId: a.JobID, TaskId: a.TaskID, Attempt: int32(a.Attempt)}}})
		}
	}()
	if err := ts.send(&pb.TaskRequest{Body: &pb.TaskRequest_Assignment{Assignment: a.Assignment}}); err != nil {
		fail("send assignment: " + err.Error())
		return
	}
	next := func() (*pb.TaskUpdate, error) {
		// An update already routed comes before the news that the
		// session ended: the reader routes before it gives up.
		select {
		case u := <-reg.updates:
			return u, nil
		default:
		}
		select {
		case u := <-reg.updates:
			return u, nil
		case <-ts.dead:
			return nil, ts.deadErr
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	done = s.relayUpdates(ctx, a, next, fail)
}

// runAssignStream is runAssign over a stream of the attempt's own, for
// providers without task sessions.
func (s *submitter) runAssignStream(ctx context.Context, a scheduler.Assign, fail func(string)) {
	st, _, err := s.dial(ctx, a.Peer)
	if err != nil {
		fail("dial provider: " + err.Error())
		return
	}
	defer st.Close()
	if err := protocol.WriteMsg(st, &pb.TaskRequest{Body: &pb.TaskRequest_Assignment{Assignment: a.Assignment}}); err != nil {
		fail("send assignment: " + err.Error())
		return
	}
	r := bufio.NewReader(st)
	s.relayUpdates(ctx, a, func() (*pb.TaskUpdate, error) {
		var u pb.TaskUpdate
		if err := protocol.ReadMsg(r, protocol.MaxTaskUpdate, &u); err != nil {
			return nil, err
		}
		return &u, nil
	}, fail)
}

// relayUpdates relays the provider's updates of attempt a (from next) to
// the coordinator until the final one, a rejection, or an error. It
// reports whether the provider ended the attempt (final or rejected).
func (s *submitter) relayUpdates(ctx context.Context, a scheduler.Assign, next func() (*pb.TaskUpdate, error), fail func(string)) bool {
	first := true
	for {
		u, err := next()
		if err != nil {
			fail("provider stream: " + err.Error())
			return false
		}
		if first {
			first = false
			// The reply is ACCEPTED or REJECTED; a provider that reports
			// the task running (a heartbeat that overtook ACCEPTED, as
			// providers of the fourth session's build could send) has
			// accepted it, and the update counts as progress too.
			st := u.State
			accepted := st == pb.TaskState_TASK_STATE_ACCEPTED || st == pb.TaskState_TASK_STATE_RUNNING || st == pb.TaskState_TASK_STATE_HEARTBEAT
			reason := clipString(u.Message, protocol.MaxStringField)
			s.do(func(now time.Time) []scheduler.Action {
				return s.coord.OnAssignReply(now, a.TaskID, a.Attempt, a.Peer, accepted, reason)
			})
			if !accepted {
				return true
			}
			if st == pb.TaskState_TASK_STATE_ACCEPTED {
				continue
			}
		}
		switch u.State {
		case pb.TaskState_TASK_STATE_ACCEPTED:
			// After a running report taken for acceptance: nothing new.
		case pb.TaskState_TASK_STATE_RUNNING, pb.TaskState_TASK_STATE_HEARTBEAT:
			state, progress := u.State, min(max(u.Progress, 0), 1)
			s.do(func(now time.Time) []scheduler.Action {
				return s.coord.OnProgress(now, a.TaskID, a.Attempt, a.Peer, state, progress)
			})
		case pb.TaskState_TASK_STATE_SUCCEEDED, pb.TaskState_TASK_STATE_FAILED, pb.TaskState_TASK_STATE_CANCELLED:
			s.finish(ctx, a, u, fail)
			return true
		default:
			fail(fmt.Sprintf("provider sent unexpected state %v", u.State))
			return false
		}
	}
}

func (s *submitter) finish(ctx context.Context, a scheduler.Assign, u *pb.TaskUpdate, fail func(string)) {
	res, err := s.n.keys.VerifyResult(u.Result, a.Peer, a.JobID, a.TaskID, int32(a.Attempt))
	if err != nil {
		fail("invalid result: " + err.Error())
		return
	}
	s.mu.Lock()
	if s.logs[a.JobID] == nil {
		s.logs[a.JobID] = map[string]api.TaskLog{}
	}
	s.logs[a.JobID][a.TaskID] = api.TaskLog{TaskID: a.TaskID, Index: int(a.Assignment.Index), Attempt: a.Attempt, Provider: a.Peer.String(), Log: u.Message}
	if m := s.meta[a.JobID]; m != nil && res.Success {
		if m.Stats == nil {
			m.Stats = map[int]*pb.TaskStats{}
		}
		m.Stats[int(a.Assignment.Index)] = res.Stats
		// Kept with the job (written at the next flush) so a bucket
		// assembled after a restart still has every task's timings.
		s.metaDirty[a.JobID] = struct{}{}
	}
	s.mu.Unlock()
	if !res.Success {
		reason := res.Error
		if reason == "" {
			reason = u.State.String()
		}
		fail(reason)
		return
	}
	if _, err := cid.Cast(res.RootCid); err != nil {
		fail("result root cid: " + err.Error())
		return
	}
	if len(u.InlineCar) > 0 {
		// A bad inline CAR costs nothing but this try: the result is
		// fetched from the provider as usual, where lies fail the attempt.
		if err := s.n.results.importInline(ctx, res.RootCid, u.InlineCar); err != nil {
			s.n.log.Warn("inline result refused; fetching it", "job", a.JobID, "task", a.TaskID, "provider", a.Peer, "err", err)
		} else {
			s.inlined.Store(attemptKey{a.TaskID, a.Attempt}, struct{}{})
		}
	}
	s.do(func(now time.Time) []scheduler.Action { return s.coord.OnResult(now, a.TaskID, a.Attempt, a.Peer, res) })
}

// assemble builds the job's bucket with its manifest.
func (s *submitter) assemble(ctx context.Context, a scheduler.AssembleJob) (string, string, error) {
	s.mu.Lock()
	m := s.meta[a.JobID]
	s.mu.Unlock()
	if m == nil {
		return "", "", fmt.Errorf("assemble %s: no job metadata", a.JobID)
	}
	man := bucket.Manifest{Job: a.JobID, Template: m.Template, CreatedAt: m.CreatedAt}
	entries := make([]bucket.Entry, 0, len(a.Results))
	man.Tasks = make([]bucket.ManifestTask, 0, len(a.Results))
	provNames := map[peer.ID]string{} // a job has a few providers and many tasks
	for _, r := range a.Results {
		c, err := cid.Cast(r.Root)
		if err != nil {
			return "", "", fmt.Errorf("assemble %s: task %s root: %w", a.JobID, r.TaskID, err)
		}
		entries = append(entries, bucket.Entry{Name: bucket.TaskDirName(r.Index), Root: c})
		prov, ok := provNames[r.Provider]
		if !ok {
			prov = r.Provider.String()
			provNames[r.Provider] = prov
		}
		mt := bucket.ManifestTask{Index: r.Index, TaskID: r.TaskID, Provider: prov, Attempt: r.Attempt, CID: c.String()}
		if r.Index >= 0 && r.Index < len(m.Record.Tasks) {
			mt.Seed = m.Record.Tasks[r.Index].Seed
			mt.Params = m.Record.Tasks[r.Index].Params
		}
		s.mu.Lock()
		if st := m.Stats[r.Index]; st != nil {
			mt.StartedAt = time.UnixMilli(st.StartedMs).UTC()
			mt.FinishedAt = time.UnixMilli(st.FinishedMs).UTC()
			mt.DurationMs = st.FinishedMs - st.StartedMs
		}
		s.mu.Unlock()
		man.Tasks = append(man.Tasks, mt)
	}
	root, err := s.n.results.assemble(ctx, entries, &man, m.BucketTTL, m.LocalDir)
	if err != nil {
		return "", "", fmt.Errorf("assemble %s: %w", a.JobID, err)
	}
	return root.String(), s.n.bucketURL(a.JobID), nil
}

// newJobID returns a sortable, unique job ID.
func newJobID(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	var ts [6]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint16(ts[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(ts[2:6], uint32(ms))
	return "j-" + hex.EncodeToString(ts[:]) + hex.EncodeToString(b[:])
}

func randomSeed() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}

// submit validates a job body, partitions it and hands it to the
// coordinator. It returns the new job, or a *jobspec.FieldError.
func (s *submitter) submit(ctx context.Context, body []byte) (api.Job, error) {
	spec, err := jobspec.Parse(body, s.reg, s.limits)
	if err != nil {
		return api.Job{}, err
	}
	spec.SetSeed(randomSeed())
	now := s.n.now()
	id := newJobID(now)
	inputs, err := s.n.jobInputs(ctx, spec)
	if err != nil {
		return api.Job{}, err
	}
	tasks, err := jobspec.Partition(spec, spec.Template, inputs)
	if err != nil {
		return api.Job{}, err
	}
	rec := scheduler.NewJobRecord(id, spec, tasks)
	m := &jobMeta{Record: rec, Template: spec.TemplateID, CreatedAt: now.UTC(), BucketTTL: defaultJobTTL}
	if spec.DataDestination.TTL > 0 {
		m.BucketTTL = spec.DataDestination.TTL
	}
	if spec.DataDestination.Descriptor == jobspec.DestLocal {
		m.LocalDir = spec.DataDestination.Path
	}
	taskInputs := map[string]cid.Cid{}
	for i, t := range tasks {
		if t.Input == nil {
			continue
		}
		c, err := s.n.results.importInput(ctx, t.Input.Name, t.Input.Data)
		if err != nil {
			return api.Job{}, fmt.Errorf("store input of task %d: %w", i, err)
		}
		taskInputs[fmt.Sprint(i)] = c
	}
	if err := s.db.putMeta(id, m); err != nil {
		return api.Job{}, fmt.Errorf("persist job: %w", err)
	}
	s.mu.Lock()
	s.meta[id] = m
	s.mu.Unlock()
	var job api.Job
	var subErr error
	err = s.call(ctx, func(now time.Time) []scheduler.Action {
		// The loop skips ticks while no job is live: place this one on
		// the table as it is now.
		ticked := s.coord.Tick(now, s.tableWithSelf())
		acts, err := s.coord.Submit(now, rec)
		if err != nil {
			subErr = err
			return ticked
		}
		acts = append(ticked, acts...)
		if j, ok := s.coord.Job(id); ok {
			job = j
			for _, t := range j.Tasks {
				if c, ok := taskInputs[fmt.Sprint(t.Index)]; ok {
					s.inputs[t.ID] = c
				}
			}
		}
		s.persist(id)
		return acts
	})
	if err == nil {
		err = subErr
	}
	if err != nil {
		_ = s.db.deleteJob(id)
		return api.Job{}, err
	}
	s.n.log.Info("job submitted", "job", id, "template", spec.TemplateID, "tasks", len(tasks))
	return job, nil
}

// job returns a job view, read on the loop goroutine.
func (s *submitter) job(ctx context.Context, id string) (api.Job, bool, error) {
	var j api.Job
	var ok bool
	err := s.call(ctx, func(time.Time) []scheduler.Action {
		j, ok = s.coord.Job(id)
		return nil
	})
	return j, ok, err
}

func (s *submitter) jobs(ctx context.Context) ([]api.Job, error) {
	var js []api.Job
	err := s.call(ctx, func(time.Time) []scheduler.Action {
		js = s.coord.Jobs()
		return nil
	})
	return js, err
}

func (s *submitter) cancelJob(ctx context.Context, id string) (api.Job, error) {
	var j api.Job
	var cerr error
	err := s.call(ctx, func(now time.Time) []scheduler.Action {
		acts, err := s.coord.Cancel(now, id)
		if err != nil {
			cerr = err
			return nil
		}
		j, _ = s.coord.Job(id)
		return acts
	})
	if err != nil {
		return j, err
	}
	return j, cerr
}

func (s *submitter) taskLogs(jobID string) []api.TaskLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.TaskLog
	for _, l := range s.logs[jobID] {
		out = append(out, l)
	}
	return out
}
