package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeNode is an httptest server that speaks the documented /v1 API shape.
// It stands in for the node in these client unit tests only; the lead's
// end-to-end tests run the client against a real node.
type fakeNode struct {
	t       *testing.T
	mu      chan struct{} // 1-slot lock, keeps the handler simple under -race
	posted  []byte
	events  string
	jobs    map[string]Job
	deleted []string
}

func newFakeNode(t *testing.T) (*fakeNode, *Client) {
	t.Helper()
	f := &fakeNode{t: t, mu: make(chan struct{}, 1), jobs: map[string]Job{
		"j1": {ID: "j1", Status: JobRunning, TemplateID: "sd", Tasks: []Task{{ID: "j1-0", Index: 0, Status: TaskRunning}}},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu <- struct{}{}
	defer func() { <-f.mu }()
	writeJSON := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/node":
		writeJSON(200, NodeInfo{PeerID: "12D3KooWabc", Addrs: []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc"}, Pool: "public", Version: "0.1.0"})
	case r.Method == "GET" && r.URL.Path == "/v1/peers":
		writeJSON(200, []Peer{{PeerID: "p1", CPU: 4, Memory: 8 << 30, GPUs: []GPU{{Name: "A100", Memory: 80 << 30}}, Load: Load{Running: 1, Slots: 2}}})
	case r.Method == "GET" && r.URL.Path == "/v1/templates":
		writeJSON(200, []Template{{ID: "sd-txt2img", Aliases: []string{"img-gen-fiffusers-template"}, Partitioner: "replicas"}})
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/templates/"):
		id := strings.TrimPrefix(r.URL.Path, "/v1/templates/")
		if id != "sd-txt2img" {
			writeJSON(404, Error{Message: "template " + id + " not found"})
			return
		}
		writeJSON(200, Template{ID: id, App: json.RawMessage(`{"kind":"process"}`)})
	case r.Method == "POST" && r.URL.Path == "/v1/jobs":
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			writeJSON(415, Error{Message: "content type " + ct})
			return
		}
		body, _ := io.ReadAll(r.Body)
		f.posted = body
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			writeJSON(400, Error{Message: err.Error()})
			return
		}
		if m["templateID"] == nil {
			writeJSON(400, Error{Message: "required", Field: "templateID"})
			return
		}
		writeJSON(201, CreatedJob{ID: "j2", Status: JobPending})
	case r.Method == "GET" && r.URL.Path == "/v1/jobs":
		writeJSON(200, []Job{f.jobs["j1"]})
	case strings.HasPrefix(r.URL.Path, "/v1/jobs/"):
		rest := strings.TrimPrefix(r.URL.Path, "/v1/jobs/")
		id, sub, _ := strings.Cut(rest, "/")
		j, ok := f.jobs[id]
		if !ok {
			writeJSON(404, Error{Message: "job " + id + " not found"})
			return
		}
		switch {
		case r.Method == "GET" && sub == "":
			writeJSON(200, j)
		case r.Method == "DELETE" && sub == "":
			f.deleted = append(f.deleted, id)
			j.Status = JobCancelled
			writeJSON(200, j)
		case r.Method == "GET" && sub == "logs":
			writeJSON(200, []TaskLog{{TaskID: "j1-0", Index: 0, Attempt: 1, Log: "hello\n"}})
		case r.Method == "GET" && sub == "events":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, f.events)
		default:
			writeJSON(405, Error{Message: "method not allowed"})
		}
	default:
		writeJSON(404, Error{Message: "no route " + r.URL.Path})
	}
}

func TestClientReads(t *testing.T) {
	_, c := newFakeNode(t)
	ctx := context.Background()
	ni, err := c.Node(ctx)
	if err != nil || ni.PeerID != "12D3KooWabc" || ni.Pool != "public" {
		t.Fatalf("Node = %+v, %v", ni, err)
	}
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0].GPUs[0].Memory != 80<<30 || peers[0].Load.Slots != 2 {
		t.Fatalf("Peers = %+v, %v", peers, err)
	}
	ts, err := c.Templates(ctx)
	if err != nil || len(ts) != 1 || ts[0].Aliases[0] != "img-gen-fiffusers-template" {
		t.Fatalf("Templates = %+v, %v", ts, err)
	}
	tp, err := c.Template(ctx, "sd-txt2img")
	if err != nil || string(tp.App) != `{"kind":"process"}` {
		t.Fatalf("Template = %+v, %v", tp, err)
	}
	j, err := c.Job(ctx, "j1")
	if err != nil || j.Status != JobRunning || len(j.Tasks) != 1 {
		t.Fatalf("Job = %+v, %v", j, err)
	}
	js, err := c.Jobs(ctx)
	if err != nil || len(js) != 1 {
		t.Fatalf("Jobs = %+v, %v", js, err)
	}
	logs, err := c.Logs(ctx, "j1")
	if err != nil || len(logs) != 1 || logs[0].Log != "hello\n" {
		t.Fatalf("Logs = %+v, %v", logs, err)
	}
}

