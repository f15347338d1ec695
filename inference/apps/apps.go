// Package apps holds the built-in swarmgen apps (noop, fractal): Go
// functions that follow the app contract and run either in-process
// (inference.InProcess) or as "swarmgen app <name>" under the process or
// docker executor.
package apps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/swarmgen/swarmgen/inference"
)

// ErrUnknownApp: no built-in app has the name.
var ErrUnknownApp = errors.New("unknown app")

// app is one built-in app: its function and the params it accepts.
type app struct {
	fn     inference.AppFunc
	schema []Param
	doc    string
}

var registry = map[string]app{
	"noop":    {fn: Noop, schema: nil, doc: "writes output/result.json echoing params.json at once"},
	"fractal": {fn: Fractal, schema: FractalSchema, doc: "renders a Mandelbrot or Julia set to output/fractal.png"},
}

// Names returns the built-in app names, sorted.
func Names() []string { return slices.Sorted(maps.Keys(registry)) }

// Funcs returns name → function of every built-in app, for
// inference.NewInProcess. The map is fresh on each call.
func Funcs() map[string]inference.AppFunc {
	m := make(map[string]inference.AppFunc, len(registry))
	for k, a := range registry {
		m[k] = a.fn
	}
	return m
}

// Schema returns the params the named app accepts (nil slice: it takes any
// params and ignores them) and whether the app exists.
func Schema(name string) ([]Param, bool) {
	a, ok := registry[name]
	if !ok {
		return nil, false
	}
	return slices.Clone(a.schema), true
}

// Doc returns a one-line description of the named app.
func Doc(name string) string { return registry[name].doc }

// EnvFromContract builds an AppEnv from the SWARMGEN_* variables (as set by
// the executors) writing to stdout. SWARMGEN_TASK_DIR is required; the
// other paths default to their place inside it.
func EnvFromContract(getenv func(string) string, stdout io.Writer) (inference.AppEnv, error) {
	dir := getenv("SWARMGEN_TASK_DIR")
	if dir == "" {
		return inference.AppEnv{}, errors.New("SWARMGEN_TASK_DIR is not set: run the app under a swarmgen executor")
	}
	env := inference.NewAppEnv(dir, stdout)
	for _, v := range []struct {
		name string
		dst  *string
	}{{"SWARMGEN_PARAMS", &env.Params}, {"SWARMGEN_INPUT", &env.Input}, {"SWARMGEN_OUTPUT", &env.Output}} {
		if s := getenv(v.name); s != "" {
			*v.dst = filepath.Clean(s)
		}
	}
	return env, nil
}

// Run runs the named app with the contract taken from the process
// environment, progress lines going to stdout. It is what "swarmgen app
// <name>" calls; a non-nil error should become a non-zero exit.
func Run(ctx context.Context, name string, stdout io.Writer) error {
	a, ok := registry[name]
	if !ok {
		return fmt.Errorf("app %q (known: %v): %w", name, Names(), ErrUnknownApp)
	}
	env, err := EnvFromContract(os.Getenv, stdout)
	if err != nil {
		return fmt.Errorf("app %s: %w", name, err)
	}
	return a.fn(ctx, env)
}
