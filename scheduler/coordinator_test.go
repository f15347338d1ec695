package scheduler

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

func newCoord(mod func(*Config)) *Coordinator {
	cfg := Config{BidTimeout: 2 * time.Second, RebidInterval: time.Second, HeartbeatTimeout: 10 * time.Second,
		SpeculateMinAge: 30 * time.Second, DefaultMaxAttempts: 3}
	if mod != nil {
		mod(&cfg)
	}
	return NewCoordinator(cfg)
}

func TestPendingWithReasonsThenRuns(t *testing.T) {
	c := newCoord(nil)
	rec := record(t, "j1", `{"templateID": "sd", "resources": {"gpu": 1}, "params": {"partitioner": {"num_replicas": 2}, "app": {"prompt": "a cat"}}}`)
	as, err := c.Submit(t0, rec)
	if err != nil {
		t.Fatal(err)
	}
	if a := split(as); len(a.bids) != 0 {
		t.Fatal("asked for bids with an empty table")
	}
	j := mustJob(t, c, "j1")
	if j.Status != api.JobPending || !slices.Equal(j.Reasons, []string{"no peers in the capacity table yet"}) {
		t.Fatalf("job = %s %q", j.Status, j.Reasons)
	}
	// Peers without a GPU: still pending, and the reason says so.
	now := t0.Add(time.Second)
	a := split(c.Tick(now, []Entry{entry(t, 0), entry(t, 1), entry(t, 2, withLoad(4, 4, 4), withGPU(24<<30))}))
	if len(a.bids) != 0 {
		t.Fatal("asked peers that cannot run the job")
	}
	j = mustJob(t, c, "j1")
	if j.Status != api.JobPending || !slices.Equal(j.Reasons, []string{"2 peers lack a GPU", "1 peer is full"}) {
		t.Fatalf("job = %s %q", j.Status, j.Reasons)
	}
	if rc := c.Rejections("j1"); rc[ReasonNoGPU] != 2 || rc[ReasonFull] != 1 {
		t.Fatalf("rejection counts = %v", rc)
	}
	// A GPU peer appears: bids go out, tasks are assigned, the job runs.
	now = now.Add(time.Second)
	gpu := entry(t, 3, withGPU(24<<30))
	a = split(c.Tick(now, []Entry{entry(t, 0), gpu}))
	if len(a.bids) != 1 || !slices.Equal(a.bids[0].Peers, []peer.ID{gpu.Peer}) {
		t.Fatalf("bids = %+v", a.bids)
	}
	r := a.bids[0].Req
	if r.Tasks != 2 || r.Resources.Gpus != 1 || r.Model != "stabilityai/sd-turbo" || r.TemplateId != "stable-diffusion" || r.Image != "swarmgen/sd-worker:latest" {
		t.Errorf("bid request = %v", r)
	}
	a = split(c.OnBids(now, a.bids[0], acceptAll(a.bids[0], 4)))
	if len(a.assigns) != 2 {
		t.Fatalf("%d assigns", len(a.assigns))
	}
	as0 := a.assigns[0].Assignment
	if as0.Attempt != 1 || as0.Count != 2 || as0.Seed != 1 || as0.TimeoutMs != time.Hour.Milliseconds() || !strings.Contains(string(as0.AppParams), `"prompt":"a cat"`) {
		t.Errorf("assignment = %v", as0)
	}
	if j = mustJob(t, c, "j1"); j.Status != api.JobRunning || j.Tasks[0].Status != api.TaskAssigned || j.Tasks[0].Provider != gpu.Peer.String() {
		t.Errorf("job = %+v", j)
	}
}

