package node

import (
	"bufio"
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// A task session is one stream (protocol.TaskSessionProtocol) from a
// submitter to a provider that carries many assignments one way and their
// tagged updates the other. With a stream per task, each task paid for
// opening, negotiating and closing a stream and sent about eight frames,
// each a syscall at both ends (~10 µs apiece on a VM); on a session a short
// task costs its assignment and two or three update frames, and updates of
// tasks that finish together share a write. Failure semantics are those of
// a per-task stream, for every task on the session: if the stream breaks,
// the submitter fails their attempts and the provider cancels them.

// providerSession is the provider's end of one task session. Its reader is
// the stream handler's goroutine; one writer goroutine owns the stream's
// write side; each accepted task has a forwarder that moves its updates to
// the writer. end stops them all. Safe for concurrent use.
type providerSession struct {
	p     *provider
	from  peer.ID
	rw    streamLike
	reset func() error

	out     chan *pb.TaskUpdate // tagged updates for the writer
	done    chan struct{}       // closed by end
	endOnce sync.Once

	mu    sync.Mutex
	tasks map[taskKey]*providerTask // accepted on this session, not yet final
}

// handleSession serves one TaskSessionProtocol stream.
func (p *provider) handleSession(s network.Stream) {
	p.serveSession(s.Conn().RemotePeer(), s, s.Reset)
}

// serveSession reads requests from rw until it ends; reset aborts it.
func (p *provider) serveSession(from peer.ID, rw streamLike, reset func() error) {
	ss := &providerSession{p: p, from: from, rw: rw, reset: reset,
		out: make(chan *pb.TaskUpdate, 64), done: make(chan struct{}), tasks: map[taskKey]*providerTask{}}
	p.n.goRun("task-session-writer", ss.writeLoop)
	r := bufio.NewReader(rw)
	for {
		var req pb.TaskRequest
		if err := protocol.ReadMsg(r, protocol.MaxTaskRequest, &req); err != nil {
			// The submitter closes an idle session; any other end (or
			// garbage) also cancels what is left on it.
			p.n.log.Debug("task session ended", "peer", from, "err", err)
			ss.end(false)
			return
		}
		switch b := req.Body.(type) {
		case *pb.TaskRequest_Assignment:
			ss.assign(b.Assignment)
		case *pb.TaskRequest_Cancel:
			p.cancel(from, b.Cancel.JobId, b.Cancel.TaskId, b.Cancel.Attempt)
		default:
			p.n.log.Debug("task session: request not allowed on a session", "peer", from)
			ss.end(true)
			return
		}
	}
}

// tagged marks u as an update of a's task. The IDs are clipped to their
// limit: a rejection answers assignments whose IDs were not valid, and an
// update must not echo megabytes back (an honest submitter's IDs fit).
func tagged(u *pb.TaskUpdate, a *pb.Assignment) *pb.TaskUpdate {
	u.JobId, u.TaskId, u.Attempt = clipID(a.JobId), clipID(a.TaskId), a.Attempt
	return u
}

func clipID(id string) string {
	if len(id) > protocol.MaxIDLength {
		return id[:protocol.MaxIDLength]
	}
	return id
}

// sessionWriteTimeout bounds each write on a task session, at both ends: a
// peer that stops reading for that long breaks the session (its tasks fail
// over or are cancelled) instead of holding the writer, and everything
// queued behind it, for good.
var sessionWriteTimeout = 10 * time.Second // a var for tests

// writeDeadline sets rw's write deadline to d from now, if rw has one.
func writeDeadline(rw streamLike, d time.Duration) {
	if w, ok := rw.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = w.SetWriteDeadline(time.Now().Add(d))
	}
}

// send queues u for the writer; false once the session ended.
func (ss *providerSession) send(u *pb.TaskUpdate) bool {
	select {
	case ss.out <- u:
		return true
	case <-ss.done:
		return false
	}
}

// assign admits a and forwards its task's updates, or rejects it.
func (ss *providerSession) assign(a *pb.Assignment) {
	ss.p.sessionTasks.Add(1)
	t, reason := ss.p.admit(ss.from, a)
	if t == nil {
		ss.send(tagged(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_REJECTED, Message: reason}, a))
		return
	}
	k := taskKey{a.JobId, a.TaskId, a.Attempt}
	ss.mu.Lock()
	ss.tasks[k] = t
	ss.mu.Unlock()
	// ACCEPTED is queued before the forwarder starts, so it goes first.
	ss.send(tagged(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_ACCEPTED}, a))
	ss.p.n.goRun("task-session-forward", func(context.Context) { ss.forward(k, t) })
}

