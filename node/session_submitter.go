package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	lp2pproto "github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// sessionIdle is how long a task session with no task in flight stays open
// for the next assignment (a job's next task usually follows at once).
const sessionIdle = 30 * time.Second

// noSessionsRecheck is how long a provider found without task sessions is
// sent tasks on streams of their own before it is asked again.
const noSessionsRecheck = time.Minute

// errNoSessions: the provider does not speak TaskSessionProtocol (an older
// version); the task goes over a stream of its own.
var errNoSessions = errors.New("provider has no task sessions")

// taskSession is the submitter's end of one task session to a provider
// (see session_provider.go). Its reader goroutine routes each update to
// the attempt it names; writes are serialised by wmu. Safe for concurrent
// use.
type taskSession struct {
	s     *submitter
	peer  peer.ID
	ready chan struct{} // closed once open has finished
	err   error         // open's error, read after ready

	// st and reset are set by open under smu, which close also takes: a
	// session closed while it was being opened (the node stopping) resets
	// the stream open then gets, instead of leaving it open.
	smu   sync.Mutex
	st    streamLike
	reset func() error
	wmu   sync.Mutex

	dead     chan struct{} // closed when the session broke or was closed
	deadOnce sync.Once
	deadErr  error // why, set before dead is closed

	// Guarded by submitter.sessMu.
	refs int         // attempts using the session
	idle *time.Timer // closes the session once refs has stayed 0 for sessionIdle

	mu    sync.Mutex
	tasks map[taskKey]*sessionTask
}

// sessionTask is one attempt's registration on a session.
type sessionTask struct {
	updates chan *pb.TaskUpdate
	gone    chan struct{} // closed when the attempt stops listening
}

// session returns the open task session to p, opening one if there is
// none. The caller must call release when its attempt is done with it.
func (s *submitter) session(p peer.ID) (*taskSession, error) {
	s.sessMu.Lock()
	if s.sessionsClosed {
		s.sessMu.Unlock()
		return nil, errors.New("node stopping")
	}
	if until, ok := s.noSessions[p]; ok {
		if s.n.now().Before(until) {
			s.sessMu.Unlock()
			return nil, errNoSessions
		}
		delete(s.noSessions, p)
	}
	ts := s.sessions[p]
	if ts != nil && ts.broken() {
		delete(s.sessions, p)
		ts = nil
	}
	opener := ts == nil
	if opener {
		ts = &taskSession{s: s, peer: p, ready: make(chan struct{}), dead: make(chan struct{}), tasks: map[taskKey]*sessionTask{}}
		s.sessions[p] = ts
	}
	ts.refs++
	if ts.idle != nil {
		ts.idle.Stop()
		ts.idle = nil
	}
	s.sessMu.Unlock()
	if opener {
		ts.err = ts.open()
		if ts.err != nil {
			// Broken, so the next attempt opens a fresh one.
			ts.close(ts.err)
			if errors.Is(ts.err, errNoSessions) {
				s.sessMu.Lock()
				s.noSessions[p] = s.n.now().Add(noSessionsRecheck)
				s.sessMu.Unlock()
			}
		}
		close(ts.ready)
	} else {
		select {
		case <-ts.ready:
		case <-s.n.ctx.Done():
			s.release(ts)
			return nil, s.n.ctx.Err()
		}
	}
	if ts.err != nil {
		s.release(ts)
		return nil, ts.err
	}
	return ts, nil
}

// open opens the stream (an in-memory pipe for the node's own provider)
// under the node's context, so that one attempt's cancellation does not
// take the session from the others, and starts the reader.
func (ts *taskSession) open() error {
	s := ts.s
	if ts.peer == s.n.id {
		if s.n.provider == nil {
			return errNotProvider
		}
		a, b := net.Pipe()
		if err := ts.attach(a, a.Close); err != nil {
			b.Close()
			return err
		}
		s.n.goRun("self-task-session", func(context.Context) { s.n.provider.serveSession(ts.peer, b, b.Close) })
	} else {
		ctx, cancel := context.WithTimeout(s.n.ctx, assignDialWait)
		defer cancel()
		st, err := s.n.host.NewStream(ctx, ts.peer, protocol.TaskSessionProtocol)
		if err != nil {
			if errors.Is(err, msmux.ErrNotSupported[lp2pproto.ID]{}) {
				return errNoSessions
			}
			return err
		}
		if err := ts.attach(st, st.Reset); err != nil {
			return err
		}
	}
	s.n.goRun("task-session-reader", ts.readLoop)
	return nil
}