func TestHeartbeatLossRetriesElsewhereThenFails(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1), entry(t, 2)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, `, "maxAttempts": 2`))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	first := a.assigns[0]
	c.OnAssignReply(t0, first.TaskID, 1, first.Peer, true, "")
	c.OnProgress(t0.Add(time.Second), first.TaskID, 1, first.Peer, pb.TaskState_TASK_STATE_RUNNING, 0.1)
	// Heartbeats keep it alive.
	c.OnProgress(t0.Add(9*time.Second), first.TaskID, 1, first.Peer, pb.TaskState_TASK_STATE_HEARTBEAT, 0.2)
	if a := split(c.Tick(t0.Add(15*time.Second), table)); len(a.cancels) != 0 {
		t.Fatal("cancelled a task that sent heartbeats")
	}
	// Silence past HeartbeatTimeout: cancelled, re-bid without that peer.
	now := t0.Add(20 * time.Second)
	a = split(c.Tick(now, table))
	if len(a.cancels) != 1 || a.cancels[0].Peer != first.Peer || len(a.bids) != 1 {
		t.Fatalf("cancels %v bids %v", a.cancels, a.bids)
	}
	if slices.Contains(a.bids[0].Peers, first.Peer) {
		t.Fatal("asked the failed peer again")
	}
	j := mustJob(t, c, "j")
	if j.Tasks[0].Status != api.TaskPending || j.Tasks[0].Attempts != 1 || !strings.Contains(j.Tasks[0].Error, "heartbeat") {
		t.Fatalf("task = %+v", j.Tasks[0])
	}
	// Even if the failed peer bids, it does not get the task.
	bids := acceptAll(a.bids[0], 1)
	bids[first.Peer] = &pb.Bid{Accept: true, Slots: 1}
	a = split(c.OnBids(now, a.bids[0], bids))
	if len(a.assigns) != 1 || a.assigns[0].Peer == first.Peer || a.assigns[0].Attempt != 2 {
		t.Fatalf("assigns = %+v", a.assigns)
	}
	// A late result from the dead attempt is ignored.
	if got := c.OnResult(now, first.TaskID, 1, first.Peer, success(first)); len(got) != 0 {
		t.Fatalf("stale result produced %v", got)
	}
	// Second failure reaches maxAttempts=2: task and job fail.
	second := a.assigns[0]
	a = split(c.OnAttemptFailed(now, second.TaskID, 2, second.Peer, "stream reset"))
	j = mustJob(t, c, "j")
	if j.Status != api.JobFailed || j.Tasks[0].Status != api.TaskFailed || !strings.Contains(j.Error, "failed after 2 attempts: stream reset") {
		t.Fatalf("job = %+v", j)
	}
	if c.Reliability(first.Peer).Failures != 1 || c.Reliability(second.Peer).Failures != 1 {
		t.Error("failures not recorded per peer")
	}
}

func must(as []Action, err error) []Action {
	if err != nil {
		panic(err)
	}
	return as
}

func TestDeclinedAssignmentIsNotAFailure(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, `, "maxAttempts": 1`))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	as := a.assigns[0]
	a = split(c.OnAssignReply(t0, as.TaskID, as.Attempt, as.Peer, false, "full"))
	j := mustJob(t, c, "j")
	if j.Status == api.JobFailed || j.Tasks[0].Status != api.TaskPending || j.Tasks[0].Attempts != 0 {
		t.Fatalf("job = %+v", j)
	}
	// It is asked again (a new round) and can take the task this time.
	if len(a.bids) != 1 {
		t.Fatalf("no new round: %+v", a)
	}
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	if len(a.assigns) != 1 || a.assigns[0].Attempt != 2 {
		t.Fatalf("assigns = %+v", a.assigns)
	}
}

func TestSpeculativeCopyFirstResultWins(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1), entry(t, 2)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 2, ""))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	if len(a.assigns) != 2 || a.assigns[0].Peer == a.assigns[1].Peer {
		t.Fatalf("assigns not spread: %+v", a.assigns)
	}
	fast, slow := a.assigns[0], a.assigns[1]
	for _, x := range []Assign{fast, slow} {
		c.OnProgress(t0, x.TaskID, x.Attempt, x.Peer, pb.TaskState_TASK_STATE_RUNNING, 0)
	}
	now := t0.Add(5 * time.Second)
	a = split(c.OnResult(now, fast.TaskID, fast.Attempt, fast.Peer, success(fast)))
	a = split(c.OnFetched(now, a.fetches[0].TaskID, a.fetches[0].Attempt, true, ""))
	// Not old enough to speculate yet.
	c.OnProgress(now.Add(20*time.Second), slow.TaskID, slow.Attempt, slow.Peer, pb.TaskState_TASK_STATE_HEARTBEAT, 0.1)
	if a := split(c.Tick(now.Add(20*time.Second), table)); len(a.bids) != 0 {
		t.Fatal("speculated before SpeculateMinAge")
	}
	now = t0.Add(35 * time.Second)
	c.OnProgress(now, slow.TaskID, slow.Attempt, slow.Peer, pb.TaskState_TASK_STATE_HEARTBEAT, 0.2)
	a = split(c.Tick(now, table))
	if len(a.bids) != 1 || slices.Contains(a.bids[0].Peers, slow.Peer) {
		t.Fatalf("speculative round: %+v", a.bids)
	}
	a = split(c.OnBids(now, a.bids[0], acceptAll(a.bids[0], 1)))
	if len(a.assigns) != 1 || !a.assigns[0].Speculative || a.assigns[0].TaskID != slow.TaskID || a.assigns[0].Attempt != 2 {
		t.Fatalf("speculative assign: %+v", a.assigns)
	}
	spec := a.assigns[0]
	// No second speculative copy.
	if a := split(c.Tick(now.Add(5*time.Second), table)); len(a.bids) != 0 || len(a.cancels) != 0 {
		t.Fatalf("second speculation or spurious cancel: %+v", a)
	}
	// The copy finishes first: fetched; the original is cancelled.
	now = now.Add(6 * time.Second)
	c.OnProgress(now, slow.TaskID, slow.Attempt, slow.Peer, pb.TaskState_TASK_STATE_HEARTBEAT, 0.3)
	a = split(c.OnResult(now, spec.TaskID, spec.Attempt, spec.Peer, success(spec)))
	if len(a.fetches) != 1 || a.fetches[0].Peer != spec.Peer {
		t.Fatalf("fetch = %+v", a.fetches)
	}
	// The original's result arrives while fetching: kept as backup, not fetched.
	if a := split(c.OnResult(now, slow.TaskID, slow.Attempt, slow.Peer, success(slow))); len(a.fetches) != 0 {
		t.Fatalf("second result fetched: %+v", a)
	}
	a = split(c.OnFetched(now, spec.TaskID, spec.Attempt, true, ""))
	if len(a.assemble) != 1 || len(a.assemble[0].Results) != 2 {
		t.Fatalf("assemble = %+v", a.assemble)
	}
	completed := 0
	for _, ch := range a.changed {
		if ch.Event.Status == api.TaskCompleted && ch.Event.TaskID == slow.TaskID {
			completed++
		}
	}
	if completed != 1 {
		t.Fatalf("task reported completed %d times", completed)
	}
	j := mustJob(t, c, "j")
	if j.Tasks[1].Provider != spec.Peer.String() || j.Tasks[1].Attempts != 2 || j.Tasks[1].ResultCID == "" {
		t.Errorf("task = %+v", j.Tasks[1])
	}
	// A repeated fetch report or result changes nothing.
	if got := c.OnFetched(now, spec.TaskID, spec.Attempt, true, ""); len(got) != 0 {
		t.Fatal("double completion")
	}
	a = split(c.OnAssembled(now, "j", "bafybucket", "http://gw/buckets/j/", nil))
	if j = mustJob(t, c, "j"); j.Status != api.JobCompleted || j.Bucket.CID != "bafybucket" {
		t.Fatalf("job = %+v", j)
	}
	// Completed: every peer asked for a bid releases what the job's bids
	// reserved there, once, in a replayable order.
	if len(a.releases) != len(table) || !slices.IsSortedFunc(a.releases, func(x, y CancelTask) int { return strings.Compare(string(x.Peer), string(y.Peer)) }) || len(a.cancels) != 0 {
		t.Fatalf("releases = %+v cancels %+v", a.releases, a.cancels)
	}
	if again := split(c.Tick(now.Add(time.Minute), table)); len(again.releases) != 0 {
		t.Fatalf("released again: %+v", again.releases)
	}
}

