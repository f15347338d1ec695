package scheduler

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

func TestBidPolicyDecide(t *testing.T) {
	now := t0
	base := func() *pb.BidRequest {
		return &pb.BidRequest{JobId: "j", Tasks: 5, TemplateId: "stable-diffusion", Executor: "process",
			Image: "swarmgen/sd-worker:latest", Model: "m", Resources: &pb.Resources{Memory: 1 << 30},
			DeadlineMs: now.Add(time.Second).UnixMilli()}
	}
	local := LocalState{FreeMemory: 8 << 30, CPUs: 8000, Executors: []string{"process"}, WarmModels: []string{"m"}}
	pol := BidPolicy{Slots: 2, MaxQueue: 2, PricePerTaskMicros: 50, AvgTaskDuration: 10 * time.Second}

	cases := []struct {
		name   string
		pol    func(*BidPolicy)
		local  func(*LocalState)
		req    func(*pb.BidRequest)
		reason Reason
		slots  int32
	}{
		{name: "accepts up to slots+queue", slots: 4},
		{name: "at most two per slot", pol: func(p *BidPolicy) { p.MaxQueue = 10 }, req: func(r *pb.BidRequest) { r.Tasks = 100 }, slots: 4},
		{name: "two per slot counts what it holds", pol: func(p *BidPolicy) { p.MaxQueue = 10 }, local: func(l *LocalState) { l.Running = 2; l.Queued = 1 }, req: func(r *pb.BidRequest) { r.Tasks = 100 }, slots: 1},
		{name: "full at two per slot though the queue has room", pol: func(p *BidPolicy) { p.MaxQueue = 10 }, local: func(l *LocalState) { l.Running = 2; l.Queued = 2 }, reason: ReasonFull},
		{name: "fewer tasks than room", req: func(r *pb.BidRequest) { r.Tasks = 1 }, slots: 1},
		{name: "partly busy", local: func(l *LocalState) { l.Running = 2; l.Queued = 1 }, slots: 1},
		{name: "queue full", local: func(l *LocalState) { l.Running = 2; l.Queued = 2 }, reason: ReasonQueueFull},
		{name: "full without queue", pol: func(p *BidPolicy) { p.MaxQueue = 0 }, local: func(l *LocalState) { l.Running = 2 }, reason: ReasonFull},
		{name: "expired", req: func(r *pb.BidRequest) { r.DeadlineMs = now.Add(-time.Millisecond).UnixMilli() }, reason: ReasonBidExpired},
		{name: "bad request", req: func(r *pb.BidRequest) { r.Tasks = 0 }, reason: ReasonBadRequest},
		{name: "template not allowed", pol: func(p *BidPolicy) { p.AllowTemplates = []string{"fractal"} }, reason: ReasonTemplateNotAllowed},
		{name: "executor missing", local: func(l *LocalState) { l.Executors = []string{"wasm"} }, reason: ReasonExecutorMissing},
		{name: "docker runs the image", local: func(l *LocalState) { l.Executors = []string{"docker"} }, slots: 4},
		{name: "image not allowed", pol: func(p *BidPolicy) { p.AllowImages = []string{"other"} }, local: func(l *LocalState) { l.Executors = []string{"docker"} }, reason: ReasonImageNotAllowed},
		{name: "no gpu", req: func(r *pb.BidRequest) { r.Resources.Gpus = 1 }, reason: ReasonNoGPU},
		{name: "gpu memory", req: func(r *pb.BidRequest) { r.Resources.Gpus = 1; r.Resources.GpuMemory = 16 << 30 }, local: func(l *LocalState) { l.GPUs = 1; l.GPUMemory = 8 << 30 }, reason: ReasonGPUMemory},
		{name: "memory", req: func(r *pb.BidRequest) { r.Resources.Memory = 9 << 30 }, reason: ReasonMemory},
		{name: "cpu", req: func(r *pb.BidRequest) { r.Resources.CpuMillis = 16000 }, reason: ReasonCPU},
		{name: "price", req: func(r *pb.BidRequest) { r.MaxPriceMicros = 10 }, reason: ReasonOverMaxPrice},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, l, r := pol, local, base()
			if c.pol != nil {
				c.pol(&p)
			}
			if c.local != nil {
				c.local(&l)
			}
			if c.req != nil {
				c.req(r)
			}
			b := p.Decide(r, l, now)
			if c.reason != "" {
				if b.Accept || b.Reason != string(c.reason) {
					t.Fatalf("bid = %v, want rejection %s", b, c.reason)
				}
				return
			}
			if !b.Accept || b.Slots != c.slots || b.PriceMicros != 50 || !b.Warm {
				t.Fatalf("bid = %v, want %d slots", b, c.slots)
			}
		})
	}
	// ETA: with both slots busy and one queued, a new task waits about
	// one task duration.
	b := pol.Decide(base(), LocalState{Running: 2, Queued: 1, FreeMemory: 8 << 30, Executors: []string{"process"}}, now)
	if !b.Accept || b.EtaMs != 10_000 {
		t.Fatalf("eta bid = %v", b)
	}
	if b := pol.Decide(nil, local, now); b.Accept {
		t.Fatal("nil request accepted")
	}
}

