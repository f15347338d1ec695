package scheduler

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
)

// MaxSnapshot bounds a job snapshot Restore accepts (a job of MaxTasks
// tasks with inline inputs fits easily).
const MaxSnapshot = 64 << 20

// snapshotVersion is bumped when the format changes incompatibly.
const snapshotVersion = 1

type jobSnapshot struct {
	Version    int            `json:"version"`
	Record     JobRecord      `json:"record"`
	Status     string         `json:"status"`
	Created    time.Time      `json:"created"`
	Updated    time.Time      `json:"updated"`
	Finished   time.Time      `json:"finished,omitzero"`
	Reasons    []string       `json:"reasons,omitempty"`
	Error      string         `json:"error,omitempty"`
	Bucket     *api.Bucket    `json:"bucket,omitempty"`
	Seq        uint64         `json:"seq"`
	Assembling bool           `json:"assembling,omitempty"`
	Tasks      []taskSnapshot `json:"tasks"`
}

type taskSnapshot struct {
	Status      string       `json:"status"`
	NextAttempt int          `json:"nextAttempt"`
	Started     int          `json:"started"`
	Failures    int          `json:"failures"`
	SpecCopies  int          `json:"specCopies,omitempty"`
	Excluded    []peerText   `json:"excluded,omitempty"`
	InFlight    []inFlight   `json:"inFlight,omitempty"`
	Fetching    *refSnapshot `json:"fetching,omitempty"`
	Backup      *refSnapshot `json:"backup,omitempty"`
	Done        *refSnapshot `json:"done,omitempty"`
	Error       string       `json:"error,omitempty"`
	Provider    peerText     `json:"provider,omitempty"`
	Progress    float64      `json:"progress"`
	StartedAt   time.Time    `json:"startedAt,omitzero"`
	FinishedAt  time.Time    `json:"finishedAt,omitzero"`
}

type inFlight struct {
	Attempt int      `json:"attempt"`
	Peer    peerText `json:"peer"`
}

// refSnapshot is a resultRef in a snapshot.
type refSnapshot struct {
	Attempt int      `json:"attempt"`
	Peer    peerText `json:"peer"`
	Root    []byte   `json:"root"`
}

// peerText is a peer ID in a snapshot as its base58 text, which is what
// peer.ID's own JSON is, so the format is unchanged. Export encodes each
// distinct peer once: base58 encoding two peers per task was half the cost
// of a snapshot (a submitter writes one per running job every second).
type peerText string

// peerNames converts peer IDs to text, each distinct one once.
type peerNames map[peer.ID]peerText

func (n peerNames) text(p peer.ID) peerText {
	if p == "" {
		return ""
	}
	t, ok := n[p]
	if !ok {
		t = peerText(p.String())
		n[p] = t
	}
	return t
}

func (n peerNames) ref(r *resultRef) *refSnapshot {
	if r == nil {
		return nil
	}
	return &refSnapshot{Attempt: r.Attempt, Peer: n.text(r.Peer), Root: r.Root}
}

// decodePeer is the inverse of peerNames.text.
func decodePeer(t peerText) (peer.ID, error) {
	if t == "" {
		return "", nil
	}
	p, err := peer.Decode(string(t))
	if err != nil {
		return "", fmt.Errorf("peer %q: %w", t, err)
	}
	return p, nil
}

// decodeRef is the inverse of peerNames.ref.
func decodeRef(r *refSnapshot) (*resultRef, error) {
	if r == nil {
		return nil, nil
	}
	p, err := decodePeer(r.Peer)
	if err != nil {
		return nil, err
	}
	return &resultRef{Attempt: r.Attempt, Peer: p, Root: r.Root}, nil
}

// restored is a task's peers and results decoded from its snapshot.
type restored struct {
	provider               peer.ID
	excluded               []peer.ID
	inFlight               []peer.ID
	fetching, backup, done *resultRef
}

func decodeTaskPeers(ts *taskSnapshot) (r restored, err error) {
	if r.provider, err = decodePeer(ts.Provider); err != nil {
		return r, fmt.Errorf("provider: %w", err)
	}
	for _, t := range ts.Excluded {
		p, err := decodePeer(t)
		if err != nil {
			return r, fmt.Errorf("excluded: %w", err)
		}
		r.excluded = append(r.excluded, p)
	}
	for _, f := range ts.InFlight {
		p, err := decodePeer(f.Peer)
		if err != nil {
			return r, fmt.Errorf("in flight: %w", err)
		}
		r.inFlight = append(r.inFlight, p)
	}
	if r.fetching, err = decodeRef(ts.Fetching); err != nil {
		return r, fmt.Errorf("fetching: %w", err)
	}
	if r.backup, err = decodeRef(ts.Backup); err != nil {
		return r, fmt.Errorf("backup: %w", err)
	}
	if r.done, err = decodeRef(ts.Done); err != nil {
		return r, fmt.Errorf("done: %w", err)
	}
	return r, nil
}

