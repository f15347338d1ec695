package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/api"
)

// Exit codes. They are part of the CLI's interface (docs/cli.md).
const (
	exitOK           = 0
	exitError        = 1   // the command failed (network, node error, I/O)
	exitUsage        = 2   // bad flags, arguments or configuration
	exitJobFailed    = 3   // a waited-for job ended failed
	exitJobCancelled = 4   // a waited-for job ended cancelled
	exitInterrupted  = 130 // SIGINT/SIGTERM stopped a command that was waiting
)

// defaultAPI is where a node serves its API unless told otherwise.
const defaultAPI = "127.0.0.1:5080"

// stdio is the command's terminal: streams and whether they are TTYs.
type stdio struct {
	in     io.Reader
	out    io.Writer
	err    io.Writer
	outTTY bool
	errTTY bool
	width  int // terminal columns; 0 = unknown (80 assumed when redrawing)
}

// cmdEnv is what every command reads: its streams and the logger the
// global flags configured. One per run; not shared between runs.
type cmdEnv struct {
	io  stdio
	log *slog.Logger
	// setDefaultLogger makes the configured logger slog's default, for the
	// node's packages. Only the real main does that; in-process tests don't.
	setDefaultLogger bool
}

// extraCommands are added by files built with the lead's build tags
// (node_cmds.go, app_cmd.go) so the rest compiles without them.
var extraCommands []func(*cmdEnv) *cli.Command

// exitErr carries an exit code with an error.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

// usageErrorf is an error the user fixes by changing the command line.
func usageErrorf(format string, args ...any) error {
	return &exitErr{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// env names the environment variable of a flag: SWARMGEN_<FLAG>, upper
// case, dashes as underscores.
func env(flag string) []string {
	return []string{"SWARMGEN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// run builds the app, runs it with args and returns the exit code.
func run(ctx context.Context, args []string, sio stdio, setDefaultLogger bool) int {
	e := &cmdEnv{io: sio, log: slog.New(slog.NewTextHandler(sio.err, nil)), setDefaultLogger: setDefaultLogger}
	app := newApp(e)
	var notFound, parent string
	app.CommandNotFound = func(c *cli.Context, name string) {
		notFound, parent = name, "swarmgen"
		if c.Command != nil && c.Command.Name != app.Name {
			parent += " " + c.Command.FullName()
		}
	}
	err := app.RunContext(ctx, interspersed(app, args))
	if notFound != "" && err == nil {
		err = usageErrorf("unknown command %q; run '%s --help'", notFound, parent)
	}
	if err == nil {
		return exitOK
	}
	code := exitError
	var ee *exitErr
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ec):
		code = ec.ExitCode()
		if strings.HasPrefix(err.Error(), "No help topic") {
			code = exitUsage
		}
	case strings.HasPrefix(err.Error(), "Required flag"):
		code = exitUsage // urfave's missing required flag error has no type
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		code = exitInterrupted
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(sio.err, "swarmgen: %s\n", errorText(err))
	}
	return code
}

// errorText renders an error for a person, with a hint for the common "no
// node there" case. (A node's *api.Error already leads with its field.)
func errorText(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "connection refused") {
		msg += "\n(is a node running? start one with 'swarmgen node run' or 'swarmgen devnet', or point --api at it)"
	}
	return msg
}

func newApp(e *cmdEnv) *cli.App {
	app := &cli.App{
		Name:                      "swarmgen",
		Usage:                     "peer-to-peer compute for generative-AI batch jobs",
		Version:                   version(),
		Reader:                    e.io.in,
		Writer:                    e.io.out,
		ErrWriter:                 e.io.err,
		Suggest:                   true,
		DisableSliceFlagSeparator: true, // --set prompt="a, b" keeps its comma
		HideHelpCommand:           true,
		// run() maps errors to exit codes; urfave must not call os.Exit.
		ExitErrHandler: func(*cli.Context, error) {},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "api", Value: defaultAPI, EnvVars: env("api"),
				Usage: "node API address (host:port or URL)"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("log-level"),
				Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("log-format"),
				Usage: "text or json (logs go to stderr)"},
		},
		Before: func(c *cli.Context) error {
			l, err := newLogger(e.io.err, c.String("log-level"), c.String("log-format"))
			if err != nil {
				return err
			}
			e.log = l
			if e.setDefaultLogger {
				slog.SetDefault(l)
			}
			return nil
		},
		Commands: []*cli.Command{
			peersCommand(e),
			jobCommand(e),
			templateCommand(e),
		},
	}
	for _, f := range extraCommands {
		app.Commands = append(app.Commands, f(e))
	}
	setUsageErrors(app.Commands)
	app.OnUsageError = onUsageError
	return app
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	hint := "swarmgen --help"
	if c.Command != nil && c.Command.FullName() != "" {
		hint = "swarmgen " + c.Command.FullName() + " --help"
	}
	return &exitErr{code: exitUsage, err: fmt.Errorf("%w (see '%s')", err, hint)}
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		setUsageErrors(c.Subcommands)
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErrorf("--log-format %q: want text or json", format)
}

