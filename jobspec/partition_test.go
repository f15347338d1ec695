package jobspec

import (
	"encoding/json"
	"errors"
	"testing"
)

func parse(t *testing.T, body string) *Spec {
	t.Helper()
	s, err := Parse([]byte(body), Builtin(), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func params(t *testing.T, ts TaskSpec) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ts.Params, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPartitionReplicas(t *testing.T) {
	s := parse(t, `{"templateID": "sd", "params": {"partitioner": {"num_replicas": 3}, "app": {"prompt": "cat", "steps": 8}}}`)
	if _, err := Partition(s, nil, nil); !errors.Is(err, ErrNoSeed) {
		t.Fatalf("no seed: %v", err)
	}
	s.SetSeed(1000)
	tasks, err := Partition(s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 3 {
		t.Fatalf("%d tasks", len(tasks))
	}
	for i, ts := range tasks {
		p := params(t, ts)
		if ts.Index != i || ts.Seed != int64(1000+i) || p["seed"] != float64(1000+i) {
			t.Errorf("task %d seed %d params seed %v", i, ts.Seed, p["seed"])
		}
		// template default < job param
		if p["steps"] != float64(8) || p["model"] != "stabilityai/sd-turbo" || p["width"] != float64(512) || p["prompt"] != "cat" {
			t.Errorf("task %d params %v", i, p)
		}
	}
	// Same job seed → same tasks.
	again, _ := Partition(s, nil, nil)
	for i := range tasks {
		if string(again[i].Params) != string(tasks[i].Params) || again[i].Seed != tasks[i].Seed {
			t.Fatal("partition is not deterministic")
		}
	}
	// SetSeed does not override a stored seed; seeds wrap below 2^53.
	s.SetSeed(5)
	if s.Seed != 1000 {
		t.Error("SetSeed overrode the seed")
	}
	if TaskSeed(MaxSeed, 1) != 0 {
		t.Error("TaskSeed does not wrap")
	}
}

func TestPartitionPrompts(t *testing.T) {
	s := parse(t, `{"templateID": "sd", "seed": 7, "params": {"partitioner": {"prompts": ["a", "b"], "num_replicas": 2}, "app": {"prompt": "ignored"}}}`)
	tasks, err := Partition(s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		prompt string
		seed   int64
	}{{"a", 7}, {"a", 8}, {"b", 7}, {"b", 8}}
	if len(tasks) != len(want) {
		t.Fatalf("%d tasks", len(tasks))
	}
	for i, w := range want {
		p := params(t, tasks[i])
		if p["prompt"] != w.prompt || tasks[i].Seed != w.seed {
			t.Errorf("task %d: prompt %v seed %d, want %v", i, p["prompt"], tasks[i].Seed, w)
		}
	}
	// Prompts from the lines of an input file; "prompt" is not required.
	s = parse(t, `{"templateID": "sd", "seed": 1, "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "p.txt", "content": "one\r\n\n  two  \n"}]}, "params": {"partitioner": {"type": "prompts"}}}`)
	tasks, err = Partition(s, nil, nil)
	if err != nil || len(tasks) != 2 || params(t, tasks[1])["prompt"] != "two" {
		t.Fatalf("tasks %v err %v", tasks, err)
	}
	// Too many lines for MaxTasks.
	lim := DefaultLimits()
	lim.MaxTasks = 1
	s, _ = Parse([]byte(`{"templateID": "sd", "seed": 1, "dataSource": {"dataSourceDescriptor": "url", "url": "https://x/p.txt"}, "params": {"partitioner": {"type": "prompts"}}}`), Builtin(), lim)
	_, err = Partition(s, nil, []InputFile{{Name: "p.txt", Data: []byte("a\nb\n")}})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "dataSource" {
		t.Fatalf("err = %v", err)
	}
}

func TestPartitionFiles(t *testing.T) {
	s := parse(t, `{"templateID": "noop", "seed": 3, "dataSource": {"dataSourceDescriptor": "file", "files": [{"name": "a", "content": "A"}, {"name": "b", "content": "B"}]}, "params": {"partitioner": {"type": "files"}, "app": {"anything": [1, 2]}}}`)
	tasks, err := Partition(s, nil, nil)
	if err != nil || len(tasks) != 2 {
		t.Fatalf("%v %v", tasks, err)
	}
	if tasks[1].Input == nil || tasks[1].Input.Name != "b" || string(tasks[1].Input.Data) != "B" || tasks[1].Seed != 4 {
		t.Errorf("task 1 = %+v", tasks[1])
	}
	if p := params(t, tasks[0]); p["anything"] == nil || p["seed"] != nil {
		t.Errorf("noop params = %v (no seed param in noop)", p)
	}
}
