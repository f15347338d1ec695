package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	dutil "github.com/libp2p/go-libp2p/p2p/discovery/util"
)

func peerIDString(b []byte) string {
	p, err := peer.IDFromBytes(b)
	if err != nil {
		return ""
	}
	return p.String()
}

type mdnsNotifee struct{ n *Node }

// HandlePeerFound connects to a peer found on the LAN.
func (m mdnsNotifee) HandlePeerFound(pi peer.AddrInfo) {
	if pi.ID == m.n.id {
		return
	}
	m.n.goRun("mdns-connect", func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := m.n.host.Connect(ctx, pi); err != nil {
			m.n.log.Debug("mdns connect", "peer", pi.ID, "err", err)
		}
	})
}

func (n *Node) startMDNS() error {
	svc := mdns.NewMdnsService(n.host, "swarmgen-"+n.cfg.Pool, mdnsNotifee{n})
	if err := svc.Start(); err != nil {
		return fmt.Errorf("mdns: %w", err)
	}
	n.closers = append(n.closers, svc.Close)
	return nil
}

// startDHT runs a Kademlia DHT (auto client/server) and uses it to find
// other nodes of the pool by a rendezvous key, for wide-area discovery.
func (n *Node) startDHT() error {
	var boot []peer.AddrInfo
	for _, a := range n.cfg.Bootstrap {
		pi, err := peer.AddrInfoFromString(a)
		if err == nil {
			boot = append(boot, *pi)
		}
	}
	kad, err := dht.New(n.host, dht.Mode(dht.ModeAutoServer), dht.BootstrapPeers(boot...),
		dht.ProtocolPrefix("/swarmgen"))
	if err != nil {
		return fmt.Errorf("dht: %w", err)
	}
	n.closers = append(n.closers, kad.Close)
	if err := kad.Bootstrap(n.ctx); err != nil {
		return fmt.Errorf("dht bootstrap: %w", err)
	}
	rd := drouting.NewRoutingDiscovery(kad)
	ns := "swarmgen/" + n.cfg.Pool
	n.goRun("dht-discovery", func(ctx context.Context) {
		dutil.Advertise(ctx, rd, ns)
		for {
			ch, err := rd.FindPeers(ctx, ns)
			if err == nil {
				for pi := range ch {
					if pi.ID == n.id || len(pi.Addrs) == 0 {
						continue
					}
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_ = n.host.Connect(cctx, pi)
					cancel()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(30 * time.Second):
			}
		}
	})
	return nil
}

// dockerReachable pings the docker daemon on its default socket.
func dockerReachable(ctx context.Context) bool {
	c := http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", "/var/run/docker.sock")
		}},
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