func TestSpeculativeOriginalWinsCancelsCopy(t *testing.T) {
	c := newCoord(func(cfg *Config) { cfg.SpeculateMinAge = time.Second })
	table := []Entry{entry(t, 0), entry(t, 1)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, ""))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	orig := a.assigns[0]
	c.OnProgress(t0, orig.TaskID, 1, orig.Peer, pb.TaskState_TASK_STATE_RUNNING, 0)
	now := t0.Add(2 * time.Second)
	a = split(c.Tick(now, table))
	a = split(c.OnBids(now, a.bids[0], acceptAll(a.bids[0], 1)))
	spec := a.assigns[0]
	a = split(c.OnResult(now, orig.TaskID, 1, orig.Peer, success(orig)))
	a = split(c.OnFetched(now, orig.TaskID, 1, true, ""))
	if len(a.cancels) != 1 || a.cancels[0].Peer != spec.Peer || a.cancels[0].Attempt != spec.Attempt {
		t.Fatalf("cancels = %+v", a.cancels)
	}
	if got := c.OnResult(now, spec.TaskID, spec.Attempt, spec.Peer, success(spec)); len(got) != 0 {
		t.Fatal("cancelled copy's result was used")
	}
}

func TestFetchFailureRetriesAndExcludes(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, ""))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	first := a.assigns[0]
	a = split(c.OnResult(t0, first.TaskID, 1, first.Peer, success(first)))
	a = split(c.OnFetched(t0, first.TaskID, 1, false, "block hash mismatch"))
	if len(a.bids) != 1 || slices.Contains(a.bids[0].Peers, first.Peer) {
		t.Fatalf("rebid = %+v", a.bids)
	}
	j := mustJob(t, c, "j")
	if j.Tasks[0].Status != api.TaskPending || !strings.Contains(j.Tasks[0].Error, "block hash mismatch") {
		t.Fatalf("task = %+v", j.Tasks[0])
	}
}

