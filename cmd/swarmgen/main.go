// Command swarmgen is the swarmgen CLI: run a node or a local devnet, submit
// and follow jobs, download verified results. See docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, stdio{
		in:     os.Stdin,
		out:    os.Stdout,
		err:    os.Stderr,
		outTTY: isTerminal(os.Stdout),
		errTTY: isTerminal(os.Stderr),
		width:  termWidth(os.Stdout),
	}, true)
	stop()
	os.Exit(code)
}

// isTerminal reports whether f is a character device (a terminal), which
// decides between redrawn progress bars and plain lines.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
