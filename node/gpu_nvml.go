//go:build cgo && linux

package node

import (
	"context"
	"log/slog"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// probeGPUs lists GPUs through NVML, which go-nvml loads at run time
// (dlopen), so a machine without the driver gets an empty list.
func probeGPUs(ctx context.Context) []*pb.GPU {
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		slog.Debug("no NVML, no GPUs", "reason", nvml.ErrorString(ret))
		return probeGPUsSMI(ctx)
	}
	defer nvml.Shutdown()
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil
	}
	var out []*pb.GPU
	for i := 0; i < n; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		name, _ := d.GetName()
		uuid, _ := d.GetUUID()
		mem, ret := d.GetMemoryInfo()
		var total int64
		if ret == nvml.SUCCESS {
			total = int64(mem.Total)
		}
		out = append(out, &pb.GPU{Name: name, Uuid: uuid, Memory: total})
	}
	return out
}
