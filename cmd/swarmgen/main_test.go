package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/api"
)

// fakeAPI is an httptest server speaking the documented /v1 API shape. It
// stands in for the node in these CLI tests (the lead's end-to-end tests
// run the CLI against a real node). Handlers are set per test.
type fakeAPI struct {
	srv *httptest.Server

	mu     sync.Mutex
	posted [][]byte
	hits   map[string]int
	routes map[string]http.HandlerFunc // "METHOD /path"
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{hits: map[string]int{}, routes: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		f.mu.Lock()
		f.hits[key]++
		h := f.routes[key]
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			f.posted = append(f.posted, b)
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		f.mu.Unlock()
		if h == nil {
			writeTestJSON(w, 404, api.Error{Message: "no route " + key})
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) handle(route string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[route] = h
}

func (f *fakeAPI) json(route string, code int, v any) {
	f.handle(route, func(w http.ResponseWriter, r *http.Request) { writeTestJSON(w, code, v) })
}

func (f *fakeAPI) lastPost() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.posted) == 0 {
		return ""
	}
	return string(f.posted[len(f.posted)-1])
}

func (f *fakeAPI) hitCount(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[route]
}

func writeTestJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// result is one in-process run of the CLI.
type result struct {
	code     int
	out, err string
}

// runCLI runs the urfave app in-process with captured streams.
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCLICtx(t, context.Background(), stdin, args...)
}

func runCLICtx(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"swarmgen"}, args...), stdio{in: strings.NewReader(stdin), out: &out, err: &errb}, false)
	return result{code: code, out: out.String(), err: errb.String()}
}

func TestPeersTable(t *testing.T) {
	f := newFakeAPI(t)
	now := time.Now()
	f.json("GET /v1/peers", 200, []api.Peer{
		{PeerID: "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo", CPU: 16, Memory: 64 << 30,
			GPUs:      []api.GPU{{Name: "NVIDIA H100", Memory: 80 << 30}, {Name: "NVIDIA H100", Memory: 80 << 30}},
			Executors: []string{"docker", "process"}, WarmModels: []string{"sd-turbo"},
			Load: api.Load{Running: 1, Slots: 4}, LastSeen: now.Add(-90 * time.Minute)},
		{PeerID: "12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelfSelfAbCdEf", Self: true, CPU: 0.5, Memory: 512 << 20,
			Executors: []string{"process"}, Load: api.Load{Running: 0, Queued: 2, Slots: 1}, LastSeen: now.Add(-3 * time.Hour)},
	})
	r := runCLI(t, "", "--api", f.srv.URL, "peers")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	want := "" +
		"PEER                CPU  MEMORY  GPUS                   EXECUTORS       WARM      LOAD    LAST SEEN\n" +
		"…SelfAbCdEf (self)  0.5  512Mi   -                      process         -         0/1 +2  3h00m ago\n" +
		"…z9kSCVe2Xo         16   64Gi    2x NVIDIA H100 (80Gi)  docker,process  sd-turbo  1/4     1h30m ago\n"
	if r.out != want {
		t.Fatalf("table:\n%s\nwant:\n%s", r.out, want)
	}
}

func TestPeersJSON(t *testing.T) {
	f := newFakeAPI(t)
	peers := []api.Peer{{PeerID: "p1", CPU: 2, Memory: 1 << 30, GPUs: []api.GPU{}, Executors: []string{"process"},
		WarmModels: []string{}, LastSeen: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC), Expires: time.Date(2026, 11, 27, 9, 0, 30, 0, time.UTC)}}
	f.json("GET /v1/peers", 200, peers)
	r := runCLI(t, "", "--api", f.srv.URL, "peers", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	var got []api.Peer
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.out)
	}
	if len(got) != 1 || got[0].PeerID != "p1" || got[0].Memory != 1<<30 || !got[0].LastSeen.Equal(peers[0].LastSeen) {
		t.Fatalf("got %+v", got)
	}
	// An empty table is [] in JSON, not null.
	f.json("GET /v1/peers", 200, nil)
	if r := runCLI(t, "", "--api", f.srv.URL, "peers", "--json"); strings.TrimSpace(r.out) != "[]" {
		t.Fatalf("empty peers JSON = %q", r.out)
	}
}

func submitServer(t *testing.T) *fakeAPI {
	f := newFakeAPI(t)
	f.json("POST /v1/jobs", 201, api.CreatedJob{ID: "j-42", Status: api.JobPending})
	return f
}