func TestCancel(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 3, ""))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 2)))
	if len(a.assigns) != 3 {
		t.Fatalf("%d assigns", len(a.assigns))
	}
	done := a.assigns[0]
	f := split(c.OnResult(t0, done.TaskID, 1, done.Peer, success(done)))
	c.OnFetched(t0, f.fetches[0].TaskID, 1, true, "")
	a2 := split(must(c.Cancel(t0, "j")))
	if len(a2.cancels) != 2 {
		t.Fatalf("cancels = %+v", a2.cancels)
	}
	// Both peers were asked for bids: both release what the job reserved.
	if len(a2.releases) != 2 || a2.releases[0].Peer == a2.releases[1].Peer {
		t.Fatalf("releases = %+v", a2.releases)
	}
	j := mustJob(t, c, "j")
	if j.Status != api.JobCancelled || j.Tasks[0].Status != api.TaskCompleted || j.Tasks[1].Status != api.TaskCancelled {
		t.Fatalf("job = %+v", j)
	}
	if got := c.OnResult(t0, a.assigns[1].TaskID, 1, a.assigns[1].Peer, success(a.assigns[1])); len(got) != 0 {
		t.Fatal("result accepted after cancel")
	}
	if got := c.Tick(t0.Add(time.Hour), table); len(got) != 0 {
		t.Fatalf("tick after cancel: %v", got)
	}
	if _, err := c.Cancel(t0, "nope"); err == nil {
		t.Fatal("cancel of unknown job")
	}
	if !c.Remove("j") || len(c.Jobs()) != 0 {
		t.Fatal("Remove")
	}
}

func TestJobTimeout(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, `, "timeout": "1m"`))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	as := a.assigns[0]
	for s := 5; s < 60; s += 5 {
		c.OnProgress(t0.Add(time.Duration(s)*time.Second), as.TaskID, 1, as.Peer, pb.TaskState_TASK_STATE_HEARTBEAT, 0)
		c.Tick(t0.Add(time.Duration(s)*time.Second), table)
	}
	a = split(c.Tick(t0.Add(time.Minute), table))
	j := mustJob(t, c, "j")
	if j.Status != api.JobFailed || !strings.Contains(j.Error, "timed out") || len(a.cancels) != 1 || len(a.releases) != 1 {
		t.Fatalf("job = %+v cancels %v releases %v", j, a.cancels, a.releases)
	}
}

func TestBidRoundTimeoutAndDeclines(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, ""))))
	if len(a.bids) != 1 {
		t.Fatal("no bids")
	}
	// Nobody answers: the round closes, reasons say so, and after
	// RebidInterval a new round starts.
	now := t0.Add(2 * time.Second)
	a = split(c.Tick(now, table))
	if len(a.bids) != 0 || !slices.Equal(mustJob(t, c, "j").Reasons, []string{"2 peers did not answer the bid request in time"}) {
		t.Fatalf("after timeout: %+v %q", a.bids, mustJob(t, c, "j").Reasons)
	}
	now = now.Add(time.Second)
	a = split(c.Tick(now, table))
	if len(a.bids) != 1 {
		t.Fatal("no new round")
	}
	bids := map[peer.ID]*pb.Bid{
		a.bids[0].Peers[0]: {Accept: false, Reason: string(ReasonFull)},
		a.bids[0].Peers[1]: {Accept: false, Reason: "<script>nonsense"},
	}
	c.OnBids(now, a.bids[0], bids)
	j := mustJob(t, c, "j")
	if j.Status != api.JobPending || !slices.Equal(j.Reasons, []string{"1 peer declined", "1 peer is full"}) {
		t.Fatalf("reasons = %q", j.Reasons)
	}
}

