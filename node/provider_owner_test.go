package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// blockingExec runs until its task is cancelled.
type blockingExec struct{}

func (blockingExec) Kind() string                    { return inference.KindProcess }
func (blockingExec) Available(context.Context) error { return nil }
func (blockingExec) Run(ctx context.Context, _ *inference.Task, _ string, _ inference.Progress) (*inference.Result, error) {
	<-ctx.Done()
	return nil, inference.ErrCancelled
}

// ownerTestNode is a providing node with slots slots whose tasks block
// until cancelled.
func ownerTestNode(t *testing.T, dir string, slots int) *Node {
	t.Helper()
	return testNode(t, dir, func(c *Config) { c.Provide, c.Slots = true, slots }, WithExecutor(inference.KindProcess, blockingExec{}))
}

func randomPeer(t *testing.T) peer.ID {
	_, pub, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Bid reservations that are never used or released (their submitter
// crashed, restarted, or its job-level cancel was lost) stop counting when
// they expire. Before, Decide counted them and only an accepted bid
// expired them: a 1-slot provider declined every later bid as full.
func TestExpiredReservationsDoNotBlockBids(t *testing.T) {
	n := ownerTestNode(t, t.TempDir(), 1)
	gone, other := randomPeer(t), randomPeer(t)
	b := n.provider.bid(gone, &pb.BidRequest{JobId: "j-gone", Tasks: 2, TemplateId: "noop", Executor: inference.KindProcess})
	if !b.Accept || b.Slots != 2 {
		t.Fatalf("first bid: %v", b)
	}
	time.Sleep(reservationTTL + 500*time.Millisecond)
	b = n.provider.bid(other, &pb.BidRequest{JobId: "j-other", Tasks: 1, TemplateId: "noop", Executor: inference.KindProcess})
	n.provider.mu.Lock()
	res := n.provider.queue.Reserved()
	n.provider.mu.Unlock()
	if !b.Accept || res != 1 {
		t.Errorf("idle provider after its reservations expired: accept=%v %q, %d reserved (want the new bid's 1)", b.Accept, b.Reason, res)
	}
}

// A task on a provider is its submitter's job, task and attempt: a peer
// that learned a job ID (every provider asked for a bid does) and queues
// an assignment with its next task ID does not get the real submitter's
// refused as a duplicate (two declines and the submitter would never offer
// the task to this provider again).
func TestTaskIDsBelongToTheirSubmitter(t *testing.T) {
	n := ownerTestNode(t, t.TempDir(), 1)
	owner, squatter := randomPeer(t), randomPeer(t)
	mk := func() *pb.Assignment {
		return &pb.Assignment{JobId: "j-victim", TaskId: "j-victim-0", Index: 0, Count: 1, Attempt: 1, TemplateId: "noop"}
	}
	if b := n.provider.bid(owner, &pb.BidRequest{JobId: "j-victim", Tasks: 1, TemplateId: "noop", Executor: inference.KindProcess}); !b.Accept {
		t.Fatalf("bid: %v", b)
	}
	if tk, why := n.provider.admit(squatter, mk()); tk == nil {
		t.Fatalf("squatter refused: %s", why)
	}
	tk, why := n.provider.admit(owner, mk())
	t.Logf("owner's own assignment: admitted=%v reason=%q", tk != nil, why)
	if tk == nil {
		t.Errorf("the submitter's assignment was refused because another peer used its task ID first: %s", why)
	}
}

// A persisted snapshot with a negative task index is refused by Restore
// (the job is skipped with an error in the log); before, it was accepted
// and the node's start indexed its task list with it and panicked, at
// every start.
func TestInconsistentSnapshotDoesNotStopStart(t *testing.T) {
	dir := t.TempDir()
	rec := scheduler.JobRecord{ID: "j-neg", Requirements: scheduler.Requirements{TemplateID: "noop", Executors: []string{inference.KindProcess}},
		Tasks: []jobspec.TaskSpec{{Index: 0}, {Index: -1}}, MaxAttempts: 3, Timeout: time.Hour}
	c := scheduler.NewCoordinator(scheduler.Config{})
	if _, err := c.Submit(time.Now(), rec); err != nil {
		t.Fatal(err)
	}
	snap, err := c.Export("j-neg")
	if err != nil {
		t.Fatal(err)
	}
	db, err := openStateDB(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.putMeta("j-neg", &jobMeta{Record: rec, Template: "noop"}); err != nil {
		t.Fatal(err)
	}
	if err := db.putSnapshot("j-neg", snap); err != nil {
		t.Fatal(err)
	}
	db.Close()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("node start panicked on the persisted snapshot: %v", r)
		}
	}()
	ownerTestNode(t, dir, 1)
}

// batchingExec is a process executor that batches; Run blocks until release.
type batchingExec struct {
	release chan struct{}
	batches chan []string
}

func (batchingExec) Kind() string                    { return inference.KindProcess }
func (batchingExec) Available(context.Context) error { return nil }
func (b batchingExec) Run(ctx context.Context, _ *inference.Task, _ string, _ inference.Progress) (*inference.Result, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil, inference.ErrCancelled
}
func (b batchingExec) RunBatch(_ context.Context, tasks []*inference.Task, _ []string, _ func(int, float64)) ([]*inference.Result, error) {
	var ids []string
	for _, t := range tasks {
		ids = append(ids, t.TaskID)
	}
	b.batches <- ids
	// As the warm SD pool does for tasks of two models in one batch.
	return nil, inference.ErrExit
}

// Batches hold one submitter's tasks: another peer's assignment that
// reuses a job ID does not join that job's batch (where a batch-level
// error, such as the warm pool refusing a batch whose tasks ask for
// different models, would fail the owner's attempts too).
func TestBatchesKeepToOneSubmitter(t *testing.T) {
	be := batchingExec{release: make(chan struct{}), batches: make(chan []string, 4)}
	n := testNode(t, t.TempDir(), func(c *Config) { c.Provide, c.Slots = true, 1 }, WithExecutor(inference.KindProcess, be))
	owner, squatter := randomPeer(t), randomPeer(t)
	as := func(job, task string, idx int32) *pb.Assignment {
		return &pb.Assignment{JobId: job, TaskId: task, Index: idx, Count: 4, Attempt: 1, TemplateId: "noop"}
	}
	plug, why := n.provider.admit(owner, as("j-plug", "j-plug-0", 0))
	if plug == nil {
		t.Fatal(why)
	}
	time.Sleep(200 * time.Millisecond) // the only worker runs the plug
	victim, why := n.provider.admit(owner, as("j-victim", "j-victim-0", 0))
	if victim == nil {
		t.Fatal(why)
	}
	if tk, why := n.provider.admit(squatter, as("j-victim", "j-victim-3", 3)); tk == nil {
		t.Fatal(why)
	}
	close(be.release)
	select {
	case ids := <-be.batches:
		t.Errorf("tasks of two submitters ran as one batch: %v", ids)
	case <-time.After(2 * time.Second):
	}
	for range victim.updates {
	}
}

// When a submitter's task session ends (it crashed or the session broke)
// its queued tasks leave the queue at once. Before, only their contexts
// were cancelled and they held their queue entries until a worker popped
// them: a busy 1-slot provider bid "full", and a restarted submitter
// reusing an attempt number was refused as a duplicate.
func TestEndedSessionFreesQueuedTasks(t *testing.T) {
	n := ownerTestNode(t, t.TempDir(), 1)
	other, sub := randomPeer(t), randomPeer(t)
	as := func(job, task string) *pb.Assignment {
		return &pb.Assignment{JobId: job, TaskId: task, Index: 0, Count: 1, Attempt: 1, TemplateId: "noop"}
	}
	// Another submitter's long task occupies the only worker.
	if tk, why := n.provider.admit(other, as("j-long", "j-long-0")); tk == nil {
		t.Fatal(why)
	}
	time.Sleep(200 * time.Millisecond)
	a, b := net.Pipe()
	done := make(chan struct{})
	go func() { n.provider.serveSession(sub, b, b.Close); close(done) }()
	go func() { // read updates
		r := bufio.NewReader(a)
		for {
			var u pb.TaskUpdate
			if protocol.ReadMsg(r, protocol.MaxTaskUpdate, &u) != nil {
				return
			}
		}
	}()
	for _, id := range []string{"j-s-0", "j-s-1"} {
		if err := protocol.WriteMsg(a, &pb.TaskRequest{Body: &pb.TaskRequest_Assignment{Assignment: as("j-s", id)}}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	a.Close() // the submitter is gone
	<-done
	time.Sleep(200 * time.Millisecond)
	n.provider.mu.Lock()
	qlen := n.provider.queue.Len()
	n.provider.mu.Unlock()
	b2 := n.provider.bid(randomPeer(t), &pb.BidRequest{JobId: "j-new", Tasks: 1, TemplateId: "noop", Executor: inference.KindProcess})
	tk, why := n.provider.admit(sub, as("j-s", "j-s-0"))
	if qlen > 0 {
		t.Errorf("cancelled attempts of a dead session still hold %d queue entries", qlen)
	}
	if !b2.Accept {
		t.Errorf("bid after the session ended: %q", b2.Reason)
	}
	if tk == nil {
		t.Errorf("re-assignment of the same attempt refused: %q", why)
	}
}
