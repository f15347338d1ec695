package node

import (
	"testing"

	"github.com/swarmgen/swarmgen/api"
)

// TestHubKeepsTheLastEvent: a subscriber that fell behind loses events,
// but not the job's terminal one, which waits aside so that its stream
// still ends.
func TestHubKeepsTheLastEvent(t *testing.T) {
	h := newEventHub()
	sub, stop := h.subscribe("j")
	defer stop()
	for range cap(sub.ch) + 10 {
		h.publish("j", api.Event{Type: "progress"})
	}
	h.publish("j", api.Event{Type: "job", Status: api.JobRunning, Message: "not the end"})
	select {
	case e := <-sub.last:
		t.Fatalf("a non-terminal event was kept aside: %+v", e)
	default:
	}
	h.publish("j", api.Event{Type: "job", Status: api.JobCompleted})
	select {
	case e := <-sub.last:
		if e.Status != api.JobCompleted || e.JobID != "j" || e.Seq == 0 {
			t.Fatalf("kept %+v", e)
		}
	default:
		t.Fatal("the terminal event was dropped with the others")
	}
	if len(sub.ch) != cap(sub.ch) {
		t.Fatalf("ch holds %d", len(sub.ch))
	}
	// A subscriber with room gets it in order, as usual.
	sub2, stop2 := h.subscribe("j")
	defer stop2()
	h.publish("j", api.Event{Type: "job", Status: api.JobCancelled})
	if e := <-sub2.ch; e.Status != api.JobCancelled || len(sub2.last) != 0 {
		t.Fatalf("in order: %+v, aside %d", e, len(sub2.last))
	}
}