func TestExportRestoreMidJob(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1), entry(t, 2)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 3, ""))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 1)))
	done, fetching, running := a.assigns[0], a.assigns[1], a.assigns[2]
	// Both have started (a queued task could move to the peer that
	// finishes first).
	c.OnProgress(t0, fetching.TaskID, 1, fetching.Peer, pb.TaskState_TASK_STATE_RUNNING, 0.1)
	c.OnProgress(t0, running.TaskID, 1, running.Peer, pb.TaskState_TASK_STATE_RUNNING, 0.1)
	f := split(c.OnResult(t0, done.TaskID, 1, done.Peer, success(done)))
	c.OnFetched(t0, f.fetches[0].TaskID, 1, true, "")
	c.OnResult(t0, fetching.TaskID, 1, fetching.Peer, success(fetching))
	c.OnProgress(t0, running.TaskID, 1, running.Peer, pb.TaskState_TASK_STATE_RUNNING, 0.4)
	snap, err := c.Export("j")
	if err != nil {
		t.Fatal(err)
	}
	before := mustJob(t, c, "j")

	// A fresh coordinator (the node restarted).
	c2 := newCoord(nil)
	now := t0.Add(time.Minute)
	a = split(must(c2.Restore(now, snap)))
	if len(a.cancels) != 1 || a.cancels[0].TaskID != running.TaskID || a.cancels[0].Peer != running.Peer {
		t.Fatalf("cancels = %+v", a.cancels)
	}
	if len(a.fetches) != 1 || a.fetches[0].TaskID != fetching.TaskID || string(a.fetches[0].Root) != string(fakeRoot(fetching.TaskID)) {
		t.Fatalf("fetches = %+v", a.fetches)
	}
	j := mustJob(t, c2, "j")
	if j.Tasks[0].Status != api.TaskCompleted || j.Tasks[0].ResultCID != before.Tasks[0].ResultCID ||
		j.Tasks[0].Provider == "" || j.Tasks[0].Provider != before.Tasks[0].Provider ||
		j.Tasks[2].Status != api.TaskPending || j.Tasks[2].Attempts != 1 || j.Status != api.JobRunning {
		t.Fatalf("restored = %+v", j)
	}
	// It finishes on the new coordinator; the pending task gets attempt 2.
	s := &sim{c: c2, now: now, completed: map[string]int{}, assembled: map[string]int{}}
	s.apply(c2.OnFetched(now, fetching.TaskID, 1, true, ""))
	a2 := split(c2.Tick(now, table))
	if len(a2.bids) != 1 {
		t.Fatalf("no round for the pending task: %+v", a2)
	}
	b := c2.OnBids(now, a2.bids[0], acceptAll(a2.bids[0], 1))
	if as := split(b).assigns; len(as) != 1 || as[0].Attempt != 2 || as[0].TaskID != running.TaskID {
		t.Fatalf("reassign = %+v", as)
	}
	s.apply(b)
	if j := mustJob(t, c2, "j"); j.Status != api.JobCompleted || s.assembled["j"] != 1 {
		t.Fatalf("job = %+v assembled %d", j, s.assembled["j"])
	}
	// Restoring the same job twice is refused; garbage is refused.
	if _, err := c2.Restore(now, snap); err == nil {
		t.Error("duplicate restore accepted")
	}
	for _, bad := range []string{"", "{}", `{"version": 1, "record": {"id": "x"}}`, "[1,2]"} {
		if _, err := newCoord(nil).Restore(now, []byte(bad)); err == nil {
			t.Errorf("Restore(%q) accepted", bad)
		}
	}
	// A peer ID that does not decode is refused, and the error says where.
	garbled := strings.Replace(string(snap), `"provider":"`+done.Peer.String()+`"`, `"provider":"not-a-peer"`, 1)
	if garbled == string(snap) {
		t.Fatal("snapshot does not name the provider as peer.ID's JSON would")
	}
	if _, err := newCoord(nil).Restore(now, []byte(garbled)); err == nil || !strings.Contains(err.Error(), "provider") {
		t.Errorf("Restore with a garbled provider: %v", err)
	}
	// Inconsistent snapshots are refused: a negative index (a restarted
	// node indexed its task list with it), a negative timeout, a task not
	// completed that carries a result (it would be placed again and its
	// new result ignored).
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(snap, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	record := func(m map[string]any) map[string]any { return m["record"].(map[string]any) }
	states := func(m map[string]any) []any { return m["tasks"].([]any) }
	for name, bad := range map[string][]byte{
		"negative index":           edit(func(m map[string]any) { record(m)["tasks"].([]any)[2].(map[string]any)["index"] = -1 }),
		"negative task timeout":    edit(func(m map[string]any) { record(m)["taskTimeout"] = -1 }),
		"pending with a result":    edit(func(m map[string]any) { states(m)[2].(map[string]any)["done"] = states(m)[0].(map[string]any)["done"] }),
		"completed without result": edit(func(m map[string]any) { delete(states(m)[0].(map[string]any), "done") }),
	} {
		if _, err := newCoord(nil).Restore(now, bad); err == nil {
			t.Errorf("Restore with %s accepted", name)
		}
	}
	if _, err := newCoord(nil).Restore(now, edit(func(map[string]any) {})); err != nil {
		t.Fatalf("the unedited snapshot, re-encoded: %v", err)
	}
}

func TestPriorityPlacesFirst(t *testing.T) {
	c := newCoord(nil)
	low, high := noopJob(t, "low", 1, ""), noopJob(t, "high", 1, `, "priority": 10`)
	must(c.Submit(t0, low))
	must(c.Submit(t0, high))
	a := split(c.Tick(t0, []Entry{entry(t, 0)}))
	if len(a.bids) != 2 || a.bids[0].JobID != "high" {
		t.Fatalf("bid order = %+v", a.bids)
	}
	if _, err := c.Submit(t0, low); err == nil {
		t.Fatal("duplicate job accepted")
	}
	if _, err := c.Submit(t0, JobRecord{ID: "empty"}); err == nil {
		t.Fatal("job without tasks accepted")
	}
	if js := c.Jobs(); len(js) != 2 || js[0].ID != "low" || js[0].Tasks[0].Status != api.TaskPending {
		t.Fatalf("jobs = %+v", js)
	}
}

