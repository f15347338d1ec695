package scheduler

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// FuzzCoordinator drives a Coordinator with random event sequences (bids,
// replies, progress, results, fetches, failures, cancels, time passing,
// export/restore, stale and duplicate messages) and checks its invariants
// after every step: no task completes twice, no task is lost (each one not
// finished is pending, has a live copy or a result being fetched), attempts
// stay within maxAttempts (plus one speculative copy), an attempt never
// goes to a peer excluded for its task or to a peer already running it,
// and the job's incremental indexes match a recount (checkIndexes).
func FuzzCoordinator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 4, 5, 8, 10})
	f.Add([]byte{0, 1, 3, 0, 1, 7, 0, 1, 2, 4, 0, 0, 0, 0, 0, 5, 9, 1, 5, 8, 10})
	f.Add([]byte{0, 1, 2, 4, 12, 0, 1, 2, 5, 8, 13, 11})
	f.Add([]byte{0, 1, 2, 2, 4, 4, 20, 20, 20, 20, 1, 5, 6, 8, 8, 10, 10})
	peers := []peer.ID{testPeer(f, 0), testPeer(f, 1), testPeer(f, 2), testPeer(f, 3)}
	var table []Entry
	for i := range peers {
		table = append(table, entry(f, i))
	}
	recs := []JobRecord{noopJob(f, "a", 3, `, "maxAttempts": 2`), noopJob(f, "b", 2, `, "maxAttempts": 3, "priority": 5`)}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 400 {
			ops = ops[:400]
		}
		c := newCoord(func(cfg *Config) { cfg.SpeculateMinAge = 3 * time.Second })
		now := t0
		c.Tick(now, table)
		var (
			bids      []RequestBids
			assigns   []Assign
			fetches   []FetchResult
			assembles []AssembleJob
			completed = map[string]int{}
			lastAtt   = map[string]int{}
			restores  = 0
			assembled = map[string]int{}
		)
		var handle func(as []Action)
		handle = func(as []Action) {
			for _, a := range as {
				switch a := a.(type) {
				case RequestBids:
					bids = append(bids, a)
				case Assign:
					tk := c.tasks[a.TaskID]
					if a.Attempt <= lastAtt[a.TaskID] {
						t.Fatalf("attempt %d of %s not increasing (last %d)", a.Attempt, a.TaskID, lastAtt[a.TaskID])
					}
					lastAtt[a.TaskID] = a.Attempt
					if tk.excluded[a.Peer] {
						t.Fatalf("%s assigned to excluded peer", a.TaskID)
					}
					n := 0
					for _, cp := range tk.copies {
						if cp.peer == a.Peer {
							n++
						}
					}
					if n != 1 {
						t.Fatalf("%s has %d copies on one peer", a.TaskID, n)
					}
					assigns = append(assigns, a)
				case FetchResult:
					fetches = append(fetches, a)
				case AssembleJob:
					assembled[a.JobID]++
					if assembled[a.JobID] > 1+restores {
						t.Fatalf("job %s assembled %d times", a.JobID, assembled[a.JobID])
					}
					assembles = append(assembles, a)
				case JobChanged:
					if a.Event.Type == "task" && a.Event.Status == api.TaskCompleted {
						if completed[a.Event.TaskID]++; completed[a.Event.TaskID] > 1 {
							t.Fatalf("task %s completed twice", a.Event.TaskID)
						}
					}
				}
			}
		}
		for _, r := range recs {
			as, err := c.Submit(now, r)
			if err != nil {
				t.Fatal(err)
			}
			handle(as)
		}
		pick := func(i int, n int) int { return i % n }
		for i, op := range ops {
			arg := int(op >> 5)
			switch op % 16 {
			case 0: // time passes
				now = now.Add(time.Duration(1+arg) * time.Second)
				handle(c.Tick(now, table))
			case 1: // answer a bid round
				if len(bids) > 0 {
					k := pick(i, len(bids))
					r := bids[k]
					bids = append(bids[:k], bids[k+1:]...)
					m := map[peer.ID]*pb.Bid{}
					for j, p := range r.Peers {
						if (j+arg)%3 != 2 {
							m[p] = &pb.Bid{Accept: (j+arg)%4 != 3, Slots: int32(1 + arg%3), Reason: "full"}
						}
					}
					handle(c.OnBids(now, r, m))
				}
			case 2, 3, 4, 5, 6, 7, 13: // an assignment's provider acts
				if len(assigns) == 0 {
					continue
				}
				k := pick(i+arg, len(assigns))
				a := assigns[k]
				switch op % 16 {
				case 2:
					handle(c.OnAssignReply(now, a.TaskID, a.Attempt, a.Peer, true, ""))
				case 3:
					handle(c.OnAssignReply(now, a.TaskID, a.Attempt, a.Peer, false, "busy"))
					assigns = append(assigns[:k], assigns[k+1:]...)
				case 4:
					handle(c.OnProgress(now, a.TaskID, a.Attempt, a.Peer, pb.TaskState_TASK_STATE_RUNNING, float64(arg)/8))
				case 5:
					handle(c.OnResult(now, a.TaskID, a.Attempt, a.Peer, success(a)))
					assigns = append(assigns[:k], assigns[k+1:]...)
				case 6:
					handle(c.OnResult(now, a.TaskID, a.Attempt, a.Peer, &pb.TaskResult{Error: "boom"}))
					assigns = append(assigns[:k], assigns[k+1:]...)
				case 7:
					handle(c.OnAttemptFailed(now, a.TaskID, a.Attempt, a.Peer, "stream reset"))
					assigns = append(assigns[:k], assigns[k+1:]...)
				case 13: // duplicate / stale result: must change nothing twice
					handle(c.OnResult(now, a.TaskID, a.Attempt, a.Peer, success(a)))
					handle(c.OnResult(now, a.TaskID, a.Attempt, a.Peer, success(a)))
				}
			case 8, 9: // a fetch ends
				if len(fetches) > 0 {
					k := pick(i, len(fetches))
					fr := fetches[k]
					fetches = append(fetches[:k], fetches[k+1:]...)
					handle(c.OnFetched(now, fr.TaskID, fr.Attempt, op%16 == 8, "bad block"))
				}
			case 10: // assembly ends
				if len(assembles) > 0 {
					a := assembles[0]
					assembles = assembles[1:]
					var err error
					if arg == 7 {
						err = fmt.Errorf("disk full")
					}
					handle(c.OnAssembled(now, a.JobID, "bafy", "http://gw/", err))
				}
			case 11:
				as, _ := c.Cancel(now, []string{"a", "b"}[arg%2])
				handle(as)
			case 12: // the node restarts: export, restore into a new coordinator
				var snaps [][]byte
				for _, id := range []string{"a", "b"} {
					s, err := c.Export(id)
					if err != nil {
						t.Fatal(err)
					}
					snaps = append(snaps, s)
				}
				c = newCoord(func(cfg *Config) { cfg.SpeculateMinAge = 3 * time.Second })
				c.Tick(now, table)
				bids, assigns, fetches, assembles = nil, nil, nil, nil
				restores++
				for _, s := range snaps {
					as, err := c.Restore(now, s)
					if err != nil {
						t.Fatalf("restore: %v", err)
					}
					handle(as)
				}
			default:
				now = now.Add(time.Duration(arg) * 200 * time.Millisecond)
			}
			checkInvariants(t, c)
		}
	})
}

