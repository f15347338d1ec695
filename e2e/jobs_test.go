package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/api"
)

// cluster starts n `swarmgen node run` processes bootstrapped from the
// first; node 0 also serves the gateway.
func cluster(t *testing.T, n int, extra ...string) []*proc {
	t.Helper()
	dir := t.TempDir()
	gw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	first := startNode(t, filepath.Join(dir, "0"), append([]string{"--gateway", gw}, extra...)...)
	var info api.NodeInfo
	if err := getJSON("http://"+first.api+"/v1/node", &info); err != nil {
		t.Fatal(err)
	}
	nodes := []*proc{first}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, filepath.Join(dir, fmt.Sprint(i)), append([]string{"--bootstrap", info.Addrs[0]}, extra...)...))
	}
	for i, p := range nodes {
		eventually(t, 15*time.Second, fmt.Sprintf("node %d to see %d peers", i, n), func() bool {
			var rows []api.Peer
			return getJSON("http://"+p.api+"/v1/peers", &rows) == nil && len(rows) == n
		})
	}
	return nodes
}

// fractalBody is the example request body with templateID switched to
// fractal and app params that make each task take a while.
func fractalBody(t *testing.T, replicas int, app map[string]any) []byte {
	t.Helper()
	b, err := os.ReadFile("../jobspec/testdata/create-job.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m["templateID"] = "fractal"
	params := m["params"].(map[string]any)
	params["partitioner"].(map[string]any)["num_replicas"] = replicas
	for k, v := range app {
		params["app"].(map[string]any)[k] = v
	}
	out, _ := json.Marshal(m)
	return out
}

func submit(t *testing.T, p *proc, body []byte) string {
	t.Helper()
	resp, err := httpClient.Post("http://"+p.api+"/v1/jobs", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c api.CreatedJob
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/jobs: %d %v", resp.StatusCode, err)
	}
	return c.ID
}

func job(t *testing.T, p *proc, id string) api.Job {
	t.Helper()
	var j api.Job
	if err := getJSON(fmt.Sprintf("http://%s/v1/jobs/%s", p.api, id), &j); err != nil {
		t.Fatal(err)
	}
	return j
}

func waitStatus(t *testing.T, p *proc, id string, d time.Duration, want ...string) api.Job {
	t.Helper()
	var j api.Job
	eventually(t, d, fmt.Sprintf("job %s to be %v", id, want), func() bool {
		if getJSON(fmt.Sprintf("http://%s/v1/jobs/%s", p.api, id), &j) != nil {
			return false
		}
		for _, w := range want {
			if j.Status == w {
				return true
			}
		}
		return false
	})
	return j
}

func checkCompleted(t *testing.T, j api.Job, n int) {
	t.Helper()
	if j.Status != api.JobCompleted || len(j.Tasks) != n || j.Bucket == nil || j.Bucket.CID == "" {
		t.Fatalf("job not completed with %d tasks and a bucket: %+v", n, j)
	}
	seen := map[int]bool{}
	for _, task := range j.Tasks {
		if task.Status != api.TaskCompleted || task.ResultCID == "" || seen[task.Index] {
			t.Fatalf("task %+v", task)
		}
		seen[task.Index] = true
	}
}

// The example body with templateID fractal completes 5 tasks spread over at
// least two providers, submitted with the CLI, and `job get` downloads and
// verifies the bucket.
func TestExampleFractalJobSpreads(t *testing.T) {
	nodes := cluster(t, 3, "--slots", "1")
	body := filepath.Join(t.TempDir(), "job.json")
	os.WriteFile(body, fractalBody(t, 5, map[string]any{"width": 384, "height": 384, "iterations": 1500}), 0o644)
	var created api.CreatedJob
	if err := nodes[0].cli(t, &created, "job", "submit", "--json", body); err != nil {
		t.Fatal(err)
	}
	j := waitStatus(t, nodes[0], created.ID, 90*time.Second, api.JobCompleted, api.JobFailed)
	checkCompleted(t, j, 5)
	providers := map[string]bool{}
	for _, task := range j.Tasks {
		providers[task.Provider] = true
	}
	if len(providers) < 2 {
		t.Fatalf("5 tasks ran on %d provider(s)", len(providers))
	}
	out := t.TempDir()
	if err := nodes[0].cli(t, nil, "job", "get", created.ID, "-o", out); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("task-%d", i), "fractal.png"))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("task-%d/fractal.png: %v", i, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err != nil {
		t.Fatal(err)
	}
}

