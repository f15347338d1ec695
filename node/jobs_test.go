package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"

	"github.com/swarmgen/swarmgen/api"
	"github.com/swarmgen/swarmgen/bucket"
	"github.com/swarmgen/swarmgen/inference"
	"github.com/swarmgen/swarmgen/inference/apps"
	"github.com/swarmgen/swarmgen/scheduler"
)

// exampleBody is shared/examples/create-job.json with the template
// switched as the test needs.
func exampleBody(t *testing.T, template string) []byte {
	t.Helper()
	b, err := os.ReadFile("../jobspec/testdata/create-job.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["templateID"] = template
	out, _ := json.Marshal(m)
	return out
}

func fastScheduler() scheduler.Config {
	return scheduler.Config{BidTimeout: time.Second, RebidInterval: 200 * time.Millisecond, HeartbeatTimeout: 5 * time.Second, SpeculateMinAge: -1}
}

// inProcessDevnet starts a converged devnet whose apps run in-process;
// configure, if given, adjusts each node's config.
func inProcessDevnet(t *testing.T, nodes int, configure ...func(i int, c *Config)) *Devnet {
	t.Helper()
	var c func(i int, c *Config)
	if len(configure) > 0 {
		c = configure[0]
	}
	return inProcessDevnetWith(t, nodes, c, nil)
}

// inProcessDevnetWith is inProcessDevnet with per-node options as well.
func inProcessDevnetWith(t *testing.T, nodes int, configure func(i int, c *Config), perNode func(i int) []Option) *Devnet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc := DevnetConfig{Nodes: nodes, API: "127.0.0.1:0", Gateway: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quietLogger(),
		Options:   []Option{WithExecutor(inference.KindProcess, inference.NewInProcess(apps.Funcs())), WithSchedulerConfig(fastScheduler())},
		Configure: configure, PerNode: perNode}
	d, err := StartDevnet(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

func postJob(t *testing.T, apiAddr string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+apiAddr+"/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func getJob(t *testing.T, apiAddr, id string) api.Job {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/jobs/%s", apiAddr, id))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var j api.Job
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatal(err)
	}
	return j
}

func waitJob(t *testing.T, apiAddr, id string, d time.Duration, statuses ...string) api.Job {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		j := getJob(t, apiAddr, id)
		for _, s := range statuses {
			if j.Status == s {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s after %s: %+v", id, j.Status, d, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFractalJobOnDevnet(t *testing.T) {
	d := inProcessDevnet(t, 3)
	apiAddr := d.Nodes()[0].APIAddr()
	code, created := postJob(t, apiAddr, exampleBody(t, "fractal"))
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/jobs: %d %v", code, created)
	}
	id := created["id"].(string)
	j := waitJob(t, apiAddr, id, 60*time.Second, api.JobCompleted, api.JobFailed)
	if j.Status != api.JobCompleted {
		t.Fatalf("job %s: %+v", j.Status, j)
	}
	providers := map[string]bool{}
	for _, task := range j.Tasks {
		providers[task.Provider] = true
		if task.Status != api.TaskCompleted || task.ResultCID == "" {
			t.Errorf("task %d: %+v", task.Index, task)
		}
	}
	if len(j.Tasks) != 5 || len(providers) < 2 {
		t.Fatalf("%d tasks over %d providers, want 5 over >= 2", len(j.Tasks), len(providers))
	}
	if j.Bucket == nil || j.Bucket.CID == "" || !strings.Contains(j.Bucket.URL, "/buckets/"+id) {
		t.Fatalf("bucket: %+v", j.Bucket)
	}
	resp, err := http.Get(j.Bucket.URL + "task-0/fractal.png")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	png, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("GET task-0/fractal.png: %d %q", resp.StatusCode, png[:min(len(png), 16)])
	}
}

