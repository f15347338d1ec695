package protocol

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// SignResult marshals r and signs it with the provider's key.
func SignResult(key crypto.PrivKey, r *pb.TaskResult) (*pb.SignedResult, error) {
	b, err := proto.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshal result: %w", err)
	}
	sig, err := sign(key, domainResult, b)
	if err != nil {
		return nil, err
	}
	return &pb.SignedResult{Result: b, Signature: sig}, nil
}

// VerifyResult decodes a SignedResult received from provider, checks that the
// provider signed it and that it names the provider, the job, task and attempt
// the receiver expects.
func VerifyResult(s *pb.SignedResult, provider peer.ID, jobID, taskID string, attempt int32) (*pb.TaskResult, error) {
	return (*KeyCache)(nil).VerifyResult(s, provider, jobID, taskID, attempt)
}

// VerifyResult is the package's VerifyResult with the keys of k (a
// submitter checks many results from each provider).
func (k *KeyCache) VerifyResult(s *pb.SignedResult, provider peer.ID, jobID, taskID string, attempt int32) (*pb.TaskResult, error) {
	if s == nil || len(s.Result) == 0 {
		return nil, fmt.Errorf("result: empty")
	}
	var r pb.TaskResult
	if err := proto.Unmarshal(s.Result, &r); err != nil {
		return nil, fmt.Errorf("result: decode: %w", err)
	}
	pid, err := peer.IDFromBytes(r.Provider)
	if err != nil {
		return nil, fmt.Errorf("result: provider: %w", err)
	}
	if pid != provider {
		return nil, fmt.Errorf("result: names provider %s, came from %s", pid, provider)
	}
	if err := verify(k, pid, domainResult, s.Result, s.Signature); err != nil {
		return nil, fmt.Errorf("result: %w", err)
	}
	if r.JobId != jobID || r.TaskId != taskID || r.Attempt != attempt {
		return nil, fmt.Errorf("result: for %s/%s attempt %d, expected %s/%s attempt %d",
			r.JobId, r.TaskId, r.Attempt, jobID, taskID, attempt)
	}
	if r.Success && len(r.RootCid) == 0 {
		return nil, fmt.Errorf("result: success without root_cid")
	}
	if len(r.Error) > MaxStringField*4 {
		return nil, fmt.Errorf("result: error text %d bytes, limit %d", len(r.Error), MaxStringField*4)
	}
	return &r, nil
}