// apiFlag is the per-command --api. It has no default and no env var of its
// own, so that an unset one falls back to the global --api (which has both).
func apiFlag() cli.Flag {
	return &cli.StringFlag{Name: "api", Usage: "node API address (default: the global --api, " + defaultAPI + ")"}
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", EnvVars: env("json"), Usage: "print JSON instead of a table"}
}

// apiAddr is the nearest --api given: the command's own if set (even to
// ""), else the global one (flag, SWARMGEN_API or default).
func apiAddr(c *cli.Context) string {
	if c.IsSet("api") {
		return c.String("api")
	}
	for _, cc := range c.Lineage() {
		if a := cc.String("api"); a != "" {
			return a
		}
	}
	return defaultAPI
}

// client returns an API client for apiAddr.
func (e *cmdEnv) client(c *cli.Context) (*api.Client, error) {
	cl, err := api.New(apiAddr(c), api.WithUserAgent("swarmgen/"+version()))
	if err != nil {
		return nil, usageErrorf("--api: %w", err)
	}
	return cl, nil
}

// jobArg reads the one job ID argument and makes the API client, for the
// commands that act on one job.
func (e *cmdEnv) jobArg(c *cli.Context) (string, *api.Client, error) {
	id, err := oneArg(c, "the job ID")
	if err != nil {
		return "", nil, err
	}
	cl, err := e.client(c)
	return id, cl, err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// oneArg returns the single positional argument named what.
func oneArg(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", usageErrorf("%s takes exactly one argument, %s (got %d)", c.Command.FullName(), what, c.NArg())
	}
	return c.Args().First(), nil
}

// interspersed lets flags follow positional arguments, as in
// "job submit job.json --replicas 3": urfave/cli v2 (like package flag)
// stops at the first positional argument, so the leaf command's positional
// arguments are moved after its flags. A "--" ends flag handling as usual.
func interspersed(app *cli.App, args []string) []string {
	if len(args) == 0 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	flags, cmds := app.Flags, app.Commands
	for len(rest) > 0 {
		// Flags of the current level, up to the next command name.
		n := flagSpan(flags, rest)
		out = append(out, rest[:n]...)
		rest = rest[n:]
		if len(rest) == 0 {
			return out
		}
		cmd := findCommand(cmds, rest[0])
		if cmd == nil {
			return append(out, rest...) // unknown command: let urfave say so
		}
		out = append(out, rest[0])
		rest = rest[1:]
		flags, cmds = cmd.Flags, cmd.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	// The leaf command: flags first, then positional arguments.
	var fl, pos []string
	for len(rest) > 0 {
		if rest[0] == "--" {
			pos = append(pos, rest...)
			break
		}
		if n := flagSpan(flags, rest); n > 0 {
			fl = append(fl, rest[:n]...)
			rest = rest[n:]
			continue
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	if len(pos) > 0 && pos[0] != "--" {
		for _, p := range pos {
			if strings.HasPrefix(p, "-") && p != "-" {
				pos = append([]string{"--"}, pos...)
				break
			}
		}
	}
	return append(append(out, fl...), pos...)
}

// flagSpan counts the leading args that are flags (with their values).
func flagSpan(flags []cli.Flag, args []string) int {
	i := 0
	for i < len(args) {
		a := args[i]
		if a == "-" || a == "--" || !strings.HasPrefix(a, "-") {
			return i
		}
		name := strings.TrimLeft(a, "-")
		i++
		if strings.Contains(name, "=") {
			continue
		}
		if f := findFlag(flags, name); f != nil && takesValue(f) && i < len(args) {
			i++
		}
	}
	return i
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	if dv, ok := f.(cli.DocGenerationFlag); ok {
		return dv.TakesValue()
	}
	return true
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
