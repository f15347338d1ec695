package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// AdStats counts what happened to received ads, by outcome. Safe for
// concurrent use.
type AdStats struct {
	Accepted atomic.Int64
	Stale    atomic.Int64 // replayed or out-of-order seq: ignored
	mu       sync.Mutex
	rejected map[string]int64 // by protocol.AdReasons sentinel text
}

func (s *AdStats) reject(err error) {
	reason := "other"
	for _, r := range protocol.AdReasons {
		if errors.Is(err, r) {
			reason = r.Error()
			break
		}
	}
	s.mu.Lock()
	if s.rejected == nil {
		s.rejected = map[string]int64{}
	}
	s.rejected[reason]++
	s.mu.Unlock()
}

// Rejected returns a copy of the rejection counts by reason.
func (s *AdStats) Rejected() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.rejected))
	for k, v := range s.rejected {
		out[k] = v
	}
	return out
}

// newPubSub starts GossipSub with message signing (StrictSign), a small
// message size limit and peer scoring calibrated for one slow periodic topic;
// docs/protocol.md explains the numbers.
func newPubSub(ctx context.Context, h host.Host, cfg *Config, topic string) (*pubsub.PubSub, error) {
	params := pubsub.DefaultGossipSubParams()
	// Ads are small and rare: a faster heartbeat forms the mesh sooner after
	// a node joins and costs little on a single topic.
	params.HeartbeatInitialDelay = 50 * time.Millisecond
	params.HeartbeatInterval = 500 * time.Millisecond
	ps, err := pubsub.NewGossipSub(ctx, h,
		pubsub.WithGossipSubParams(params),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithMaxMessageSize(64<<10),
		pubsub.WithPeerExchange(true),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerScore(scoreParams(topic, cfg.AdInterval), scoreThresholds()),
	)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	return ps, nil
}

func scoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             -500,
		PublishThreshold:            -1000,
		GraylistThreshold:           -2500,
		AcceptPXThreshold:           10,
		OpportunisticGraftThreshold: 5,
	}
}

// scoreParams: a capacity topic carries about one message per peer per ad
// interval, so delivery-rate penalties (P3, mesh message deliveries) would
// punish honest but quiet peers and are off. What matters is that peers
// which forward invalid ads (P4) are cut off fast and for long, that peers
// which deliver new ads first (P2) and stay in the mesh (P1) are kept, and
// that many identities from one IP (P6) gain nothing, except on loopback
// where devnets live (LAN pools behind one NAT address are a known cost).
func scoreParams(topic string, adInterval time.Duration) *pubsub.PeerScoreParams {
	decay := func(d time.Duration) float64 { return pubsub.ScoreParameterDecay(d) }
	_, loop4, _ := net.ParseCIDR("127.0.0.0/8")
	_, loop6, _ := net.ParseCIDR("::1/128")
	return &pubsub.PeerScoreParams{
		Topics: map[string]*pubsub.TopicScoreParams{
			topic: {
				TopicWeight:                    1,
				TimeInMeshWeight:               0.01,
				TimeInMeshQuantum:              time.Second,
				TimeInMeshCap:                  3600,
				FirstMessageDeliveriesWeight:   1,
				FirstMessageDeliveriesDecay:    decay(10 * adInterval),
				FirstMessageDeliveriesCap:      20,
				InvalidMessageDeliveriesWeight: -100,
				InvalidMessageDeliveriesDecay:  decay(time.Hour),
			},
		},
		TopicScoreCap:               50,
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    -10,
		IPColocationFactorThreshold: 8,
		IPColocationFactorWhitelist: []*net.IPNet{loop4, loop6},
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyThreshold:   6,
		BehaviourPenaltyDecay:       decay(10 * time.Minute),
		DecayInterval:               time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 10 * time.Minute,
	}
}

// adValidator is the topic validator: every ad is decoded, checked and
// verified before GossipSub forwards it. Invalid ads are rejected (which
// penalises the forwarder's score), stale or expired ones ignored; all are
// counted.
func (n *Node) adValidator(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if author := msg.GetFrom(); author != n.id && len(msg.Data) <= protocol.MaxAdSize {
		var sa pb.SignedAd
		if proto.Unmarshal(msg.Data, &sa) == nil {
			if pid, seq, ok := peekAd(&sa); ok && pid == author && seq <= n.table.Seq(pid) {
				n.adStats.Stale.Add(1)
				return pubsub.ValidationIgnore
			}
		}
	}
	v, err := protocol.DecodeAd(msg.Data, msg.GetFrom(), n.cfg.Pool, n.now())
	if err != nil {
		n.adStats.reject(err)
		n.log.Debug("ad rejected", "from", from, "author", msg.GetFrom(), "err", err)
		if errors.Is(err, protocol.ErrAdExpired) {
			return pubsub.ValidationIgnore
		}
		return pubsub.ValidationReject
	}
	if v.Peer != n.id {
		if e, ok := n.table.Get(v.Peer); ok && v.Ad.Seq <= e.Ad.Seq {
			n.adStats.Stale.Add(1)
			return pubsub.ValidationIgnore
		}
	}
	msg.ValidatorData = v
	return pubsub.ValidationAccept
}

// readAds consumes the subscription and stores validated ads. It returns
// when ctx is done.
func (n *Node) readAds(ctx context.Context, sub *pubsub.Subscription) {
	defer sub.Cancel()
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				n.log.Error("capacity subscription ended", "err", err)
			}
			return
		}
		if v, ok := msg.ValidatorData.(*protocol.VerifiedAd); ok && v.Peer != n.id {
			n.storeAd(v, "gossip")
		}
	}
}

// storeAd puts a verified ad into the table and counts the outcome.
func (n *Node) storeAd(v *protocol.VerifiedAd, via string) {
	switch r := n.table.Upsert(v.Peer, v.Ad, v.Signed, n.now()); r {
	case scheduler.Stale:
		n.adStats.Stale.Add(1)
	case scheduler.Added:
		n.adStats.Accepted.Add(1)
		n.log.Debug("peer joined capacity table", "peer", v.Peer, "via", via)
		n.notifyTable()
	default:
		n.adStats.Accepted.Add(1)
		n.notifyTable()
	}
}
