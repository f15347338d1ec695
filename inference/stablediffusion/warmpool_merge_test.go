//go:build unix

package stablediffusion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/inference"
)

// queued counts the calls waiting in the pool's worker queues.
func queued(p *WarmPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range p.workers {
		w.mu.Lock()
		n += len(w.queue)
		w.mu.Unlock()
	}
	return n
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mergeRun is one concurrent Run and what it got back.
type mergeRun struct {
	task     *inference.Task
	dir      string
	ctx      context.Context
	res      *inference.Result
	err      error
	last     float64 // last progress value
	onStep   func()  // called on each progress report, if set
	finished chan struct{}
}

func (r *mergeRun) start(pool *WarmPool) {
	r.finished = make(chan struct{})
	if r.ctx == nil {
		r.ctx = context.Background()
	}
	go func() {
		defer close(r.finished)
		r.res, r.err = pool.Run(r.ctx, r.task, r.dir, func(f float64) {
			r.last = f
			if r.onStep != nil {
				r.onStep()
			}
		})
	}()
}

func (r *mergeRun) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.finished:
	case <-time.After(3 * time.Minute):
		t.Fatalf("Run of %s did not return", r.task.TaskID)
	}
}

// whileBusy holds the worker with a real task (its first progress callback
// blocks), starts runs, waits until want calls are queued, calls hold (may be
// nil) and lets the worker go. It returns when every run has returned.
func whileBusy(t *testing.T, pool *WarmPool, root string, app map[string]any, want int, runs []*mergeRun, hold func()) {
	t.Helper()
	gateTask, gateDir := sdTask(t, root, fmt.Sprintf("gate-%d", time.Now().UnixNano()), 1, app)
	busy, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gate := &mergeRun{task: gateTask, dir: gateDir, onStep: func() {
		once.Do(func() { close(busy); <-release })
	}}
	gate.start(pool)
	select {
	case <-busy:
	case <-gate.finished:
		t.Fatalf("gate task ended before it was busy: %v", gate.err)
	case <-time.After(3 * time.Minute):
		t.Fatal("gate task made no progress")
	}
	for _, r := range runs {
		r.start(pool)
	}
	waitFor(t, fmt.Sprintf("%d queued calls", want), func() bool { return queued(pool) == want })
	if hold != nil {
		hold()
	}
	close(release)
	gate.wait(t)
	if gate.err != nil {
		t.Fatalf("gate task: %v", gate.err)
	}
	for _, r := range runs {
		r.wait(t)
	}
}

func batchOf(r *inference.Result) string {
	if r == nil {
		return "no result"
	}
	log := string(r.Log)
	i := strings.LastIndex(log, "batch of ")
	if i < 0 {
		return "no batch line in " + log
	}
	return strings.TrimSuffix(strings.SplitN(log[i:], ")", 2)[0], " images")
}

// mergeFixture builds merge-test tasks on TestWarmPool's pool (one pool keeps
// the number of slow Python starts low).
type mergeFixture struct {
	pool  *WarmPool
	root  string
	model string
	n     int
}

func (f *mergeFixture) app(prompt string) map[string]any {
	return map[string]any{"prompt": prompt, "model": f.model, "steps": 2, "width": 64, "height": 64}
}

func (f *mergeFixture) mk(t *testing.T, seed int64, a map[string]any) *mergeRun {
	f.n++
	task, dir := sdTask(t, f.root, fmt.Sprintf("merge%d", f.n), seed, a)
	return &mergeRun{task: task, dir: dir}
}