// TestLeaseRefillsWithoutBidRound: a bid is a standing offer; when one of
// the peer's tasks returns a result, the next task goes to it at once. A
// decline ends the lease.
func TestLeaseRefillsWithoutBidRound(t *testing.T) {
	c := newCoord(nil)
	c.Tick(t0, []Entry{entry(t, 0)})
	a := split(must(c.Submit(t0, noopJob(t, "j", 6, ""))))
	a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 2)))
	if len(a.assigns) != 2 {
		t.Fatalf("assigned %d, want the 2 offered slots", len(a.assigns))
	}
	first, second := a.assigns[0], a.assigns[1]
	for _, as := range a.assigns {
		c.OnAssignReply(t0, as.TaskID, as.Attempt, as.Peer, true, "")
	}
	r := split(c.OnResult(t0, first.TaskID, first.Attempt, first.Peer, success(first)))
	if len(r.fetches) != 1 || len(r.assigns) != 1 || len(r.bids) != 0 {
		t.Fatalf("after a result: %d fetches, %d assigns, %d bid rounds; want 1, 1, 0", len(r.fetches), len(r.assigns), len(r.bids))
	}
	if r.assigns[0].Peer != first.Peer || r.assigns[0].TaskID == first.TaskID || r.assigns[0].TaskID == second.TaskID {
		t.Fatalf("refill = %+v", r.assigns[0])
	}
	// The refill is declined: the lease ends, the next result refills nothing.
	third := r.assigns[0]
	c.OnAssignReply(t0, third.TaskID, third.Attempt, third.Peer, false, "queue full")
	r = split(c.OnResult(t0, second.TaskID, second.Attempt, second.Peer, success(second)))
	if len(r.assigns) != 0 {
		t.Fatalf("refilled after a decline: %+v", r.assigns)
	}
	// A failure ends a lease too.
	c2 := newCoord(nil)
	c2.Tick(t0, []Entry{entry(t, 0)})
	a = split(must(c2.Submit(t0, noopJob(t, "k", 4, ""))))
	a = split(c2.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 2)))
	x, y := a.assigns[0], a.assigns[1]
	c2.OnAttemptFailed(t0, x.TaskID, x.Attempt, x.Peer, "boom")
	if r := split(c2.OnResult(t0, y.TaskID, y.Attempt, y.Peer, success(y))); len(r.assigns) != 0 {
		t.Fatalf("refilled after a failure: %+v", r.assigns)
	}
}

// TestIdlePeerStealsQueuedTask: a peer whose queue of the job ran dry takes
// a task still waiting (not started) in another peer's queue; the queued
// attempt is cancelled without counting as a failure. A started task is
// never taken, nor one assigned moments ago (it may be running already).
func TestIdlePeerStealsQueuedTask(t *testing.T) {
	setup := func() (*Coordinator, map[peer.ID][]Assign, peer.ID, peer.ID) {
		c := newCoord(nil)
		c.Tick(t0, []Entry{entry(t, 0), entry(t, 1)})
		a := split(must(c.Submit(t0, noopJob(t, "j", 4, ""))))
		a = split(c.OnBids(t0, a.bids[0], acceptAll(a.bids[0], 2)))
		if len(a.assigns) != 4 {
			t.Fatalf("assigned %d, want 4", len(a.assigns))
		}
		byPeer := map[peer.ID][]Assign{}
		for _, as := range a.assigns {
			c.OnAssignReply(t0, as.TaskID, as.Attempt, as.Peer, true, "")
			byPeer[as.Peer] = append(byPeer[as.Peer], as)
		}
		fast, slow := testPeer(t, 0), testPeer(t, 1)
		// slow starts its first task; its second waits in its queue. fast
		// starts both of its tasks and finishes the first.
		c.OnProgress(t0, byPeer[slow][0].TaskID, byPeer[slow][0].Attempt, slow, pb.TaskState_TASK_STATE_RUNNING, 0)
		for _, as := range byPeer[fast] {
			c.OnProgress(t0, as.TaskID, as.Attempt, fast, pb.TaskState_TASK_STATE_RUNNING, 0)
		}
		r := split(c.OnResult(t0, byPeer[fast][0].TaskID, byPeer[fast][0].Attempt, fast, success(byPeer[fast][0])))
		if len(r.assigns) != 0 || len(r.cancels) != 0 {
			t.Fatalf("stole while the peer still had a task of the job: %+v", r)
		}
		return c, byPeer, fast, slow
	}

	// Moments after the assignment: not taken.
	c, byPeer, fast, _ := setup()
	r := split(c.OnResult(t0.Add(50*time.Millisecond), byPeer[fast][1].TaskID, byPeer[fast][1].Attempt, fast, success(byPeer[fast][1])))
	if len(r.assigns) != 0 || len(r.cancels) != 0 {
		t.Fatalf("stole a copy assigned 50 ms ago: %+v", r)
	}

	c, byPeer, fast, slow := setup()
	r = split(c.OnResult(t0.Add(time.Second), byPeer[fast][1].TaskID, byPeer[fast][1].Attempt, fast, success(byPeer[fast][1])))
	queued := byPeer[slow][1]
	if len(r.cancels) != 1 || r.cancels[0].TaskID != queued.TaskID || r.cancels[0].Peer != slow {
		t.Fatalf("cancels = %+v, want the queued task on the slow peer", r.cancels)
	}
	if len(r.assigns) != 1 || r.assigns[0].TaskID != queued.TaskID || r.assigns[0].Peer != fast {
		t.Fatalf("assigns = %+v, want the queued task moved to the idle peer", r.assigns)
	}
	j := mustJob(t, c, "j")
	for _, tk := range j.Tasks {
		if tk.ID == queued.TaskID && tk.Attempts != 1 {
			t.Fatalf("moved task shows %d attempts, want 1 (a move is not a failure)", tk.Attempts)
		}
	}
	// The running task on the slow peer is not taken: nothing queued is left.
	moved := r.assigns[0]
	now := t0.Add(2 * time.Second)
	c.OnAssignReply(now, moved.TaskID, moved.Attempt, fast, true, "")
	r = split(c.OnResult(now, moved.TaskID, moved.Attempt, fast, success(moved)))
	if len(r.assigns) != 0 || len(r.cancels) != 0 {
		t.Fatalf("took a running task: %+v", r)
	}
}

