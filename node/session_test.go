package node

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

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
	_, running := p.tasks[taskKey{"j", "long", 1}]
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