func checkInvariants(t *testing.T, c *Coordinator) {
	t.Helper()
	for _, j := range c.order {
		if err := j.checkIndexes(); err != nil {
			t.Fatalf("job %s: %v", j.rec.ID, err)
		}
		for _, tk := range j.tasks {
			if tk.failures > j.rec.MaxAttempts+tk.specCopies+2 {
				t.Fatalf("%s: %d failures, max %d", tk.id, tk.failures, j.rec.MaxAttempts)
			}
			if tk.status == api.TaskFailed && tk.failures < j.rec.MaxAttempts {
				t.Fatalf("%s failed after %d of %d attempts", tk.id, tk.failures, j.rec.MaxAttempts)
			}
			if j.terminal() {
				if len(tk.copies) > 0 || tk.fetching != nil {
					t.Fatalf("%s: live work in a finished job", tk.id)
				}
				if j.status == api.JobCompleted && (tk.status != api.TaskCompleted || tk.done == nil) {
					t.Fatalf("%s: %s in a completed job", tk.id, tk.status)
				}
				continue
			}
			live := len(tk.copies) > 0 || tk.fetching != nil
			switch tk.status {
			case api.TaskPending:
				if live {
					t.Fatalf("%s pending with live work", tk.id)
				}
			case api.TaskAssigned, api.TaskRunning:
				if !live {
					t.Fatalf("%s %s without a copy or result: lost", tk.id, tk.status)
				}
			case api.TaskCompleted:
				if tk.done == nil || live {
					t.Fatalf("%s completed inconsistently", tk.id)
				}
			default:
				t.Fatalf("%s is %s in a %s job", tk.id, tk.status, j.status)
			}
		}
		if j.assembling && j.completed() != len(j.tasks) {
			t.Fatalf("%s assembling with unfinished tasks", j.rec.ID)
		}
	}
}

// FuzzRestore feeds Restore arbitrary bytes: errors are fine, panics and
// accepted snapshots that break the invariants are not.
func FuzzRestore(f *testing.F) {
	c := newCoord(nil)
	table := []Entry{entry(f, 0), entry(f, 1)}
	c.Tick(t0, table)
	as, _ := c.Submit(t0, noopJob(f, "j", 2, ""))
	a := split(c.OnBids(t0, split(as).bids[0], acceptAll(split(as).bids[0], 1)))
	c.OnResult(t0, a.assigns[0].TaskID, 1, a.assigns[0].Peer, success(a.assigns[0]))
	snap, _ := c.Export("j")
	f.Add(snap)
	f.Add([]byte(`{"version":1}`))
	// Hand-made inconsistent snapshots: Restore must refuse them.
	var m map[string]any
	_ = json.Unmarshal(snap, &m)
	m["status"] = "completed"
	bad, _ := json.Marshal(m)
	f.Add(bad)
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCoord(nil)
		if _, err := c.Restore(t0, data); err != nil {
			return
		}
		checkInvariants(t, c)
		c.Tick(t0.Add(time.Minute), table)
		checkInvariants(t, c)
	})
}
