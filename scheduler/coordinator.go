package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Config tunes a Coordinator. Zero fields take the DefaultConfig values.
type Config struct {
	// BidTimeout is how long a bid round stays open.
	BidTimeout time.Duration
	// RebidInterval is the wait before asking again after a round placed
	// nothing (all declined or silent).
	RebidInterval time.Duration
	// HeartbeatTimeout: an attempt not heard from (progress, heartbeat,
	// assignment reply) for this long has failed.
	HeartbeatTimeout time.Duration
	// TopK is how many ranked candidates get a bid request per round.
	TopK int
	// DefaultMaxAttempts applies to jobs whose record sets none.
	DefaultMaxAttempts int
	// SpeculateAfter is the fraction of a job's other tasks that must be
	// completed before a straggler gets a speculative copy (1.0: all
	// others done).
	SpeculateAfter float64
	// SpeculateMinAge is how long a straggler must have been running;
	// negative disables speculation.
	SpeculateMinAge time.Duration
	// Self is this node's peer ID (a candidate like any other, with a
	// small locality bonus).
	Self peer.ID
	// Rand salts the tie-break shuffle (with the job ID).
	Rand uint64
}

// DefaultConfig returns the values used for zero Config fields.
func DefaultConfig() Config {
	return Config{
		BidTimeout:         3 * time.Second,
		RebidInterval:      2 * time.Second,
		HeartbeatTimeout:   30 * time.Second,
		TopK:               8,
		DefaultMaxAttempts: 3,
		SpeculateAfter:     1.0,
		SpeculateMinAge:    60 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.BidTimeout <= 0 {
		c.BidTimeout = d.BidTimeout
	}
	if c.RebidInterval <= 0 {
		c.RebidInterval = d.RebidInterval
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = d.HeartbeatTimeout
	}
	if c.TopK <= 0 {
		c.TopK = d.TopK
	}
	if c.DefaultMaxAttempts <= 0 {
		c.DefaultMaxAttempts = d.DefaultMaxAttempts
	}
	if c.SpeculateAfter <= 0 || c.SpeculateAfter > 1 {
		c.SpeculateAfter = d.SpeculateAfter
	}
	if c.SpeculateMinAge == 0 {
		c.SpeculateMinAge = d.SpeculateMinAge
	}
	return c
}

// Submission errors.
var (
	ErrDuplicateJob = errors.New("job already exists")
	ErrInvalidJob   = errors.New("invalid job record")
	ErrUnknownJob   = errors.New("unknown job")
)

// Coordinator is the submitter side of scheduling: the state machine of
// every job this node submitted. In the style of etcd raft it does no I/O
// and starts no goroutine: every input is a method call carrying the time,
// every output is a returned []Action for the node to carry out.
//
// A Coordinator is NOT safe for concurrent use: the node calls it from one
// goroutine (its scheduling loop) and applies the actions in order.
type Coordinator struct {
	cfg   Config
	jobs  map[string]*job
	order []*job // placement order: priority, then submission
	tasks map[string]*task
	rel   map[peer.ID]*Reliability
	table []Entry
	load  map[peer.ID]*peerLoad
	names map[peer.ID]string // peer.ID.String memo: base58 is costly per event
	added uint64             // jobs added, for a stable listing order
	round uint64             // bid rounds opened, to tell their answers apart
}

// peerLoad corrects a peer's advertised free slots by the assignments this
// coordinator made and saw end since that ad arrived, so a burst of
// placements does not wait for the next ad.
type peerLoad struct {
	adReceived time.Time
	delta      int
}

// NewCoordinator returns an empty coordinator.
func NewCoordinator(cfg Config) *Coordinator {
	return &Coordinator{
		cfg:   cfg.withDefaults(),
		jobs:  map[string]*job{},
		tasks: map[string]*task{},
		rel:   map[peer.ID]*Reliability{},
		load:  map[peer.ID]*peerLoad{},
		names: map[peer.ID]string{},
	}
}

// Submit adds a job and, using the table of the last Tick, asks for bids
// at once. The job is pending until a task is assigned.
func (c *Coordinator) Submit(now time.Time, rec JobRecord) ([]Action, error) {
	if rec.ID == "" || len(rec.Tasks) == 0 || len(rec.Executors) == 0 {
		return nil, fmt.Errorf("%w: need an id, tasks and executors", ErrInvalidJob)
	}
	if _, ok := c.jobs[rec.ID]; ok {
		return nil, fmt.Errorf("%w: %s", ErrDuplicateJob, rec.ID)
	}
	if rec.MaxAttempts <= 0 {
		rec.MaxAttempts = c.cfg.DefaultMaxAttempts
	}
	if rec.TaskTimeout <= 0 {
		rec.TaskTimeout = rec.Timeout
	}
	j := c.addJob(rec, now)
	acts := []Action{c.jobEvent(now, j, fmt.Sprintf("submitted: %d tasks", len(j.tasks)))}
	return append(acts, c.place(now, j)...), nil
}

func (c *Coordinator) addJob(rec JobRecord, now time.Time) *job {
	c.added++
	j := &job{rec: rec, status: api.JobPending, created: now, updated: now, seed: SeedFor(rec.ID, c.cfg.Rand), added: c.added,
		needy: newTaskSet(len(rec.Tasks)), withCopies: newTaskSet(len(rec.Tasks)), queued: newTaskSet(len(rec.Tasks)),
		live: map[peer.ID]int{}}
	j.tasks = make([]*task, 0, len(rec.Tasks))
	for i, ts := range rec.Tasks {
		t := &task{job: j, pos: i, id: TaskID(rec.ID, i), spec: ts, status: api.TaskPending,
			excluded: map[peer.ID]bool{}, declined: map[peer.ID]declines{}}
		j.tasks = append(j.tasks, t)
		j.needy.add(i)
		c.tasks[t.id] = t
	}
	c.jobs[rec.ID] = j
	c.order = append(c.order, j)
	sort.SliceStable(c.order, func(a, b int) bool { return c.order[a].rec.Priority > c.order[b].rec.Priority })
	return j
}

// Tick is the periodic input: table is the current capacity table
// (Table.Snapshot). It times out bid rounds, silent attempts and jobs,
// starts speculative copies and places pending tasks.
// Live reports whether any job is not yet terminal: with none, a Tick has
// nothing to do but take the table, which the caller may then skip (it
// must Tick with a fresh table before the next Submit).
func (c *Coordinator) Live() bool {
	for _, j := range c.order {
		if !j.terminal() {
			return true
		}
	}
	return false
}

func (c *Coordinator) Tick(now time.Time, table []Entry) []Action {
	c.table = table
	for _, e := range table {
		if pl, ok := c.load[e.Peer]; !ok || !pl.adReceived.Equal(e.Received) {
			c.load[e.Peer] = &peerLoad{adReceived: e.Received}
		}
	}
	var acts []Action
	for _, j := range slices.Clone(c.order) {
		if j.terminal() {
			continue
		}
		if j.rec.Timeout > 0 && !now.Before(j.created.Add(j.rec.Timeout)) {
			acts = append(acts, c.finish(now, j, api.JobFailed, fmt.Sprintf("job timed out after %s", j.rec.Timeout))...)
			continue
		}
		if r := j.round; r != nil && !now.Before(r.deadline) {
			j.round = nil
			j.nextBidAt = now.Add(c.cfg.RebidInterval)
			rej := make(Rejections)
			for _, p := range r.peers {
				rej.Add(ReasonNoBid, p)
			}
			acts = append(acts, c.setReasons(now, j, rej.Summary())...)
		}
		acts = append(acts, c.checkAttempts(now, j)...)
		if j.terminal() {
			continue
		}
		c.speculate(now, j)
		acts = append(acts, c.place(now, j)...)
	}
	return acts
}

// checkAttempts fails attempts that went silent or ran past their timeout.
func (c *Coordinator) checkAttempts(now time.Time, j *job) []Action {
	var acts []Action
	hb := c.cfg.HeartbeatTimeout
	for i := j.withCopies.next(0); i >= 0 && !j.terminal(); i = j.withCopies.next(i + 1) {
		t := j.tasks[i]
		for _, cp := range slices.Clone(t.copies) {
			if j.terminal() || !slices.Contains(t.copies, cp) {
				break
			}
			var why string
			switch {
			case now.Sub(cp.lastHeard) > hb:
				why = fmt.Sprintf("heartbeat-timeout: no word from the provider for %s", now.Sub(cp.lastHeard).Round(time.Millisecond))
			case cp.running && j.rec.TaskTimeout > 0 && now.Sub(cp.startedAt) > j.rec.TaskTimeout+hb:
				why = fmt.Sprintf("task-timeout: running for %s, limit %s", now.Sub(cp.startedAt).Round(time.Second), j.rec.TaskTimeout)
			default:
				continue
			}
			acts = append(acts, CancelTask{JobID: j.rec.ID, TaskID: t.id, Attempt: cp.attempt, Peer: cp.peer, Reason: why})
			acts = append(acts, c.attemptFailed(now, t, cp, why)...)
		}
	}
	return acts
}

// speculate marks stragglers for a second copy.
func (c *Coordinator) speculate(now time.Time, j *job) {
	if c.cfg.SpeculateMinAge < 0 || j.status != api.JobRunning || j.assembling {
		return
	}
	others := float64(len(j.tasks) - 1)
	if float64(j.completed()) < c.cfg.SpeculateAfter*others-1e-9 {
		return
	}
	for i := j.withCopies.next(0); i >= 0; i = j.withCopies.next(i + 1) {
		t := j.tasks[i]
		if t.status != api.TaskRunning || t.fetching != nil || t.wantSpec || t.specCopies > 0 || len(t.copies) != 1 {
			continue
		}
		if cp := t.copies[0]; cp.running && now.Sub(cp.startedAt) >= c.cfg.SpeculateMinAge {
			t.setWantSpec(true)
		}
	}
}

// place starts a bid round for the job's tasks that need a peer.
func (c *Coordinator) place(now time.Time, j *job) []Action {
	if j.terminal() || j.assembling || j.round != nil || now.Before(j.nextBidAt) {
		return nil
	}
	needy := j.needy.len()
	if needy == 0 {
		return nil
	}
	// A peer blocked for every task that needs placing is not asked. It
	// is excluded after failure unless declines hold it back from one of
	// them for now: then it is asked again when the first hold-back ends.
	exclude := map[peer.ID]Reason{}
	var heldUntil map[peer.ID]time.Time
	for _, e := range c.table {
		all := true
		var until time.Time
		for i := j.needy.next(0); i >= 0; i = j.needy.next(i + 1) {
			t := j.tasks[i]
			if !t.blocked(e.Peer, now) {
				all = false
				break
			}
			if u := t.heldBack(e.Peer, now); !u.IsZero() && !t.excluded[e.Peer] && !t.hasCopyOn(e.Peer) && (until.IsZero() || u.Before(until)) {
				until = u
			}
		}
		switch {
		case !all:
		case until.IsZero():
			exclude[e.Peer] = ReasonExcludedAfterFailure
		default:
			exclude[e.Peer] = ReasonDeclinedRecently
			if heldUntil == nil {
				heldUntil = map[peer.ID]time.Time{}
			}
			heldUntil[e.Peer] = until
		}
	}
	delta := make(map[peer.ID]int, len(c.load))
	for p, pl := range c.load {
		delta[p] = pl.delta
	}
	cands, rej := Rank(c.table, SelectContext{
		Now: now, Req: &j.rec.Requirements, Exclude: exclude, SlotDelta: delta, Placed: j.live,
		Reliability: c.reliabilityScore, Self: c.cfg.Self, Seed: j.seed,
	})
	j.rejections = rej.Counts()
	if len(cands) == 0 {
		reasons := rej.Summary()
		if len(c.table) == 0 {
			reasons = []string{"no peers in the capacity table yet"}
		}
		if ps := rej[ReasonDeclinedRecently]; len(ps) > 0 {
			var first time.Time
			for _, p := range ps {
				if u := heldUntil[p]; first.IsZero() || u.Before(first) {
					first = u
				}
			}
			line := ReasonDeclinedRecently.Phrase(len(ps))
			// A clock time, not a countdown: the line stays the same while
			// the job waits. Each change of a job's reasons is a job event
			// and a snapshot of the whole job, and a countdown changed
			// every second for up to a minute.
			at := first.UTC().Truncate(time.Second)
			if at.Before(first) {
				at = at.Add(time.Second)
			}
			for k := range reasons {
				if reasons[k] == line {
					reasons[k] += "; asked again at " + at.Format("15:04:05Z")
				}
			}
		}
		return c.setReasons(now, j, reasons)
	}
	cands = cands[:min(c.cfg.TopK, len(cands))]
	c.round++
	r := &bidRound{id: c.round, deadline: now.Add(c.cfg.BidTimeout), scores: map[peer.ID]float64{}}
	if j.asked == nil {
		j.asked = map[peer.ID]struct{}{}
	}
	for _, cd := range cands {
		r.peers = append(r.peers, cd.Peer)
		r.scores[cd.Peer] = cd.Score
		j.asked[cd.Peer] = struct{}{}
	}
	j.round = r
	res := j.rec.Resources
	req := &pb.BidRequest{
		JobId: j.rec.ID, Tasks: int32(needy), TemplateId: j.rec.TemplateID,
		Executor: j.rec.Executors[0], Image: j.rec.Image, Model: j.rec.Model,
		Resources:      &pb.Resources{CpuMillis: res.CPUMillis, Memory: res.Memory, Gpus: int32(res.GPUs), GpuMemory: res.GPUMemory},
		MaxPriceMicros: j.rec.Constraints.MaxPricePerTaskMicros,
		DeadlineMs:     r.deadline.UnixMilli(),
	}
	return []Action{RequestBids{JobID: j.rec.ID, Round: r.id, Peers: slices.Clone(r.peers), Req: req}}
}

// OnBids reports the answers to round r (the RequestBids that asked);
// peers missing from bids gave none. Tasks go round-robin to the accepting
// peers, best first, each up to the slots it offered. Answers to a round
// that is no longer open (Tick timed it out and a new one started) are
// dropped: taken for the new round's, they would close it with answers
// from other peers and drop its own.
func (c *Coordinator) OnBids(now time.Time, r0 RequestBids, bids map[peer.ID]*pb.Bid) []Action {
	j := c.jobs[r0.JobID]
	if j == nil || j.round == nil || j.round.id != r0.Round || j.terminal() {
		return nil
	}
	r := j.round
	j.round = nil
	type offer struct {
		p     peer.ID
		left  int
		slots int
		score float64
	}
	var offers []*offer
	room := 0 // slots left over all offers
	rej := make(Rejections)
	for _, p := range r.peers {
		b := bids[p]
		switch {
		case b == nil:
			rej.Add(ReasonNoBid, p)
		case !b.Accept:
			reason := Reason(b.Reason)
			if _, known := phrases[reason]; !known {
				reason = ReasonDeclined
			}
			rej.Add(reason, p)
		case b.Slots <= 0:
			rej.Add(ReasonDeclined, p) // "yes, with no slots" is a no
		default:
			s := r.scores[p]
			if b.Warm {
				s += 1
			}
			s -= float64(max(b.EtaMs, 0)) / 60000
			offers = append(offers, &offer{p: p, left: int(b.Slots), slots: int(b.Slots), score: s})
			room += int(b.Slots)
		}
	}
	if j.rejections == nil {
		j.rejections = map[Reason]int{}
	}
	for r, n := range rej.Counts() {
		j.rejections[r] += n
	}
	sort.SliceStable(offers, func(a, b int) bool { return offers[a].score > offers[b].score })
	var acts []Action
	assigned := 0
	next := 0
	// Assigning only takes tasks out of needy, so the walk sees each task
	// that needed a peer when it began once, in order.
	for i := j.needy.next(0); i >= 0 && room > 0; i = j.needy.next(i + 1) {
		t := j.tasks[i]
		for k := range offers {
			o := offers[(next+k)%len(offers)]
			if o.left > 0 && !t.blocked(o.p, now) {
				acts = append(acts, c.assign(now, j, t, o.p)...)
				o.left--
				room--
				assigned++
				next = (next + k + 1) % len(offers)
				break
			}
		}
	}
	if j.leases == nil {
		j.leases = map[peer.ID]int{}
	}
	for _, o := range offers {
		if o.left < o.slots { // the peer holds tasks of the job now
			j.leases[o.p] = o.slots
		}
	}
	if j.needy.len() > 0 && assigned == 0 {
		j.nextBidAt = now.Add(c.cfg.RebidInterval)
		reasons := rej.Summary()
		if len(reasons) == 0 {
			reasons = []string{"no peer offered a slot for the remaining tasks"}
		}
		acts = append(acts, c.setReasons(now, j, reasons)...)
	} else if assigned > 0 {
		acts = append(acts, c.setReasons(now, j, rej.Summary())...)
	}
	return acts
}

// assign hands task t to p.
func (c *Coordinator) assign(now time.Time, j *job, t *task, p peer.ID) []Action {
	t.nextAttempt++
	t.started++
	// A copy is speculative only beside a live one: if the straggler died
	// meanwhile, this is the task's ordinary next attempt.
	spec := t.wantSpec && len(t.copies) > 0
	cp := &attemptCopy{attempt: t.nextAttempt, peer: p, assignedAt: now, lastHeard: now, speculative: spec}
	t.addCopy(cp)
	t.setWantSpec(false)
	if spec {
		t.specCopies++
	} else {
		t.setStatus(api.TaskAssigned)
		t.provider = p
	}
	c.slotDelta(p, -1)
	var acts []Action
	if j.status == api.JobPending {
		j.status = api.JobRunning
		acts = append(acts, c.jobEvent(now, j, "running"))
	}
	res := j.rec.Resources
	a := &pb.Assignment{
		JobId: j.rec.ID, TaskId: t.id, Index: int32(t.spec.Index), Count: int32(len(j.tasks)),
		Attempt: int32(cp.attempt), Seed: t.spec.Seed, TemplateId: j.rec.TemplateID,
		AppParams: t.spec.Params,
		Resources: &pb.Resources{CpuMillis: res.CPUMillis, Memory: res.Memory, Gpus: int32(res.GPUs), GpuMemory: res.GPUMemory},
		TimeoutMs: j.rec.TaskTimeout.Milliseconds(),
	}
	acts = append(acts, Assign{JobID: j.rec.ID, TaskID: t.id, Attempt: cp.attempt, Peer: p, Assignment: a, Speculative: spec})
	msg := "assigned"
	if spec {
		msg = "speculative copy assigned"
	}
	return append(acts, c.taskEvent(now, t, p, fmt.Sprintf("%s (attempt %d)", msg, cp.attempt)))
}

// OnAssignReply reports the provider's answer to an Assign. A decline is
// not a failure (the bid was honest; the slot went elsewhere meanwhile):
// the task goes back to pending; a peer that declines it twice is not asked
// for it again until a backoff has passed (declineBackoff, doubling).
func (c *Coordinator) OnAssignReply(now time.Time, taskID string, attempt int, p peer.ID, accepted bool, reason string) []Action {
	t, cp := c.find(taskID, attempt, p)
	if cp == nil {
		return nil
	}
	if accepted {
		cp.lastHeard = now
		return nil
	}
	t.removeCopy(cp)
	t.started--
	t.declinedBy(p, now)
	delete(t.job.leases, p)
	c.slotDelta(p, 1)
	var acts []Action
	if len(t.copies) == 0 && t.fetching == nil && t.done == nil {
		t.setStatus(api.TaskPending)
		t.provider = ""
		acts = append(acts, c.taskEvent(now, t, p, "assignment declined: "+clip(reason)))
	}
	return append(acts, c.place(now, t.job)...)
}

// OnProgress reports a TaskUpdate without a result: it is also the
// heartbeat. A FAILED, CANCELLED or REJECTED state ends the attempt.
func (c *Coordinator) OnProgress(now time.Time, taskID string, attempt int, p peer.ID, state pb.TaskState, progress float64) []Action {
	t, cp := c.find(taskID, attempt, p)
	if cp == nil {
		return nil
	}
	switch state {
	case pb.TaskState_TASK_STATE_REJECTED:
		return c.OnAssignReply(now, taskID, attempt, p, false, "rejected")
	case pb.TaskState_TASK_STATE_FAILED:
		return c.attemptFailed(now, t, cp, "provider reported failure")
	case pb.TaskState_TASK_STATE_CANCELLED:
		return c.attemptFailed(now, t, cp, "provider cancelled the task")
	}
	cp.lastHeard = now
	var acts []Action
	if state == pb.TaskState_TASK_STATE_RUNNING && !cp.running {
		cp.running = true
		cp.startedAt = now
		if t.status == api.TaskAssigned && !cp.speculative {
			t.setStatus(api.TaskRunning)
			if t.startedAt.IsZero() {
				t.startedAt = now
			}
			acts = append(acts, c.taskEvent(now, t, p, "running"))
		}
	}
	if !math.IsNaN(progress) && progress > t.progress && progress <= 1 && t.fetching == nil {
		t.progress = progress
		t.job.updated = now
		acts = append(acts, c.event(now, t.job, "progress", t, p, "", progress))
	}
	return acts
}

// OnResult reports a provider's signed, verified result. A failed result
// fails the attempt. The first successful result is fetched; one arriving
// while it is fetched is kept as a fallback; later ones are ignored. Other
// copies keep running until the fetch succeeds (so a bad fetch loses no
// time), then they are cancelled.
func (c *Coordinator) OnResult(now time.Time, taskID string, attempt int, p peer.ID, res *pb.TaskResult) []Action {
	t, cp := c.find(taskID, attempt, p)
	if cp == nil {
		return nil
	}
	if res == nil || !res.Success {
		why := "provider reported failure"
		if res != nil && res.Error != "" {
			why = "provider error: " + clip(res.Error)
		}
		return c.attemptFailed(now, t, cp, why)
	}
	if len(res.RootCid) == 0 {
		return c.attemptFailed(now, t, cp, "result without a root CID")
	}
	t.removeCopy(cp)
	c.slotDelta(p, 1)
	ref := &resultRef{Attempt: attempt, Peer: p, Root: slices.Clone(res.RootCid)}
	if t.done != nil {
		return c.refill(now, t.job, p)
	}
	if t.fetching != nil {
		if t.backup == nil {
			t.backup = ref
		}
		return c.refill(now, t.job, p)
	}
	t.fetching, t.provider, t.progress = ref, p, 1
	t.setStatus(api.TaskRunning)
	t.setWantSpec(false)
	acts := []Action{
		FetchResult{JobID: t.job.rec.ID, TaskID: t.id, Attempt: attempt, Peer: p, Root: ref.Root},
		c.taskEvent(now, t, p, fmt.Sprintf("result of attempt %d received; fetching", attempt)),
	}
	return append(acts, c.refill(now, t.job, p)...)
}

// refill hands p, whose lease on j has room, the next tasks that need a
// peer, without a bid round: this keeps a provider's queue full while the
// results of its earlier tasks travel back.
func (c *Coordinator) refill(now time.Time, j *job, p peer.ID) []Action {
	lease := j.leases[p]
	if lease <= 0 || j.terminal() || j.assembling {
		return nil
	}
	live := j.liveOn(p)
	room := lease - live
	var acts []Action
	for i := j.needy.next(0); i >= 0 && room > 0; i = j.needy.next(i + 1) {
		if t := j.tasks[i]; !t.blocked(p, now) {
			acts = append(acts, c.assign(now, j, t, p)...)
			room--
		}
	}
	if live == 0 && room == lease && lease > 0 {
		acts = append(acts, c.steal(now, j, p)...)
	}
	return acts
}

// stealMinWait: only a copy assigned at least this long ago, and not
// reported running, counts as waiting in a queue.
const stealMinWait = 100 * time.Millisecond

// steal moves one of j's tasks that waits, not started, in another peer's
// queue to p, which has nothing of the job left: with tasks of uneven cost
// a peer whose queue ran dry would otherwise idle while another works
// through its queue. The queued attempt is cancelled (it is not a failure)
// and the task is assigned to p.
func (c *Coordinator) steal(now time.Time, j *job, p peer.ID) []Action {
	for i := j.queued.next(0); i >= 0; i = j.queued.next(i + 1) {
		t := j.tasks[i]
		if !slices.ContainsFunc(t.copies, func(cp *attemptCopy) bool { return !cp.running }) {
			// Its copies all started or ended: only a new copy brings it
			// back (addCopy).
			j.queued.remove(i)
			continue
		}
		if len(t.copies) != 1 || t.fetching != nil || t.done != nil || t.wantSpec || t.blocked(p, now) {
			continue
		}
		cp := t.copies[0]
		// A copy assigned moments ago may be running already, its
		// "running" update still on the way: moving it would do it twice.
		if cp.running || cp.peer == p || now.Sub(cp.assignedAt) < stealMinWait {
			continue
		}
		t.removeCopy(cp)
		t.started--
		c.slotDelta(cp.peer, 1)
		t.setStatus(api.TaskPending)
		t.provider = ""
		acts := []Action{CancelTask{JobID: j.rec.ID, TaskID: t.id, Attempt: cp.attempt, Peer: cp.peer, Reason: "moved to an idle peer before it started"}}
		return append(acts, c.assign(now, j, t, p)...)
	}
	return nil
}

// OnFetched reports the outcome of a FetchResult. Success completes the
// task (and cancels its other copies); failure fails that attempt and
// excludes its provider.
func (c *Coordinator) OnFetched(now time.Time, taskID string, attempt int, ok bool, errMsg string) []Action {
	t := c.tasks[taskID]
	if t == nil || t.fetching == nil || t.fetching.Attempt != attempt || t.job.terminal() {
		return nil
	}
	j := t.job
	ref := t.fetching
	t.fetching = nil
	if !ok {
		c.recordFailure(now, ref.Peer)
		t.excluded[ref.Peer] = true
		t.failures++
		why := "fetch failed: " + clip(errMsg)
		if b := t.backup; b != nil {
			t.backup, t.fetching, t.provider = nil, b, b.Peer
			return []Action{
				FetchResult{JobID: j.rec.ID, TaskID: t.id, Attempt: b.Attempt, Peer: b.Peer, Root: b.Root},
				c.taskEvent(now, t, b.Peer, why+"; fetching the other copy's result"),
			}
		}
		return c.afterFailure(now, t, ref.Peer, why)
	}
	c.recordSuccess(ref.Peer)
	t.done, t.backup = ref, nil
	t.setStatus(api.TaskCompleted)
	t.provider, t.finishedAt, t.progress, t.err = ref.Peer, now, 1, ""
	t.setWantSpec(false)
	var acts []Action
	for _, cp := range t.copies {
		c.slotDelta(cp.peer, 1)
		acts = append(acts, CancelTask{JobID: j.rec.ID, TaskID: t.id, Attempt: cp.attempt, Peer: cp.peer, Reason: "another copy finished first"})
	}
	t.clearCopies()
	acts = append(acts, c.taskEvent(now, t, ref.Peer, "completed"))
	if j.completed() == len(j.tasks) {
		j.assembling = true
		j.round = nil
		outs := make([]TaskOutput, len(j.tasks))
		for i, tt := range j.tasks {
			outs[i] = TaskOutput{TaskID: tt.id, Index: tt.spec.Index, Root: tt.done.Root, Provider: tt.done.Peer, Attempt: tt.done.Attempt}
		}
		acts = append(acts, AssembleJob{JobID: j.rec.ID, Results: outs}, c.jobEvent(now, j, "all tasks done; assembling the bucket"))
	}
	return acts
}

// OnAttemptFailed reports that an attempt broke (stream lost, provider
// error, corrupt blocks...). The peer is excluded for the task, which goes
// back to pending unless it is out of attempts (then the job fails).
func (c *Coordinator) OnAttemptFailed(now time.Time, taskID string, attempt int, p peer.ID, reason string) []Action {
	t, cp := c.find(taskID, attempt, p)
	if cp == nil {
		return nil
	}
	return c.attemptFailed(now, t, cp, clip(reason))
}

// OnAssembled reports the outcome of AssembleJob: the bucket's root CID and
// URL, or the error.
func (c *Coordinator) OnAssembled(now time.Time, jobID, rootCID, url string, err error) []Action {
	j := c.jobs[jobID]
	if j == nil || j.terminal() || !j.assembling {
		return nil
	}
	j.assembling = false
	if err != nil {
		return c.finish(now, j, api.JobFailed, "assembling the bucket: "+clip(err.Error()))
	}
	j.bucket = &api.Bucket{CID: rootCID, URL: url}
	return c.finish(now, j, api.JobCompleted, "completed")
}

// Cancel cancels a job: every live attempt gets a CancelTask.
func (c *Coordinator) Cancel(now time.Time, jobID string) ([]Action, error) {
	j := c.jobs[jobID]
	if j == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownJob, jobID)
	}
	if j.terminal() {
		return nil, nil
	}
	return c.finish(now, j, api.JobCancelled, "cancelled"), nil
}

