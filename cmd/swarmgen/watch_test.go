package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/api"
)

// jobScript serves a job that moves through states: GET returns the
// current snapshot, the event stream sends the scripted events and then
// marks the job final.
type jobScript struct {
	mu    sync.Mutex
	job   api.Job
	final api.Job
}

func (s *jobScript) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	writeTestJSON(w, 200, s.job)
}

func (s *jobScript) events(evs []api.Event) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, ev := range evs {
			if api.Terminal(ev.Status) && ev.Type == "job" {
				s.mu.Lock()
				s.job = s.final
				s.mu.Unlock()
			}
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, b)
			fl.Flush()
		}
	}
}

func threeTasks(status string) []api.Task {
	var ts []api.Task
	for i := range 3 {
		ts = append(ts, api.Task{ID: fmt.Sprintf("t%d", i), Index: i, Status: status})
	}
	return ts
}

func scriptedJob(t *testing.T, end string) (*fakeAPI, *jobScript) {
	f := submitServer(t)
	created := time.Now().Add(-time.Minute)
	s := &jobScript{
		job:   api.Job{ID: "j-42", Status: api.JobRunning, TemplateID: "noop", Tasks: threeTasks(api.TaskPending), CreatedAt: created},
		final: api.Job{ID: "j-42", Status: end, TemplateID: "noop", Tasks: threeTasks(api.TaskCompleted), CreatedAt: created, FinishedAt: time.Now()},
	}
	if end == api.JobCompleted {
		s.final.Bucket = &api.Bucket{CID: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", URL: "http://127.0.0.1:8080/buckets/j-42/"}
	} else {
		s.final.Error = "task 1 failed 3 times"
		s.final.Tasks[1].Status = api.TaskFailed
		s.final.Tasks[1].Error = "exit status 1"
	}
	var evs []api.Event
	for i := range 3 {
		id := fmt.Sprintf("t%d", i)
		evs = append(evs,
			api.Event{Type: "task", JobID: "j-42", TaskID: id, Status: api.TaskRunning, Provider: "12D3KooWprovider"},
			api.Event{Type: "progress", JobID: "j-42", TaskID: id, Progress: 0.5},
			api.Event{Type: "task", JobID: "j-42", TaskID: id, Status: api.TaskCompleted})
	}
	evs = append(evs, api.Event{Type: "job", JobID: "j-42", Status: end})
	f.handle("GET /v1/jobs/j-42", s.get)
	f.handle("GET /v1/jobs/j-42/events", s.events(evs))
	return f, s
}

func TestSubmitWaitCompleted(t *testing.T) {
	f, _ := scriptedJob(t, api.JobCompleted)
	r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", "-t", "noop", "-n", "3", "--wait")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", r.code, r.out, r.err)
	}
	// Not a TTY: plain lines, one per change, ending with the final state.
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) < 3 {
		t.Fatalf("too few progress lines:\n%s", r.out)
	}
	if !strings.Contains(r.out, "j-42  running   [") || strings.Contains(r.out, "\033[") {
		t.Fatalf("progress lines:\n%q", r.out)
	}
	last := lines[len(lines)-2]
	if !strings.HasPrefix(last, "j-42  completed [########################] 100%  3/3 done  0 running  0 queued  in 1m") {
		t.Fatalf("final line %q", last)
	}
	if lines[len(lines)-1] != "j-42: results at http://127.0.0.1:8080/buckets/j-42/" {
		t.Fatalf("outcome line %q", lines[len(lines)-1])
	}
	if !strings.Contains(r.out, " 50%") && !strings.Contains(r.out, " 16%") {
		t.Logf("no intermediate percentage seen (events may coalesce):\n%s", r.out)
	}
}

func TestSubmitWaitFailedExitCode(t *testing.T) {
	f, _ := scriptedJob(t, api.JobFailed)
	r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", "-t", "noop", "--wait", "--json")
	if r.code != exitJobFailed {
		t.Fatalf("exit %d, want %d\nstderr %s", r.code, exitJobFailed, r.err)
	}
	var j api.Job
	if err := json.Unmarshal([]byte(r.out), &j); err != nil || j.Status != api.JobFailed {
		t.Fatalf("--json stdout is not the final job: %v\n%s", err, r.out)
	}
	if !strings.Contains(r.err, "task 1: exit status 1") || !strings.Contains(r.err, "job j-42 failed: task 1 failed 3 times") {
		t.Fatalf("stderr lacks the failure:\n%s", r.err)
	}
}

