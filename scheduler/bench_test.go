package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// BenchmarkCoordinator measures the Coordinator's own cost per task through
// the whole flow — Submit → RequestBids → bids (each fake provider answers
// with its BidPolicy) → Assign → reply, progress, result → FetchResult →
// fetched → AssembleJob → assembled — for a 1000- and a 10000-task job over
// 10 and 50 in-memory providers (4 slots + 16 queued each, as the node
// configures them). The fake clock advances 100ms per Tick; each provider
// finishes one task per slot per Tick, the rest wait in its queue. No
// network: this is the decision logic's cost; ticks/job shows how fast
// placement keeps the providers fed, ns/task whether a task's cost grows
// with the size of its job (it should not).
func BenchmarkCoordinator(b *testing.B) {
	for _, tasks := range []int{1000, 10000} {
		for _, providers := range []int{10, 50} {
			b.Run(fmt.Sprintf("tasks=%d/providers=%d", tasks, providers), func(b *testing.B) {
				var table []Entry
				for i := range providers {
					table = append(table, entry(b, i, withLoad(0, 0, 4)))
				}
				rec := bigJob(b, "bench", tasks)
				b.ResetTimer()
				ticks := 0
				for n := 0; n < b.N; n++ {
					rec.ID = fmt.Sprintf("bench-%d", n)
					t, _ := runBenchJob(b, rec, table)
					ticks += t
				}
				b.ReportMetric(float64(tasks*b.N)/b.Elapsed().Seconds(), "tasks/s")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tasks*b.N), "ns/task")
				b.ReportMetric(float64(ticks)/float64(b.N), "ticks/job")
			})
		}
	}
}

// bigJob is noopJob past jobspec's default limit of tasks per job: the
// Coordinator itself takes jobs of any size.
func bigJob(tb testing.TB, id string, n int) JobRecord {
	tb.Helper()
	body := fmt.Sprintf(`{"templateID": "noop", "params": {"partitioner": {"num_replicas": %d}}}`, n)
	lim := jobspec.DefaultLimits()
	lim.MaxTasks = max(n, lim.MaxTasks)
	return recordWith(tb, id, body, lim)
}

func runBenchJob(b *testing.B, rec JobRecord, table []Entry) (int, *Coordinator) {
	c := NewCoordinator(Config{})
	pol := BidPolicy{Slots: 4, MaxQueue: 16} // as node/ does: a queue of 4× slots
	held := map[peer.ID][]Assign{}
	order := make([]peer.ID, len(table))
	for i, e := range table {
		order[i] = e.Peer
	}
	now := t0
	c.Tick(now, table)
	var queue []Action
	as, err := c.Submit(now, rec)
	if err != nil {
		b.Fatal(err)
	}
	queue = append(queue, as...)
	done := false
	ticks := 0
	for !done {
		for len(queue) > 0 {
			a := queue[0]
			queue = queue[1:]
			switch a := a.(type) {
			case RequestBids:
				bids := make(map[peer.ID]*pb.Bid, len(a.Peers))
				for _, p := range a.Peers {
					running := min(len(held[p]), pol.Slots)
					bids[p] = pol.Decide(a.Req, LocalState{Running: running, Queued: len(held[p]) - running, FreeMemory: 1 << 34, Executors: []string{"process"}}, now)
				}
				queue = append(queue, c.OnBids(now, a, bids)...)
			case Assign:
				queue = append(queue, c.OnAssignReply(now, a.TaskID, a.Attempt, a.Peer, true, "")...)
				held[a.Peer] = append(held[a.Peer], a)
			case FetchResult:
				queue = append(queue, c.OnFetched(now, a.TaskID, a.Attempt, true, "")...)
			case AssembleJob:
				queue = append(queue, c.OnAssembled(now, a.JobID, "bafy", "http://gw/", nil)...)
			case JobChanged:
				if a.Event.Type == "job" && a.Event.Status == api.JobCompleted {
					done = true
				}
			}
		}
		if done {
			break
		}
		// Each provider finishes the oldest tasks it holds, one per slot;
		// the rest stay queued. Then time passes.
		for _, p := range order {
			as := held[p]
			n := min(len(as), pol.Slots)
			for _, a := range as[:n] {
				queue = append(queue, c.OnProgress(now, a.TaskID, a.Attempt, p, pb.TaskState_TASK_STATE_RUNNING, 0.5)...)
				queue = append(queue, c.OnResult(now, a.TaskID, a.Attempt, p, success(a))...)
			}
			held[p] = as[n:]
		}
		now = now.Add(100 * time.Millisecond)
		ticks++
		if ticks > 100000 {
			b.Fatal("job does not finish")
		}
		queue = append(queue, c.Tick(now, table)...)
	}
	return ticks, c
}

// BenchmarkExport measures the snapshot of a completed 1000-task job (the
// submitter writes one per changed job every second while it runs).
func BenchmarkExport(b *testing.B) {
	var table []Entry
	for i := range 10 {
		table = append(table, entry(b, i, withLoad(0, 0, 4)))
	}
	rec := noopJob(b, "bench", 1000, "")
	_, c := runBenchJob(b, rec, table)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		snap, err := c.Export(rec.ID)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(snap)))
	}
}
