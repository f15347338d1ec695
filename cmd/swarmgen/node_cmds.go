package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/node"
)

func init() {
	buildVersion = node.Version
	extraCommands = append(extraCommands, nodeCommand, devnetCommand, idCommand)
}

func dataDirFlag(def string) cli.Flag {
	return &cli.StringFlag{Name: "data-dir", Value: def, EnvVars: env("data-dir"), Usage: "identity, blocks and task dirs live here"}
}

func nodeCommand(e *cmdEnv) *cli.Command {
	def := node.DefaultConfig()
	return &cli.Command{
		Name:  "node",
		Usage: "run a node",
		Subcommands: []*cli.Command{{
			Name:  "run",
			Usage: "join the network, offer capacity and serve the API until SIGINT/SIGTERM",
			Flags: []cli.Flag{
				dataDirFlag(def.DataDir),
				&cli.StringSliceFlag{Name: "listen", EnvVars: env("listen"), Value: cli.NewStringSlice(def.Listen...), Usage: "multiaddrs to listen on (repeatable or comma-separated)"},
				&cli.StringSliceFlag{Name: "bootstrap", EnvVars: env("bootstrap"), Usage: "full multiaddrs (…/p2p/<id>) of peers to join through (repeatable or comma-separated)"},
				&cli.StringFlag{Name: "pool", Value: def.Pool, EnvVars: env("pool"), Usage: "pool name; nodes only see peers of the same pool"},
				&cli.StringFlag{Name: "psk-file", EnvVars: env("psk-file"), Usage: "private network key file; peers without it cannot connect"},
				apiFlag(),
				&cli.StringFlag{Name: "gateway", EnvVars: env("gateway"), Usage: "HTTP gateway `HOST:PORT` (empty = off)"},
				&cli.StringFlag{Name: "executor", Value: def.Executor, EnvVars: env("executor"), Usage: "process or docker"},
				&cli.Float64Flag{Name: "cpus", EnvVars: env("cpus"), Usage: "cores offered (0 = all)"},
				&cli.StringFlag{Name: "memory", EnvVars: env("memory"), Usage: "memory offered: bytes or 512M, 8Gi… (empty = all)"},
				&cli.StringFlag{Name: "gpus", Value: def.GPUs, EnvVars: env("gpus"), Usage: "all, none, or a comma list of indices/UUIDs"},
				&cli.DurationFlag{Name: "ad-interval", Value: def.AdInterval, EnvVars: env("ad-interval"), Usage: "how often the capacity ad is published"},
				&cli.BoolFlag{Name: "dht", EnvVars: env("dht"), Usage: "run a Kademlia DHT for wide-area discovery"},
				&cli.BoolFlag{Name: "no-mdns", EnvVars: env("no-mdns"), Usage: "no LAN discovery"},
				&cli.BoolFlag{Name: "no-nat", EnvVars: env("no-nat"), Usage: "no port mapping, AutoNAT or hole punching"},
				&cli.IntFlag{Name: "slots", EnvVars: env("slots"), Usage: "tasks run at once (0 = derived from --cpus)"},
				&cli.StringSliceFlag{Name: "label", EnvVars: env("label"), Usage: "`key=value` label advertised to job constraints (repeatable or comma-separated)"},
				&cli.StringSliceFlag{Name: "templates", EnvVars: env("templates"), Usage: "only run these templates as a provider (default: any built-in)"},
				&cli.StringSliceFlag{Name: "allow-images", EnvVars: env("allow-images"), Usage: "only run these container images with the docker executor (default: any a template names)"},
				&cli.BoolFlag{Name: "no-provide", EnvVars: env("no-provide"), Usage: "take no tasks from others (submit only)"},
				&cli.StringFlag{Name: "python", EnvVars: env("python"), Usage: "Python interpreter for Python apps (Stable Diffusion)"},
				&cli.StringFlag{Name: "template-dir", EnvVars: env("template-dir"), Usage: "load extra templates from this directory"},
				&cli.StringFlag{Name: "task-dir", EnvVars: env("task-dir"), Usage: "make task directories here (default <data-dir>/tasks; a tmpfs makes small tasks cheaper)"},
				&cli.Int64Flag{Name: "price-per-task", EnvVars: env("price-per-task"), Usage: "asking price per task, in micro-units"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() != 0 {
					return usageErrorf("node run takes no arguments (got %q)", c.Args().Slice())
				}
				cfg, err := nodeConfig(c)
				if err != nil {
					return err
				}
				if err := cfg.Validate(); err != nil {
					return usageErrorf("invalid configuration:\n%w", err)
				}
				n, err := node.New(c.Context, cfg, node.WithLogger(e.log))
				if err != nil {
					return fmt.Errorf("starting node: %w", err)
				}
				info := n.Info()
				fmt.Fprintf(e.io.out, "peer ID: %s\npool:    %s\n", info.PeerID, info.Pool)
				for _, a := range info.Addrs {
					fmt.Fprintf(e.io.out, "listen:  %s\n", a)
				}
				if a := n.APIAddr(); a != "" {
					fmt.Fprintf(e.io.out, "api:     http://%s\n", a)
				}
				if info.Gateway != "" {
					fmt.Fprintf(e.io.out, "gateway: %s\n", info.Gateway)
				}
				<-c.Context.Done()
				e.log.Info("shutting down")
				if err := n.Close(); err != nil {
					return fmt.Errorf("closing node: %w", err)
				}
				return nil
			},
		}},
	}
}

// splitList flattens repeated and comma-separated flag values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// nodeConfig maps the node run flags onto node.DefaultConfig().
func nodeConfig(c *cli.Context) (node.Config, error) {
	cfg := node.DefaultConfig()
	cfg.DataDir = c.String("data-dir")
	cfg.Listen = splitList(c.StringSlice("listen"))
	cfg.Bootstrap = splitList(c.StringSlice("bootstrap"))
	cfg.Pool = c.String("pool")
	cfg.PSKFile = c.String("psk-file")
	cfg.API = apiAddr(c) // an explicit --api "" turns the API off
	cfg.Gateway = c.String("gateway")
	cfg.Executor = c.String("executor")
	cfg.CPUs = c.Float64("cpus")
	if s := c.String("memory"); s != "" {
		m, err := parseSize(s)
		if err != nil {
			return cfg, usageErrorf("--memory: %w", err)
		}
		cfg.Memory = m
	}
	cfg.GPUs = c.String("gpus")
	cfg.AdInterval = c.Duration("ad-interval")
	cfg.DHT = c.Bool("dht")
	cfg.MDNS = !c.Bool("no-mdns")
	cfg.NAT = !c.Bool("no-nat")
	cfg.Slots = c.Int("slots")
	for _, kv := range splitList(c.StringSlice("label")) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cfg, usageErrorf("--label %q: want key=value", kv)
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[k] = v
	}
	cfg.Templates = splitList(c.StringSlice("templates"))
	cfg.AllowImages = splitList(c.StringSlice("allow-images"))
	cfg.Provide = !c.Bool("no-provide")
	cfg.Python = c.String("python")
	cfg.TemplateDir = c.String("template-dir")
	cfg.TaskDir = c.String("task-dir")
	cfg.PricePerTaskMicros = c.Int64("price-per-task")
	if cfg.PricePerTaskMicros < 0 {
		return cfg, usageErrorf("--price-per-task %d: must be >= 0", cfg.PricePerTaskMicros)
	}
	return cfg, nil
}

func devnetCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:  "devnet",
		Usage: "run N connected nodes in this process on loopback; node 0 serves the API and gateway",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, EnvVars: env("nodes"), Usage: "number of nodes"},
			apiFlag(),
			&cli.StringFlag{Name: "gateway", Value: "127.0.0.1:8080", EnvVars: env("gateway"), Usage: "node 0's gateway `HOST:PORT` (empty = off)"},
			&cli.StringFlag{Name: "data-dir", EnvVars: env("data-dir"), Usage: "root of the nodes' data dirs (default: a temp dir removed at exit)"},
			&cli.StringFlag{Name: "pool", Value: "devnet", EnvVars: env("pool"), Usage: "pool name"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("devnet takes no arguments")
			}
			startCtx, cancel := context.WithTimeout(c.Context, time.Minute)
			defer cancel()
			d, err := node.StartDevnet(startCtx, node.DevnetConfig{
				Nodes:   c.Int("nodes"),
				API:     apiAddr(c),
				Gateway: c.String("gateway"),
				DataDir: c.String("data-dir"),
				Pool:    c.String("pool"),
				Logger:  e.log,
			})
			if err != nil {
				return fmt.Errorf("starting devnet: %w", err)
			}
			nodes := d.Nodes()
			fmt.Fprintf(e.io.out, "devnet: %d nodes in pool %q\n", len(nodes), c.String("pool"))
			for i, n := range nodes {
				fmt.Fprintf(e.io.out, "  node %d  %s\n", i, n.ID())
			}
			api := nodes[0].APIAddr()
			fmt.Fprintf(e.io.out, "api:     http://%s\n", api)
			if g := nodes[0].Info().Gateway; g != "" {
				fmt.Fprintf(e.io.out, "gateway: %s\n", g)
			}
			fmt.Fprintf(e.io.out, "try:     swarmgen --api %s job submit --template fractal --replicas 4 --wait\n", api)
			fmt.Fprintln(e.io.out, "Ctrl-C stops the devnet.")
			<-c.Context.Done()
			e.log.Info("stopping devnet")
			if err := d.Close(); err != nil {
				return fmt.Errorf("closing devnet: %w", err)
			}
			return nil
		},
	}
}

func idCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:  "id",
		Usage: "print this node's peer ID (creates the key if absent)",
		Flags: []cli.Flag{dataDirFlag(node.DefaultConfig().DataDir)},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("id takes no arguments")
			}
			_, id, err := node.LoadOrCreateIdentity(c.String("data-dir"))
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.io.out, id)
			return err
		},
	}
}