func TestSubmitBodyFromFlags(t *testing.T) {
	f := submitServer(t)
	r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", "--template", "stable-diffusion", "--replicas", "3",
		"--prompt", "a cat, in oil", "--set", "steps=20", "--set", "style=oil", "--set", "size=[512,512]",
		"--set", `name="20"`, "--set", "sampler.eta=0.5", "--set", "guidance=7.50", "--set", "neg=")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	if r.out != "j-42\n" {
		t.Fatalf("stdout %q, want the job id", r.out)
	}
	want := `{"params":{"app":{"guidance":7.50,"name":"20","neg":"","prompt":"a cat, in oil","sampler":{"eta":0.5},"size":[512,512],"steps":20,"style":"oil"},"partitioner":{"num_replicas":3}},"templateID":"stable-diffusion"}`
	if got := f.lastPost(); got != want {
		t.Fatalf("posted\n%s\nwant\n%s", got, want)
	}
}

// exampleJob is ../shared/examples/create-job.json, copied (tests must not
// read outside the repository).
const exampleJob = `{
"templateID": "img-gen-fiffusers-template",
"dataSource": {
"dataSourceDescriptor": "bypass"
},
"dataDestination": {
"dataSourceDescriptor": "bucket"
},
"params": {
"partitioner": {
"num_replicas": 5
},
"app": {
"prompt": "A peaceful sunset over the ocean, in a photorealistic style, with rich detail and vibrant lighting."
}
}
}`