// attach makes st the session's stream, unless the session was closed
// meanwhile: then st is reset and the error says why.
func (ts *taskSession) attach(st streamLike, reset func() error) error {
	ts.smu.Lock()
	defer ts.smu.Unlock()
	if ts.broken() {
		_ = reset()
		return ts.deadErr
	}
	ts.st, ts.reset = st, reset
	return nil
}

// readLoop routes updates to their attempts until the stream ends. An
// update for an attempt nobody waits for is dropped.
func (ts *taskSession) readLoop(ctx context.Context) {
	r := bufio.NewReader(ts.st)
	for {
		u := new(pb.TaskUpdate)
		if err := protocol.ReadMsg(r, protocol.MaxTaskUpdate, u); err != nil {
			ts.close(fmt.Errorf("task session: %w", err))
			return
		}
		ts.mu.Lock()
		t := ts.tasks[taskKey{u.JobId, u.TaskId, u.Attempt}]
		ts.mu.Unlock()
		if t == nil {
			continue
		}
		select {
		case t.updates <- u:
		case <-t.gone:
		case <-ctx.Done():
			ts.close(ctx.Err())
			return
		}
	}
}

// register makes the session route k's updates to the returned task.
func (ts *taskSession) register(k taskKey) (*sessionTask, error) {
	t := &sessionTask{updates: make(chan *pb.TaskUpdate, 16), gone: make(chan struct{})}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, dup := ts.tasks[k]; dup {
		return nil, fmt.Errorf("attempt %s/%s#%d already on the session", k.job, k.task, k.attempt)
	}
	ts.tasks[k] = t
	return t, nil
}

// unregister stops routing k's updates.
func (ts *taskSession) unregister(k taskKey, t *sessionTask) {
	ts.mu.Lock()
	if ts.tasks[k] == t {
		delete(ts.tasks, k)
	}
	ts.mu.Unlock()
	close(t.gone)
}

// send writes one request; a failed write breaks the session. A write
// that the provider does not take within sessionWriteTimeout fails: a
// provider that stops reading would otherwise hold every attempt to it,
// cancelled or not, in send.
func (ts *taskSession) send(req *pb.TaskRequest) error {
	ts.wmu.Lock()
	defer ts.wmu.Unlock()
	if ts.broken() {
		return ts.deadErr
	}
	writeDeadline(ts.st, sessionWriteTimeout)
	if err := protocol.WriteMsg(ts.st, req); err != nil {
		err = fmt.Errorf("task session: %w", err)
		ts.close(err)
		return err
	}
	return nil
}

func (ts *taskSession) broken() bool {
	select {
	case <-ts.dead:
		return true
	default:
		return false
	}
}

// close ends the session once with err; every attempt on it sees dead,
// and the submitter forgets it (the next attempt to the peer opens a new
// one).
func (ts *taskSession) close(err error) {
	ts.deadOnce.Do(func() {
		ts.smu.Lock()
		ts.deadErr = err
		close(ts.dead)
		if ts.reset != nil {
			_ = ts.reset()
		}
		ts.smu.Unlock()
		s := ts.s
		s.sessMu.Lock()
		if s.sessions[ts.peer] == ts {
			delete(s.sessions, ts.peer)
		}
		s.sessMu.Unlock()
	})
}

// release is the end of one attempt's use of ts. The last one out leaves
// the session open for sessionIdle, then closes it.
func (s *submitter) release(ts *taskSession) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	ts.refs--
	if ts.refs > 0 || ts.broken() || s.sessionsClosed {
		return
	}
	ts.idle = time.AfterFunc(sessionIdle, func() {
		s.sessMu.Lock()
		idle := ts.refs == 0
		if idle && s.sessions[ts.peer] == ts {
			delete(s.sessions, ts.peer)
		}
		s.sessMu.Unlock()
		if idle {
			ts.close(errors.New("task session idle"))
		}
	})
}

// closeSessions closes every task session (the node is stopping).
func (s *submitter) closeSessions() {
	s.sessMu.Lock()
	s.sessionsClosed = true
	all := s.sessions
	s.sessions = map[peer.ID]*taskSession{}
	for _, ts := range all {
		if ts.idle != nil {
			ts.idle.Stop()
		}
	}
	s.sessMu.Unlock()
	for _, ts := range all {
		ts.close(errors.New("node stopping"))
	}
}