func TestClientSubmitAndCancel(t *testing.T) {
	f, c := newFakeNode(t)
	ctx := context.Background()
	body := []byte(`{"templateID":"sd-txt2img"}`)
	cj, err := c.SubmitJob(ctx, body)
	if err != nil || cj.ID != "j2" || cj.Status != JobPending {
		t.Fatalf("SubmitJob = %+v, %v", cj, err)
	}
	if string(f.posted) != string(body) {
		t.Fatalf("posted %q, want %q", f.posted, body)
	}
	j, err := c.CancelJob(ctx, "j1")
	if err != nil || j.Status != JobCancelled || len(f.deleted) != 1 {
		t.Fatalf("CancelJob = %+v, %v (deleted %v)", j, err, f.deleted)
	}
	if _, err := c.SubmitJob(ctx, make([]byte, MaxRequestBody+1)); err == nil {
		t.Fatal("oversized body accepted")
	}
}

func TestClientErrorKeepsField(t *testing.T) {
	_, c := newFakeNode(t)
	_, err := c.SubmitJob(context.Background(), []byte(`{"params":{}}`))
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	if ae.Field != "templateID" || ae.Message != "required" || ae.StatusCode != 400 {
		t.Fatalf("api error = %+v", ae)
	}
	if !strings.Contains(err.Error(), "POST /v1/jobs") {
		t.Fatalf("error lacks context: %v", err)
	}
	_, err = c.Job(context.Background(), "nope")
	if !errors.As(err, &ae) || ae.StatusCode != 404 || !strings.Contains(ae.Message, "nope") {
		t.Fatalf("404 err = %v", err)
	}
}

func TestClientNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, strings.Repeat("proxy says no ", 100), http.StatusBadGateway)
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	_, err := c.Node(context.Background())
	var ae *Error
	if !errors.As(err, &ae) || ae.StatusCode != 502 || !strings.HasPrefix(ae.Message, "Bad Gateway: proxy says no") || len(ae.Message) > 300 {
		t.Fatalf("err = %v", err)
	}
}

func TestClientBodyLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `[`+strings.Repeat(`{"peerId":"x"},`, 1000)+`{}]`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, WithMaxBody(1024))
	_, err := c.Peers(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exceeds 1024 bytes") {
		t.Fatalf("err = %v, want size limit", err)
	}
	c2, _ := New(srv.URL)
	if p, err := c2.Peers(context.Background()); err != nil || len(p) != 1001 {
		t.Fatalf("default limit: %d peers, %v", len(p), err)
	}
}

func TestClientEvents(t *testing.T) {
	f, c := newFakeNode(t)
	f.events = ": keepalive\r\n" +
		"event: task\r\ndata: {\"seq\":1,\"type\":\"task\",\"jobId\":\"j1\",\"taskId\":\"j1-0\",\"status\":\"running\"}\r\n\r\n" +
		"event: progress\ndata: {\"seq\":2,\"jobId\":\"j1\",\n" + // type comes from the event name
		"data: \"taskId\":\"j1-0\",\"progress\":0.5}\n\n" +
		"id: 3\nevent: job\ndata: {\"seq\":3,\"type\":\"job\",\"jobId\":\"j1\",\"status\":\"completed\"}\n\n" +
		"data: {\"seq\":4}\n" // unterminated: dropped
	var got []Event
	err := c.Events(context.Background(), "j1", func(e Event) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d events: %+v", len(got), got)
	}
	if got[1].Type != "progress" || got[1].Progress != 0.5 || got[1].TaskID != "j1-0" {
		t.Fatalf("multi-line data event = %+v", got[1])
	}
	if got[2].Type != "job" || got[2].Status != JobCompleted {
		t.Fatalf("job event = %+v", got[2])
	}

	n := 0
	err = c.Events(context.Background(), "j1", func(e Event) error {
		n++
		return ErrStop
	})
	if err != nil || n != 1 {
		t.Fatalf("ErrStop: n=%d err=%v", n, err)
	}
	boom := errors.New("boom")
	if err := c.Events(context.Background(), "j1", func(Event) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("callback error not returned: %v", err)
	}
	if err := c.Events(context.Background(), "missing", func(Event) error { return nil }); err == nil {
		t.Fatal("events of a missing job: no error")
	}
}

func TestClientEventsCancel(t *testing.T) {
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	defer srv.Close()
	c, _ := New(srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Events(ctx, "j1", func(Event) error { return nil }) }()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Events did not return after cancel")
	}
}

func TestClientRefusesPathIDs(t *testing.T) {
	_, c := newFakeNode(t)
	for _, id := range []string{"", "..", "a/b", `a\b`, "a?x=1", "a#b", strings.Repeat("x", 257)} {
		if _, err := c.Job(context.Background(), id); err == nil || !strings.Contains(err.Error(), "job id") {
			t.Errorf("Job(%q): err = %v", id, err)
		}
	}
}

func TestParseBase(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5080":            "http://127.0.0.1:5080",
		"http://localhost:1/":       "http://localhost:1",
		"https://node.example/api/": "https://node.example/api",
		" [::1]:5080 ":              "http://[::1]:5080",
	} {
		u, err := ParseBase(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseBase(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for _, in := range []string{"", "ftp://x", "http://", "http://a b"} {
		if _, err := ParseBase(in); err == nil {
			t.Errorf("ParseBase(%q): no error", in)
		}
	}
}

func TestClientBasePath(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		fmt.Fprint(w, `{}`)
	}))
	defer srv.Close()
	c, _ := New(srv.URL + "/prefix/")
	if _, err := c.Job(context.Background(), "j 1"); err != nil {
		t.Fatal(err)
	}
	if path != "/prefix/v1/jobs/j 1" {
		t.Fatalf("path = %q", path)
	}
}
