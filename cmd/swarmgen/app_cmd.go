package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/inference/apps"
)

func init() { extraCommands = append(extraCommands, appCommand) }

// appCommand runs a built-in app in this process under the app contract:
// the process executor starts "swarmgen app <name>" in the task directory
// with the SWARMGEN_* variables set.
func appCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "app",
		Usage:     "run a built-in app on the task directory in $SWARMGEN_TASK_DIR (used by executors)",
		ArgsUsage: "NAME",
		Description: "With no NAME, lists the built-in apps. The app reads params.json and input/ and writes\n" +
			"output/ of the task directory; stdout is the task log (\"::progress 0.42\" lines report progress).",
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				tw := table(e.io.out)
				fmt.Fprintln(tw, "APP\tDESCRIPTION")
				for _, n := range apps.Names() {
					fmt.Fprintf(tw, "%s\t%s\n", n, apps.Doc(n))
				}
				return tw.Flush()
			}
			name, err := oneArg(c, "the app name")
			if err != nil {
				return err
			}
			return apps.Run(c.Context, name, e.io.out)
		},
	}
}
