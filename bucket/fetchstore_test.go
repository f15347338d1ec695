package bucket

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// failingCreateDir is an in-memory pack directory whose first pack
// creation fails (a full disk, say), and later ones succeed.
type failingCreateDir struct {
	*memPackDir
	failed *atomic.Bool
}

var errInjectedCreate = errors.New("injected pack creation failure")

func (d failingCreateDir) create(name string) (packWriter, error) {
	if d.failed.CompareAndSwap(false, true) {
		return nil, errInjectedCreate
	}
	return d.memPackDir.create(name)
}

// TestFetchStoreFailureNotPinned: when storing a batch received over the
// fetch stream fails, its blocks were verified (the verifier no longer
// needs them) but are not stored. The bitswap fallback then found nothing
// left to fetch, and Fetch pinned a root whose blocks were missing and
// reported success.
func TestFetchStoreFailureNotPinned(t *testing.T) {
	prov, cli := pair(t, WithInMemory())
	ctx := context.Background()
	files := map[string][]byte{"a": pseudoRandom(90, 1<<20)}
	root, _, err := prov.ImportFiles(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	cli.packs.wmu.Lock()
	cli.packs.dir = failingCreateDir{cli.packs.dir.(*memPackDir), new(atomic.Bool)}
	cli.packs.wmu.Unlock()
	err = cli.Fetch(ctx, root, prov.host.ID(), 64<<20)
	if err == nil {
		// Acceptable only if the DAG really is all here.
		checkFetched(t, cli, root, files)
		return
	}
	if !errors.Is(err, errInjectedCreate) {
		t.Fatalf("fetch: %v, want the store error", err)
	}
	pins, err := cli.Pins(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 0 {
		t.Fatalf("failed fetch left pins: %v", pins)
	}
	// The store recovers: a retry stores and pins the whole DAG.
	if err := cli.Fetch(ctx, root, prov.host.ID(), 64<<20); err != nil {
		t.Fatal(err)
	}
	checkFetched(t, cli, root, files)
}
