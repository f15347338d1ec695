package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/jobspec"
	"github.com/swarmgen/swarmgen/scheduler"
)

// jobRoutes registers the job and template endpoints.
func (n *Node) jobRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/templates", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.registry.ToAPI())
	})
	mux.HandleFunc("GET /v1/templates/{id}", func(w http.ResponseWriter, r *http.Request) {
		t, ok := n.registry.Get(r.PathValue("id"))
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("unknown template %q", r.PathValue("id")), "")
			return
		}
		writeJSON(w, http.StatusOK, t.ToAPI())
	})
	mux.HandleFunc("POST /v1/jobs", n.handleSubmit)
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		js, err := n.submitter.jobs(r.Context())
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error(), "")
			return
		}
		sort.Slice(js, func(i, j int) bool { return js[i].CreatedAt.After(js[j].CreatedAt) })
		if js == nil {
			js = []api.Job{}
		}
		writeJSON(w, http.StatusOK, js)
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if j, ok := n.lookupJob(w, r); ok {
			writeJSON(w, http.StatusOK, j)
		}
	})
	mux.HandleFunc("DELETE /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, err := n.submitter.cancelJob(r.Context(), r.PathValue("id"))
		switch {
		case errors.Is(err, scheduler.ErrUnknownJob):
			writeError(w, http.StatusNotFound, fmt.Sprintf("unknown job %q", r.PathValue("id")), "")
		case err != nil:
			writeError(w, http.StatusConflict, err.Error(), "")
		default:
			writeJSON(w, http.StatusOK, j)
		}
	})
	mux.HandleFunc("GET /v1/jobs/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := n.lookupJob(w, r); !ok {
			return
		}
		logs := n.submitter.taskLogs(r.PathValue("id"))
		sort.Slice(logs, func(i, j int) bool { return logs[i].Index < logs[j].Index })
		if logs == nil {
			logs = []api.TaskLog{}
		}
		writeJSON(w, http.StatusOK, logs)
	})
	mux.HandleFunc("GET /v1/jobs/{id}/events", n.handleEvents)
}

func (n *Node) lookupJob(w http.ResponseWriter, r *http.Request) (api.Job, bool) {
	j, ok, err := n.submitter.job(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error(), "")
		return j, false
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown job %q", r.PathValue("id")), "")
		return j, false
	}
	return j, true
}

func (n *Node) handleSubmit(w http.ResponseWriter, r *http.Request) {
	lim := n.submitter.limits.MaxBodyBytes
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(lim)+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error(), "")
		return
	}
	if len(body) > lim {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", lim), "")
		return
	}
	job, err := n.submitter.submit(r.Context(), body)
	var fe *jobspec.FieldError
	switch {
	case errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, fe.Msg, fe.Path)
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error(), "")
	default:
		w.Header().Set("Location", "/v1/jobs/"+job.ID)
		writeJSON(w, http.StatusCreated, api.CreatedJob{ID: job.ID, Status: job.Status})
	}
}

// eventWriteTimeout bounds each write of a job's event stream.
const eventWriteTimeout = 30 * time.Second

// handleEvents streams a job's events as server-sent events: first the job
// itself, then every change until the job ends or the client goes away.
func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, ok := w.(http.Flusher); !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported", "")
		return
	}
	sub, unsubscribe := n.submitter.hub.subscribe(id)
	defer unsubscribe()
	j, ok := n.lookupJob(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	// Each write must be taken within eventWriteTimeout: a client that keeps
	// the connection but stops reading would otherwise hold this handler,
	// its goroutine and its subscription for good.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout)) }
	send := func(e api.Event) bool {
		b, _ := json.Marshal(e)
		deadline()
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(api.Event{Type: "job", JobID: id, Status: j.Status, Time: time.Now().UTC()}) || isTerminal(j.Status) {
		return
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-n.ctx.Done():
			return
		case <-keepalive.C:
			deadline()
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case e := <-sub.ch:
			if !send(e) {
				return
			}
			if e.Type == "job" && isTerminal(e.Status) {
				return
			}
		case e := <-sub.last:
			// The job ended while this client was behind: what it had
			// room for, then the end.
			for {
				select {
				case more := <-sub.ch:
					if !send(more) {
						return
					}
					continue
				default:
				}
				break
			}
			send(e)
			return
		}
	}
}
