package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/swarmgen/swarmgen/api"
)

// Watch timing. Events drive the display; the poll resynchronises it (a
// missed event, a node without SSE) and the redraw keeps the ETA moving.
const (
	watchPoll      = 2 * time.Second
	watchRedraw    = 500 * time.Millisecond
	watchMaxBackof = 5 * time.Second
	barWidth       = 24
)

func jobWatchCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "follow jobs live until they end (server-sent events)",
		ArgsUsage: "ID [ID...]",
		Description: "Draws one progress bar per job (redrawn in place on a terminal, plain lines otherwise)\n" +
			"and exits when every job has ended: 0 if all completed, 3 if one failed, 4 if one was cancelled.",
		Flags: []cli.Flag{apiFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageErrorf("job watch needs at least one job ID")
			}
			cl, err := e.client(c)
			if err != nil {
				return err
			}
			final, code, err := watchJobs(c.Context, e, cl, c.Args().Slice(), e.io.out, e.io.outTTY)
			if err != nil {
				return err
			}
			for _, j := range final {
				if jobCode(j) == code {
					return jobExit(j, code) // the job that decided the code
				}
			}
			return nil
		},
	}
}

// jobCode is the exit code a terminal job status maps to.
func jobCode(j api.Job) int {
	switch j.Status {
	case api.JobFailed:
		return exitJobFailed
	case api.JobCancelled:
		return exitJobCancelled
	}
	return exitOK
}

// jobView is what the watcher knows of one job: the last snapshot with
// events applied on top. Guarded by watcher.mu.
type jobView struct {
	job      api.Job
	note     string    // the scheduler's latest word on the job ("waiting: …")
	seen     time.Time // when the watcher first saw the job
	lastLine string    // non-TTY: the last line printed, to print changes only
}

func (v *jobView) terminal() bool { return api.Terminal(v.job.Status) }

// apply folds one event into the view.
func (v *jobView) apply(ev api.Event) {
	switch ev.Type {
	case "job":
		if ev.Status != "" {
			v.job.Status = ev.Status
		}
		if ev.Message != "" && ev.Status == api.JobFailed {
			v.job.Error = ev.Message
		}
		v.note = ev.Message
	case "task", "progress":
		if ev.TaskID == "" {
			return
		}
		t := v.task(ev.TaskID)
		if ev.Status != "" {
			t.Status = ev.Status
			if ev.Status == api.TaskRunning && t.StartedAt.IsZero() {
				t.StartedAt = ev.Time
			}
		}
		if ev.Provider != "" {
			t.Provider = ev.Provider
		}
		if ev.Type == "progress" || ev.Progress > 0 {
			t.Progress = min(max(ev.Progress, 0), 1)
		}
		if ev.Status == api.TaskCompleted {
			t.Progress = 1
		}
	}
}

// task returns the task with this ID, adding it if the snapshot lacked it.
func (v *jobView) task(id string) *api.Task {
	for i := range v.job.Tasks {
		if v.job.Tasks[i].ID == id {
			return &v.job.Tasks[i]
		}
	}
	v.job.Tasks = append(v.job.Tasks, api.Task{ID: id, Index: len(v.job.Tasks), Status: api.TaskPending})
	return &v.job.Tasks[len(v.job.Tasks)-1]
}

// fraction is the share of the job's work done: completed tasks plus the
// reported progress of running ones.
func (v *jobView) fraction() float64 {
	if len(v.job.Tasks) == 0 {
		if v.job.Status == api.JobCompleted {
			return 1
		}
		return 0
	}
	var done float64
	for _, t := range v.job.Tasks {
		switch t.Status {
		case api.TaskCompleted:
			done++
		case api.TaskRunning:
			done += min(max(t.Progress, 0), 1)
		}
	}
	return done / float64(len(v.job.Tasks))
}

