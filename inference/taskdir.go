package inference

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Names of the entries of a task directory (the app contract).
const (
	ParamsFile = "params.json"
	InputDir   = "input"
	OutputDir  = "output"
)

// Limits on the task fields that name things on disk or are decoded by apps.
const (
	// MaxIDLen bounds job and task ids: they become path components.
	MaxIDLen = 128
	// MaxParamsSize bounds the app params a task may carry (and so the
	// params.json an app has to decode).
	MaxParamsSize = 1 << 20
)

// ValidateID checks that id can be used as one path component: 1..MaxIDLen
// bytes of [A-Za-z0-9._-], not "." or "..". what names the field in errors.
func ValidateID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s id is empty: %w", what, ErrInvalidTask)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s id is %d bytes, over %d: %w", what, len(id), MaxIDLen, ErrInvalidTask)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%s id %q is a relative path element: %w", what, id, ErrInvalidTask)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%s id %q has byte %q at %d (allowed: A-Z a-z 0-9 . _ -): %w", what, id, c, i, ErrInvalidTask)
		}
	}
	return nil
}

// TaskDirName returns the directory name PrepareTaskDir uses for t below
// root: "<job>/<task>.<attempt>". It validates the ids.
func TaskDirName(t *Task) (string, error) {
	if err := ValidateID("job", t.JobID); err != nil {
		return "", err
	}
	if err := ValidateID("task", t.TaskID); err != nil {
		return "", err
	}
	if t.Attempt < 0 {
		return "", fmt.Errorf("attempt %d is negative: %w", t.Attempt, ErrInvalidTask)
	}
	return filepath.Join(t.JobID, t.TaskID+"."+strconv.Itoa(t.Attempt)), nil
}

// ValidateParams checks that p is empty or one JSON object of at most
// MaxParamsSize bytes.
func ValidateParams(p json.RawMessage) error {
	if len(p) > MaxParamsSize {
		return fmt.Errorf("app params are %d bytes, over %d: %w", len(p), MaxParamsSize, ErrInvalidTask)
	}
	// JSON's own whitespace only: bytes.TrimSpace would also drop \f or
	// U+0085, which a JSON decoder rejects, and the app would get
	// an unreadable params.json.
	trimmed := bytes.Trim(p, " \t\r\n")
	if len(trimmed) == 0 {
		return nil
	}
	if trimmed[0] != '{' || !json.Valid(p) {
		return fmt.Errorf("app params are not a JSON object: %w", ErrInvalidTask)
	}
	return nil
}

// PrepareTaskDir creates a fresh task directory for t below root (see
// TaskDirName), writes params.json per the app contract and creates empty
// input/ and output/. A directory left from an earlier run of the same
// attempt is removed first. It returns the absolute path of the directory.
// Safe for concurrent use with distinct tasks.
func PrepareTaskDir(root string, t *Task) (string, error) {
	name, err := TaskDirName(t)
	if err != nil {
		return "", err
	}
	if err := ValidateParams(t.Params); err != nil {
		return "", err
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("task dir root %q: %w", root, err)
	}
	dir := filepath.Join(absRoot, name)
	// Mkdir first: the job directory is usually there and the task's is
	// not, and on a provider running many short tasks every syscall here
	// counts (about 10 µs each on a VM).
	err = os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return "", fmt.Errorf("create job dir: %w", err)
		}
		err = os.Mkdir(dir, 0o755)
	}
	if errors.Is(err, fs.ErrExist) {
		// Left from an earlier run of the same attempt.
		if err := CleanupTaskDir(dir); err != nil {
			return "", fmt.Errorf("remove old task dir: %w", err)
		}
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("create task dir: %w", err)
	}
	for _, sub := range []string{InputDir, OutputDir} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return "", fmt.Errorf("create task %s dir: %w", sub, err)
		}
	}
	body, err := MarshalParams(t)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ParamsFile), body, 0o644); err != nil {
		return "", fmt.Errorf("write params.json: %w", err)
	}
	return dir, nil
}

// MarshalParams returns the params.json body for t:
// {"job","task","index","count","attempt","seed","app":{…}}; missing app
// params become {}.
func MarshalParams(t *Task) ([]byte, error) {
	c := *t
	if len(bytes.TrimSpace(c.Params)) == 0 {
		c.Params = json.RawMessage("{}")
	}
	body, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("encode params.json: %w", err)
	}
	return append(body, '\n'), nil
}

// CleanupTaskDir removes a task directory made by PrepareTaskDir, with
// whatever the app left in it. Removing a directory that does not exist is
// not an error.
func CleanupTaskDir(dir string) error {
	if dir == "" {
		return fmt.Errorf("cleanup task dir: empty path")
	}
	if removeTaskLayout(dir) == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("cleanup task dir: %w", err)
	}
	return nil
}

// OutputSize returns the total size of the regular files below dir/output.
// Symlinks and other non-regular files are rejected (ErrBadOutput), never
// followed: an app could otherwise export e.g. /etc/passwd through a link.
func OutputSize(dir string) (int64, error) {
	return outputSize(dir, -1)
}

// errOverLimit stops the walk early once the limit is passed.
var errOverLimit = errors.New("over limit")

// outputSize is OutputSize that stops counting once the total exceeds limit
// (limit < 0: no limit); the returned size is then > limit but partial.
func outputSize(dir string, limit int64) (int64, error) {
	root := filepath.Join(dir, OutputDir)
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file (mode %s): %w", rel, d.Type(), ErrBadOutput)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		if limit >= 0 && total > limit {
			return errOverLimit
		}
		return nil
	})
	if errors.Is(err, errOverLimit) {
		return total, nil
	}
	if err != nil {
		return total, fmt.Errorf("measure output: %w", err)
	}
	return total, nil
}
