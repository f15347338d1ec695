package node

import (
	"sync"

	"github.com/swarmgen/swarmgen/api"
)

// eventHub fans job events out to SSE subscribers. A subscriber that falls
// behind loses events (its channel is full) rather than slowing the
// scheduler; the stream's first event carries the job's status, and clients
// re-read the job (GET /v1/jobs/{id}) when they see a gap in Seq. Safe for concurrent
// use.
type eventHub struct {
	mu   sync.Mutex
	seq  uint64
	subs map[string]map[chan api.Event]struct{}
}

func newEventHub() *eventHub { return &eventHub{subs: map[string]map[chan api.Event]struct{}{}} }

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
	for ch := range h.subs[jobID] {
		select {
		case ch <- e:
		default:
		}
	}
}

// subscribe returns a channel of jobID's events and a function that ends
// the subscription.
func (h *eventHub) subscribe(jobID string) (<-chan api.Event, func()) {
	ch := make(chan api.Event, 256)
	h.mu.Lock()
	if h.subs[jobID] == nil {
		h.subs[jobID] = map[chan api.Event]struct{}{}
	}
	h.subs[jobID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[jobID], ch)
		if len(h.subs[jobID]) == 0 {
			delete(h.subs, jobID)
		}
		h.mu.Unlock()
	}
}