// Remove forgets a finished job (after the node persisted it) and reports
// whether it did. Running jobs are kept.
func (c *Coordinator) Remove(jobID string) bool {
	j := c.jobs[jobID]
	if j == nil || !j.terminal() {
		return false
	}
	for _, t := range j.tasks {
		delete(c.tasks, t.id)
	}
	delete(c.jobs, jobID)
	c.order = slices.DeleteFunc(c.order, func(x *job) bool { return x == j })
	return true
}

// Job returns the API view of a job.
func (c *Coordinator) Job(id string) (api.Job, bool) {
	j := c.jobs[id]
	if j == nil {
		return api.Job{}, false
	}
	return j.view(), true
}

// Status returns a job's status without building its view.
func (c *Coordinator) Status(id string) (string, bool) {
	j := c.jobs[id]
	if j == nil {
		return "", false
	}
	return j.status, true
}

// Jobs returns every job's view, oldest first.
func (c *Coordinator) Jobs() []api.Job {
	js := slices.Clone(c.order)
	sortOldestFirst(js)
	out := make([]api.Job, len(js))
	for i, j := range js {
		out[i] = j.view()
	}
	return out
}

// EndedJob is a finished job's ID and the time it finished (zero if a
// snapshot did not record it).
type EndedJob struct {
	ID         string
	FinishedAt time.Time
}

