// Package protocol holds the swarmgen wire format: protocol IDs, topic names,
// the protobuf messages (package pb), signatures, size limits and the
// validation of every untrusted message before any other package sees it.
package protocol

import (
	"fmt"
	"regexp"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Version is the wire version carried by CapacityAd.version.
const Version = 1

// Stream protocol IDs. Bidding, assignment and result fetch use direct
// streams between two peers; GossipSub carries only capacity ads.
const (
	TableProtocol protocol.ID = "/swarmgen/table/1.0.0"
	TaskProtocol  protocol.ID = "/swarmgen/task/1.0.0"
	FetchProtocol protocol.ID = "/swarmgen/fetch/1.0.0"
	// TaskSessionProtocol carries many assignments from one submitter to
	// one provider and their updates, each tagged with its task; a
	// provider without it is sent each task on a TaskProtocol stream.
	TaskSessionProtocol protocol.ID = "/swarmgen/task-session/1.0.0"
)

// Size limits for untrusted bytes. They are far above what honest peers
// send, and low enough that a hostile peer cannot make a node allocate much.
const (
	MaxAdSize        = 4 << 10   // one SignedAd
	MaxTableResponse = 2 << 20   // a whole table snapshot
	MaxTableRequest  = 256 << 10 // a digest of known seqs
	MaxTaskRequest   = 1 << 20   // an Assignment carries app params
	MaxTaskUpdate    = 256 << 10 // progress, results, log lines, an inline result
	MaxInlineResult  = 128 << 10 // block bytes of a result DAG sent inline
	MaxFetchRequest  = 1 << 10
	MaxAppParams     = 256 << 10
	MaxIDLength      = 128
	MaxStringField   = 1024
	MaxListField     = 256
	MaxGPUsPerNode   = 64
	MaxLabels        = 64
	MaxTableEntries  = 4096 // peers in one table-sync digest
)

var poolName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)

// ValidatePool reports whether name is usable as a pool name (it becomes part
// of a topic name).
func ValidatePool(name string) error {
	if !poolName.MatchString(name) {
		return fmt.Errorf("pool %q: must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// CapacityTopic is the GossipSub topic on which a pool's capacity ads travel.
// Version 2: messages are unsigned at the GossipSub layer (the ad's own
// signature is the only one) with content-hash message IDs; version-1 nodes
// would reject those messages and penalise their senders, so the versions
// use different topics and a mixed pool splits cleanly.
func CapacityTopic(pool string) string {
	return "/swarmgen/" + pool + "/capacity/2"
}