func TestSubmitBodyFromFileAndFlags(t *testing.T) {
	f := submitServer(t)
	path := t.TempDir() + "/job.json"
	if err := writeFile(path, exampleJob); err != nil {
		t.Fatal(err)
	}
	// Verbatim: the file's body, re-encoded with sorted keys.
	r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", path)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	want := `{"dataDestination":{"dataSourceDescriptor":"bucket"},"dataSource":{"dataSourceDescriptor":"bypass"},"params":{"app":{"prompt":"A peaceful sunset over the ocean, in a photorealistic style, with rich detail and vibrant lighting."},"partitioner":{"num_replicas":5}},"templateID":"img-gen-fiffusers-template"}`
	if got := f.lastPost(); got != want {
		t.Fatalf("posted\n%s\nwant\n%s", got, want)
	}
	// Flags override fields of the file; stdin via "-".
	r = runCLI(t, exampleJob, "--api", f.srv.URL, "job", "submit", "-", "--template", "fractal", "--replicas", "2",
		"--prompt", "p", "--set", "width=64", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	want = `{"dataDestination":{"dataSourceDescriptor":"bucket"},"dataSource":{"dataSourceDescriptor":"bypass"},"params":{"app":{"prompt":"p","width":64},"partitioner":{"num_replicas":2}},"templateID":"fractal"}`
	if got := f.lastPost(); got != want {
		t.Fatalf("posted\n%s\nwant\n%s", got, want)
	}
	var cj api.CreatedJob
	if err := json.Unmarshal([]byte(r.out), &cj); err != nil || cj.ID != "j-42" {
		t.Fatalf("--json output %q: %v", r.out, err)
	}
	// Another spelling of templateID in the file is replaced, not doubled.
	r = runCLI(t, `{"templateId":"x","params":{"app":{"steps":1e2}}}`, "--api", f.srv.URL, "job", "submit", "-", "-t", "noop")
	if got := f.lastPost(); r.code != 0 || got != `{"params":{"app":{"steps":1e2}},"templateID":"noop"}` {
		t.Fatalf("exit %d, posted %s", r.code, got)
	}
}

func TestSubmitBodyErrors(t *testing.T) {
	f := submitServer(t)
	for _, tc := range []struct {
		stdin string
		args  []string
		msg   string
	}{
		{"", []string{"job", "submit"}, "--template"},
		{"", []string{"job", "submit", "-t", "x", "--set", "novalue"}, "want key=value"},
		{"", []string{"job", "submit", "-t", "x", "--set", "=1"}, "want key=value"},
		{"", []string{"job", "submit", "-t", "x", "--set", "a..b=1"}, "empty path element"},
		{"", []string{"job", "submit", "-t", "x", "--replicas", "0"}, "at least 1"},
		{"[1]", []string{"job", "submit", "-"}, "must be a JSON object, not an array"},
		{"{", []string{"job", "submit", "-"}, "not valid JSON"},
		{"{} {}", []string{"job", "submit", "-"}, "trailing data"},
		{`{"params":{"app":"x"}}`, []string{"job", "submit", "-", "--prompt", "p"}, "params.app is a string"},
		{`{"params":{"app":{"a":1}}}`, []string{"job", "submit", "-", "--set", "a.b=2"}, "params.app.a is a number"},
		{"", []string{"job", "submit", "a", "b"}, "at most one FILE"},
		{"", []string{"job", "submit", "/nonexistent/job.json"}, "no such file"},
	} {
		r := runCLI(t, tc.stdin, append([]string{"--api", f.srv.URL}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.err, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want an error with %q", tc.args, r.code, r.err, tc.msg)
		}
	}
	if n := f.hitCount("POST /v1/jobs"); n != 0 {
		t.Fatalf("%d bodies posted despite errors", n)
	}
	// Usage errors exit 2, a missing file 1.
	if r := runCLI(t, "", "--api", f.srv.URL, "job", "submit"); r.code != exitUsage {
		t.Errorf("no body: exit %d, want %d", r.code, exitUsage)
	}
	if r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", "/nonexistent"); r.code != exitError {
		t.Errorf("missing file: exit %d, want %d", r.code, exitError)
	}
}

func TestSubmitDryRun(t *testing.T) {
	f := submitServer(t)
	r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", "-t", "noop", "-n", "2", "--dry-run")
	if r.code != 0 || r.out != `{"params":{"partitioner":{"num_replicas":2}},"templateID":"noop"}`+"\n" {
		t.Fatalf("exit %d out %q err %q", r.code, r.out, r.err)
	}
	if f.hitCount("POST /v1/jobs") != 0 {
		t.Fatal("dry run posted")
	}
}

func TestErrorWithField(t *testing.T) {
	f := newFakeAPI(t)
	f.json("POST /v1/jobs", 400, api.Error{Message: "must be at most 150", Field: "params.app.steps"})
	r := runCLI(t, "", "--api", f.srv.URL, "job", "submit", "-t", "sd", "--set", "steps=999")
	if r.code != exitError {
		t.Fatalf("exit %d, want %d", r.code, exitError)
	}
	want := "swarmgen: POST /v1/jobs: params.app.steps: must be at most 150\n"
	if r.err != want || r.out != "" {
		t.Fatalf("stderr %q stdout %q; want stderr %q", r.err, r.out, want)
	}
}

func TestExitCodesAndUsage(t *testing.T) {
	f := newFakeAPI(t)
	f.json("GET /v1/jobs/nope", 404, api.Error{Message: "job nope not found"})
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"; run 'swarmgen --help'`},
		{[]string{"job", "frob"}, exitUsage, `unknown command "frob"; run 'swarmgen job --help'`},
		{[]string{"peers", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"job", "status"}, exitUsage, "exactly one argument"},
		{[]string{"job", "watch"}, exitUsage, "at least one job ID"},
		{[]string{"job", "get", "j1"}, exitUsage, "output"},
		{[]string{"--log-level", "loud", "peers"}, exitUsage, "--log-level"},
		{[]string{"--log-format", "xml", "peers"}, exitUsage, "--log-format"},
		{[]string{"--api", "ftp://x", "peers"}, exitUsage, "scheme"},
		{[]string{"--api", f.srv.URL, "job", "status", "nope"}, exitError, "job nope not found"},
		{[]string{"--api", f.srv.URL, "job", "status", "../etc"}, exitError, "must not contain"},
	} {
		r := runCLI(t, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.err+r.out, tc.msg) {
			t.Errorf("%v: exit %d (want %d), stderr %q; want %q", tc.args, r.code, tc.code, r.err, tc.msg)
		}
	}
	// Nothing listening: exit 1 with a hint.
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := dead.Listener.Addr().String()
	dead.Close()
	r := runCLI(t, "", "--api", addr, "peers")
	if r.code != exitError || !strings.Contains(r.err, "is a node running?") {
		t.Fatalf("refused: exit %d stderr %q", r.code, r.err)
	}
}

func TestAPIAddressResolution(t *testing.T) {
	envSrv, flagSrv, cmdSrv := newFakeAPI(t), newFakeAPI(t), newFakeAPI(t)
	for _, f := range []*fakeAPI{envSrv, flagSrv, cmdSrv} {
		f.json("GET /v1/peers", 200, []api.Peer{})
	}
	t.Setenv("SWARMGEN_API", envSrv.srv.Listener.Addr().String()) // bare host:port
	if r := runCLI(t, "", "peers"); r.code != 0 || envSrv.hitCount("GET /v1/peers") != 1 {
		t.Fatalf("SWARMGEN_API: exit %d %s", r.code, r.err)
	}
	if r := runCLI(t, "", "--api", flagSrv.srv.URL, "peers"); r.code != 0 || flagSrv.hitCount("GET /v1/peers") != 1 {
		t.Fatalf("global --api over env: exit %d %s", r.code, r.err)
	}
	if r := runCLI(t, "", "--api", flagSrv.srv.URL, "peers", "--api", cmdSrv.srv.URL); r.code != 0 || cmdSrv.hitCount("GET /v1/peers") != 1 {
		t.Fatalf("command --api over global: exit %d %s", r.code, r.err)
	}
	if envSrv.hitCount("GET /v1/peers") != 1 || flagSrv.hitCount("GET /v1/peers") != 1 {
		t.Fatal("a request went to the wrong node")
	}
	// Other flags read SWARMGEN_<FLAG> too.
	t.Setenv("SWARMGEN_JSON", "true")
	if r := runCLI(t, "", "peers"); r.code != 0 || strings.TrimSpace(r.out) != "[]" {
		t.Fatalf("SWARMGEN_JSON: exit %d out %q", r.code, r.out)
	}
}