// testMerge checks that Run calls waiting for a busy worker are served as
// one request when they can share a pipeline call, with the same pixels as
// unbatched runs, and only then; and what cancelling one of them does. The
// worker must be up; it stays up.
func testMerge(t *testing.T, f *mergeFixture) {
	pool, root, app, mk := f.pool, f.root, f.app, func(seed int64, a map[string]any) *mergeRun { return f.mk(t, seed, a) }
	gateApp := app("the gate")

	t.Run("replicas waiting for a busy worker run as one batch", func(t *testing.T) {
		var runs []*mergeRun
		for i := range 4 {
			runs = append(runs, mk(int64(200+i), app("a lighthouse")))
		}
		before := onlyStats(t, pool)
		whileBusy(t, pool, root, gateApp, 4, runs, nil)
		for i, r := range runs {
			if r.err != nil || r.res.ExitCode != 0 {
				t.Fatalf("run %d: %v %+v", i, r.err, r.res)
			}
			if got := batchOf(r.res); got != "batch of 4" {
				t.Errorf("run %d: %s, want batch of 4", i, got)
			}
			if r.last != 1 {
				t.Errorf("run %d: last progress %v", i, r.last)
			}
		}
		s := onlyStats(t, pool)
		if s.Requests-before.Requests != 2 || s.Merged-before.Merged != 3 || s.Tasks-before.Tasks != 5 {
			t.Errorf("before %+v after %+v: want the gate and one merged request for 4 calls", before, s)
		}
		// Each image equals the unbatched run of its seed.
		for i, r := range runs {
			single := mk(int64(200+i), app("a lighthouse"))
			res, err := pool.Run(context.Background(), single.task, single.dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := batchOf(res); got != "batch of 1" {
				t.Errorf("single %d: %s", i, got)
			}
			if d := maxPixelDiff(readPNG(t, r.dir), readPNG(t, single.dir)); d > 3 {
				t.Errorf("replica %d: merged differs from single by %d", i, d)
			}
		}
		if d := maxPixelDiff(readPNG(t, runs[0].dir), readPNG(t, runs[1].dir)); d < 10 {
			t.Errorf("different seeds gave near-equal images (max diff %d)", d)
		}
	})

	t.Run("incompatible calls are not merged", func(t *testing.T) {
		wide := app("a cat")
		wide["width"] = 72
		runs := []*mergeRun{mk(1, app("a cat")), mk(2, app("a dog")), mk(3, wide), mk(4, app("a cat"))}
		before := onlyStats(t, pool)
		whileBusy(t, pool, root, gateApp, 4, runs, nil)
		want := []string{"batch of 2", "batch of 1", "batch of 1", "batch of 2"}
		for i, r := range runs {
			if r.err != nil {
				t.Fatalf("run %d: %v", i, r.err)
			}
			if got := batchOf(r.res); got != want[i] {
				t.Errorf("run %d: %s, want %s", i, got, want[i])
			}
		}
		if b := readPNG(t, runs[2].dir).Bounds(); b.Dx() != 72 {
			t.Errorf("wide run: image %v", b)
		}
		s := onlyStats(t, pool)
		if s.Requests-before.Requests != 4 || s.Merged-before.Merged != 1 {
			t.Errorf("before %+v after %+v: want gate + 3 requests, 1 merged call", before, s)
		}
	})

	t.Run("a waiter cancelled before its batch leaves", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		runs := []*mergeRun{mk(10, app("a boat")), mk(11, app("a boat")), mk(12, app("a boat"))}
		runs[1].ctx = ctx
		before := onlyStats(t, pool)
		whileBusy(t, pool, root, gateApp, 3, runs, func() {
			cancel()
			runs[1].wait(t) // returns while the worker is still busy
			if !errors.Is(runs[1].err, inference.ErrCancelled) {
				t.Errorf("cancelled waiter: %v", runs[1].err)
			}
			if q := queued(pool); q != 2 {
				t.Errorf("%d calls queued after the cancel, want 2", q)
			}
		})
		for _, i := range []int{0, 2} {
			if r := runs[i]; r.err != nil || batchOf(r.res) != "batch of 2" {
				t.Errorf("run %d: %v %s", i, r.err, batchOf(r.res))
			}
		}
		s := onlyStats(t, pool)
		if s.Requests-before.Requests != 2 || s.PID != before.PID {
			t.Errorf("before %+v after %+v", before, s)
		}
	})

	t.Run("one call cancelled during its merged batch", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		runs := []*mergeRun{mk(20, app("a kite")), mk(21, app("a kite"))}
		runs[0].ctx, runs[0].onStep = ctx, cancel
		before := onlyStats(t, pool)
		whileBusy(t, pool, root, gateApp, 2, runs, nil)
		if r := runs[0]; !errors.Is(r.err, inference.ErrCancelled) || r.res == nil || r.res.ExitCode == 0 {
			t.Errorf("cancelled member: %v %+v", r.err, r.res)
		}
		if r := runs[1]; r.err != nil || batchOf(r.res) != "batch of 2" || r.last != 1 {
			t.Errorf("other member: %v %s, last progress %v", r.err, batchOf(r.res), r.last)
		}
		if s := onlyStats(t, pool); s.PID != before.PID || s.Restarts != before.Restarts {
			t.Errorf("worker restarted: before %+v after %+v", before, s)
		}
	})
}

