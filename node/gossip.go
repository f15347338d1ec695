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
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
	"github.com/swarmgen/swarmgen/scheduler"
)

// AdStats counts what happened to received ads, by outcome. Safe for
// concurrent use.
// errTableFull: an ad of a new peer found the table at scheduler.MaxEntries.
var errTableFull = errors.New("capacity table full")

type AdStats struct {
	Accepted atomic.Int64
	Stale    atomic.Int64 // replayed or out-of-order seq: ignored
	// SyncFaults counts table-sync responses that carried invalid ads (or
	// broke the response limits); the ads are also counted by reason.
	SyncFaults atomic.Int64
	mu         sync.Mutex
	rejected   map[string]int64 // by protocol.AdReasons sentinel text
}

func (s *AdStats) reject(err error) {
	reason := "other"
	if errors.Is(err, errTableFull) {
		reason = errTableFull.Error()
	}
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

// newPubSub starts GossipSub with the capacity topic's wire options
// (adWireOptions), a fast heartbeat and peer scoring calibrated for one slow
// periodic topic; docs/protocol.md explains the numbers. appScore is the
// application-specific score (P5); GossipSub calls it under its own lock.
func newPubSub(ctx context.Context, h host.Host, cfg *Config, topic string, appScore func(peer.ID) float64) (*pubsub.PubSub, error) {
	params := pubsub.DefaultGossipSubParams()
	// Ads are small and rare: a faster heartbeat forms the mesh sooner after
	// a node joins and costs little on a single topic.
	params.HeartbeatInitialDelay = 50 * time.Millisecond
	params.HeartbeatInterval = 500 * time.Millisecond
	opts := append(adWireOptions(),
		pubsub.WithGossipSubParams(params),
		pubsub.WithPeerExchange(true),
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerScore(scoreParams(topic, cfg.AdInterval, appScore), scoreThresholds()),
	)
	ps, err := pubsub.NewGossipSub(ctx, h, opts...)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	return ps, nil
}

// maxGossipMessage bounds one capacity-topic message (an ad is at most
// protocol.MaxAdSize; the rest is GossipSub framing headroom).
const maxGossipMessage = 64 << 10

// adWireOptions are the GossipSub options that every node of a pool must
// share to exchange ads. An ad carries one signature, its advertiser's
// (protocol.SignAd), so GossipSub's own message signature is left out:
// messages have no author, seqno or signature (StrictNoSign, and a message
// that carries them is rejected), and a message's ID is the SHA-256 of its
// ad bytes and signature (adMessageID), so copies of one ad are one
// message whoever forwards them and however the wrapper is encoded. The
// advertiser's signature over its peer ID is what attributes an ad to its
// origin, on gossip as on table sync; a relay can pass an ad on but not
// forge or alter one. This halves the signature checks per gossiped ad and
// lets the cheap stale check in adValidator run before any signature check.
func adWireOptions() []pubsub.Option {
	return []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(adMessageID),
		pubsub.WithMaxMessageSize(maxGossipMessage),
	}
}

// adMessageID is the GossipSub message ID on the capacity topic: the ad's
// protocol.AdID, a hash of its signed bytes and its signature. A hash of
// the message bytes let a relay mint new IDs for one ad by re-encoding its
// wrapper (an unknown field, say): each variant still validated and went
// round the pool as a new message.
func adMessageID(m *pubsubpb.Message) string {
	id := protocol.AdID(m.GetData())
	return string(id[:])
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
// appScore (P5, weight 1) penalises peers that served invalid ads by table
// sync (syncFaults), which GossipSub cannot see.
func scoreParams(topic string, adInterval time.Duration, appScore func(peer.ID) float64) *pubsub.PeerScoreParams {
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
		AppSpecificScore:            appScore,
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
// penalises the peer that forwarded it, whoever signed it), stale or
// expired ones ignored; all are counted. from is the forwarding peer, this
// node for its own publish.
func (n *Node) adValidator(ctx context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	if from == n.id {
		// Our own ad, just built and signed by nextAd.
		return pubsub.ValidationAccept
	}
	if len(msg.Data) > protocol.MaxAdSize {
		return n.rejectAd(from, fmt.Errorf("%w: %d bytes, limit %d", protocol.ErrAdOversized, len(msg.Data), protocol.MaxAdSize))
	}
	var sa pb.SignedAd
	if err := proto.Unmarshal(msg.Data, &sa); err != nil {
		return n.rejectAd(from, fmt.Errorf("%w: %v", protocol.ErrAdMalformed, err))
	}
	// Before any signature check: an ad whose seq the table already holds
	// (a late copy, a replay, our own ad coming back) is dropped. A forged
	// seq here can only make the node skip an ad, never accept one.
	if n.knownAd(&sa) {
		n.adStats.Stale.Add(1)
		return pubsub.ValidationIgnore
	}
	v, err := n.keys.VerifyAd(&sa, "", n.cfg.Pool, n.now())
	if err != nil {
		return n.rejectAd(from, err)
	}
	msg.ValidatorData = v
	return pubsub.ValidationAccept
}

// rejectAd counts an invalid ad and maps it to a GossipSub result: an
// expired ad is ignored (clock skew or slow relaying must not cost score),
// anything else rejected.
func (n *Node) rejectAd(from peer.ID, err error) pubsub.ValidationResult {
	n.adStats.reject(err)
	n.log.Debug("ad rejected", "from", from, "err", err)
	if errors.Is(err, protocol.ErrAdExpired) {
		return pubsub.ValidationIgnore
	}
	return pubsub.ValidationReject
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

// storeAd puts a verified ad into the table, counts the outcome and
// returns it.
func (n *Node) storeAd(v *protocol.VerifiedAd, via string) scheduler.UpsertResult {
	r := n.table.Upsert(v.Peer, v.Ad, v.Signed, n.now())
	switch r {
	case scheduler.Stale:
		n.adStats.Stale.Add(1)
	case scheduler.Full:
		n.adStats.reject(errTableFull)
	case scheduler.Added:
		n.adStats.Accepted.Add(1)
		n.log.Debug("peer joined capacity table", "peer", v.Peer, "via", via)
		n.notifyTable()
	default:
		n.adStats.Accepted.Add(1)
		n.notifyTable()
	}
	return r
}
