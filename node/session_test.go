package node

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// runNoopJob submits a noop job of n tasks to node 0 and waits for it.
func runNoopJob(t *testing.T, d *Devnet, n int) api.Job {
	t.Helper()
	apiAddr := d.Nodes()[0].APIAddr()
	code, created := postJob(t, apiAddr, []byte(fmt.Sprintf(`{"templateID":"noop","params":{"partitioner":{"num_replicas":%d},"app":{}}}`, n)))
	if code != http.StatusCreated {
		t.Fatalf("%d %v", code, created)
	}
	j := waitJob(t, apiAddr, created["id"].(string), 60*time.Second, api.JobCompleted, api.JobFailed)
	if j.Status != api.JobCompleted {
		t.Fatalf("job %s: %s", j.Status, j.Error)
	}
	return j
}

// TestTaskSessionsCarryTasks: every task of a job travels on one task
// session per provider, none on a stream of its own.
func TestTaskSessionsCarryTasks(t *testing.T) {
	d := inProcessDevnet(t, 3, func(i int, c *Config) { c.Provide = i != 0; c.Slots = 2 })
	const tasks = 30
	runNoopJob(t, d, tasks)
	var onSessions int64
	for _, n := range d.Nodes()[1:] {
		onSessions += n.provider.sessionTasks.Load()
		if got := n.provider.streamTasks.Load(); got != 0 {
			t.Errorf("provider %s took %d tasks on streams of their own", n.ID(), got)
		}
	}
	if onSessions < tasks {
		t.Fatalf("%d assignments on sessions for %d tasks", onSessions, tasks)
	}
	s := d.Nodes()[0].submitter
	s.sessMu.Lock()
	open := len(s.sessions)
	s.sessMu.Unlock()
	if open == 0 || open > 2 {
		t.Fatalf("submitter holds %d task sessions for 2 providers", open)
	}
}

// TestTaskSessionFallback: a provider without task sessions (an older
// version) is sent each task on a stream of its own, and the job completes
// across both kinds of provider.
func TestTaskSessionFallback(t *testing.T) {
	ctxd := inProcessDevnetWith(t, 3, func(i int, c *Config) { c.Provide = i != 0; c.Slots = 2 }, func(i int) []Option {
		if i == 2 {
			return []Option{func(o *options) { o.noTaskSessions = true }}
		}
		return nil
	})
	runNoopJob(t, ctxd, 40)
	old, cur := ctxd.Nodes()[2].provider, ctxd.Nodes()[1].provider
	if old.sessionTasks.Load() != 0 || old.streamTasks.Load() == 0 {
		t.Fatalf("old provider: %d tasks on sessions, %d on streams", old.sessionTasks.Load(), old.streamTasks.Load())
	}
	if cur.sessionTasks.Load() == 0 || cur.streamTasks.Load() != 0 {
		t.Fatalf("current provider: %d tasks on sessions, %d on streams", cur.sessionTasks.Load(), cur.streamTasks.Load())
	}
}

// sessionPeer is a submitter's end of a task session to a provider, over
// a pipe, read and written by the test.
type sessionPeer struct {
	t       *testing.T
	conn    net.Conn
	r       *bufio.Reader
	updates chan *pb.TaskUpdate
}

func (sp *sessionPeer) send(req *pb.TaskRequest) {
	sp.t.Helper()
	if err := protocol.WriteMsg(sp.conn, req); err != nil {
		sp.t.Fatal(err)
	}
}

func (sp *sessionPeer) assign(job, task string, attempt int32, template, params string) {
	sp.send(&pb.TaskRequest{Body: &pb.TaskRequest_Assignment{Assignment: &pb.Assignment{
		JobId: job, TaskId: task, Attempt: attempt, Count: 1, TemplateId: template, AppParams: []byte(params)}}})
}

// until reads updates until one for task in one of states; it fails the
// test on a timeout or on a final state not asked for.
func (sp *sessionPeer) until(task string, states ...pb.TaskState) *pb.TaskUpdate {
	sp.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case u, ok := <-sp.updates:
			if !ok {
				sp.t.Fatalf("session ended while waiting for %s %v", task, states)
			}
			if u.TaskId != task {
				continue
			}
			for _, s := range states {
				if u.State == s {
					return u
				}
			}
			switch u.State {
			case pb.TaskState_TASK_STATE_SUCCEEDED, pb.TaskState_TASK_STATE_FAILED, pb.TaskState_TASK_STATE_CANCELLED, pb.TaskState_TASK_STATE_REJECTED:
				sp.t.Fatalf("task %s ended %v (%s), waiting for %v", task, u.State, u.Message, states)
			}
		case <-timeout:
			sp.t.Fatalf("no %v for task %s", states, task)
		}
	}
}

