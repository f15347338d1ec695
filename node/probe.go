package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// Probe is what this machine offers, before and after operator limits.
type Probe struct {
	CPUMillis   int64
	MemoryTotal int64
	MemoryFree  int64
	DiskFree    int64
	GPUs        []*pb.GPU
}

// probeMachine reads CPU, memory, disk and GPUs, then applies the operator's
// limits from cfg (--cpus, --memory, --gpus). A missing GPU driver is not an
// error: the node just has no GPUs.
func probeMachine(ctx context.Context, cfg *Config) (Probe, error) {
	p := Probe{CPUMillis: int64(runtime.NumCPU()) * 1000}
	total, avail, err := readMeminfo("/proc/meminfo")
	if err != nil {
		return p, fmt.Errorf("probe memory: %w", err)
	}
	p.MemoryTotal, p.MemoryFree = total, avail
	var st syscall.Statfs_t
	if err := syscall.Statfs(cfg.DataDir, &st); err != nil {
		return p, fmt.Errorf("probe disk %s: %w", cfg.DataDir, err)
	}
	p.DiskFree = int64(st.Bavail) * int64(st.Bsize)
	p.GPUs = probeGPUs(ctx)

	if cfg.CPUs > 0 && int64(cfg.CPUs*1000) < p.CPUMillis {
		p.CPUMillis = int64(cfg.CPUs * 1000)
	}
	if cfg.Memory > 0 {
		p.MemoryTotal = min(p.MemoryTotal, cfg.Memory)
		p.MemoryFree = min(p.MemoryFree, cfg.Memory)
	}
	sel, _ := ParseGPUSelection(cfg.GPUs)
	switch {
	case sel.None:
		p.GPUs = nil
	case len(sel.IDs) > 0:
		var kept []*pb.GPU
		for i, g := range p.GPUs {
			if slices.Contains(sel.IDs, strconv.Itoa(i)) || slices.Contains(sel.IDs, g.Uuid) {
				kept = append(kept, g)
			}
		}
		p.GPUs = kept
	}
	return p, nil
}

func readMeminfo(path string) (total, avail int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "MemTotal:":
			total = kb * 1024
		case "MemAvailable:":
			avail = kb * 1024
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("%s: no MemTotal", path)
	}
	return total, avail, sc.Err()
}