// Export returns a JSON snapshot of a job for persistence. Call it after
// each JobChanged (or batch them); Restore reads it back.
func (c *Coordinator) Export(jobID string) ([]byte, error) {
	j := c.jobs[jobID]
	if j == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownJob, jobID)
	}
	s := jobSnapshot{
		Version: snapshotVersion, Record: j.rec, Status: j.status, Created: j.created, Updated: j.updated,
		Finished: j.finished, Reasons: j.reasons, Error: j.err, Bucket: j.bucket, Seq: j.seq,
		Assembling: j.assembling,
	}
	names := peerNames{}
	s.Tasks = make([]taskSnapshot, 0, len(j.tasks))
	for _, t := range j.tasks {
		ts := taskSnapshot{
			Status: t.status, NextAttempt: t.nextAttempt, Started: t.started, Failures: t.failures,
			SpecCopies: t.specCopies, Fetching: names.ref(t.fetching), Backup: names.ref(t.backup), Done: names.ref(t.done),
			Error: t.err, Provider: names.text(t.provider), Progress: t.progress, StartedAt: t.startedAt, FinishedAt: t.finishedAt,
		}
		for p := range t.excluded {
			ts.Excluded = append(ts.Excluded, names.text(p))
		}
		for _, cp := range t.copies {
			ts.InFlight = append(ts.InFlight, inFlight{Attempt: cp.attempt, Peer: names.text(cp.peer)})
		}
		s.Tasks = append(s.Tasks, ts)
	}
	return json.Marshal(s)
}

