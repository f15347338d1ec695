package apps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/swarmgen/swarmgen/inference"
)

// NoopResult is what noop writes to output/result.json.
type NoopResult struct {
	App    string          `json:"app"`
	Params json.RawMessage `json:"params"` // params.json as read
	Inputs []NoopInput     `json:"inputs"` // the files in input/, so tests can check delivery
}

// NoopInput describes one file the task found in input/.
type NoopInput struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// listInputs hashes the regular files below dir (input/ is the node's,
// already size-limited; a missing dir is an empty input).
func listInputs(dir string) ([]NoopInput, error) {
	out := []NoopInput{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sum := sha256.Sum256(b)
		out = append(out, NoopInput{Path: filepath.ToSlash(rel), Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
		return nil
	})
	return out, err
}

// Noop writes output/result.json echoing params.json and reports progress
// 1. It accepts any app params. It exists to measure executor and
// scheduler overhead.
func Noop(ctx context.Context, env inference.AppEnv) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, body, err := ReadContract(env.Params)
	if err != nil {
		return fmt.Errorf("noop: %w", err)
	}
	inputs, err := listInputs(env.Input)
	if err != nil {
		return fmt.Errorf("noop: read input: %w", err)
	}
	out, err := json.Marshal(NoopResult{App: "noop", Params: json.RawMessage(body), Inputs: inputs})
	if err != nil {
		return fmt.Errorf("noop: encode result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(env.Output, "result.json"), append(out, '\n'), 0o644); err != nil {
		return fmt.Errorf("noop: write result: %w", err)
	}
	fmt.Fprintln(env.Stdout, "::progress 1")
	return nil
}
