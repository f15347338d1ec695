package scheduler

import (
	"slices"
	"time"

	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// BidPolicy is a provider's rules for answering bid requests. It is a plain
// value; Decide is pure and safe for concurrent use.
type BidPolicy struct {
	// AllowTemplates lists the template IDs this provider runs; empty = any.
	AllowTemplates []string
	// AllowImages lists the docker images this provider runs; empty = any.
	AllowImages []string
	// MaxQueue is how many accepted tasks may wait beyond the running ones.
	MaxQueue int
	// PricePerTaskMicros is the asking price.
	PricePerTaskMicros int64
	// Slots is how many tasks run at once (at least 1).
	Slots int
	// AvgTaskDuration estimates how long a queued task waits per task
	// ahead of it and slot (for the bid's ETA); 0 = unknown, ETA 0.
	AvgTaskDuration time.Duration
}

// LocalState is what the provider knows about itself when a request comes.
type LocalState struct {
	Running    int
	Queued     int // accepted or reserved, not started
	FreeMemory int64
	CPUs       int64 // thousandths of a core usable by tasks
	GPUs       int
	GPUMemory  int64 // bytes of the smallest GPU; 0 = unknown
	WarmModels []string
	Executors  []string // kinds available now ("process", "docker")
}

// Decide answers a bid request: an accepting bid with the slots it offers
// (at most req.Tasks), or a rejection whose Reason is one of the Reason
// constants.
func (p BidPolicy) Decide(req *pb.BidRequest, local LocalState, now time.Time) *pb.Bid {
	reject := func(r Reason) *pb.Bid { return &pb.Bid{Accept: false, Reason: string(r)} }
	if req == nil || req.JobId == "" || req.Tasks <= 0 {
		return reject(ReasonBadRequest)
	}
	if req.DeadlineMs > 0 && now.UnixMilli() > req.DeadlineMs {
		return reject(ReasonBidExpired)
	}
	if len(p.AllowTemplates) > 0 && !slices.Contains(p.AllowTemplates, req.TemplateId) {
		return reject(ReasonTemplateNotAllowed)
	}
	// Executor names the preferred kind; an Image means docker works too.
	canRun := slices.Contains(local.Executors, req.Executor)
	viaDocker := req.Image != "" && slices.Contains(local.Executors, inference.KindDocker)
	if !canRun && !viaDocker {
		return reject(ReasonExecutorMissing)
	}
	if viaDocker && (!canRun || req.Executor == inference.KindDocker) &&
		len(p.AllowImages) > 0 && !slices.Contains(p.AllowImages, req.Image) {
		return reject(ReasonImageNotAllowed)
	}
	res := req.GetResources()
	if int(res.GetGpus()) > local.GPUs {
		return reject(ReasonNoGPU)
	}
	if res.GetGpus() > 0 && local.GPUMemory > 0 && res.GetGpuMemory() > local.GPUMemory {
		return reject(ReasonGPUMemory)
	}
	if res.GetCpuMillis() > 0 && local.CPUs > 0 && res.GetCpuMillis() > local.CPUs {
		return reject(ReasonCPU)
	}
	if res.GetMemory() > 0 && res.GetMemory() > local.FreeMemory {
		return reject(ReasonMemory)
	}
	if req.MaxPriceMicros > 0 && p.PricePerTaskMicros > req.MaxPriceMicros {
		return reject(ReasonOverMaxPrice)
	}
	// Capacity is the running slots plus the queue; both hold this
	// provider's accepted tasks.
	slots := max(p.Slots, 1)
	avail := slots + max(p.MaxQueue, 0) - local.Running - local.Queued
	if avail <= 0 {
		if p.MaxQueue > 0 {
			return reject(ReasonQueueFull)
		}
		return reject(ReasonFull)
	}
	// A provider takes at most two tasks per slot in all: one running and
	// one queued behind it, so the next starts with no round trip in
	// between. Deeper would pile a job's tasks on the first peers that
	// answered while others idle (the coordinator's lease hands out the
	// rest as results come back); a provider at that depth is full for new
	// bids, though its queue still holds what earlier bids reserved.
	offer := min(int(req.Tasks), avail, 2*slots-local.Running-local.Queued)
	if offer <= 0 {
		return reject(ReasonFull)
	}
	var eta time.Duration
	if ahead := local.Running + local.Queued - slots + 1; ahead > 0 && p.AvgTaskDuration > 0 {
		eta = time.Duration((ahead+slots-1)/slots) * p.AvgTaskDuration
	}
	return &pb.Bid{
		Accept:      true,
		Slots:       int32(offer),
		PriceMicros: p.PricePerTaskMicros,
		EtaMs:       eta.Milliseconds(),
		Warm:        req.Model != "" && slices.Contains(local.WarmModels, req.Model),
	}
}