// TestLive: a coordinator is live while a job is not terminal.
func TestLive(t *testing.T) {
	c := newCoord(nil)
	if c.Live() {
		t.Fatal("live without jobs")
	}
	must(c.Submit(t0, noopJob(t, "j", 1, "")))
	if !c.Live() {
		t.Fatal("not live with a pending job")
	}
	if _, err := c.Cancel(t0, "j"); err != nil {
		t.Fatal(err)
	}
	if c.Live() {
		t.Fatal("live with only a cancelled job")
	}
}

func TestJobOfTask(t *testing.T) {
	for _, job := range []string{"j-0193ab12cd34ef567890", "job", "a-b-c"} {
		for _, i := range []int{0, 7, 12345} {
			if got := JobOfTask(TaskID(job, i)); got != job {
				t.Fatalf("JobOfTask(%q) = %q, want %q", TaskID(job, i), got, job)
			}
		}
	}
	if got := JobOfTask("nodash"); got != "" {
		t.Fatalf("JobOfTask without a dash = %q", got)
	}
}

// TestLateBidsDoNotCloseANewRound: answers to a round that timed out are
// dropped; the round open when they arrive still takes its own answers.
func TestLateBidsDoNotCloseANewRound(t *testing.T) {
	c := newCoord(nil)
	table := []Entry{entry(t, 0), entry(t, 1)}
	c.Tick(t0, table)
	a := split(must(c.Submit(t0, noopJob(t, "j", 1, ""))))
	old := a.bids[0]
	// The round times out, and after RebidInterval a new one opens.
	c.Tick(t0.Add(2*time.Second), table)
	a = split(c.Tick(t0.Add(3*time.Second), table))
	if len(a.bids) != 1 || a.bids[0].Round == old.Round {
		t.Fatalf("no second round: %+v", a.bids)
	}
	now := t0.Add(3 * time.Second)
	if late := split(c.OnBids(now, old, acceptAll(old, 1))); len(late.assigns) != 0 {
		t.Fatalf("the timed-out round's answers placed tasks: %+v", late.assigns)
	}
	if cur := split(c.OnBids(now, a.bids[0], acceptAll(a.bids[0], 1))); len(cur.assigns) != 1 {
		t.Fatalf("the open round's own answers: %+v", cur)
	}
}

// TestEnded: Ended lists the finished jobs only, in Jobs' order, with the
// time each finished.
func TestEnded(t *testing.T) {
	c := newCoord(nil)
	c.Tick(t0, []Entry{entry(t, 0)})
	for _, id := range []string{"a", "b", "c"} {
		must(c.Submit(t0, noopJob(t, id, 1, "")))
	}
	if e := c.Ended(); len(e) != 0 {
		t.Fatalf("ended = %+v with every job live", e)
	}
	must(c.Cancel(t0.Add(2*time.Second), "c"))
	must(c.Cancel(t0.Add(time.Second), "a"))
	want := []EndedJob{{ID: "a", FinishedAt: t0.Add(time.Second)}, {ID: "c", FinishedAt: t0.Add(2 * time.Second)}}
	if e := c.Ended(); !slices.Equal(e, want) {
		t.Fatalf("ended = %+v, want %+v", e, want)
	}
	var fromViews []EndedJob
	for _, j := range c.Jobs() {
		if j.Status == api.JobCancelled {
			fromViews = append(fromViews, EndedJob{ID: j.ID, FinishedAt: j.FinishedAt})
		}
	}
	if !slices.Equal(fromViews, want) {
		t.Fatalf("views say %+v", fromViews)
	}
}

