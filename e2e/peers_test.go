package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Three separate `swarmgen node run` processes on loopback, bootstrapped
// from the first, each list all three in `peers --json` within 15 s.
func TestThreeProcessesSeeEachOther(t *testing.T) {
	dir := t.TempDir()
	first := startNode(t, filepath.Join(dir, "0"))
	var info struct {
		PeerID string   `json:"peerId"`
		Addrs  []string `json:"addrs"`
	}
	if err := first.cli(t, nil, "peers"); err != nil { // the readable table works too
		t.Fatal(err)
	}
	if err := getJSON(fmt.Sprintf("http://%s/v1/node", first.api), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Addrs) == 0 {
		t.Fatal("first node has no addresses")
	}
	start := time.Now()
	nodes := []*proc{first}
	for i := 1; i < 3; i++ {
		nodes = append(nodes, startNode(t, filepath.Join(dir, fmt.Sprint(i)), "--bootstrap", info.Addrs[0]))
	}
	for i, n := range nodes {
		eventually(t, 15*time.Second-time.Since(start), fmt.Sprintf("node %d to list 3 peers", i), func() bool {
			var rows []map[string]any
			return n.cli(t, &rows, "peers", "--json") == nil && len(rows) == 3
		})
	}
	t.Logf("all three see each other after %s", time.Since(start).Round(time.Millisecond))
}
