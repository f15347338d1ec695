package scheduler

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

var peerCache = map[int]peer.ID{}

// testPeer returns a real peer ID derived from a fixed key seed.
func testPeer(tb testing.TB, i int) peer.ID {
	if p, ok := peerCache[i]; ok {
		return p
	}
	_, pub, err := crypto.GenerateEd25519Key(rand.New(rand.NewSource(int64(i) + 1)))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := peer.IDFromPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	peerCache[i] = p
	return p
}

// adOpt tweaks a test ad.
type adOpt func(*pb.CapacityAd)

func withGPU(mem int64) adOpt {
	return func(a *pb.CapacityAd) { a.Capacity.Gpus = append(a.Capacity.Gpus, &pb.GPU{Name: "H100", Memory: mem}) }
}
func withLoad(running, queued, slots int32) adOpt {
	return func(a *pb.CapacityAd) { a.Load = &pb.Load{Running: running, Queued: queued, Slots: slots} }
}
func withMemory(total, free int64) adOpt {
	return func(a *pb.CapacityAd) { a.Capacity.MemoryTotal, a.Capacity.MemoryFree = total, free }
}
func withExecutors(ex ...string) adOpt { return func(a *pb.CapacityAd) { a.Executors = ex } }
func withWarm(models ...string) adOpt  { return func(a *pb.CapacityAd) { a.WarmModels = models } }
func withPrice(micros int64) adOpt {
	return func(a *pb.CapacityAd) { a.Price = &pb.PricePolicy{PerTaskMicros: micros} }
}
func withTemplates(ids ...string) adOpt     { return func(a *pb.CapacityAd) { a.Templates = ids } }
func withLabels(kv map[string]string) adOpt { return func(a *pb.CapacityAd) { a.Labels = kv } }

// entry builds a table entry received at t0 and valid for an hour.
func entry(tb testing.TB, i int, opts ...adOpt) Entry {
	ad := &pb.CapacityAd{
		Version: 1, Seq: 1, TimestampMs: t0.UnixMilli(), TtlMs: 3600_000,
		Capacity:  &pb.Capacity{CpuMillis: 8000, MemoryTotal: 32 << 30, MemoryFree: 16 << 30},
		Executors: []string{"process", "docker"},
		Load:      &pb.Load{Slots: 4},
	}
	for _, o := range opts {
		o(ad)
	}
	return Entry{Peer: testPeer(tb, i), Ad: ad, Received: t0, Expires: t0.Add(time.Hour)}
}

// record parses a job body with the built-in templates and partitions it.
func record(tb testing.TB, id, body string) JobRecord {
	tb.Helper()
	return recordWith(tb, id, body, jobspec.DefaultLimits())
}

// recordWith is record under lim.
func recordWith(tb testing.TB, id, body string, lim jobspec.Limits) JobRecord {
	tb.Helper()
	s, err := jobspec.Parse([]byte(body), jobspec.Builtin(), lim)
	if err != nil {
		tb.Fatal(err)
	}
	s.SetSeed(1)
	tasks, err := jobspec.Partition(s, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return NewJobRecord(id, s, tasks)
}

func noopJob(tb testing.TB, id string, n int, extra string) JobRecord {
	return record(tb, id, fmt.Sprintf(`{"templateID": "noop", "params": {"partitioner": {"num_replicas": %d}}%s}`, n, extra))
}

// collect splits actions by type.
type acts struct {
	bids     []RequestBids
	assigns  []Assign
	cancels  []CancelTask
	releases []CancelTask // job-level: release the job's bid reservations
	fetches  []FetchResult
	assemble []AssembleJob
	changed  []JobChanged
}

func split(as []Action) acts {
	var out acts
	for _, a := range as {
		switch a := a.(type) {
		case RequestBids:
			out.bids = append(out.bids, a)
		case Assign:
			out.assigns = append(out.assigns, a)
		case CancelTask:
			if a.TaskID == "" {
				out.releases = append(out.releases, a)
			} else {
				out.cancels = append(out.cancels, a)
			}
		case FetchResult:
			out.fetches = append(out.fetches, a)
		case AssembleJob:
			out.assemble = append(out.assemble, a)
		case JobChanged:
			out.changed = append(out.changed, a)
		default:
			panic(fmt.Sprintf("unknown action %T", a))
		}
	}
	return out
}

// acceptAll answers every peer of a bid request with slots.
func acceptAll(r RequestBids, slots int32) map[peer.ID]*pb.Bid {
	m := map[peer.ID]*pb.Bid{}
	for _, p := range r.Peers {
		m[p] = &pb.Bid{Accept: true, Slots: slots}
	}
	return m
}

// fakeCID is a valid CIDv1 (raw, identity) for a task result.
func fakeRoot(s string) []byte {
	b := []byte{0x01, 0x55, 0x00, byte(len(s))}
	return append(b, s...)
}

func success(a Assign) *pb.TaskResult {
	return &pb.TaskResult{JobId: a.JobID, TaskId: a.TaskID, Attempt: int32(a.Attempt), Success: true, RootCid: fakeRoot(a.TaskID)}
}

func mustJob(tb testing.TB, c *Coordinator, id string) api.Job {
	tb.Helper()
	j, ok := c.Job(id)
	if !ok {
		tb.Fatalf("job %s missing", id)
	}
	return j
}

// sim drives a coordinator like a node with well-behaved providers, each
// answering with its BidPolicy and finishing every task at once.
type sim struct {
	c         *Coordinator
	now       time.Time
	table     []Entry
	completed map[string]int // task ID → completed events seen
	assembled map[string]int
}

func (s *sim) apply(as []Action) {
	queue := as
	for len(queue) > 0 {
		a := queue[0]
		queue = queue[1:]
		var more []Action
		switch a := a.(type) {
		case RequestBids:
			more = s.c.OnBids(s.now, a, acceptAll(a, 1000))
		case Assign:
			more = append(more, s.c.OnAssignReply(s.now, a.TaskID, a.Attempt, a.Peer, true, "")...)
			more = append(more, s.c.OnProgress(s.now, a.TaskID, a.Attempt, a.Peer, pb.TaskState_TASK_STATE_RUNNING, 0.5)...)
			more = append(more, s.c.OnResult(s.now, a.TaskID, a.Attempt, a.Peer, success(a))...)
		case FetchResult:
			more = s.c.OnFetched(s.now, a.TaskID, a.Attempt, true, "")
		case AssembleJob:
			s.assembled[a.JobID]++
			more = s.c.OnAssembled(s.now, a.JobID, "bafkqaaa", "http://gw/buckets/"+a.JobID+"/", nil)
		case JobChanged:
			if a.Event.Type == "task" && a.Event.Status == api.TaskCompleted {
				s.completed[a.Event.TaskID]++
			}
		}
		queue = append(queue, more...)
	}
}
