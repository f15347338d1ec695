package scheduler

import (
	"fmt"
	"sort"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Reason names why a peer cannot take a job's tasks. Reasons are stable
// strings: the node counts them in metrics and the API shows them.
type Reason string

// Rejection reasons of the candidate filters (submitter side) and of the
// bid policy (provider side).
const (
	ReasonExpired              Reason = "expired"              // its capacity ad ran out
	ReasonExecutorMissing      Reason = "executor-missing"     // no executor kind the template can use
	ReasonTemplateNotAllowed   Reason = "template-not-allowed" // its operator does not run this template
	ReasonImageNotAllowed      Reason = "image-not-allowed"    // its operator does not run this image
	ReasonNoGPU                Reason = "no-gpu"               // the job needs more GPUs than it has
	ReasonGPUMemory            Reason = "insufficient-gpu-memory"
	ReasonCPU                  Reason = "insufficient-cpu"
	ReasonMemory               Reason = "insufficient-memory"
	ReasonConstraintLabel      Reason = "constraint-label"       // a label the job requires is missing or differs
	ReasonConstraintPeer       Reason = "constraint-peer"        // not in the job's peer allow-list
	ReasonExcludedByJob        Reason = "excluded-by-job"        // in the job's excludePeers
	ReasonExcludedAfterFailure Reason = "excluded-after-failure" // it failed these tasks before
	ReasonOverMaxPrice         Reason = "over-max-price"
	ReasonFull                 Reason = "full"        // no free slot
	ReasonQueueFull            Reason = "queue-full"  // provider: its queue is at capacity
	ReasonBidExpired           Reason = "bid-expired" // provider: the request's deadline passed
	ReasonBadRequest           Reason = "bad-request" // provider: the request is malformed
	ReasonNoBid                Reason = "no-bid"      // submitter: no answer within the bid timeout
	ReasonDeclined             Reason = "declined"    // submitter: a bid or assignment said no
	// ReasonDeclinedRecently (submitter): the peer declined the
	// assignment of every task left to place often enough to be held
	// back from them for a while; it is asked again after that.
	ReasonDeclinedRecently Reason = "declined-recently"
)

// phrases turn a reason into "N peers <phrase>".
var phrases = map[Reason][2]string{ // singular, plural
	ReasonExpired:              {"has an expired capacity ad", "have expired capacity ads"},
	ReasonExecutorMissing:      {"lacks an executor the template can use", "lack an executor the template can use"},
	ReasonTemplateNotAllowed:   {"does not run this template", "do not run this template"},
	ReasonImageNotAllowed:      {"does not run this image", "do not run this image"},
	ReasonNoGPU:                {"lacks a GPU", "lack a GPU"},
	ReasonGPUMemory:            {"lacks GPU memory", "lack GPU memory"},
	ReasonCPU:                  {"has too few CPU cores", "have too few CPU cores"},
	ReasonMemory:               {"has too little memory", "have too little memory"},
	ReasonConstraintLabel:      {"does not match the label constraints", "do not match the label constraints"},
	ReasonConstraintPeer:       {"is not in the job's peer list", "are not in the job's peer list"},
	ReasonExcludedByJob:        {"is excluded by the job", "are excluded by the job"},
	ReasonExcludedAfterFailure: {"is excluded after failing these tasks", "are excluded after failing these tasks"},
	ReasonOverMaxPrice:         {"asks more than the job's max price", "ask more than the job's max price"},
	ReasonFull:                 {"is full", "are full"},
	ReasonQueueFull:            {"has a full queue", "have full queues"},
	ReasonBidExpired:           {"got the bid request too late", "got the bid request too late"},
	ReasonBadRequest:           {"found the request malformed", "found the request malformed"},
	ReasonNoBid:                {"did not answer the bid request in time", "did not answer the bid request in time"},
	ReasonDeclined:             {"declined", "declined"},
	ReasonDeclinedRecently:     {"declined recently", "declined recently"},
}

// Phrase returns "1 peer lacks a GPU" / "3 peers lack a GPU".
func (r Reason) Phrase(n int) string {
	ph, ok := phrases[r]
	if !ok {
		ph = [2]string{"was rejected: " + string(r), "were rejected: " + string(r)}
	}
	if n == 1 {
		return "1 peer " + ph[0]
	}
	return fmt.Sprintf("%d peers %s", n, ph[1])
}

// Rejections records which peers were rejected for which reason. The zero
// value is not usable; make one with make(Rejections).
type Rejections map[Reason][]peer.ID

// Add records that p was rejected for r.
func (rj Rejections) Add(r Reason, p peer.ID) { rj[r] = append(rj[r], p) }

// Count returns how many peers were rejected for r.
func (rj Rejections) Count(r Reason) int { return len(rj[r]) }

// Total returns how many peers were rejected.
func (rj Rejections) Total() int {
	n := 0
	for _, ps := range rj {
		n += len(ps)
	}
	return n
}

// Counts returns reason → number of peers.
func (rj Rejections) Counts() map[Reason]int {
	out := make(map[Reason]int, len(rj))
	for r, ps := range rj {
		out[r] = len(ps)
	}
	return out
}

// Summary returns one human line per reason, most common first
// ("3 peers lack a GPU", "1 peer is full").
func (rj Rejections) Summary() []string {
	rs := make([]Reason, 0, len(rj))
	for r, ps := range rj {
		if len(ps) > 0 {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool {
		if len(rj[rs[i]]) != len(rj[rs[j]]) {
			return len(rj[rs[i]]) > len(rj[rs[j]])
		}
		return rs[i] < rs[j]
	})
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Phrase(len(rj[r]))
	}
	return out
}
