package scheduler

import (
	"errors"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Queue errors.
var (
	ErrQueueFull    = errors.New("queue full")
	ErrDuplicate    = errors.New("task already queued")
	ErrNoAssignment = errors.New("assignment missing ids")
)

// Queue is a provider's bounded FIFO of accepted tasks plus reservations:
// slots promised in a bid and held until the assignment comes or the
// reservation expires. A pure data structure: no goroutines, no clock
// (time comes in as arguments). Not safe for concurrent use.
type Queue struct {
	cap      int
	items    []queued
	reserved map[resKey][]time.Time // expiry of each slot reserved for a submitter's job
}

// queued is an assignment and the submitter it came from. A task is the
// owner's job, task and attempt together: another peer that reuses the
// same IDs (they are not secret) has a task of its own, which can neither
// block the owner's as a duplicate nor join its batches.
type queued struct {
	owner peer.ID
	a     *pb.Assignment
}

func (it queued) is(owner peer.ID, jobID, taskID string, attempt int32) bool {
	return it.owner == owner && it.a.JobId == jobID && it.a.TaskId == taskID && it.a.Attempt == attempt
}

// resKey names whose reservations they are: the submitter that asked for
// the bid, and its job. Only that submitter's assignments consume them
// and only it can release them (job IDs are the submitters' own; another
// peer that learns one must not be able to spend or drop its slots).
type resKey struct {
	owner peer.ID
	job   string
}

// NewQueue returns a queue holding at most capacity tasks and reservations
// together.
func NewQueue(capacity int) *Queue {
	return &Queue{cap: max(capacity, 0), reserved: map[resKey][]time.Time{}}
}

// Len returns the number of queued tasks.
func (q *Queue) Len() int { return len(q.items) }

// Reserved returns the number of reservations held: call Expire first
// for the live ones.
func (q *Queue) Reserved() int {
	n := 0
	for _, rs := range q.reserved {
		n += len(rs)
	}
	return n
}

// Free returns how many more tasks or reservations fit.
func (q *Queue) Free() int { return q.cap - len(q.items) - q.Reserved() }

// Reserve holds up to n slots for owner's job jobID until expires and
// returns how many it held (0 when full).
func (q *Queue) Reserve(owner peer.ID, jobID string, n int, expires time.Time) int {
	n = min(n, q.Free())
	k := resKey{owner, jobID}
	for range n {
		q.reserved[k] = append(q.reserved[k], expires)
	}
	return max(n, 0)
}

// Push queues an assignment from owner, consuming one of the reservations
// owner holds for its job if there is one, else a free slot; ErrQueueFull
// when neither is left.
func (q *Queue) Push(owner peer.ID, a *pb.Assignment) error {
	if a == nil || a.JobId == "" || a.TaskId == "" {
		return ErrNoAssignment
	}
	for _, it := range q.items {
		if it.is(owner, a.JobId, a.TaskId, a.Attempt) {
			return ErrDuplicate
		}
	}
	k := resKey{owner, a.JobId}
	if rs := q.reserved[k]; len(rs) > 0 {
		q.reserved[k] = rs[1:]
		if len(rs) == 1 {
			delete(q.reserved, k)
		}
	} else if q.Free() <= 0 {
		return ErrQueueFull
	}
	q.items = append(q.items, queued{owner, a})
	return nil
}

// Pop removes and returns the oldest assignment and its owner.
func (q *Queue) Pop() (peer.ID, *pb.Assignment, bool) {
	if len(q.items) == 0 {
		return "", nil, false
	}
	it := q.items[0]
	q.items[0] = queued{}
	q.items = q.items[1:]
	return it.owner, it.a, true
}

// PopJob removes and returns up to max more queued assignments of owner's
// job jobID with the given template, oldest first (to run them as one
// batch).
func (q *Queue) PopJob(owner peer.ID, jobID, templateID string, max int) []*pb.Assignment {
	var out []*pb.Assignment
	kept := q.items[:0]
	for _, it := range q.items {
		if len(out) < max && it.owner == owner && it.a.JobId == jobID && it.a.TemplateId == templateID {
			out = append(out, it.a)
			continue
		}
		kept = append(kept, it)
	}
	clear(q.items[len(kept):])
	q.items = kept
	return out
}

// RemoveAssignment drops one of owner's queued attempts and reports
// whether it was queued.
func (q *Queue) RemoveAssignment(owner peer.ID, jobID, taskID string, attempt int32) bool {
	for i, it := range q.items {
		if it.is(owner, jobID, taskID, attempt) {
			q.items = append(q.items[:i], q.items[i+1:]...)
			return true
		}
	}
	return false
}

// Remove drops owner's queued tasks of jobID (taskID "" = all of them),
// returning how many it dropped. Reservations stay: Release drops them.
func (q *Queue) Remove(owner peer.ID, jobID, taskID string) int {
	kept := q.items[:0]
	n := 0
	for _, it := range q.items {
		if it.owner == owner && it.a.JobId == jobID && (taskID == "" || it.a.TaskId == taskID) {
			n++
			continue
		}
		kept = append(kept, it)
	}
	clear(q.items[len(kept):])
	q.items = kept
	return n
}

// Release drops the reservations owner holds for jobID and returns how
// many it dropped.
func (q *Queue) Release(owner peer.ID, jobID string) int {
	k := resKey{owner, jobID}
	n := len(q.reserved[k])
	delete(q.reserved, k)
	return n
}

// Expire drops reservations whose expiry is not after now and returns how
// many it dropped.
func (q *Queue) Expire(now time.Time) int {
	n := 0
	for job, rs := range q.reserved {
		kept := rs[:0]
		for _, e := range rs {
			if e.After(now) {
				kept = append(kept, e)
			} else {
				n++
			}
		}
		if len(kept) == 0 {
			delete(q.reserved, job)
		} else {
			q.reserved[job] = kept
		}
	}
	return n
}
