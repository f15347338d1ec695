package node

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// probeGPUsSMI asks nvidia-smi, for static (cgo-less) builds and machines
// where NVML cannot be loaded. No nvidia-smi means no GPUs.
func probeGPUsSMI(ctx context.Context) []*pb.GPU {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--query-gpu=name,memory.total,uuid", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil
	}
	return parseSMI(string(out))
}

// maxGPUMiB bounds a GPU's memory as nvidia-smi reports it (1 PiB: far
// past any GPU, far below where bytes overflow int64).
const maxGPUMiB = 1 << 30

func parseSMI(out string) []*pb.GPU {
	var gpus []*pb.GPU
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) != 3 {
			continue
		}
		mib, err := strconv.ParseInt(strings.TrimSpace(f[1]), 10, 64)
		// Past maxGPUMiB, mib<<20 would overflow into a negative size.
		if err != nil || mib < 0 || mib > maxGPUMiB {
			continue
		}
		gpus = append(gpus, &pb.GPU{Name: strings.TrimSpace(f[0]), Memory: mib << 20, Uuid: strings.TrimSpace(f[2])})
	}
	return gpus
}
