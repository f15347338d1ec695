package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/api"
)

func templateCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:  "template",
		Usage: "list and show job templates",
		Subcommands: []*cli.Command{
			{
				Name:    "list",
				Aliases: []string{"ls"},
				Usage:   "list the templates the node knows",
				Flags:   []cli.Flag{apiFlag(), jsonFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return usageErrorf("template list takes no arguments")
					}
					cl, err := e.client(c)
					if err != nil {
						return err
					}
					ts, err := cl.Templates(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						if ts == nil {
							ts = []api.Template{}
						}
						return printJSON(e.io.out, ts)
					}
					tw := table(e.io.out)
					fmt.Fprintln(tw, "ID\tALIASES\tPARTITIONER\tSOURCE\tDESCRIPTION")
					for _, t := range ts {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(t.ID), cell(shortList(t.Aliases, 3)),
							cell(t.Partitioner), cell(t.Source), cell(truncate(t.Description, 60)))
					}
					return tw.Flush()
				},
			},
			{
				Name:      "show",
				Usage:     "show one template: app, parameters with defaults, resources",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{apiFlag(), jsonFlag()},
				Action: func(c *cli.Context) error {
					id, err := oneArg(c, "the template ID")
					if err != nil {
						return err
					}
					cl, err := e.client(c)
					if err != nil {
						return err
					}
					t, err := cl.Template(c.Context, id)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(e.io.out, t)
					}
					w := e.io.out
					tw := table(w)
					fmt.Fprintf(tw, "ID:\t%s\n", cell(t.ID))
					if len(t.Aliases) > 0 {
						fmt.Fprintf(tw, "Aliases:\t%s\n", cell(strings.Join(t.Aliases, ", ")))
					}
					fmt.Fprintf(tw, "Description:\t%s\n", cell(t.Description))
					fmt.Fprintf(tw, "Partitioner:\t%s\n", cell(t.Partitioner))
					fmt.Fprintf(tw, "Assembler:\t%s\n", cell(t.Assembler))
					fmt.Fprintf(tw, "Source:\t%s\n", cell(t.Source))
					if err := tw.Flush(); err != nil {
						return err
					}
					for _, s := range []struct {
						name string
						raw  json.RawMessage
					}{{"App", t.App}, {"Params", t.Params}, {"Resources", t.Resources}} {
						if len(bytes.TrimSpace(s.raw)) == 0 || string(s.raw) == "null" {
							continue
						}
						var buf bytes.Buffer
						if err := json.Indent(&buf, s.raw, "  ", "  "); err != nil {
							buf.Reset()
							buf.Write(s.raw)
						}
						fmt.Fprintf(w, "%s:\n  %s\n", s.name, clean(buf.String()))
					}
					return nil
				},
			},
		},
	}
}

// shortList joins the first n items and counts the rest: "a,b,c +7".
func shortList(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ",")
	}
	return fmt.Sprintf("%s +%d", strings.Join(items[:n], ","), len(items)-n)
}
