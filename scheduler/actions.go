package scheduler

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Action is an output of the Coordinator that the node carries out: send a
// message, fetch a result, assemble a bucket, persist and publish an event.
// The concrete types are the structs below.
type Action interface {
	// Job returns the ID of the job the action belongs to.
	Job() string
}

// RequestBids: send Req to each of Peers and report the answers with
// Coordinator.OnBids (peers that do not answer in time are left out).
type RequestBids struct {
	JobID string
	Round uint64 // which round: pass the action back to OnBids
	Peers []peer.ID
	Req   *pb.BidRequest
}

// Assign: send Assignment to Peer and report its answer with
// OnAssignReply, then its updates with OnProgress / OnResult /
// OnAttemptFailed. Several Assigns of one job may go to one peer at once
// (the provider may batch them).
type Assign struct {
	JobID      string
	TaskID     string
	Attempt    int
	Peer       peer.ID
	Assignment *pb.Assignment
	// Speculative: a second copy of a straggler; the first result wins.
	Speculative bool
}

// CancelTask: tell Peer to stop the task's attempt (best effort; the
// coordinator has already forgotten the attempt). An empty TaskID, sent
// when the job has ended, releases the job's bid reservations on Peer
// (and stops whatever of the job it still holds).
type CancelTask struct {
	JobID   string
	TaskID  string
	Attempt int
	Peer    peer.ID
	Reason  string
}

// FetchResult: fetch and verify the DAG under Root from Peer, then call
// OnFetched.
type FetchResult struct {
	JobID   string
	TaskID  string
	Attempt int
	Peer    peer.ID
	Root    []byte
}

// AssembleJob: every task is fetched; build the job's bucket from the
// tasks' result roots (Results, by task index) and call OnAssembled.
type AssembleJob struct {
	JobID   string
	Results []TaskOutput
}

// TaskOutput is one task's fetched result, for assembly.
type TaskOutput struct {
	TaskID   string
	Index    int
	Root     []byte
	Provider peer.ID
	Attempt  int
}

// JobChanged: a job or task changed state or progressed; persist the job
// (Coordinator.Export) and publish Event (SSE).
type JobChanged struct {
	JobID string
	Event api.Event
}

// Job implements Action.
func (a RequestBids) Job() string { return a.JobID }

// Job implements Action.
func (a Assign) Job() string { return a.JobID }

// Job implements Action.
func (a CancelTask) Job() string { return a.JobID }

// Job implements Action.
func (a FetchResult) Job() string { return a.JobID }

// Job implements Action.
func (a AssembleJob) Job() string { return a.JobID }

// Job implements Action.
func (a JobChanged) Job() string { return a.JobID }