// TestProviderSessionProtocol drives a provider's end of a task session
// directly: tagged updates of interleaved tasks, a cancel that names
// another attempt leaves the task alone, one that names it stops it, a
// rejected assignment leaves the session up, and the session ending
// cancels what still runs on it.
func TestProviderSessionProtocol(t *testing.T) {
	d := inProcessDevnet(t, 2, func(i int, c *Config) { c.Slots = 2 })
	p := d.Nodes()[1].provider
	from := d.Nodes()[0].ID()
	a, b := net.Pipe()
	go p.serveSession(from, b, b.Close)
	sp := &sessionPeer{t: t, conn: a, r: bufio.NewReader(a), updates: make(chan *pb.TaskUpdate, 256)}
	go func() {
		defer close(sp.updates)
		for {
			u := new(pb.TaskUpdate)
			if err := protocol.ReadMsg(sp.r, protocol.MaxTaskUpdate, u); err != nil {
				return
			}
			sp.updates <- u
		}
	}()
	const long = `{"width":4096,"height":4096,"iterations":100000}`

	sp.assign("j", "long", 1, "fractal", long)
	sp.until("long", pb.TaskState_TASK_STATE_ACCEPTED)
	sp.until("long", pb.TaskState_TASK_STATE_RUNNING)
	sp.assign("j", "quick", 1, "noop", `{}`)
	if u := sp.until("quick", pb.TaskState_TASK_STATE_SUCCEEDED); u.JobId != "j" || u.Attempt != 1 || u.Result == nil {
		t.Fatalf("final update of quick: %+v", u)
	}
	// A cancel of another attempt: the provider reads requests in order,
	// so once the next assignment is answered it has seen the cancel.
	sp.send(&pb.TaskRequest{Body: &pb.TaskRequest_Cancel{Cancel: &pb.Cancel{JobId: "j", TaskId: "long", Attempt: 2}}})
	sp.assign("j", "bad", 1, "no-such-template", `{}`)
	sp.until("bad", pb.TaskState_TASK_STATE_REJECTED)
	p.mu.Lock()
	_, running := p.tasks[provKey{from, taskKey{"j", "long", 1}}]
	p.mu.Unlock()
	if !running {
		t.Fatal("a cancel naming attempt 2 stopped attempt 1")
	}
	sp.send(&pb.TaskRequest{Body: &pb.TaskRequest_Cancel{Cancel: &pb.Cancel{JobId: "j", TaskId: "long", Attempt: 1}}})
	sp.until("long", pb.TaskState_TASK_STATE_CANCELLED)

	// The submitter's end goes away with a task running: it is cancelled.
	sp.assign("j", "orphan", 1, "fractal", long)
	sp.until("orphan", pb.TaskState_TASK_STATE_RUNNING)
	a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		left := len(p.tasks)
		p.mu.Unlock()
		if left == 0 && p.load().Running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks still on the provider after its session ended", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTaskSessionHostileProvider: on the submitter's end, updates for
// attempts nobody waits for are dropped, the awaited one is routed, and
// bytes that do not decode end the session with an error every attempt on
// it sees.
func TestTaskSessionHostileProvider(t *testing.T) {
	d := inProcessDevnet(t, 1)
	n := d.Nodes()[0]
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	garbage := make(chan struct{})
	h.SetStreamHandler(protocol.TaskSessionProtocol, func(s network.Stream) {
		defer s.Close()
		var req pb.TaskRequest
		if err := protocol.ReadMsg(bufio.NewReader(s), protocol.MaxTaskRequest, &req); err != nil {
			return
		}
		a := req.GetAssignment()
		_ = protocol.WriteMsg(s, &pb.TaskUpdate{State: pb.TaskState_TASK_STATE_SUCCEEDED, JobId: "other", TaskId: "t", Attempt: 1})
		_ = protocol.WriteMsg(s, tagged(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_ACCEPTED}, a))
		<-garbage
		_, _ = s.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
		time.Sleep(time.Second)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	s := n.submitter
	ts, err := s.session(h.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer s.release(ts)
	k := taskKey{"j", "t", 1}
	reg, err := ts.register(k)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.unregister(k, reg)
	if err := ts.send(&pb.TaskRequest{Body: &pb.TaskRequest_Assignment{Assignment: &pb.Assignment{JobId: "j", TaskId: "t", Attempt: 1, Count: 1}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-reg.updates:
		if u.State != pb.TaskState_TASK_STATE_ACCEPTED || u.JobId != "j" {
			t.Fatalf("routed %+v", u)
		}
	case <-ctx.Done():
		t.Fatal("the awaited update was not routed")
	}
	close(garbage)
	select {
	case <-ts.dead:
		if ts.deadErr == nil {
			t.Fatal("session ended without a reason")
		}
	case <-ctx.Done():
		t.Fatal("garbage did not end the session")
	}
	if again, err := s.session(h.ID()); err == nil {
		if again == ts {
			t.Fatal("a broken session was handed out again")
		}
		s.release(again)
	}
}