// Ended returns the finished (terminal) jobs, oldest first as Jobs lists
// them, without building their views: it is for deciding what to forget,
// which needs no task of a job.
func (c *Coordinator) Ended() []EndedJob {
	var js []*job
	for _, j := range c.order {
		if j.terminal() {
			js = append(js, j)
		}
	}
	sortOldestFirst(js)
	out := make([]EndedJob, len(js))
	for i, j := range js {
		out[i] = EndedJob{ID: j.rec.ID, FinishedAt: j.finished}
	}
	return out
}

// sortOldestFirst orders jobs by creation, then by when they were added.
func sortOldestFirst(js []*job) {
	sort.Slice(js, func(a, b int) bool {
		if !js[a].created.Equal(js[b].created) {
			return js[a].created.Before(js[b].created)
		}
		return js[a].added < js[b].added
	})
}

// Rejections returns, per reason, how many peers the job's last placement
// round rejected (filters and declined or missing bids), for metrics and
// debugging; Job().Reasons has the same as human lines.
func (c *Coordinator) Rejections(jobID string) map[Reason]int {
	j := c.jobs[jobID]
	if j == nil {
		return nil
	}
	out := make(map[Reason]int, len(j.rejections))
	for r, n := range j.rejections {
		out[r] = n
	}
	return out
}

