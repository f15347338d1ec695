package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
)

// JobRecord is everything the Coordinator needs to run a job: the
// requirements and the tasks. It is self-contained (no template lookup) so
// that a snapshot restores without the registry.
type JobRecord struct {
	ID           string             `json:"id"`
	Requirements                    // template, executors, model, resources, constraints
	Tasks        []jobspec.TaskSpec `json:"tasks"`
	// Timeout bounds the whole job from submission (0: none); TaskTimeout
	// one run of one task (0: Timeout).
	Timeout     time.Duration `json:"timeout"`
	TaskTimeout time.Duration `json:"taskTimeout"`
	MaxAttempts int           `json:"maxAttempts"` // 0: Config.DefaultMaxAttempts
	Seed        int64         `json:"seed"`
	Priority    int           `json:"priority,omitempty"`
}

// NewJobRecord builds the record of a parsed job and its tasks.
func NewJobRecord(id string, spec *jobspec.Spec, tasks []jobspec.TaskSpec) JobRecord {
	req := Requirements{
		TemplateID:  spec.TemplateID,
		Model:       spec.Model(),
		Resources:   spec.Resources,
		PreferGPU:   spec.PreferGPU,
		Constraints: spec.Constraints,
	}
	if t := spec.Template; t != nil {
		req.Executors = t.Executors()
		req.Image = t.Image()
	} else {
		req.Executors = []string{inference.KindProcess}
	}
	return JobRecord{
		ID: id, Requirements: req, Tasks: tasks,
		Timeout: spec.Timeout, TaskTimeout: spec.TaskTimeout, MaxAttempts: spec.MaxAttempts,
		Seed: spec.Seed, Priority: spec.Priority,
	}
}

// TaskID is the ID of task index of a job.
func TaskID(jobID string, index int) string { return fmt.Sprintf("%s-%d", jobID, index) }

// JobOfTask returns the job ID in a task ID made by TaskID.
func JobOfTask(taskID string) string {
	if i := strings.LastIndexByte(taskID, '-'); i >= 0 {
		return taskID[:i]
	}
	return ""
}

// Reliability is the record of a peer's finished attempts, kept by the
// Coordinator across jobs.
type Reliability struct {
	Successes   int       `json:"successes"`
	Failures    int       `json:"failures"`
	LastFailure time.Time `json:"lastFailure,omitzero"`
}

// Score is the Laplace-smoothed success rate: 0.5 for an unknown peer.
func (r Reliability) Score() float64 {
	return float64(r.Successes+1) / float64(r.Successes+r.Failures+2)
}

// attemptCopy is one live attempt of a task on a peer.
type attemptCopy struct {
	attempt     int
	peer        peer.ID
	assignedAt  time.Time
	lastHeard   time.Time
	startedAt   time.Time
	running     bool
	speculative bool
}

// resultRef is a task result the provider reported (maybe not fetched yet).
type resultRef struct {
	Attempt int     `json:"attempt"`
	Peer    peer.ID `json:"peer"`
	Root    []byte  `json:"root"`
}

type task struct {
	job         *job
	pos         int // in job.tasks
	id          string
	spec        jobspec.TaskSpec
	status      string // set with setStatus: the job's indexes follow it
	nextAttempt int    // the last attempt number handed out
	started     int    // attempts assigned and not declined
	failures    int
	specCopies  int
	excluded    map[peer.ID]bool
	declined    map[peer.ID]declines
	copies      []*attemptCopy // changed with addCopy, removeCopy, clearCopies
	fetching    *resultRef
	backup      *resultRef
	done        *resultRef
	wantSpec    bool // set with setWantSpec
	progress    float64
	err         string
	provider    peer.ID
	startedAt   time.Time
	finishedAt  time.Time
	shown       shownText // memo of view's text forms
}

