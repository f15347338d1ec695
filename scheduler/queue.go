package scheduler

import (
	"errors"
	"time"

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
	reserved map[string][]time.Time // job ID → expiry of each reserved slot
}

// NewQueue returns a queue holding at most capacity tasks and reservations
// together.
func NewQueue(capacity int) *Queue {
	return &Queue{cap: max(capacity, 0), reserved: map[string][]time.Time{}}
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

// Reserve holds up to n slots for jobID until expires and returns how many
// it held (0 when full).
func (q *Queue) Reserve(jobID string, n int, expires time.Time) int {
	n = min(n, q.Free())
	for range n {
		q.reserved[jobID] = append(q.reserved[jobID], expires)
	}
	return max(n, 0)
}

// Push queues an assignment, consuming one of its job's reservations if
// there is one, else a free slot; ErrQueueFull when neither is left.
func (q *Queue) Push(a *pb.Assignment) error {
	if a == nil || a.JobId == "" || a.TaskId == "" {
		return ErrNoAssignment
	}
	for _, it := range q.items {
		if it.JobId == a.JobId && it.TaskId == a.TaskId && it.Attempt == a.Attempt {
			return ErrDuplicate
		}
	}
	if rs := q.reserved[a.JobId]; len(rs) > 0 {
		q.reserved[a.JobId] = rs[1:]
		if len(rs) == 1 {
			delete(q.reserved, a.JobId)
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

// Remove drops the queued tasks of jobID (taskID "" = all of them) and the
// job's reservations when taskID is "", returning how many tasks it dropped.
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
	if taskID == "" {
		delete(q.reserved, jobID)
	}
	return n
}

// Release drops jobID's reservations and returns how many it dropped.
func (q *Queue) Release(jobID string) int {
	n := len(q.reserved[jobID])
	delete(q.reserved, jobID)
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