// Reliability returns a peer's record of finished attempts.
func (c *Coordinator) Reliability(p peer.ID) Reliability {
	if r := c.rel[p]; r != nil {
		return *r
	}
	return Reliability{}
}

// SetReliability seeds a peer's record (e.g. from the node's store).
func (c *Coordinator) SetReliability(p peer.ID, r Reliability) { c.rel[p] = &r }

func (c *Coordinator) reliabilityScore(p peer.ID) float64 { return c.Reliability(p).Score() }

func (c *Coordinator) recordSuccess(p peer.ID) {
	r := c.rel[p]
	if r == nil {
		r = &Reliability{}
		c.rel[p] = r
	}
	r.Successes++
}

func (c *Coordinator) recordFailure(now time.Time, p peer.ID) {
	r := c.rel[p]
	if r == nil {
		r = &Reliability{}
		c.rel[p] = r
	}
	r.Failures++
	r.LastFailure = now
}

func (c *Coordinator) slotDelta(p peer.ID, d int) {
	if pl := c.load[p]; pl != nil {
		pl.delta += d
	}
}

func (c *Coordinator) find(taskID string, attempt int, p peer.ID) (*task, *attemptCopy) {
	t := c.tasks[taskID]
	if t == nil || t.job.terminal() {
		return nil, nil
	}
	return t, t.findCopy(attempt, p)
}

