package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestDevnetConverges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := StartDevnet(ctx, DevnetConfig{Nodes: 5, API: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	// The API lists all five, self first.
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/peers", d.Nodes()[0].APIAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rows []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 {
		t.Fatalf("GET /v1/peers: %d rows, want 5", len(rows))
	}
	for _, k := range []string{"peerId", "cpu", "memory", "gpus", "executors", "warmModels", "load", "lastSeen"} {
		if _, ok := rows[1][k]; !ok {
			t.Errorf("peer row lacks %q: %v", k, rows[1])
		}
	}
	if rows[0]["self"] != true || rows[0]["peerId"] != d.Nodes()[0].ID().String() {
		t.Errorf("first row is not this node: %v", rows[0])
	}
}