// A provider killed mid-task does not lose the task: it is redone elsewhere.
func TestKilledProviderLosesNoTask(t *testing.T) {
	nodes := cluster(t, 3, "--slots", "1")
	id := submit(t, nodes[0], fractalBody(t, 4, map[string]any{"width": 768, "height": 768, "iterations": 4000}))
	var victim string
	eventually(t, 30*time.Second, "a task running on another node", func() bool {
		for _, task := range job(t, nodes[0], id).Tasks {
			if task.Status == api.TaskRunning && task.Provider != "" {
				victim = task.Provider
				var info api.NodeInfo
				if getJSON("http://"+nodes[0].api+"/v1/node", &info) == nil && info.PeerID != victim {
					return true
				}
			}
		}
		return false
	})
	var killedAt time.Time
	for _, p := range nodes[1:] {
		var info api.NodeInfo
		if getJSON("http://"+p.api+"/v1/node", &info) == nil && info.PeerID == victim {
			p.kill()
			killedAt = time.Now()
		}
	}
	j := waitStatus(t, nodes[0], id, 120*time.Second, api.JobCompleted, api.JobFailed)
	checkCompleted(t, j, 4)
	retried := false
	for _, task := range j.Tasks {
		// The victim may have finished another task before it died; nothing
		// it could not have delivered may be credited to it.
		if task.Provider == victim && !task.FinishedAt.Before(killedAt) {
			t.Fatalf("task %d credited to the killed provider after the kill", task.Index)
		}
		retried = retried || task.Attempts > 1
	}
	if !retried {
		t.Fatal("no task needed a second attempt: the kill did not hit a running task")
	}
}

// A submitter restarted mid-job resumes the job from its data dir and
// completes it.
func TestRestartedSubmitterResumes(t *testing.T) {
	nodes := cluster(t, 3, "--slots", "1")
	id := submit(t, nodes[0], fractalBody(t, 5, map[string]any{"width": 512, "height": 512, "iterations": 3000}))
	waitStatus(t, nodes[0], id, 30*time.Second, api.JobRunning)
	dataDir := nodes[0].dataDir
	nodes[0].stop()
	var info api.NodeInfo
	_ = getJSON("http://"+nodes[1].api+"/v1/node", &info)
	restarted := startNode(t, dataDir, "--bootstrap", info.Addrs[0])
	j := waitStatus(t, restarted, id, 120*time.Second, api.JobCompleted, api.JobFailed)
	checkCompleted(t, j, 5)
}

// Cancel stops the work on the providers.
func TestCancelStopsProviders(t *testing.T) {
	nodes := cluster(t, 3, "--slots", "1")
	id := submit(t, nodes[0], fractalBody(t, 3, map[string]any{"width": 1024, "height": 1024, "iterations": 20000}))
	eventually(t, 30*time.Second, "tasks running", func() bool {
		var rows []api.Peer
		running := 0
		if getJSON("http://"+nodes[0].api+"/v1/peers", &rows) == nil {
			for _, r := range rows {
				running += r.Load.Running
			}
		}
		return running >= 2
	})
	if err := nodes[0].cli(t, nil, "job", "cancel", id); err != nil {
		t.Fatal(err)
	}
	j := waitStatus(t, nodes[0], id, 10*time.Second, api.JobCancelled)
	if j.Status != api.JobCancelled {
		t.Fatal(j.Status)
	}
	for i, p := range nodes {
		eventually(t, 15*time.Second, fmt.Sprintf("node %d to run nothing", i), func() bool {
			var rows []api.Peer
			if getJSON("http://"+p.api+"/v1/peers", &rows) != nil {
				return false
			}
			for _, r := range rows {
				if r.Self {
					return r.Load.Running == 0 && r.Load.Queued == 0
				}
			}
			return false
		})
	}
}

// A job no node can run waits as pending and says why, then runs once a
// suitable node joins.
func TestPendingUntilSuitableNodeJoins(t *testing.T) {
	nodes := cluster(t, 2)
	body := fractalBody(t, 2, map[string]any{"width": 64, "height": 64})
	var m map[string]any
	json.Unmarshal(body, &m)
	m["constraints"] = map[string]any{"labels": map[string]string{"zone": "b"}}
	body, _ = json.Marshal(m)
	id := submit(t, nodes[0], body)
	var j api.Job
	eventually(t, 10*time.Second, "a reason naming the label", func() bool {
		j = job(t, nodes[0], id)
		return j.Status == api.JobPending && strings.Contains(strings.Join(j.Reasons, " "), "label")
	})
	t.Logf("pending, reasons: %v", j.Reasons)
	time.Sleep(time.Second)
	if j = job(t, nodes[0], id); j.Status != api.JobPending {
		t.Fatalf("job ran without a suitable node: %s", j.Status)
	}
	var info api.NodeInfo
	_ = getJSON("http://"+nodes[0].api+"/v1/node", &info)
	startNode(t, filepath.Join(t.TempDir(), "zone-b"), "--bootstrap", info.Addrs[0], "--label", "zone=b")
	j = waitStatus(t, nodes[0], id, 60*time.Second, api.JobCompleted, api.JobFailed)
	checkCompleted(t, j, 2)
}
