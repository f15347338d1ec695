package node

import (
	"crypto/rand"
	"testing"
	"time"

	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/swarmgen/swarmgen/protocol"
	"github.com/swarmgen/swarmgen/protocol/pb"
)

// TestAdMessageIDIgnoresReencoding: a relay that re-encodes an ad's
// SignedAd wrapper (an unknown field appended, fields reordered or
// repeated, a length written as a longer varint) passes an ad that still
// validates, and must not mint a new GossipSub message ID with it: every
// node would deliver, validate and forward each variant as a new message.
// (The ID was the SHA-256 of the message bytes.) A copy with another
// signature is another message.
func TestAdMessageIDIgnoresReencoding(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	sa := signedTestAd(t, key, 7)
	canonical, err := proto.Marshal(sa)
	if err != nil {
		t.Fatal(err)
	}
	field := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	variants := map[string][]byte{
		"unknown field":  field(append([]byte(nil), canonical...), 99, []byte("relay was here")),
		"reordered":      field(field(nil, 2, sa.Signature), 1, sa.Ad),
		"repeated field": field(field(field(nil, 1, []byte("junk")), 2, sa.Signature), 1, sa.Ad),
		"long varint": append(field(nil, 2, sa.Signature),
			append(protowire.AppendTag(nil, 1, protowire.BytesType),
				append([]byte{byte(len(sa.Ad)) | 0x80, byte(len(sa.Ad)>>7) | 0x80, 0}, sa.Ad...)...)...),
	}
	id := adMessageID(&pubsubpb.Message{Data: canonical})
	now := time.Now()
	for name, data := range variants {
		if _, err := protocol.DecodeAd(data, "", "test", now); err != nil {
			t.Fatalf("%s: variant does not validate, so it proves nothing: %v", name, err)
		}
		if got := adMessageID(&pubsubpb.Message{Data: data}); got != id {
			t.Errorf("%s: re-encoded ad has a new message ID", name)
		}
	}
	bad := proto.Clone(sa).(*pb.SignedAd)
	bad.Signature[0] ^= 1
	badData, _ := proto.Marshal(bad)
	if adMessageID(&pubsubpb.Message{Data: badData}) == id {
		t.Error("a copy with a corrupted signature shares the valid ad's message ID")
	}
	if adMessageID(&pubsubpb.Message{Data: []byte("not an ad")}) == adMessageID(&pubsubpb.Message{Data: []byte("not an ad either")}) {
		t.Error("undecodable messages share an ID")
	}
}
