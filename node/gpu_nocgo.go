//go:build !cgo || !linux

package node

import (
	"context"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

func probeGPUs(ctx context.Context) []*pb.GPU { return probeGPUsSMI(ctx) }