func TestWatchCancelledAndTTY(t *testing.T) {
	f, _ := scriptedJob(t, api.JobCancelled)
	var out, errb strings.Builder
	code := run(t.Context(), []string{"swarmgen", "--api", f.srv.URL, "job", "watch", "j-42"},
		stdio{in: strings.NewReader(""), out: &out, err: &errb, outTTY: true}, false)
	if code != exitJobCancelled {
		t.Fatalf("exit %d, want %d; stderr %s", code, exitJobCancelled, errb.String())
	}
	// On a TTY the line is redrawn in place: carriage return + erase line,
	// and the cursor moves up for each redraw after the first.
	if !strings.Contains(out.String(), "\r\033[Kj-42") || !strings.Contains(out.String(), "\033[1A") {
		t.Fatalf("no in-place redraw: %q", out.String())
	}
	// Lines never reach the terminal's width (80 when unknown), so they
	// cannot wrap and break the cursor-up redraw.
	for _, l := range strings.Split(out.String(), "\r\033[K") {
		if l, _, _ = strings.Cut(l, "\n"); len([]rune(l)) >= 80 {
			t.Fatalf("redrawn line of %d columns: %q", len([]rune(l)), l)
		}
	}
}

// A node whose event stream is missing (404) is still followed by polling.
func TestWatchFallsBackToPolling(t *testing.T) {
	f := newFakeAPI(t)
	var mu sync.Mutex
	calls := 0
	f.handle("GET /v1/jobs/j-1", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		st := api.JobRunning
		if calls >= 2 {
			st = api.JobCompleted
		}
		writeTestJSON(w, 200, api.Job{ID: "j-1", Status: st, Tasks: threeTasks(api.TaskCompleted)})
	})
	r := runCLI(t, "", "--api", f.srv.URL, "job", "watch", "j-1")
	if r.code != 0 || !strings.Contains(r.out, "j-1  completed") {
		t.Fatalf("exit %d out %q err %q", r.code, r.out, r.err)
	}
}

func TestJobViewApply(t *testing.T) {
	v := &jobView{job: api.Job{ID: "j", Status: api.JobPending, Tasks: threeTasks(api.TaskPending)}}
	v.apply(api.Event{Type: "task", TaskID: "t0", Status: api.TaskRunning})
	v.apply(api.Event{Type: "progress", TaskID: "t0", Progress: 0.6})
	v.apply(api.Event{Type: "task", TaskID: "t1", Status: api.TaskCompleted})
	v.apply(api.Event{Type: "progress", TaskID: "t9", Progress: 7}) // unknown task, bad value
	if n := countTasks(v.job.Tasks); n != (taskCounts{total: 4, done: 1, running: 1, queued: 2}) {
		t.Fatalf("counts %+v", n)
	}
	if got := v.fraction(); got < 0.39 || got > 0.41 { // (1 + 0.6) / 4
		t.Fatalf("fraction %v", got)
	}
	v.apply(api.Event{Type: "job", Status: api.JobRunning, Message: "task 2: no candidate: 3 peers lack a gpu"})
	if line := v.line(time.Now(), 1, true); !strings.HasSuffix(line, "  (task 2: no candidate: 3 peers lack a gpu)") {
		t.Fatalf("line without the scheduler's note: %q", line)
	}
	v.apply(api.Event{Type: "job", Status: api.JobFailed, Message: "boom"})
	if !v.terminal() || v.job.Error != "boom" {
		t.Fatalf("job event not applied: %+v", v.job)
	}
	line := v.line(time.Now(), 1, true)
	if !strings.Contains(line, "failed") || !strings.Contains(line, " 40%") {
		t.Fatalf("line %q", line)
	}
}

// A snapshot that lags behind the terminal event must not undo it.
func TestWatchKeepsTerminalStatusFromEvents(t *testing.T) {
	f := newFakeAPI(t)
	f.json("GET /v1/jobs/j-9", 200, api.Job{ID: "j-9", Status: api.JobRunning, Tasks: threeTasks(api.TaskRunning)})
	f.handle("GET /v1/jobs/j-9/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: job\ndata: {\"type\":\"job\",\"jobId\":\"j-9\",\"status\":\"failed\",\"message\":\"boom\"}\n\n")
	})
	r := runCLI(t, "", "--api", f.srv.URL, "job", "watch", "j-9")
	if r.code != exitJobFailed || !strings.Contains(r.err, "job j-9 failed: boom") {
		t.Fatalf("exit %d, want %d; out %s err %s", r.code, exitJobFailed, r.out, r.err)
	}
}

func TestWatchInterrupted(t *testing.T) {
	f := newFakeAPI(t)
	f.json("GET /v1/jobs/j-5", 200, api.Job{ID: "j-5", Status: api.JobRunning, Tasks: threeTasks(api.TaskPending)})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	r := runCLICtx(t, ctx, "", "--api", f.srv.URL, "job", "watch", "j-5")
	if r.code != exitInterrupted || !strings.Contains(r.err, "the jobs keep running (swarmgen job watch j-5)") {
		t.Fatalf("exit %d, stderr %q", r.code, r.err)
	}
}