// line renders the view as one progress line.
func (v *jobView) line(now time.Time, idWidth int, withETA bool) string {
	n := countTasks(v.job.Tasks)
	f := v.fraction()
	filled := int(f * barWidth)
	bar := strings.Repeat("#", filled) + strings.Repeat("-", barWidth-filled)
	var b strings.Builder
	fmt.Fprintf(&b, "%-*s  %-9s [%s] %3d%%  %d/%d done  %d running  %d queued",
		idWidth, cell(v.job.ID), cell(v.job.Status), bar, int(f*100), n.done, n.total, n.running, n.queued)
	if n.failed > 0 {
		fmt.Fprintf(&b, "  %d failed", n.failed)
	}
	start := v.job.CreatedAt
	if start.IsZero() || start.After(v.seen) && !v.seen.IsZero() {
		start = v.seen
	}
	switch {
	case v.terminal():
		end := v.job.FinishedAt
		if end.IsZero() {
			end = now
		}
		fmt.Fprintf(&b, "  in %s", formatDuration(end.Sub(start)))
	case withETA && f >= 0.01:
		el := now.Sub(start)
		eta := time.Duration(float64(el) * (1 - f) / f)
		fmt.Fprintf(&b, "  ETA %s", formatDuration(eta))
	case withETA:
		b.WriteString("  ETA ?")
	}
	if v.note != "" && v.note != v.job.Status && !v.terminal() {
		b.WriteString("  (" + cell(truncate(v.note, 60)) + ")")
	}
	return b.String()
}

// watcher follows several jobs and draws them. mu guards the views and
// the drawing state.
type watcher struct {
	mu    sync.Mutex
	views []*jobView
	drawn int // TTY: lines drawn last time, to move the cursor back up
	dirty chan struct{}
	out   io.Writer
	tty   bool
	width int // TTY columns: a redrawn line must not wrap, or the cursor math breaks
	log   *slog.Logger
}