// testMergeCancelAll checks that the worker under a merged batch is killed
// once every call in it is cancelled. It leaves no worker process running.
func testMergeCancelAll(t *testing.T, f *mergeFixture) {
	slow := f.app("slow")
	slow["steps"], slow["width"], slow["height"] = 200, 128, 128
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := []*mergeRun{f.mk(t, 30, slow), f.mk(t, 31, slow)}
	for _, r := range runs {
		r.ctx, r.onStep = ctx, cancel
	}
	var pid int
	start := time.Now()
	whileBusy(t, f.pool, f.root, f.app("the gate"), 2, runs, func() { pid = onlyStats(t, f.pool).PID })
	for i, r := range runs {
		if !errors.Is(r.err, inference.ErrCancelled) || r.res == nil || r.res.ExitCode == 0 {
			t.Errorf("run %d: %v %+v", i, r.err, r.res)
		}
	}
	if el := time.Since(start); el > time.Minute {
		t.Errorf("cancel took %s", el)
	}
	if pid == 0 || alive(pid) {
		t.Errorf("worker %d alive after every merged call was cancelled", pid)
	}
}

func TestMergeKey(t *testing.T) {
	key := func(s string) (string, int) { return mergeKey(json.RawMessage(s)) }
	base, n := key(`{"prompt":"a cat","model":"m","steps":2,"seed":1}`)
	if base == "" || n != 1 {
		t.Fatalf("base key %q, %d images", base, n)
	}
	same := []string{
		`{"seed":99,"steps":2,"prompt":"a cat","model":"m"}`,
		`{ "prompt" : "a cat", "steps" : 2 }`,
	}
	for _, s := range same {
		if k, _ := key(s); k != base {
			t.Errorf("%s: key %q, want %q", s, k, base)
		}
	}
	other := []string{
		`{"prompt":"a dog","steps":2}`,
		`{"prompt":"a cat","steps":3}`,
		`{"prompt":"a cat","steps":2,"width":128}`,
		`{"prompt":"a cat","steps":2,"lora":"x"}`,
	}
	for _, s := range other {
		if k, _ := key(s); k == base || k == "" {
			t.Errorf("%s: key %q, want another non-empty key", s, k)
		}
	}
	if k, n := key(`{"prompt":"a cat","steps":2,"num_images":3}`); k != base || n != 3 {
		t.Errorf("num_images: key %q, %d images", k, n)
	}
	for _, s := range []string{``, `null`, `[]`, `{`, `{"prompt":"x","num_images":"3"}`, `{"prompt":"x","num_images":0}`, `{"prompt":"x","num_images":1000}`} {
		if k, _ := key(s); k != "" {
			t.Errorf("%q: key %q, want none", s, k)
		}
	}
	mkTask := func(s string) *inference.Task { return &inference.Task{Params: json.RawMessage(s)} }
	if k, n := mergeKeyOf([]*inference.Task{mkTask(`{"prompt":"a","seed":1}`), mkTask(`{"prompt":"a","seed":2,"num_images":2}`)}); k == "" || n != 3 {
		t.Errorf("replicas: key %q, %d images", k, n)
	}
	if k, _ := mergeKeyOf([]*inference.Task{mkTask(`{"prompt":"a"}`), mkTask(`{"prompt":"b"}`)}); k != "" {
		t.Errorf("mixed prompts: key %q, want none", k)
	}
}

// FuzzMergeKey: app params come from job submitters. mergeKey must not
// panic, must count 1..MaxBatch images, and its key (a JSON object without
// the per-task fields) must be its own key.
func FuzzMergeKey(f *testing.F) {
	for _, s := range []string{`{"prompt":"a cat","seed":3}`, `{"num_images":2,"prompt":"x","model":"m"}`, `{"a":[1, 2],"b":{"c" : null}}`, `null`, `{"x":1e999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, n := mergeKey(b)
		if k == "" {
			return
		}
		if n < 1 || n > MaxBatch {
			t.Fatalf("%q: %d images", b, n)
		}
		if k2, n2 := mergeKey(json.RawMessage(k)); k2 != k || n2 != 1 {
			t.Fatalf("%q: key %q has key %q (%d images)", b, k, k2, n2)
		}
	})
}
