package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/api"
)

func jobCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:  "job",
		Usage: "submit, follow, cancel and download jobs",
		Subcommands: []*cli.Command{
			jobSubmitCommand(e),
			jobStatusCommand(e),
			jobListCommand(e),
			jobWatchCommand(e),
			jobLogsCommand(e),
			jobCancelCommand(e),
			jobGetCommand(e),
		},
	}
}

func jobSubmitCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "submit a job (POST /v1/jobs)",
		ArgsUsage: "[FILE|-]",
		Description: "Submits the job body in FILE (- reads stdin), with the flags applied on top,\n" +
			"or, without FILE, a body built from the flags alone (then --template is required).",
		Flags: []cli.Flag{
			apiFlag(),
			&cli.StringFlag{Name: "template", Aliases: []string{"t"}, EnvVars: env("template"), Usage: "template ID (sets templateID)"},
			&cli.IntFlag{Name: "replicas", Aliases: []string{"n"}, EnvVars: env("replicas"), Usage: "number of tasks (sets params.partitioner.num_replicas)"},
			&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, EnvVars: env("prompt"), Usage: "prompt (sets params.app.prompt)"},
			&cli.StringSliceFlag{Name: "set", EnvVars: env("set"), Usage: "`key=value` sets params.app.key; value is JSON if it parses, else a string (repeatable)"},
			&cli.BoolFlag{Name: "wait", Aliases: []string{"w"}, EnvVars: env("wait"), Usage: "watch the job until it ends; exit 3 if it failed, 4 if cancelled"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, EnvVars: env("output"), Usage: "download the results into `DIR` when done (implies --wait)"},
			&cli.BoolFlag{Name: "dry-run", EnvVars: env("dry-run"), Usage: "print the body that would be posted and exit"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageErrorf("job submit takes at most one FILE (got %d arguments)", c.NArg())
			}
			var file []byte
			if name := c.Args().First(); name != "" {
				var err error
				if name == "-" {
					file, err = readBody(e.io.in, "from stdin")
				} else {
					f, oerr := os.Open(name)
					if oerr != nil {
						return fmt.Errorf("job body: %w", oerr)
					}
					file, err = readBody(f, name)
					f.Close()
				}
				if err != nil {
					return err
				}
			}
			var bf bodyFlags
			if c.IsSet("template") {
				v := c.String("template")
				bf.template = &v
			}
			if c.IsSet("replicas") {
				v := c.Int("replicas")
				bf.replicas = &v
			}
			if c.IsSet("prompt") {
				v := c.String("prompt")
				bf.prompt = &v
			}
			bf.sets = c.StringSlice("set")
			body, err := composeBody(file, bf)
			if err != nil {
				return err
			}
			if c.Bool("dry-run") {
				_, err := fmt.Fprintf(e.io.out, "%s\n", body)
				return err
			}
			cl, err := e.client(c)
			if err != nil {
				return err
			}
			created, err := cl.SubmitJob(c.Context, body)
			if err != nil {
				return err
			}
			out := c.String("output")
			if !c.Bool("wait") && out == "" {
				if c.Bool("json") {
					return printJSON(e.io.out, created)
				}
				_, err := fmt.Fprintln(e.io.out, created.ID)
				return err
			}
			if !c.Bool("json") {
				fmt.Fprintf(e.io.err, "submitted job %s\n", created.ID)
			}
			progress := e.io.out
			if c.Bool("json") {
				progress = e.io.err // stdout carries only the JSON
			}
			final, code, err := watchJobs(c.Context, e, cl, []string{created.ID}, progress, e.io.outTTY && !c.Bool("json"))
			if err != nil {
				return err
			}
			if out != "" && final[0].Status == api.JobCompleted {
				if _, err := downloadJob(c.Context, e, cl, final[0], out, getOptions{maxBytes: defaultMaxDownload}); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				if err := printJSON(e.io.out, final[0]); err != nil {
					return err
				}
			}
			return jobExit(final[0], code)
		},
	}
}

// jobExit turns a terminal job into the command's exit status.
func jobExit(j api.Job, code int) error {
	if code == exitOK {
		return nil
	}
	msg := fmt.Sprintf("job %s %s", j.ID, j.Status)
	if j.Error != "" {
		msg += ": " + j.Error
	}
	return &exitErr{code: code, err: fmt.Errorf("%s", msg)}
}

func jobStatusCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show a job: status, tasks, reasons, bucket",
		ArgsUsage: "ID",
		Flags:     []cli.Flag{apiFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			id, cl, err := e.jobArg(c)
			if err != nil {
				return err
			}
			j, err := cl.Job(c.Context, id)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(e.io.out, j)
			}
			return writeJobStatus(e, j, time.Now())
		},
	}
}

// taskCounts tallies a job's tasks by status.
type taskCounts struct {
	total, done, running, queued, failed, cancelled int
}

func countTasks(ts []api.Task) taskCounts {
	var n taskCounts
	n.total = len(ts)
	for _, t := range ts {
		switch t.Status {
		case api.TaskCompleted:
			n.done++
		case api.TaskRunning, api.TaskAssigned:
			n.running++
		case api.TaskFailed:
			n.failed++
		case api.TaskCancelled:
			n.cancelled++
		default:
			n.queued++
		}
	}
	return n
}

