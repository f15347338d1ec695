package inference

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareTaskDirRejectsBadIDs(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct{ job, task string }{
		{"..", "t"}, {"j", ".."}, {"a/b", "t"}, {"j", "t/../../x"}, {"", "t"}, {"j", ""},
		{"j", `a\b`}, {"j", "a\x00b"}, {strings.Repeat("x", MaxIDLen+1), "t"}, {"j", "ü"},
	} {
		_, err := PrepareTaskDir(root, &Task{JobID: c.job, TaskID: c.task})
		if !errors.Is(err, ErrInvalidTask) {
			t.Errorf("job %q task %q: err = %v, want ErrInvalidTask", c.job, c.task, err)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("bad ids created %d entries", len(entries))
	}
}

func TestPrepareTaskDirLayout(t *testing.T) {
	root := t.TempDir()
	task := &Task{JobID: "j-1", TaskID: "t.2", Attempt: 3, Seed: -7}
	dir, err := PrepareTaskDir(root, task)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "j-1", "t.2.3"); dir != want {
		t.Fatalf("dir = %s, want %s", dir, want)
	}
	os.WriteFile(filepath.Join(dir, "output", "stale"), []byte("x"), 0o644)
	if dir, err = PrepareTaskDir(root, task); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"input", "output"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil || len(entries) != 0 {
			t.Fatalf("%s: %v, %d entries (want fresh and empty)", sub, err, len(entries))
		}
	}
	body, _ := os.ReadFile(filepath.Join(dir, "params.json"))
	want := `{"job":"j-1","task":"t.2","index":0,"count":0,"attempt":3,"seed":-7,"app":{}}` + "\n"
	if string(body) != want {
		t.Fatalf("params.json = %s, want %s", body, want)
	}
	if err := CleanupTaskDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
}

func TestPrepareTaskDirRejectsBadParams(t *testing.T) {
	for _, p := range []string{`[1]`, `"x"`, `{"a":`, `12`} {
		_, err := PrepareTaskDir(t.TempDir(), &Task{JobID: "j", TaskID: "t", Params: json.RawMessage(p)})
		if !errors.Is(err, ErrInvalidTask) {
			t.Errorf("params %s: err = %v, want ErrInvalidTask", p, err)
		}
	}
	big := `{"a":"` + strings.Repeat("x", MaxParamsSize) + `"}`
	if _, err := PrepareTaskDir(t.TempDir(), &Task{JobID: "j", TaskID: "t", Params: json.RawMessage(big)}); !errors.Is(err, ErrInvalidTask) {
		t.Errorf("oversized params: err = %v", err)
	}
}

func TestOutputSize(t *testing.T) {
	dir := prepare(t, &Task{JobID: "j", TaskID: "t"})
	out := filepath.Join(dir, "output")
	os.MkdirAll(filepath.Join(out, "sub"), 0o755)
	os.WriteFile(filepath.Join(out, "a"), make([]byte, 100), 0o644)
	os.WriteFile(filepath.Join(out, "sub", "b"), make([]byte, 23), 0o644)
	n, err := OutputSize(dir)
	if err != nil || n != 123 {
		t.Fatalf("OutputSize = %d, %v; want 123", n, err)
	}
	os.Symlink("/etc/passwd", filepath.Join(out, "sub", "link"))
	if _, err := OutputSize(dir); !errors.Is(err, ErrBadOutput) {
		t.Fatalf("symlink: err = %v, want ErrBadOutput", err)
	}
	// output/ itself replaced by a link.
	os.RemoveAll(out)
	os.Symlink("/etc", out)
	if _, err := OutputSize(dir); !errors.Is(err, ErrBadOutput) {
		t.Fatalf("output/ symlink: err = %v, want ErrBadOutput", err)
	}
}

// FuzzTaskDirName: ids come from job bodies and peers; an accepted id must
// name a directory two levels below the root, never elsewhere.
func FuzzTaskDirName(f *testing.F) {
	f.Add("job", "task", 0)
	f.Add("..", "x", 1)
	f.Add("a/b", "c", 2)
	f.Add("j", ".", -1)
	f.Fuzz(func(t *testing.T, job, task string, attempt int) {
		name, err := TaskDirName(&Task{JobID: job, TaskID: task, Attempt: attempt})
		if err != nil {
			if !errors.Is(err, ErrInvalidTask) {
				t.Fatalf("error does not wrap ErrInvalidTask: %v", err)
			}
			return
		}
		root := "/srv/tasks"
		full := filepath.Join(root, name)
		rel, err := filepath.Rel(root, full)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || strings.Count(rel, string(filepath.Separator)) != 1 ||
			filepath.Dir(rel) != job {
			t.Fatalf("ids %q/%q map to %s (rel %s)", job, task, full, rel)
		}
	})
}

func FuzzValidateParams(f *testing.F) {
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(` `))
	f.Fuzz(func(t *testing.T, p []byte) {
		if err := ValidateParams(p); err == nil {
			trimmed := strings.Trim(string(p), " \t\r\n")
			if trimmed != "" && (!json.Valid(p) || trimmed[0] != '{') {
				t.Fatalf("accepted %q", p)
			}
		} else if !errors.Is(err, ErrInvalidTask) {
			t.Fatalf("error does not wrap ErrInvalidTask: %v", err)
		}
	})
}
