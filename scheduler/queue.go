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
	items    []*pb.Assignment
	reserved map[resKey][]time.Time // expiry of each slot reserved for a submitter's job
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

// Reserved returns the number of live reservations.
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
		if it.JobId == a.JobId && it.TaskId == a.TaskId && it.Attempt == a.Attempt {
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
	q.items = append(q.items, a)
	return nil
}

// Pop removes and returns the oldest assignment.
func (q *Queue) Pop() (*pb.Assignment, bool) {
	if len(q.items) == 0 {
		return nil, false
	}
	a := q.items[0]
	q.items[0] = nil
	q.items = q.items[1:]
	return a, true
}

// PopJob removes and returns up to max more queued assignments of jobID
// with the given template, oldest first (to run them as one batch).
func (q *Queue) PopJob(jobID, templateID string, max int) []*pb.Assignment {
	var out []*pb.Assignment
	kept := q.items[:0]
	for _, a := range q.items {
		if len(out) < max && a.JobId == jobID && a.TemplateId == templateID {
			out = append(out, a)
			continue
		}
		kept = append(kept, a)
	}
	clear(q.items[len(kept):])
	q.items = kept
	return out
}

// RemoveAssignment drops one queued attempt and reports whether it was
// queued.
func (q *Queue) RemoveAssignment(jobID, taskID string, attempt int32) bool {
	for i, a := range q.items {
		if a.JobId == jobID && a.TaskId == taskID && a.Attempt == attempt {
			q.items = append(q.items[:i], q.items[i+1:]...)
			return true
		}
	}
	return false
}

// Remove drops the queued tasks of jobID (taskID "" = all of them),
// returning how many it dropped. Reservations stay: Release drops them,
// for the submitter that holds them.
func (q *Queue) Remove(jobID, taskID string) int {
	kept := q.items[:0]
	n := 0
	for _, a := range q.items {
		if a.JobId == jobID && (taskID == "" || a.TaskId == taskID) {
			n++
			continue
		}
		kept = append(kept, a)
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