func (n taskCounts) String() string {
	s := fmt.Sprintf("%d/%d done, %d running, %d queued", n.done, n.total, n.running, n.queued)
	if n.failed > 0 {
		s += fmt.Sprintf(", %d failed", n.failed)
	}
	if n.cancelled > 0 {
		s += fmt.Sprintf(", %d cancelled", n.cancelled)
	}
	return s
}

func writeJobStatus(e *cmdEnv, j api.Job, now time.Time) error {
	w := e.io.out
	tw := table(w)
	fmt.Fprintf(tw, "Job:\t%s\n", cell(j.ID))
	fmt.Fprintf(tw, "Status:\t%s\n", cell(j.Status))
	fmt.Fprintf(tw, "Template:\t%s\n", cell(j.TemplateID))
	fmt.Fprintf(tw, "Created:\t%s\n", ago(now, j.CreatedAt))
	if !j.FinishedAt.IsZero() {
		fmt.Fprintf(tw, "Finished:\t%s (took %s)\n", ago(now, j.FinishedAt), formatDuration(j.FinishedAt.Sub(j.CreatedAt)))
	}
	fmt.Fprintf(tw, "Tasks:\t%s\n", countTasks(j.Tasks))
	if j.Bucket != nil {
		fmt.Fprintf(tw, "Bucket:\t%s\n", cell(j.Bucket.CID))
		if j.Bucket.URL != "" {
			fmt.Fprintf(tw, "URL:\t%s\n", cell(j.Bucket.URL))
		}
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", cell(j.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(j.Reasons) > 0 {
		fmt.Fprintln(w, "Reasons:")
		for _, r := range j.Reasons {
			fmt.Fprintf(w, "  - %s\n", cell(r))
		}
	}
	if len(j.Tasks) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = table(w)
	fmt.Fprintln(tw, "INDEX\tSTATUS\tPROGRESS\tPROVIDER\tATTEMPTS\tDURATION\tRESULT\tERROR")
	for _, t := range j.Tasks {
		dur := "-"
		if !t.StartedAt.IsZero() {
			end := t.FinishedAt
			if end.IsZero() {
				end = now
			}
			dur = formatDuration(end.Sub(t.StartedAt))
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f%%\t%s\t%d\t%s\t%s\t%s\n", t.Index, cell(t.Status), t.Progress*100,
			cell(shortID(t.Provider)), t.Attempts, dur, cell(t.ResultCID), cell(truncate(t.Error, 80)))
	}
	return tw.Flush()
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

func jobListCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:    "list",
		Aliases: []string{"ls"},
		Usage:   "list the jobs this node submitted",
		Flags:   []cli.Flag{apiFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("job list takes no arguments")
			}
			cl, err := e.client(c)
			if err != nil {
				return err
			}
			jobs, err := cl.Jobs(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if jobs == nil {
					jobs = []api.Job{}
				}
				return printJSON(e.io.out, jobs)
			}
			now := time.Now()
			tw := table(e.io.out)
			fmt.Fprintln(tw, "ID\tSTATUS\tTEMPLATE\tTASKS\tCREATED\tBUCKET")
			for _, j := range jobs {
				n := countTasks(j.Tasks)
				bucket := ""
				if j.Bucket != nil {
					bucket = j.Bucket.CID
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", cell(j.ID), cell(j.Status), cell(j.TemplateID),
					n.done, n.total, ago(now, j.CreatedAt), cell(bucket))
			}
			return tw.Flush()
		},
	}
}

func jobLogsCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print the tasks' logs (stdout and stderr of the app)",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			apiFlag(), jsonFlag(),
			&cli.IntFlag{Name: "task", EnvVars: env("task"), Value: -1, Usage: "only the task with this `INDEX`"},
		},
		Action: func(c *cli.Context) error {
			id, cl, err := e.jobArg(c)
			if err != nil {
				return err
			}
			logs, err := cl.Logs(c.Context, id)
			if err != nil {
				return err
			}
			if c.IsSet("task") {
				want := c.Int("task")
				kept := logs[:0]
				for _, l := range logs {
					if l.Index == want {
						kept = append(kept, l)
					}
				}
				logs = kept
				if len(logs) == 0 {
					return fmt.Errorf("job %s has no log for task %d", id, want)
				}
			}
			if c.Bool("json") {
				if logs == nil {
					logs = []api.TaskLog{}
				}
				return printJSON(e.io.out, logs)
			}
			for i, l := range logs {
				if i > 0 {
					fmt.Fprintln(e.io.out)
				}
				head := fmt.Sprintf("== task %d (attempt %d", l.Index, l.Attempt)
				if l.Provider != "" {
					head += ", provider " + cell(l.Provider)
				}
				fmt.Fprintln(e.io.out, head+") ==")
				text := clean(l.Log)
				if text != "" && !strings.HasSuffix(text, "\n") {
					text += "\n"
				}
				fmt.Fprint(e.io.out, text)
			}
			return nil
		},
	}
}

func jobCancelCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "cancel a job (DELETE /v1/jobs/{id})",
		ArgsUsage: "ID",
		Flags:     []cli.Flag{apiFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			id, cl, err := e.jobArg(c)
			if err != nil {
				return err
			}
			j, err := cl.CancelJob(c.Context, id)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(e.io.out, j)
			}
			status := j.Status
			if status == "" {
				status = "cancel requested"
			}
			_, err = fmt.Fprintf(e.io.out, "%s %s\n", id, status)
			return err
		},
	}
}