// A peer that bid may still decline the assignment: its slot went to
// another job meanwhile. That is no failure, but asking it again at once
// tends to get the same answer, so from its maxDeclines-th decline of a
// task the peer is held back from that task for declineBackoff, doubled
// with each further decline up to maxDeclineBackoff (on the coordinator's
// clock), then asked again: held back for good, a task whose only eligible
// peer had declined it twice would wait for the job's timeout.
const (
	maxDeclines       = 2
	declineBackoff    = 4 * time.Second
	maxDeclineBackoff = time.Minute
)

// declines is a peer's record of declining one task.
type declines struct {
	n     int       // how often
	until time.Time // held back from the task until then (zero: not held back)
}

// declinedBy records that p declined the task at now.
func (t *task) declinedBy(p peer.ID, now time.Time) {
	d := t.declined[p]
	d.n++
	if d.n >= maxDeclines {
		d.until = now.Add(min(declineBackoff<<min(d.n-maxDeclines, 16), maxDeclineBackoff))
	}
	t.declined[p] = d
}

// heldBack returns when p's declines stop holding it back from the task,
// or the zero time if they do not at now.
func (t *task) heldBack(p peer.ID, now time.Time) time.Time {
	if u := t.declined[p].until; now.Before(u) {
		return u
	}
	return time.Time{}
}

// needsPlacement: no live copy and no result, or a straggler that wants a
// speculative copy.
func (t *task) needsPlacement() bool {
	if t.wantSpec {
		return true
	}
	return t.status == api.TaskPending
}

// blocked says whether p must not get this task at now.
func (t *task) blocked(p peer.ID, now time.Time) bool {
	return t.excluded[p] || t.hasCopyOn(p) || !t.heldBack(p, now).IsZero()
}

func (t *task) hasCopyOn(p peer.ID) bool {
	for _, cp := range t.copies {
		if cp.peer == p {
			return true
		}
	}
	return false
}

func (t *task) findCopy(attempt int, p peer.ID) *attemptCopy {
	for _, cp := range t.copies {
		if cp.attempt == attempt && cp.peer == p {
			return cp
		}
	}
	return nil
}

// setStatus changes the task's status and keeps the job's indexes of it.
func (t *task) setStatus(s string) {
	j := t.job
	if t.status == api.TaskCompleted {
		j.nCompleted--
	}
	if s == api.TaskCompleted {
		j.nCompleted++
	}
	t.status = s
	j.needy.set(t.pos, t.needsPlacement())
}

// setWantSpec marks or unmarks the task as a straggler wanting a copy.
func (t *task) setWantSpec(b bool) {
	t.wantSpec = b
	t.job.needy.set(t.pos, t.needsPlacement())
}

func (t *task) addCopy(cp *attemptCopy) {
	j := t.job
	t.copies = append(t.copies, cp)
	j.live[cp.peer]++
	j.withCopies.add(t.pos)
	if !cp.running {
		j.queued.add(t.pos)
	}
}

// dropLive undoes addCopy's count of cp on its peer.
func (t *task) dropLive(cp *attemptCopy) {
	j := t.job
	if j.live[cp.peer]--; j.live[cp.peer] <= 0 {
		delete(j.live, cp.peer)
	}
}

func (t *task) removeCopy(cp *attemptCopy) {
	for i, x := range t.copies {
		if x == cp {
			t.copies = append(t.copies[:i], t.copies[i+1:]...)
			t.dropLive(cp)
			break
		}
	}
	if len(t.copies) == 0 {
		t.job.withCopies.remove(t.pos)
	}
	// The oldest remaining copy is the task's provider now.
	if len(t.copies) > 0 && t.fetching == nil && t.done == nil {
		t.provider = t.copies[0].peer
		t.copies[0].speculative = false
		if t.copies[0].running && t.status == api.TaskAssigned {
			t.setStatus(api.TaskRunning)
		}
	}
}

// clearCopies forgets every live copy (the caller cancels them).
func (t *task) clearCopies() {
	for _, cp := range t.copies {
		t.dropLive(cp)
	}
	t.copies = nil
	t.job.withCopies.remove(t.pos)
}

