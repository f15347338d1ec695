package node

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// Faults of task sessions found in review: each test failed before its fix.

// TestSessionHeartbeatsFollowAccepted: a task's heartbeats never overtake
// its ACCEPTED, even when ACCEPTED waits behind a backlog while a
// heartbeat tick comes (the submitter takes the first update for the
// reply: a heartbeat there read as a decline while the provider ran the
// task), and they do come once it is out.
func TestSessionHeartbeatsFollowAccepted(t *testing.T) {
	d := inProcessDevnet(t, 2, func(i int, c *Config) { c.Slots = 1 })
	p := d.Nodes()[1].provider
	a, b := net.Pipe()
	defer a.Close()
	go p.serveSession(d.Nodes()[0].ID(), b, b.Close)
	send := func(task, template, params string) {
		if err := protocol.WriteMsg(a, &pb.TaskRequest{Body: &pb.TaskRequest_Assignment{Assignment: &pb.Assignment{
			JobId: "j", TaskId: task, Attempt: 1, Count: 1, TemplateId: template, AppParams: []byte(params)}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Nobody reads yet: the first rejection is flushed and blocks the
	// writer on the pipe, the rest queue behind it, then B's ACCEPTED.
	for i := range 10 {
		send(fmt.Sprintf("bad%d", i), "no-such-template", `{}`)
	}
	send("B", "fractal", `{"width":4096,"height":4096,"iterations":100000}`)
	time.Sleep(heartbeatEvery + 500*time.Millisecond) // a heartbeat tick is due
	r := bufio.NewReader(a)
	var seen []string
	accepted := false
	deadline := time.Now().Add(3 * heartbeatEvery)
	for time.Now().Before(deadline) {
		u := new(pb.TaskUpdate)
		_ = a.SetReadDeadline(deadline)
		if err := protocol.ReadMsg(r, protocol.MaxTaskUpdate, u); err != nil {
			t.Fatalf("after %v: %v", seen, err)
		}
		seen = append(seen, u.TaskId+":"+strings.TrimPrefix(u.State.String(), "TASK_STATE_"))
		if u.TaskId != "B" {
			continue
		}
		switch {
		case !accepted && u.State != pb.TaskState_TASK_STATE_ACCEPTED:
			t.Fatalf("B's first update is %v, not ACCEPTED: %v", u.State, seen)
		case !accepted:
			accepted = true
		case u.State == pb.TaskState_TASK_STATE_HEARTBEAT:
			return
		}
	}
	t.Fatalf("no heartbeat for B after its ACCEPTED: %v", seen)
}

// fakeProvider is a libp2p host whose task-session handler the test
// writes, connected to n.
func fakeProvider(t *testing.T, n *Node, handler network.StreamHandler) host.Host {
	t.Helper()
	h, _ := hostileHost(t)
	h.SetStreamHandler(protocol.TaskSessionProtocol, handler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Host().Connect(ctx, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestSessionHeartbeatFirstIsAcceptance: on the submitter's end, a first
// update that reports the task running (as a provider of the previous
// build could send) means the provider accepted it: the attempt goes on,
// and when the coordinator gives up on it the provider gets a Cancel.
func TestSessionHeartbeatFirstIsAcceptance(t *testing.T) {
	d := inProcessDevnet(t, 1)
	n := d.Nodes()[0]
	gotCancel := make(chan bool, 1)
	h := fakeProvider(t, n, func(s network.Stream) {
		defer s.Reset()
		r := bufio.NewReader(s)
		var req pb.TaskRequest
		if err := protocol.ReadMsg(r, protocol.MaxTaskRequest, &req); err != nil {
			return
		}
		a := req.GetAssignment()
		_ = protocol.WriteMsg(s, tagged(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_HEARTBEAT}, a))
		_ = protocol.WriteMsg(s, tagged(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_ACCEPTED}, a))
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		var next pb.TaskRequest
		gotCancel <- protocol.ReadMsg(r, protocol.MaxTaskRequest, &next) == nil && next.GetCancel() != nil
	})
	a := scheduler.Assign{JobID: "j", TaskID: "j-1", Attempt: 1, Peer: h.ID(),
		Assignment: &pb.Assignment{JobId: "j", TaskId: "j-1", Attempt: 1, Count: 1}}
	ctx, cancel := context.WithCancel(context.Background())
	ret := make(chan struct{})
	go func() { n.submitter.runAssign(ctx, a); close(ret) }()
	select {
	case <-ret:
		t.Fatal("the attempt ended after HEARTBEAT, ACCEPTED: taken for a decline")
	case <-time.After(time.Second):
	}
	cancel() // the coordinator gives up on the attempt
	<-ret
	select {
	case ok := <-gotCancel:
		if !ok {
			t.Fatal("the provider got no Cancel for the attempt it runs")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Cancel")
	}
}

// TestSessionWriteTimeout: attempts to a provider that stops reading its
// session are not held in their writes: the session breaks after
// sessionWriteTimeout and every attempt on it ends.
func TestSessionWriteTimeout(t *testing.T) {
	old := sessionWriteTimeout
	sessionWriteTimeout = 300 * time.Millisecond
	defer func() { sessionWriteTimeout = old }()
	d := inProcessDevnet(t, 1)
	n := d.Nodes()[0]
	release := make(chan struct{})
	defer close(release)
	h := fakeProvider(t, n, func(s network.Stream) {
		<-release // never reads
		s.Reset()
	})
	big := []byte(`{"x":"` + strings.Repeat("a", 900<<10) + `"}`)
	const attempts = 4
	done := make(chan struct{}, attempts)
	for i := 1; i <= attempts; i++ {
		id := fmt.Sprintf("j-%d", i)
		a := scheduler.Assign{JobID: "j", TaskID: id, Attempt: 1, Peer: h.ID(),
			Assignment: &pb.Assignment{JobId: "j", TaskId: id, Attempt: 1, Count: 1, AppParams: big}}
		go func() { n.submitter.runAssign(context.Background(), a); done <- struct{}{} }()
	}
	timeout := time.After(5 * time.Second)
	for i := 0; i < attempts; i++ {
		select {
		case <-done:
		case <-timeout:
			t.Fatalf("%d of %d attempts still blocked writing to a provider that does not read", attempts-i, attempts)
		}
	}
}

// TestSessionClosedWhileOpening: a session closed (the node stopping)
// while an attempt was opening it keeps no open stream.
func TestSessionClosedWhileOpening(t *testing.T) {
	d := inProcessDevnet(t, 1)
	n := d.Nodes()[0]
	s := n.submitter
	for range 100 {
		s.sessMu.Lock()
		s.sessionsClosed = false
		s.sessMu.Unlock()
		got := make(chan *taskSession, 1)
		go func() {
			ts, err := s.session(n.ID())
			if err != nil {
				ts = nil
			}
			got <- ts
		}()
		for {
			s.sessMu.Lock()
			_, ok := s.sessions[n.ID()]
			s.sessMu.Unlock()
			if ok {
				break
			}
			time.Sleep(10 * time.Microsecond)
		}
		s.closeSessions()
		ts := <-got
		if ts == nil {
			continue
		}
		if !ts.broken() {
			t.Fatal("a session closed while opening was handed out unbroken")
		}
		// A write must fail on a closed session's stream.
		errc := make(chan error, 1)
		go func() {
			errc <- protocol.WriteMsg(ts.st, &pb.TaskRequest{Body: &pb.TaskRequest_Cancel{Cancel: &pb.Cancel{JobId: "x", TaskId: "y", Attempt: 1}}})
		}()
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("a session closed while opening kept its stream open")
			}
		case <-time.After(2 * time.Second):
			t.Fatal("write blocked")
		}
		s.release(ts)
	}
}

// TestSessionRejectionStaysSmall: the rejection of an assignment with a
// megabyte-long ID does not echo it back.
func TestSessionRejectionStaysSmall(t *testing.T) {
	d := inProcessDevnet(t, 1)
	p := d.Nodes()[0].provider
	a := &pb.Assignment{JobId: strings.Repeat("\x00", 1000<<10), TaskId: "t", Attempt: 1, Count: 1, TemplateId: strings.Repeat("x", 100<<10)}
	tk, reason := p.admit(d.Nodes()[0].ID(), a)
	if tk != nil {
		t.Fatal("admitted")
	}
	u := tagged(&pb.TaskUpdate{State: pb.TaskState_TASK_STATE_REJECTED, Message: reason}, a)
	if n := proto.Size(u); n > 2048 {
		t.Fatalf("rejection of %d bytes: %.200q", n, reason)
	}
	a.JobId = "j"
	if _, reason := p.admit(d.Nodes()[0].ID(), a); len(reason) > 512 || !strings.Contains(reason, "template") {
		t.Fatalf("unknown template reason of %d bytes: %.200q", len(reason), reason)
	}
}
