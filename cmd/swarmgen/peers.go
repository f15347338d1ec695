package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/api"
)

func peersCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:  "peers",
		Usage: "show the capacity table as the local node sees it",
		Flags: []cli.Flag{apiFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("peers takes no arguments")
			}
			cl, err := e.client(c)
			if err != nil {
				return err
			}
			peers, err := cl.Peers(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if peers == nil {
					peers = []api.Peer{}
				}
				return printJSON(e.io.out, peers)
			}
			return writePeers(e, peers, time.Now())
		},
	}
}

// writePeers prints the capacity table: self first, then by peer ID.
func writePeers(e *cmdEnv, peers []api.Peer, now time.Time) error {
	sort.SliceStable(peers, func(i, j int) bool {
		if peers[i].Self != peers[j].Self {
			return peers[i].Self
		}
		return peers[i].PeerID < peers[j].PeerID
	})
	tw := table(e.io.out)
	fmt.Fprintln(tw, "PEER\tCPU\tMEMORY\tGPUS\tEXECUTORS\tWARM\tLOAD\tLAST SEEN")
	for _, p := range peers {
		id := shortID(p.PeerID)
		if p.Self {
			id += " (self)"
		}
		load := fmt.Sprintf("%d/%d", p.Load.Running, p.Load.Slots)
		if p.Load.Queued > 0 {
			load += fmt.Sprintf(" +%d", p.Load.Queued)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			cell(id), formatCPU(p.CPU), formatSize(p.Memory), cell(formatGPUs(p.GPUs)),
			cell(strings.Join(p.Executors, ",")), cell(strings.Join(p.WarmModels, ",")),
			load, ago(now, p.LastSeen))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(peers) == 0 {
		fmt.Fprintln(e.io.err, "no peers known yet (ads arrive every --ad-interval)")
	}
	return nil
}

// formatGPUs groups identical GPUs: "2x A100 (80Gi)".
func formatGPUs(gpus []api.GPU) string {
	type key struct {
		name string
		mem  int64
	}
	var order []key
	count := map[key]int{}
	for _, g := range gpus {
		k := key{g.Name, g.Memory}
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		s := k.name
		if k.mem > 0 {
			s += " (" + formatSize(k.mem) + ")"
		}
		if n := count[k]; n > 1 {
			s = fmt.Sprintf("%dx %s", n, s)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