func (t *task) view() api.Task {
	v := api.Task{
		ID: t.id, Index: t.spec.Index, Status: t.status, Attempts: t.started,
		Error: t.err, Progress: t.progress, Seed: t.spec.Seed,
		StartedAt: t.startedAt, FinishedAt: t.finishedAt,
	}
	if t.provider != "" {
		if t.shown.provider != t.provider {
			t.shown.provider, t.shown.providerText = t.provider, t.provider.String()
		}
		v.Provider = t.shown.providerText
	}
	if t.done != nil {
		if t.shown.done != t.done {
			t.shown.done, t.shown.rootText = t.done, rootString(t.done.Root)
		}
		v.ResultCID = t.shown.rootText
		v.Error = ""
	}
	return v
}

// shownText keeps the text forms view last made of a task's provider and
// result root: a job's view is made after every change (for its event) and
// base58/base32-encoding them for each task each time was a visible share
// of a submitter's CPU.
type shownText struct {
	provider     peer.ID
	providerText string
	done         *resultRef
	rootText     string
}

// rootString renders a CID's bytes; bytes that are not a CID (which
// protocol validation should have refused) are shown in hex.
func rootString(b []byte) string {
	if c, err := cid.Cast(b); err == nil {
		return c.String()
	}
	return fmt.Sprintf("%x", b)
}

type bidRound struct {
	id       uint64 // Coordinator.round when it opened
	deadline time.Time
	peers    []peer.ID
	scores   map[peer.ID]float64
}

type job struct {
	rec        JobRecord
	status     string
	created    time.Time
	updated    time.Time
	finished   time.Time
	tasks      []*task
	reasons    []string
	err        string
	bucket     *api.Bucket
	round      *bidRound
	nextBidAt  time.Time
	seq        uint64
	assembling bool
	seed       uint64
	rejections map[Reason]int // of the last placement round
	added      uint64
	// leases: how many of this job's tasks each peer that bid holds at
	// once. A bid is a standing offer: when a task on the peer ends, the
	// next one goes there without another bid round. A decline or a
	// failure on the peer ends its lease; a new round renews them.
	leases map[peer.ID]int
	// Indexes kept at every change of a task (setStatus, setWantSpec,
	// addCopy, removeCopy, clearCopies), so that an event does not scan
	// every task of its job: that made a job cost O(tasks²).
	// checkIndexes (tests) recounts them.
	needy      taskSet         // tasks that need a peer: needsPlacement
	withCopies taskSet         // tasks with a live copy
	queued     taskSet         // a superset of the tasks with a copy not reported running (steal); pruned as it is walked
	live       map[peer.ID]int // live copies per peer
	nCompleted int             // tasks completed
	// asked: every peer asked for a bid. A bid reserves slots on the
	// peer until the assignment comes; those a job never used are
	// released when it ends (finish), or they would deny other jobs'
	// bids that capacity until they expire.
	asked map[peer.ID]struct{}
}

func (j *job) terminal() bool {
	switch j.status {
	case api.JobCompleted, api.JobFailed, api.JobCancelled:
		return true
	}
	return false
}

// liveOn counts the job's live attempts on p.
func (j *job) liveOn(p peer.ID) int { return j.live[p] }

// completed counts the job's completed tasks.
func (j *job) completed() int { return j.nCompleted }

func (j *job) view() api.Job {
	v := api.Job{
		ID: j.rec.ID, Status: j.status, TemplateID: j.rec.TemplateID,
		Tasks: make([]api.Task, len(j.tasks)), Reasons: append([]string{}, j.reasons...),
		Error: j.err, CreatedAt: j.created, UpdatedAt: j.updated, FinishedAt: j.finished,
	}
	for i, t := range j.tasks {
		v.Tasks[i] = t.view()
	}
	if j.bucket != nil {
		b := *j.bucket
		v.Bucket = &b
	}
	return v
}