// attemptFailed ends one copy as a failure.
func (c *Coordinator) attemptFailed(now time.Time, t *task, cp *attemptCopy, why string) []Action {
	delete(t.job.leases, cp.peer)
	t.removeCopy(cp)
	c.slotDelta(cp.peer, 1)
	t.excluded[cp.peer] = true
	t.failures++
	c.recordFailure(now, cp.peer)
	return c.afterFailure(now, t, cp.peer, why)
}

// afterFailure decides what a failed attempt means for its task: nothing
// while another copy or a result remains, else retry or, out of attempts,
// fail the job.
func (c *Coordinator) afterFailure(now time.Time, t *task, p peer.ID, why string) []Action {
	t.err = why
	if t.done != nil || t.fetching != nil || len(t.copies) > 0 {
		return []Action{c.taskEvent(now, t, p, "attempt failed: "+why+"; another copy continues")}
	}
	j := t.job
	if t.failures >= j.rec.MaxAttempts {
		t.setStatus(api.TaskFailed)
		t.finishedAt = now
		acts := []Action{c.taskEvent(now, t, p, "failed: "+why)}
		msg := fmt.Sprintf("task %d failed after %d attempts: %s", t.spec.Index, t.failures, why)
		return append(acts, c.finish(now, j, api.JobFailed, msg)...)
	}
	t.setStatus(api.TaskPending)
	t.provider = ""
	t.progress = 0
	t.setWantSpec(false) // nothing left to copy: the retry is an ordinary attempt
	acts := []Action{c.taskEvent(now, t, p, fmt.Sprintf("attempt failed (%d of %d): %s; retrying elsewhere", t.failures, j.rec.MaxAttempts, why))}
	return append(acts, c.place(now, j)...)
}