// Restore adds a job from an Export snapshot, as after a restart of the
// node. The streams of in-flight attempts died with the old process, so:
//
//   - each in-flight attempt gets a CancelTask (the provider may still run
//     it) and counts as a failed attempt without excluding its peer: a job
//     whose attempts keep coinciding with crashes of its submitter cannot
//     retry forever; its task goes back to pending;
//   - a task whose result was being fetched is fetched again (FetchResult);
//   - a job that was assembling is assembled again (AssembleJob).
//
// The returned actions start that work; the job is placed on the next Tick.
func (c *Coordinator) Restore(now time.Time, data []byte) ([]Action, error) {
	if len(data) > MaxSnapshot {
		return nil, fmt.Errorf("restore: snapshot of %d bytes over the %d limit", len(data), MaxSnapshot)
	}
	var s jobSnapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if s.Version != snapshotVersion {
		return nil, fmt.Errorf("restore: snapshot version %d, want %d", s.Version, snapshotVersion)
	}
	rec := s.Record
	if rec.ID == "" || len(rec.Tasks) == 0 || len(rec.Tasks) != len(s.Tasks) || len(rec.Executors) == 0 || rec.MaxAttempts <= 0 {
		return nil, fmt.Errorf("restore %q: %w: %d tasks, %d task states", rec.ID, ErrInvalidJob, len(rec.Tasks), len(s.Tasks))
	}
	if rec.Timeout < 0 || rec.TaskTimeout < 0 {
		return nil, fmt.Errorf("restore %q: %w: negative timeout", rec.ID, ErrInvalidJob)
	}
	for i, ts := range rec.Tasks {
		if ts.Index != i {
			return nil, fmt.Errorf("restore %q: %w: task %d has index %d", rec.ID, ErrInvalidJob, i, ts.Index)
		}
	}
	if _, ok := c.jobs[rec.ID]; ok {
		return nil, fmt.Errorf("restore: %w: %s", ErrDuplicateJob, rec.ID)
	}
	switch s.Status {
	case api.JobPending, api.JobRunning, api.JobCompleted, api.JobFailed, api.JobCancelled:
	default:
		return nil, fmt.Errorf("restore %q: unknown job status %q", rec.ID, s.Status)
	}
	peers := make([]restored, len(s.Tasks))
	for i, ts := range s.Tasks {
		var err error
		if peers[i], err = decodeTaskPeers(&ts); err != nil {
			return nil, fmt.Errorf("restore %q: task %d: %w", rec.ID, i, err)
		}
		switch ts.Status {
		case api.TaskPending, api.TaskAssigned, api.TaskRunning, api.TaskCompleted, api.TaskFailed, api.TaskCancelled:
		default:
			return nil, fmt.Errorf("restore %q: task %d: unknown status %q", rec.ID, i, ts.Status)
		}
		if ts.Status == api.TaskCompleted && (ts.Done == nil || len(ts.Done.Root) == 0) {
			return nil, fmt.Errorf("restore %q: task %d completed without a result", rec.ID, i)
		}
		if ts.Status != api.TaskCompleted && ts.Done != nil {
			// It would be placed again and its new result ignored: lost.
			return nil, fmt.Errorf("restore %q: task %d %s with a result", rec.ID, i, ts.Status)
		}
		if ts.Status == api.TaskFailed && ts.Failures < rec.MaxAttempts {
			return nil, fmt.Errorf("restore %q: task %d failed after %d of %d attempts", rec.ID, i, ts.Failures, rec.MaxAttempts)
		}
		if s.Status == api.JobCompleted && ts.Status != api.TaskCompleted {
			return nil, fmt.Errorf("restore %q: completed job with task %d %s", rec.ID, i, ts.Status)
		}
		if (s.Status == api.JobPending || s.Status == api.JobRunning) && ts.Status == api.TaskCancelled {
			return nil, fmt.Errorf("restore %q: %s job with a cancelled task %d", rec.ID, s.Status, i)
		}
		if ts.Failures < 0 || ts.Started < 0 || ts.NextAttempt < 0 || len(ts.InFlight) > 2 {
			return nil, fmt.Errorf("restore %q: task %d: counters out of range", rec.ID, i)
		}
	}
	j := c.addJob(rec, s.Created)
	j.status, j.updated, j.finished, j.reasons, j.err, j.bucket, j.seq = s.Status, s.Updated, s.Finished, s.Reasons, s.Error, s.Bucket, s.Seq
	var acts []Action
	for i, ts := range s.Tasks {
		t := j.tasks[i]
		t.setStatus(ts.Status)
		t.nextAttempt, t.started, t.failures, t.specCopies = ts.NextAttempt, ts.Started, ts.Failures, ts.SpecCopies
		ps := peers[i]
		t.done, t.err, t.provider, t.progress, t.startedAt, t.finishedAt = ps.done, ts.Error, ps.provider, ts.Progress, ts.StartedAt, ts.FinishedAt
		for _, p := range ps.excluded {
			t.excluded[p] = true
		}
		if j.terminal() {
			continue
		}
		for k, f := range ts.InFlight {
			acts = append(acts, CancelTask{JobID: rec.ID, TaskID: t.id, Attempt: f.Attempt, Peer: ps.inFlight[k], Reason: "submitter restarted"})
			t.failures++
		}
		switch {
		case t.status == api.TaskCompleted || t.status == api.TaskFailed:
		case ps.fetching != nil:
			t.fetching, t.backup = ps.fetching, ps.backup
			t.setStatus(api.TaskRunning)
			acts = append(acts, FetchResult{JobID: rec.ID, TaskID: t.id, Attempt: ps.fetching.Attempt, Peer: ps.fetching.Peer, Root: ps.fetching.Root})
		case t.failures >= rec.MaxAttempts:
			t.setStatus(api.TaskFailed)
			t.err = "out of attempts (submitter restarted during the last one)"
		default:
			t.setStatus(api.TaskPending)
			t.provider, t.progress = "", 0
		}
	}
	if j.terminal() {
		return acts, nil
	}
	for _, t := range j.tasks {
		if t.status == api.TaskFailed {
			msg := fmt.Sprintf("task %d failed after %d attempts: %s", t.spec.Index, t.failures, t.err)
			return append(acts, c.finish(now, j, api.JobFailed, msg)...), nil
		}
	}
	if j.completed() == len(j.tasks) { // assembling, or about to be
		j.assembling = true
		outs := make([]TaskOutput, len(j.tasks))
		for i, t := range j.tasks {
			outs[i] = TaskOutput{TaskID: t.id, Index: t.spec.Index, Root: t.done.Root, Provider: t.done.Peer, Attempt: t.done.Attempt}
		}
		acts = append(acts, AssembleJob{JobID: rec.ID, Results: outs})
	}
	return append(acts, c.jobEvent(now, j, "restored")), nil
}
