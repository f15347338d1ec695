package node

import (
	"sync"

	"github.com/swarmgen/swarmgen/api"
)

// eventHub fans job events out to SSE subscribers. A subscriber that falls
// behind loses events (its channel is full) rather than slowing the
// scheduler; the stream's first event carries the job's status, and clients
// re-read the job (GET /v1/jobs/{id}) when they see a gap in Seq. The one
// event a subscriber does not lose is the job's last (a terminal "job"
// event): with no room for it, it waits aside (subscription.last), so that
// the stream still ends. Safe for concurrent use.
type eventHub struct {
	mu   sync.Mutex
	seq  uint64
	subs map[string]map[*subscription]struct{}
}

// subscription is one subscriber's events: ch in order, and last, the
// job's terminal event when ch had no room for it.
type subscription struct {
	ch   chan api.Event
	last chan api.Event // capacity 1
}

func newEventHub() *eventHub { return &eventHub{subs: map[string]map[*subscription]struct{}{}} }

func (h *eventHub) publish(jobID string, e api.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.Seq == 0 {
		h.seq++
		e.Seq = h.seq
	}
	if e.JobID == "" {
		e.JobID = jobID
	}
	for sub := range h.subs[jobID] {
		select {
		case sub.ch <- e:
		default:
			if e.Type == "job" && isTerminal(e.Status) {
				select {
				case sub.last <- e:
				default:
				}
			}
		}
	}
}

// subscribe returns jobID's subscription and a function that ends it.
func (h *eventHub) subscribe(jobID string) (*subscription, func()) {
	sub := &subscription{ch: make(chan api.Event, 256), last: make(chan api.Event, 1)}
	h.mu.Lock()
	if h.subs[jobID] == nil {
		h.subs[jobID] = map[*subscription]struct{}{}
	}
	h.subs[jobID][sub] = struct{}{}
	h.mu.Unlock()
	return sub, func() {
		h.mu.Lock()
		delete(h.subs[jobID], sub)
		if len(h.subs[jobID]) == 0 {
			delete(h.subs, jobID)
		}
		h.mu.Unlock()
	}
}