// finish ends a job with status; live attempts are cancelled, unfinished
// tasks marked cancelled.
func (c *Coordinator) finish(now time.Time, j *job, status, msg string) []Action {
	var acts []Action
	for _, t := range j.tasks {
		for _, cp := range t.copies {
			c.slotDelta(cp.peer, 1)
			acts = append(acts, CancelTask{JobID: j.rec.ID, TaskID: t.id, Attempt: cp.attempt, Peer: cp.peer, Reason: msg})
		}
		t.clearCopies()
		t.fetching, t.backup = nil, nil
		t.setWantSpec(false)
		if t.status != api.TaskCompleted && t.status != api.TaskFailed {
			t.setStatus(api.TaskCancelled)
			t.finishedAt = now
			acts = append(acts, c.taskEvent(now, t, t.provider, msg))
		}
	}
	// Release what the job's bids reserved and it did not use; sorted, so
	// that the actions replay the same way.
	for _, p := range slices.Sorted(maps.Keys(j.asked)) {
		acts = append(acts, CancelTask{JobID: j.rec.ID, Peer: p, Reason: "job ended: releasing its bid reservations"})
	}
	j.asked = nil
	j.status, j.finished, j.round, j.assembling = status, now, nil, false
	if status != api.JobCompleted {
		j.err = msg
	}
	if status == api.JobCompleted {
		j.reasons = nil
	}
	return append(acts, c.jobEvent(now, j, msg))
}