func TestEnvNames(t *testing.T) {
	if got := env("price-per-task")[0]; got != "SWARMGEN_PRICE_PER_TASK" {
		t.Fatal(got)
	}
	// Every flag of every command has its SWARMGEN_ env var, except the
	// per-command --api, which defers to the global one.
	app := newApp(&cmdEnv{io: stdio{out: io.Discard, err: io.Discard}})
	for _, fl := range app.Flags {
		if !hasEnv(fl) {
			t.Errorf("global flag %v has no env var", fl.Names())
		}
	}
	var visit func(cmds []*cli.Command)
	visit = func(cmds []*cli.Command) {
		for _, c := range cmds {
			for _, fl := range c.Flags {
				if fl.Names()[0] != "api" && !hasEnv(fl) {
					t.Errorf("%s --%s has no env var", c.Name, fl.Names()[0])
				}
			}
			visit(c.Subcommands)
		}
	}
	visit(app.Commands)
}

// hasEnv reports whether a flag reads SWARMGEN_<FLAG>.
func hasEnv(fl cli.Flag) bool {
	ef, ok := fl.(interface{ GetEnvVars() []string })
	if !ok {
		return false
	}
	want := env(fl.Names()[0])[0]
	for _, e := range ef.GetEnvVars() {
		if e == want {
			return true
		}
	}
	return false
}

func writeFile(path, s string) error {
	return os.WriteFile(path, []byte(s), 0o644)
}

func TestHumanFormats(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "8Gi": 8 << 30, "512M": 512e6, "1.5GiB": 3 << 29,
		"100kb": 100e3, "2 Ti": 2 << 40, "7B": 7, "1k": 1000} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "1X", "-1", "1.2.3M", "99999999999Ti"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q): no error", in)
		}
	}
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1Ki", 1536: "1.5Ki", 64 << 30: "64Gi", 10 << 20: "10Mi"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{500 * time.Millisecond: "0s", 45 * time.Second: "45s",
		200 * time.Second: "3m20s", 125 * time.Minute: "2h05m", 100 * time.Hour: "4d4h"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := cell("a\tb\nc\x1b[31m"); got != "a b c [31m" {
		t.Errorf("cell = %q", got)
	}
}