// forward moves t's updates to the writer until the final one, or cancels
// t if the session ends first.
func (ss *providerSession) forward(k taskKey, t *providerTask) {
	defer func() {
		ss.mu.Lock()
		delete(ss.tasks, k)
		ss.mu.Unlock()
		t.cancel()
	}()
	for {
		select {
		case u, ok := <-t.updates:
			if !ok {
				return
			}
			if !ss.send(tagged(u, t.a)) {
				ss.p.drain(t)
				return
			}
		case <-ss.done:
			ss.p.drain(t)
			return
		}
	}
}

// sessionLinger is how long the session writer holds an update that does
// not end a task (ACCEPTED, RUNNING, HEARTBEAT) for others to share its
// frame. A short task's ACCEPTED and RUNNING updates then leave together,
// and with them any update of another task that comes meanwhile; final
// updates, which the submitter waits on, flush at once (with whatever is
// held).
const sessionLinger = 300 * time.Microsecond

// writeLoop writes queued updates, flushing when none is left waiting and
// the last one written ended a task, or once a held update has lingered
// (see sessionLinger), and a heartbeat each heartbeatEvery for every task
// whose ACCEPTED it has written and whose final update it has not: the
// writer keeps that set itself, so a heartbeat can neither overtake a
// task's ACCEPTED (the submitter would take it for the reply, a decline)
// nor follow its final update.
func (ss *providerSession) writeLoop(ctx context.Context) {
	beating := map[taskKey]bool{}
	note := func(u *pb.TaskUpdate) {
		k := taskKey{u.JobId, u.TaskId, u.Attempt}
		switch u.State {
		case pb.TaskState_TASK_STATE_ACCEPTED:
			beating[k] = true
		case pb.TaskState_TASK_STATE_RUNNING, pb.TaskState_TASK_STATE_HEARTBEAT:
		default:
			delete(beating, k)
		}
	}
	bw := bufio.NewWriter(ss.rw)
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	lingering := false
	fail := func(err error) {
		ss.p.n.log.Debug("task session write", "peer", ss.from, "err", err)
		ss.end(true)
	}
	for {
		flush := false
		select {
		case u := <-ss.out:
			writeDeadline(ss.rw, sessionWriteTimeout)
			if err := protocol.WriteMsg(bw, u); err != nil {
				fail(err)
				return
			}
			note(u)
			if len(ss.out) > 0 {
				continue
			}
			switch u.State {
			case pb.TaskState_TASK_STATE_ACCEPTED, pb.TaskState_TASK_STATE_RUNNING, pb.TaskState_TASK_STATE_HEARTBEAT:
				if !lingering {
					linger.Reset(sessionLinger)
					lingering = true
				}
			default:
				flush = true
			}
		case <-linger.C:
			lingering = false
			flush = true
		case <-hb.C:
			ss.mu.Lock()
			beats := make([]*pb.TaskUpdate, 0, len(beating))
			for k := range beating {
				if _, live := ss.tasks[k]; !live {
					delete(beating, k) // gone without a final update (cancelled)
					continue
				}
				beats = append(beats, &pb.TaskUpdate{State: pb.TaskState_TASK_STATE_HEARTBEAT, JobId: k.job, TaskId: k.task, Attempt: k.attempt})
			}
			ss.mu.Unlock()
			writeDeadline(ss.rw, sessionWriteTimeout)
			for _, u := range beats {
				if err := protocol.WriteMsg(bw, u); err != nil {
					fail(err)
					return
				}
			}
			flush = true
		case <-ss.done:
			return
		case <-ctx.Done():
			ss.end(true)
			return
		}
		if !flush || bw.Buffered() == 0 {
			continue
		}
		if lingering {
			linger.Stop()
			lingering = false
		}
		writeDeadline(ss.rw, sessionWriteTimeout)
		if err := bw.Flush(); err != nil {
			fail(err)
			return
		}
	}
}

// end stops the session once: its tasks are cancelled as a Cancel would
// (a running one through its context, a queued one taken out of the queue,
// so that it does not hold a slot until a worker reaches it; their
// forwarders drain what they still report) and the stream is closed, or
// reset when the session broke.
func (ss *providerSession) end(broken bool) {
	ss.endOnce.Do(func() {
		close(ss.done)
		ss.mu.Lock()
		keys := make([]taskKey, 0, len(ss.tasks))
		for k := range ss.tasks {
			keys = append(keys, k)
		}
		ss.mu.Unlock()
		for _, k := range keys {
			ss.p.cancel(ss.from, k.job, k.task, k.attempt)
		}
		if broken {
			_ = ss.reset()
		} else {
			_ = ss.rw.Close()
		}
	})
}