func (c *Coordinator) setReasons(now time.Time, j *job, reasons []string) []Action {
	if slices.Equal(reasons, j.reasons) {
		return nil
	}
	j.reasons = reasons
	msg := "waiting"
	if len(reasons) > 0 {
		msg = reasons[0]
	}
	return []Action{c.jobEvent(now, j, msg)}
}

func (c *Coordinator) jobEvent(now time.Time, j *job, msg string) Action {
	return c.event(now, j, "job", nil, "", msg, 0)
}

func (c *Coordinator) taskEvent(now time.Time, t *task, p peer.ID, msg string) Action {
	return c.event(now, t.job, "task", t, p, msg, t.progress)
}

func (c *Coordinator) event(now time.Time, j *job, typ string, t *task, p peer.ID, msg string, progress float64) Action {
	j.seq++
	j.updated = now
	ev := api.Event{Seq: j.seq, Type: typ, JobID: j.rec.ID, Status: j.status, Message: msg, Time: now, Progress: progress}
	if t != nil {
		ev.TaskID, ev.Status = t.id, t.status
	}
	if p != "" {
		ev.Provider = c.peerString(p)
	}
	return JobChanged{JobID: j.rec.ID, Event: ev}
}

// clip bounds a peer-supplied message kept in job state.
func clip(s string) string {
	const max = 512
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// peerString returns p's base58 form, memoised (bounded: the memo is
// dropped when it grows past maxNames).
func (c *Coordinator) peerString(p peer.ID) string {
	const maxNames = 4096
	if s, ok := c.names[p]; ok {
		return s
	}
	if len(c.names) >= maxNames {
		clear(c.names)
	}
	s := p.String()
	c.names[p] = s
	return s
}