func TestInterspersedFlags(t *testing.T) {
	app := newApp(&cmdEnv{io: stdio{out: io.Discard, err: io.Discard}})
	for _, tc := range []struct{ in, want string }{
		{"swarmgen job submit job.json --replicas 3 --wait", "swarmgen job submit --replicas 3 --wait job.json"},
		{"swarmgen --api x job submit - -t sd", "swarmgen --api x job submit -t sd -"},
		{"swarmgen job get j1 -o out --force", "swarmgen job get -o out --force j1"},
		{"swarmgen job submit --set=a=1 f", "swarmgen job submit --set=a=1 f"},
		{"swarmgen job submit -t x -- -odd-name", "swarmgen job submit -t x -- -odd-name"},
		{"swarmgen nosuch a --b", "swarmgen nosuch a --b"},
		{"swarmgen job logs j1 --task 2", "swarmgen job logs --task 2 j1"},
	} {
		got := strings.Join(interspersed(app, strings.Fields(tc.in)), " ")
		if got != tc.want {
			t.Errorf("interspersed(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestJobStatusListLogsCancel(t *testing.T) {
	f := newFakeAPI(t)
	now := time.Now()
	job := api.Job{ID: "j-7", Status: api.JobRunning, TemplateID: "fractal", CreatedAt: now.Add(-2 * time.Hour),
		Reasons: []string{"task 2: no candidate: 3 peers lack gpu"},
		Tasks: []api.Task{
			{ID: "j-7-0", Index: 0, Status: api.TaskCompleted, Provider: "12D3KooWAAAAAAAAAAAAAAAAprovider01", Attempts: 1, ResultCID: "bafkqaaa", Progress: 1,
				StartedAt: now.Add(-100 * time.Second), FinishedAt: now.Add(-40 * time.Second)},
			{ID: "j-7-1", Index: 1, Status: api.TaskRunning, Attempts: 2, Progress: 0.25, Error: "first try: oom\nmore"},
			{ID: "j-7-2", Index: 2, Status: api.TaskPending},
		}}
	f.json("GET /v1/jobs/j-7", 200, job)
	f.json("GET /v1/jobs", 200, []api.Job{job})
	f.json("GET /v1/jobs/j-7/logs", 200, []api.TaskLog{
		{TaskID: "j-7-0", Index: 0, Attempt: 1, Provider: "p1", Log: "step 1\n::progress 0.5\ndone"},
		{TaskID: "j-7-1", Index: 1, Attempt: 2, Log: "\x1b[31mred\x1b[0m\n"},
	})
	cancelled := job
	cancelled.Status = api.JobCancelled
	f.json("DELETE /v1/jobs/j-7", 200, cancelled)

	r := runCLI(t, "", "--api", f.srv.URL, "job", "status", "j-7")
	for _, want := range []string{"Status:    running", "Tasks:     1/3 done, 1 running, 1 queued", "  - task 2: no candidate: 3 peers lack gpu",
		"INDEX  STATUS", "0      completed  100%", "…provider01", "1m00s", "first try: oom …", "1      running    25%"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("job status lacks %q:\n%s", want, r.out)
		}
	}
	r = runCLI(t, "", "--api", f.srv.URL, "job", "list")
	if r.code != 0 || !strings.Contains(r.out, "j-7  running  fractal   1/3    2h00m ago") {
		t.Errorf("job list:\n%s", r.out)
	}
	r = runCLI(t, "", "--api", f.srv.URL, "job", "logs", "j-7")
	want := "== task 0 (attempt 1, provider p1) ==\nstep 1\n::progress 0.5\ndone\n\n== task 1 (attempt 2) ==\n[31mred[0m\n"
	if r.code != 0 || r.out != want {
		t.Errorf("job logs: %q\nwant %q", r.out, want)
	}
	r = runCLI(t, "", "--api", f.srv.URL, "job", "logs", "j-7", "--task", "1", "--json")
	var logs []api.TaskLog
	if err := json.Unmarshal([]byte(r.out), &logs); err != nil || len(logs) != 1 || logs[0].Index != 1 {
		t.Errorf("logs --task 1 --json: %v %s", err, r.out)
	}
	if r := runCLI(t, "", "--api", f.srv.URL, "job", "logs", "j-7", "--task", "5"); r.code != exitError {
		t.Errorf("logs of a missing task: exit %d", r.code)
	}
	r = runCLI(t, "", "--api", f.srv.URL, "job", "cancel", "j-7")
	if r.code != 0 || r.out != "j-7 cancelled\n" || f.hitCount("DELETE /v1/jobs/j-7") != 1 {
		t.Errorf("cancel: exit %d out %q", r.code, r.out)
	}
}

func TestTemplates(t *testing.T) {
	f := newFakeAPI(t)
	tp := api.Template{ID: "stable-diffusion", Aliases: []string{"img-gen-fiffusers-template", "sd"}, Description: "text to image",
		App: json.RawMessage(`{"kind":"python","module":"sd"}`), Params: json.RawMessage(`{"steps":{"type":"int","default":20}}`),
		Partitioner: "replicas", Assembler: "bucket", Source: "builtin"}
	f.json("GET /v1/templates", 200, []api.Template{tp})
	f.json("GET /v1/templates/sd", 200, tp)
	r := runCLI(t, "", "--api", f.srv.URL, "template", "list")
	if r.code != 0 || !strings.Contains(r.out, "stable-diffusion  img-gen-fiffusers-template,sd  replicas     builtin  text to image") {
		t.Errorf("template list:\n%s", r.out)
	}
	r = runCLI(t, "", "--api", f.srv.URL, "template", "show", "sd")
	for _, want := range []string{"ID:           stable-diffusion", "App:\n  {\n    \"kind\": \"python\"", "\"default\": 20"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("template show lacks %q:\n%s", want, r.out)
		}
	}
	r = runCLI(t, "", "--api", f.srv.URL, "template", "show", "sd", "--json")
	var got api.Template
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || got.ID != "stable-diffusion" {
		t.Errorf("template show --json: %v %s", err, r.out)
	}
}
