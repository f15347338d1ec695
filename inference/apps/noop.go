package apps

import (
	"context"
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
	out, err := json.Marshal(NoopResult{App: "noop", Params: json.RawMessage(body)})
	if err != nil {
		return fmt.Errorf("noop: encode result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(env.Output, "result.json"), append(out, '\n'), 0o644); err != nil {
		return fmt.Errorf("noop: write result: %w", err)
	}
	fmt.Fprintln(env.Stdout, "::progress 1")
	return nil
}