func (w *watcher) update(v *jobView, fn func()) {
	w.mu.Lock()
	fn()
	w.mu.Unlock()
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// draw renders every job: in place on a terminal, else a plain line per
// job whose counts or status changed.
func (w *watcher) draw(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	idw := 0
	for _, v := range w.views {
		idw = max(idw, min(len(v.job.ID), 40))
	}
	var b strings.Builder
	if w.tty {
		if w.drawn > 0 {
			fmt.Fprintf(&b, "\033[%dA", w.drawn)
		}
		for _, v := range w.views {
			b.WriteString("\r\033[K" + fit(v.line(now, idw, true), w.width) + "\n")
		}
		w.drawn = len(w.views)
	} else {
		for _, v := range w.views {
			l := v.line(now, idw, false)
			if l != v.lastLine {
				b.WriteString(l + "\n")
				v.lastLine = l
			}
		}
	}
	_, _ = io.WriteString(w.out, b.String())
}

// watchJobs follows the jobs until every one is terminal and returns their
// final snapshots and the exit code they add up to (failed beats
// cancelled beats completed). Progress goes to out.
func watchJobs(ctx context.Context, e *cmdEnv, cl *api.Client, ids []string, out io.Writer, tty bool) ([]api.Job, int, error) {
	w := &watcher{dirty: make(chan struct{}, 1), out: out, tty: tty, width: e.io.width, log: e.log}
	if w.width <= 0 {
		w.width = 80
	}
	now := time.Now()
	for _, id := range ids {
		w.views = append(w.views, &jobView{job: api.Job{ID: id}, seen: now})
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, v := range w.views {
		g.Go(func() error { return w.follow(gctx, cl, v) })
	}
	followed := make(chan error, 1)
	go func() { followed <- g.Wait() }() // owned here: we always receive below
	var tick <-chan time.Time
	if tty {
		t := time.NewTicker(watchRedraw)
		defer t.Stop()
		tick = t.C
	}
	var err error
loop:
	for {
		select {
		case <-w.dirty:
			w.draw(time.Now())
		case <-tick:
			w.draw(time.Now())
		case err = <-followed:
			break loop
		}
	}
	w.draw(time.Now())
	if err != nil {
		if ctx.Err() != nil {
			return nil, exitError, fmt.Errorf("stopped watching; the jobs keep running (swarmgen job watch %s): %w", strings.Join(ids, " "), ctx.Err())
		}
		return nil, exitError, err
	}
	code := exitOK
	final := make([]api.Job, len(w.views))
	for i, v := range w.views {
		final[i] = v.job
		switch jobCode(v.job) {
		case exitJobFailed:
			code = exitJobFailed
		case exitJobCancelled:
			if code == exitOK {
				code = exitJobCancelled
			}
		}
		writeOutcome(out, v.job)
	}
	return final, code, nil
}

// writeOutcome prints where a finished job's results are, or why it failed.
func writeOutcome(w io.Writer, j api.Job) {
	switch j.Status {
	case api.JobCompleted:
		if j.Bucket != nil {
			loc := j.Bucket.URL
			if loc == "" {
				loc = "/ipfs/" + j.Bucket.CID
			}
			fmt.Fprintf(w, "%s: results at %s\n", cell(j.ID), cell(loc))
		}
	case api.JobFailed, api.JobCancelled:
		msg := j.Status
		if j.Error != "" {
			msg += ": " + j.Error
		}
		fmt.Fprintf(w, "%s: %s\n", cell(j.ID), cell(msg))
		for _, t := range j.Tasks {
			if t.Status == api.TaskFailed && t.Error != "" {
				fmt.Fprintf(w, "  task %d: %s\n", t.Index, cell(truncate(t.Error, 200)))
			}
		}
		for _, r := range j.Reasons {
			fmt.Fprintf(w, "  - %s\n", cell(r))
		}
	}
}

// follow keeps one view current until its job is terminal: a snapshot,
// then the event stream (reconnected with backoff when it drops), with a
// poll alongside that resynchronises and notices the end even if no event
// says so. Both stop with ctx.
func (w *watcher) follow(ctx context.Context, cl *api.Client, v *jobView) error {
	id := v.job.ID
	snapshot := func(ctx context.Context) (bool, error) {
		j, err := cl.Job(ctx, id)
		if err != nil {
			return false, err
		}
		var term bool
		w.update(v, func() {
			v.job = j
			if len(j.Reasons) > 0 {
				v.note = j.Reasons[0]
			}
			term = v.terminal()
		})
		return term, nil
	}
	if term, err := snapshot(ctx); err != nil || term {
		return err
	}
	// Draw the first state now rather than through the coalescing redraw:
	// a fast job's events could otherwise land before the first draw and a
	// log would never show that the job was seen running.
	w.draw(time.Now())

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var pollErr error
	polled := make(chan struct{})
	go func() { // the poller; ends with sctx, waited for below
		defer close(polled)
		t := time.NewTicker(watchPoll)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			term, err := snapshot(sctx)
			if err != nil && sctx.Err() == nil {
				var ae *api.Error
				if errors.As(err, &ae) && ae.StatusCode == 404 {
					pollErr = err // the job is gone
					stop()
					return
				}
				w.log.Debug("polling job", "job", id, "err", err)
				continue
			}
			if term {
				stop()
				return
			}
		}
	}()

	backoff := time.Second
	for sctx.Err() == nil {
		err := cl.Events(sctx, id, func(ev api.Event) error {
			var term bool
			w.update(v, func() { v.apply(ev); term = v.terminal() })
			if term {
				return api.ErrStop
			}
			return nil
		})
		w.mu.Lock()
		term := v.terminal()
		w.mu.Unlock()
		if term {
			break
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.StatusCode/100 == 4 {
			// No event stream for this job here: the poll alone follows it.
			w.log.Debug("event stream refused; polling", "job", id, "err", err)
			<-sctx.Done()
			break
		}
		if err != nil && sctx.Err() == nil {
			w.log.Debug("event stream dropped; reconnecting", "job", id, "err", err, "in", backoff)
		}
		select {
		case <-sctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchMaxBackof)
	}
	stop()
	<-polled
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if pollErr != nil {
		return pollErr
	}
	// The final snapshot has the bucket, errors and finish time. A node may
	// publish the terminal event a moment before its GET shows it: retry
	// briefly, and never let a lagging snapshot undo the terminal status.
	w.mu.Lock()
	status, jobErr := v.job.Status, v.job.Error
	w.mu.Unlock()
	for try := 0; ; try++ {
		j, err := cl.Job(ctx, id)
		if err != nil {
			return err
		}
		if api.Terminal(j.Status) || try == 10 {
			w.update(v, func() {
				if !api.Terminal(j.Status) {
					j.Status = status
				}
				if j.Error == "" {
					j.Error = jobErr
				}
				v.job = j
			})
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fit cuts s to fewer than width columns (runes), marking the cut.
func fit(s string, width int) string {
	r := []rune(s)
	if len(r) < width {
		return s
	}
	return string(r[:max(width-2, 0)]) + "…"
}