// TestDeclinesBackOff: a peer that declines a task twice is held back from
// it for a while, not for good. The job's reasons say so while it waits;
// after the backoff the peer is asked again, takes the task and the job
// completes. A peer excluded after a failure stays excluded.
func TestDeclinesBackOff(t *testing.T) {
	c := newCoord(func(cfg *Config) { cfg.HeartbeatTimeout = time.Hour })
	table := []Entry{entry(t, 0), entry(t, 1)}
	busy, failed := table[0].Peer, table[1].Peer
	c.Tick(t0, table)
	now := t0
	a := split(must(c.Submit(now, noopJob(t, "j", 1, `, "maxAttempts": 3`))))
	// failed takes the task first and fails it: it is excluded for good.
	bids := map[peer.ID]*pb.Bid{failed: {Accept: true, Slots: 1}}
	a = split(c.OnBids(now, a.bids[0], bids))
	if len(a.assigns) != 1 || a.assigns[0].Peer != failed {
		t.Fatalf("assigns = %+v", a.assigns)
	}
	a = split(c.OnAttemptFailed(now, a.assigns[0].TaskID, a.assigns[0].Attempt, failed, "boom"))
	// busy declines the task twice.
	decline := func(a acts) acts {
		t.Helper()
		if len(a.bids) != 1 || !slices.Equal(a.bids[0].Peers, []peer.ID{busy}) {
			t.Fatalf("bids = %+v, want a round asking only %s", a.bids, busy)
		}
		a = split(c.OnBids(now, a.bids[0], acceptAll(a.bids[0], 1)))
		if len(a.assigns) != 1 || a.assigns[0].Peer != busy {
			t.Fatalf("assigns = %+v", a.assigns)
		}
		as := a.assigns[0]
		return split(c.OnAssignReply(now, as.TaskID, as.Attempt, busy, false, "busy with another job"))
	}
	a = decline(a)
	a = decline(a)
	if len(a.bids) != 0 {
		t.Fatalf("asked a peer that just declined twice: %+v", a.bids)
	}
	wantReasons := func(want ...string) {
		t.Helper()
		j := mustJob(t, c, "j")
		if j.Status != api.JobRunning || j.Tasks[0].Status != api.TaskPending || !slices.Equal(j.Reasons, want) {
			t.Fatalf("job %s, task %s, reasons %q; want running, pending, %q", j.Status, j.Tasks[0].Status, j.Reasons, want)
		}
	}
	at := func(d time.Duration) string {
		return "1 peer declined recently; asked again at " + t0.Add(d).UTC().Format("15:04:05Z")
	}
	wantReasons(at(declineBackoff), "1 peer is excluded after failing these tasks")
	if rc := c.Rejections("j"); rc[ReasonDeclinedRecently] != 1 || rc[ReasonExcludedAfterFailure] != 1 {
		t.Fatalf("rejection counts = %v", rc)
	}
	// Waiting: no round, and the reason stays the same.
	now = now.Add(2500 * time.Millisecond)
	if a = split(c.Tick(now, table)); len(a.bids) != 0 {
		t.Fatalf("asked during the backoff: %+v", a.bids)
	}
	wantReasons(at(declineBackoff), "1 peer is excluded after failing these tasks")
	// A third decline after the backoff doubles it.
	now = t0.Add(declineBackoff)
	a = decline(split(c.Tick(now, table)))
	wantReasons(at(declineBackoff+2*declineBackoff), "1 peer is excluded after failing these tasks")
	now = now.Add(8*time.Second - time.Millisecond)
	if a = split(c.Tick(now, table)); len(a.bids) != 0 {
		t.Fatalf("asked during the doubled backoff: %+v", a.bids)
	}
	// Past it the peer is asked again, takes the task, and the job
	// completes; the failed peer is never asked.
	now = now.Add(time.Millisecond)
	a = split(c.Tick(now, table))
	if len(a.bids) != 1 || !slices.Equal(a.bids[0].Peers, []peer.ID{busy}) {
		t.Fatalf("bids = %+v, want a round asking only %s", a.bids, busy)
	}
	a = split(c.OnBids(now, a.bids[0], acceptAll(a.bids[0], 1)))
	if len(a.assigns) != 1 || a.assigns[0].Peer != busy || a.assigns[0].Attempt != 5 {
		t.Fatalf("assigns = %+v, want attempt 5 on %s", a.assigns, busy)
	}
	s := &sim{c: c, now: now, table: table, completed: map[string]int{}, assembled: map[string]int{}}
	s.apply([]Action{a.assigns[0]})
	if j := mustJob(t, c, "j"); j.Status != api.JobCompleted || len(j.Reasons) != 0 {
		t.Fatalf("job %s, reasons %q", j.Status, j.Reasons)
	}
}

// TestDeclineBackoffCapped: the first decline holds nothing back; from the
// second, the hold-back doubles per decline up to maxDeclineBackoff.
func TestDeclineBackoffCapped(t *testing.T) {
	tk := &task{declined: map[peer.ID]declines{}}
	p := testPeer(t, 0)
	tk.declinedBy(p, t0)
	if u := tk.heldBack(p, t0); !u.IsZero() {
		t.Fatalf("one decline holds the peer back until %v", u)
	}
	var got []time.Duration
	for range 7 {
		tk.declinedBy(p, t0)
		got = append(got, tk.heldBack(p, t0).Sub(t0))
	}
	want := []time.Duration{4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute, time.Minute}
	if !slices.Equal(got, want) {
		t.Fatalf("backoffs %v, want %v", got, want)
	}
	if !tk.heldBack(p, t0.Add(maxDeclineBackoff)).IsZero() || tk.heldBack(p, t0.Add(maxDeclineBackoff-1)).IsZero() {
		t.Fatal("held back past the backoff, or not during it")
	}
}