func TestQueueBounds(t *testing.T) {
	q := NewQueue(3)
	sub, other := peer.ID("submitter"), peer.ID("other")
	as := func(task string) *pb.Assignment { return &pb.Assignment{JobId: "j", TaskId: task, Attempt: 1} }
	if got := q.Reserve(sub, "j", 2, t0.Add(time.Second)); got != 2 {
		t.Fatalf("reserved %d", got)
	}
	if got := q.Reserve(sub, "k", 5, t0.Add(time.Second)); got != 1 {
		t.Fatalf("reserved %d beyond capacity", got)
	}
	if q.Free() != 0 {
		t.Fatal("free after reservations")
	}
	// j's assignments consume its reservations; a third has no room.
	for _, id := range []string{"a", "b"} {
		if err := q.Push(sub, as(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Push(sub, as("c")); err != ErrQueueFull {
		t.Fatalf("push over capacity: %v", err)
	}
	if err := q.Push(sub, as("a")); err != ErrDuplicate {
		t.Fatalf("duplicate: %v", err)
	}
	if err := q.Push(sub, &pb.Assignment{}); err != ErrNoAssignment {
		t.Fatalf("empty: %v", err)
	}
	// k's reservation expires, freeing room.
	if n := q.Expire(t0.Add(time.Second)); n != 1 || q.Free() != 1 {
		t.Fatalf("expired %d, free %d", n, q.Free())
	}
	if err := q.Push(sub, as("c")); err != nil {
		t.Fatal(err)
	}
	// FIFO order, and Remove drops a job's tasks.
	if owner, a, _ := q.Pop(); a.TaskId != "a" || owner != sub {
		t.Fatalf("pop = %v from %s", a, owner)
	}
	if n := q.Remove(other, "j", "c"); n != 0 {
		t.Fatalf("another peer removed %d of sub's tasks", n)
	}
	if n := q.Remove(sub, "j", "c"); n != 1 || q.Len() != 1 {
		t.Fatalf("removed %d, len %d", n, q.Len())
	}
	if _, a, ok := q.Pop(); !ok || a.TaskId != "b" {
		t.Fatalf("pop = %v", a)
	}
	if _, _, ok := q.Pop(); ok {
		t.Fatal("pop from empty queue")
	}
	// Release drops one job's reservations, not another's.
	q.Reserve(sub, "j", 2, t0.Add(time.Hour))
	q.Reserve(sub, "k", 1, t0.Add(time.Hour))
	// Another peer naming the same job can neither release nor spend them.
	if n := q.Release(other, "j"); n != 0 || q.Reserved() != 3 {
		t.Fatalf("another peer released %d of j's reservations", n)
	}
	if err := q.Push(other, &pb.Assignment{JobId: "j", TaskId: "x", Attempt: 1}); err != ErrQueueFull {
		t.Fatalf("another peer's assignment took j's reservation: %v", err)
	}
	if n := q.Release(sub, "j"); n != 2 || q.Reserved() != 1 || q.Free() != 2 {
		t.Fatalf("released %d, reserved %d, free %d", n, q.Reserved(), q.Free())
	}
	if n := q.Release(sub, "j"); n != 0 {
		t.Fatalf("released %d twice", n)
	}
}

// TestQueueTasksBelongToOwners: the same job, task and attempt IDs from
// another submitter are another task: no duplicate for the owner's, not in
// its batches, not removed with it.
func TestQueueTasksBelongToOwners(t *testing.T) {
	q := NewQueue(8)
	sub, other := peer.ID("submitter"), peer.ID("other")
	as := func(task string) *pb.Assignment {
		return &pb.Assignment{JobId: "j", TaskId: task, Attempt: 1, TemplateId: "sd"}
	}
	if err := q.Push(other, as("j-0")); err != nil {
		t.Fatal(err)
	}
	if err := q.Push(sub, as("j-0")); err != nil {
		t.Fatalf("the owner's task refused because another peer queued its IDs first: %v", err)
	}
	if err := q.Push(sub, as("j-1")); err != nil {
		t.Fatal(err)
	}
	if err := q.Push(other, as("j-2")); err != nil {
		t.Fatal(err)
	}
	owner, first, _ := q.Pop()
	if owner != other {
		t.Fatalf("popped %s's first", owner)
	}
	batch := q.PopJob(owner, first.JobId, first.TemplateId, 4)
	if len(batch) != 1 || batch[0].TaskId != "j-2" {
		t.Fatalf("other's batch %v took the owner's tasks", batch)
	}
	if q.RemoveAssignment(other, "j", "j-1", 1) {
		t.Fatal("another peer removed the owner's queued attempt")
	}
	if !q.RemoveAssignment(sub, "j", "j-1", 1) || q.Len() != 1 {
		t.Fatalf("owner's removal: len %d", q.Len())
	}
}
