package inference

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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

// TestCleanupTaskDirLayouts: whatever an app leaves in its task directory
// goes, through the fast path or the fallback, and nothing a link points
// at outside the directory is touched.
func TestCleanupTaskDirLayouts(t *testing.T) {
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		fast   bool // the Linux fast path removes it by itself
		mangle func(t *testing.T, dir string)
	}{
		{"as prepared", true, func(*testing.T, string) {}},
		{"output files", true, func(t *testing.T, dir string) {
			for i := range 300 { // more names than one getdents buffer holds
				name := fmt.Sprintf("image-%03d-%s.png", i, strings.Repeat("n", 40))
				must(t, os.WriteFile(filepath.Join(dir, "output", name), []byte("png"), 0o644))
			}
			must(t, os.WriteFile(filepath.Join(dir, "input", "prompt.txt"), []byte("p"), 0o644))
		}},
		{"no input dir", true, func(t *testing.T, dir string) { must(t, os.Remove(filepath.Join(dir, "input"))) }},
		{"link in output", true, func(t *testing.T, dir string) {
			must(t, os.Symlink(outside, filepath.Join(dir, "output", "escape")))
		}},
		{"nested output", false, func(t *testing.T, dir string) {
			must(t, os.MkdirAll(filepath.Join(dir, "output", "a", "b"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "output", "a", "b", "c"), []byte("c"), 0o644))
		}},
		{"output is a link", false, func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "output")))
			must(t, os.Symlink(outside, filepath.Join(dir, "output")))
		}},
		{"extra file at the top", false, func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "app.log"), []byte("l"), 0o644))
		}},
		{"read-only output", true, func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "output", "f"), []byte("f"), 0o444))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := PrepareTaskDir(t.TempDir(), &Task{JobID: "j", TaskID: "t", Attempt: 1})
			must(t, err)
			tc.mangle(t, dir)
			if runtime.GOOS == "linux" {
				err := removeTaskLayout(dir)
				if tc.fast && err != nil {
					t.Fatalf("fast path: %v", err)
				}
				if !tc.fast && err == nil {
					t.Fatal("fast path removed a layout it should leave to os.RemoveAll")
				}
			}
			must(t, CleanupTaskDir(dir))
			if _, err := os.Lstat(dir); !os.IsNotExist(err) {
				t.Fatalf("task dir still there: %v", err)
			}
			if b, err := os.ReadFile(keep); err != nil || string(b) != "x" {
				t.Fatalf("file outside the task dir: %q, %v", b, err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkTaskDir: prepare a task directory, write one output file,
// remove it — CleanupTaskDir against plain os.RemoveAll.
//
//	go test -run '^$' -bench TaskDir ./inference
func BenchmarkTaskDir(b *testing.B) {
	root := b.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "swarmgen-bench-"); err == nil {
			root = d
			b.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	for _, tc := range []struct {
		name    string
		cleanup func(string) error
	}{{"CleanupTaskDir", CleanupTaskDir}, {"RemoveAll", os.RemoveAll}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				dir, err := PrepareTaskDir(root, &Task{JobID: "j", TaskID: "t", Attempt: i + 1})
				if err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, OutputDir, "out.json"), []byte("{}"), 0o644); err != nil {
					b.Fatal(err)
				}
				if err := tc.cleanup(dir); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