// Every malformed body gets a 400 naming its field, and the node keeps
// serving: the same node then accepts a good job.
func TestMalformedBodiesGet400WithField(t *testing.T) {
	d := inProcessDevnet(t, 1)
	apiAddr := d.Nodes()[0].APIAddr()
	good := `{"templateID":"fractal","dataSource":{"dataSourceDescriptor":"bypass"},"dataDestination":{"dataSourceDescriptor":"bucket"},"params":{"partitioner":{"num_replicas":2},"app":{"prompt":"x"}}}`
	with := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("bad test: %q not in body", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	cases := []struct{ name, body, field string }{
		{"not json", `{"templateID":`, ""},
		{"array", `[]`, ""},
		{"unknown top field", with(`"templateID"`, `"bogus":1,"templateID"`), "bogus"},
		{"template wrong type", with(`"fractal"`, `7`), "templateID"},
		{"unknown template", with(`"fractal"`, `"nope"`), "templateID"},
		{"data source unknown", with(`"bypass"`, `"ftp"`), "dataSource.dataSourceDescriptor"},
		{"data source wrong type", with(`{"dataSourceDescriptor":"bypass"}`, `"bypass"`), "dataSource"},
		{"destination unknown", with(`"bucket"`, `"s3"`), "dataDestination.dataSourceDescriptor"},
		{"replicas negative", with(`"num_replicas":2`, `"num_replicas":-1`), "params.partitioner.num_replicas"},
		{"replicas zero", with(`"num_replicas":2`, `"num_replicas":0`), "params.partitioner.num_replicas"},
		{"replicas string", with(`"num_replicas":2`, `"num_replicas":"2"`), "params.partitioner.num_replicas"},
		{"too many tasks", with(`"num_replicas":2`, `"num_replicas":100000`), "params.partitioner.num_replicas"},
		{"replicas fraction", with(`"num_replicas":2`, `"num_replicas":1.5`), "params.partitioner.num_replicas"},
		{"unknown partitioner field", with(`"num_replicas":2`, `"num_replicas":2,"shards":3`), "params.partitioner.shards"},
		{"unknown app param", with(`"prompt":"x"`, `"prompt":"x","colour":"red"`), "params.app.colour"},
		{"prompt wrong type", with(`"prompt":"x"`, `"prompt":5`), "params.app.prompt"},
		{"prompt too long", with(`"prompt":"x"`, `"prompt":"`+strings.Repeat("p", 5000)+`"`), "params.app.prompt"},
		{"width out of range", with(`"prompt":"x"`, `"prompt":"x","width":99999`), "params.app.width"},
		{"iterations zero", with(`"prompt":"x"`, `"prompt":"x","iterations":0`), "params.app.iterations"},
		{"kind not in enum", with(`"prompt":"x"`, `"prompt":"x","kind":"sierpinski"`), "params.app.kind"},
		{"resources cpu negative", with(`"params"`, `"resources":{"cpu":-2},"params"`), "resources.cpu"},
		{"resources memory garbage", with(`"params"`, `"resources":{"memory":"lots"},"params"`), "resources.memory"},
		{"unknown resource", with(`"params"`, `"resources":{"tpu":1},"params"`), "resources.tpu"},
		{"timeout garbage", with(`"params"`, `"timeout":"soon","params"`), "timeout"},
		{"maxAttempts too high", with(`"params"`, `"maxAttempts":1000,"params"`), "maxAttempts"},
		{"constraints wrong type", with(`"params"`, `"constraints":[],"params"`), "constraints"},
		{"trailing data", good + `{}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := postJob(t, apiAddr, []byte(c.body))
			if code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %v", code, body)
			}
			msg, _ := body["error"].(string)
			field, _ := body["field"].(string)
			if msg == "" {
				t.Fatalf("no error message: %v", body)
			}
			if c.field != "" && field != c.field {
				t.Fatalf("field %q, want %q (error: %s)", field, c.field, msg)
			}
		})
	}
	resp, err := http.Post("http://"+apiAddr+"/v1/jobs", "application/json", bytes.NewReader(bytes.Repeat([]byte("x"), 2<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("2 MiB body: %d", resp.StatusCode)
	}
	code, created := postJob(t, apiAddr, []byte(good))
	if code != http.StatusCreated {
		t.Fatalf("node stopped serving good jobs: %d %v", code, created)
	}
	waitJob(t, apiAddr, created["id"].(string), 30*time.Second, api.JobCompleted)
}

// A provider that serves tampered blocks is caught when the submitter
// fetches its result (every block is checked against its CID), its attempt
// fails, and the task is redone elsewhere: the job completes with no result
// from the tampering provider.
func TestTamperedResultRedoneElsewhere(t *testing.T) {
	tamper := func(ctx context.Context, store *bucket.Store, root cid.Cid) {
		entries, err := store.ListDir(ctx, root)
		if err != nil {
			return
		}
		for _, e := range entries {
			_ = store.Blockstore().DeleteBlock(ctx, e.Cid)
			blk, _ := blocks.NewBlockWithCid([]byte("tampered bytes"), e.Cid)
			_ = store.Blockstore().Put(ctx, blk)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var bad string
	d, err := StartDevnet(ctx, DevnetConfig{Nodes: 3, API: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quietLogger(),
		Configure: func(i int, c *Config) { c.Provide = i != 0; c.Slots = 1 },
		Options:   []Option{WithExecutor(inference.KindProcess, inference.NewInProcess(apps.Funcs())), WithSchedulerConfig(fastScheduler())},
		PerNode: func(i int) []Option {
			if i == 1 {
				return []Option{func(o *options) { o.afterImport = tamper }}
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	bad = d.Nodes()[1].ID().String()
	apiAddr := d.Nodes()[0].APIAddr()
	code, created := postJob(t, apiAddr, []byte(`{"templateID":"fractal","params":{"partitioner":{"num_replicas":4},"app":{"width":64,"height":64}}}`))
	if code != http.StatusCreated {
		t.Fatalf("%d %v", code, created)
	}
	j := waitJob(t, apiAddr, created["id"].(string), 60*time.Second, api.JobCompleted, api.JobFailed)
	if j.Status != api.JobCompleted {
		t.Fatalf("job %s: %s", j.Status, j.Error)
	}
	retried := 0
	for _, task := range j.Tasks {
		if task.Provider == bad {
			t.Fatalf("task %d completed with the tampering provider's result", task.Index)
		}
		if task.Attempts > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Fatal("no task was placed on the tampering provider: the test proved nothing")
	}
}

type noopOut struct {
	Inputs []struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	} `json:"inputs"`
}

// Inputs travel as blocks: inline files and a URL the submitter downloads
// are imported on the submitter, and with the files partitioner each
// provider fetches just its task's file and finds it in input/.
func TestJobInputsReachTasks(t *testing.T) {
	d := inProcessDevnet(t, 3)
	apiAddr := d.Nodes()[0].APIAddr()
	check := func(t *testing.T, body string, want map[string]string) {
		code, created := postJob(t, apiAddr, []byte(body))
		if code != http.StatusCreated {
			t.Fatalf("%d %v", code, created)
		}
		j := waitJob(t, apiAddr, created["id"].(string), 60*time.Second, api.JobCompleted, api.JobFailed)
		if j.Status != api.JobCompleted || len(j.Tasks) != len(want) {
			t.Fatalf("job %s with %d tasks: %s", j.Status, len(j.Tasks), j.Error)
		}
		got := map[string]string{}
		for _, task := range j.Tasks {
			var out noopOut
			if err := json.Unmarshal(get(t, fmt.Sprintf("%stask-%d/result.json", j.Bucket.URL, task.Index)), &out); err != nil {
				t.Fatal(err)
			}
			if len(out.Inputs) != 1 {
				t.Fatalf("task %d saw %d input files, want 1: %+v", task.Index, len(out.Inputs), out.Inputs)
			}
			got[out.Inputs[0].Path] = out.Inputs[0].SHA256
		}
		for name, sum := range want {
			if got[name] != sum {
				t.Fatalf("input %s: got %q, want %q (all: %v)", name, got[name], sum, got)
			}
		}
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	t.Run("file", func(t *testing.T) {
		check(t, `{"templateID":"noop","dataSource":{"dataSourceDescriptor":"file","files":[
			{"name":"a.txt","content":"alpha"},{"name":"b.txt","content":"bravo"},{"name":"c.bin","base64":"AAEC"}]},
			"params":{"partitioner":{"type":"files"},"app":{}}}`,
			map[string]string{"a.txt": sum("alpha"), "b.txt": sum("bravo"), "c.bin": sum("\x00\x01\x02")})
	})
	t.Run("url", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "downloaded by the submitter")
		}))
		defer srv.Close()
		check(t, `{"templateID":"noop","dataSource":{"dataSourceDescriptor":"url","url":"`+srv.URL+`/data.txt"},
			"params":{"partitioner":{"type":"files"},"app":{}}}`,
			map[string]string{"data.txt": sum("downloaded by the submitter")})
	})
	t.Run("ipfs", func(t *testing.T) {
		// The input DAG lives only on node 1: the submitter fetches it from
		// a peer of its table, then hands it out like any other input.
		c, _, err := d.Nodes()[1].results.store.ImportFiles(context.Background(), map[string][]byte{"x.txt": []byte("held by a peer")})
		if err != nil {
			t.Fatal(err)
		}
		check(t, `{"templateID":"noop","dataSource":{"dataSourceDescriptor":"ipfs","cid":"`+c.String()+`"},
			"params":{"partitioner":{"type":"files"},"app":{}}}`,
			map[string]string{"x.txt": sum("held by a peer")})
	})
}

// Small results travel inline with the signed result: the submitter
// verifies and stores them without a fetch stream. (The providers also
// make their task dirs in a configured TaskDir.)
func TestSmallResultsTravelInline(t *testing.T) {
	taskDirs := t.TempDir()
	d := inProcessDevnet(t, 3, func(i int, c *Config) {
		c.Provide = i != 0
		c.TaskDir = filepath.Join(taskDirs, fmt.Sprint(i))
	})
	apiAddr := d.Nodes()[0].APIAddr()
	code, created := postJob(t, apiAddr, []byte(`{"templateID":"noop","params":{"partitioner":{"num_replicas":6},"app":{}}}`))
	if code != http.StatusCreated {
		t.Fatalf("%d %v", code, created)
	}
	j := waitJob(t, apiAddr, created["id"].(string), 30*time.Second, api.JobCompleted, api.JobFailed)
	if j.Status != api.JobCompleted {
		t.Fatalf("job %s: %s", j.Status, j.Error)
	}
	resp, err := http.Get("http://" + apiAddr + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		Inline  int64 `json:"resultsInline"`
		Fetched int64 `json:"resultsFetched"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatal(err)
	}
	// At least one per task: a task moved off a queue (work stealing) may
	// have run on both peers, and both results come inline.
	if stats.Inline < 6 || stats.Fetched != 0 {
		t.Fatalf("results inline %d, fetched %d; want at least 6 and 0", stats.Inline, stats.Fetched)
	}
	used := 0
	for i := 1; i <= 2; i++ {
		if _, err := os.Stat(filepath.Join(taskDirs, fmt.Sprint(i))); err == nil {
			used++
		}
	}
	if used == 0 {
		t.Fatal("no provider made its task dirs in its TaskDir")
	}
}

// A finished job is forgotten once its bucket expires: gone from the
// coordinator, the API and the state DB; a job whose bucket lives on stays.
func TestExpiredJobsForgotten(t *testing.T) {
	d := inProcessDevnet(t, 2)
	n := d.Nodes()[0]
	apiAddr := n.APIAddr()
	ids := map[string]string{}
	for _, ttl := range []string{"1s", "1h"} {
		code, created := postJob(t, apiAddr, []byte(`{"templateID":"noop","dataDestination":{"dataSourceDescriptor":"bucket","ttl":"`+ttl+`"},"params":{"partitioner":{"num_replicas":2},"app":{}}}`))
		if code != http.StatusCreated {
			t.Fatalf("%d %v", code, created)
		}
		ids[ttl] = created["id"].(string)
		if j := waitJob(t, apiAddr, ids[ttl], 30*time.Second, api.JobCompleted, api.JobFailed); j.Status != api.JobCompleted {
			t.Fatalf("job %s: %s", j.Status, j.Error)
		}
	}
	var removed int
	if err := n.submitter.call(context.Background(), func(now time.Time) []scheduler.Action {
		removed = n.submitter.gcJobs(now.Add(2 * time.Second))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if removed != 1 {
		t.Fatalf("gcJobs removed %d jobs, want 1", removed)
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/jobs/%s", apiAddr, ids["1s"]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET expired job: %d, want 404", resp.StatusCode)
	}
	if j := getJob(t, apiAddr, ids["1h"]); j.Status != api.JobCompleted {
		t.Fatalf("job with a live bucket: %+v", j)
	}
	// The state DB is written by the persister goroutine, in order.
	deadline := time.Now().Add(10 * time.Second)
	for {
		metas, snaps, err := n.submitter.db.loadJobs()
		if err != nil {
			t.Fatal(err)
		}
		_, meta := metas[ids["1s"]]
		_, snap := snaps[ids["1s"]]
		if !meta && !snap {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expired job still in the state DB: metadata %v, snapshot %v", meta, snap)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, snaps, err := n.submitter.db.loadJobs()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snaps[ids["1h"]]; !ok {
		t.Fatal("live job's snapshot missing from the state DB")
	}
}
