package bucket

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ft "github.com/ipfs/boxo/ipld/unixfs"
	ipld "github.com/ipfs/go-ipld-format"
)

// TestExportRefusesHostileNames: a DAG (e.g. fetched from a peer) whose
// directory links are named "../x", "a/b" or "" must not write anything
// outside the target directory.
func TestExportRefusesHostileNames(t *testing.T) {
	s := newStore(t, nil)
	ctx := context.Background()
	file, err := importFile(s.dag, bytesReader([]byte("pwned")))
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	target := filepath.Join(base, "out")
	for _, name := range []string{"../escaped", "../../escaped", "a/b", "", ".", "..", "x\x00y", `..\escaped`, "/abs"} {
		nd := ft.EmptyDirNode()
		nd.SetCidBuilder(cidBuilder)
		if err := nd.AddRawLink(name, &ipld.Link{Name: name, Cid: file.Cid(), Size: 5}); err != nil {
			t.Fatal(err)
		}
		if err := s.dag.Add(ctx, nd); err != nil {
			t.Fatal(err)
		}
		err := s.ExportDir(ctx, nd.Cid(), target)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("export with link %q: %v, want ErrInvalidName", name, err)
		}
		if _, err := s.ListDir(ctx, nd.Cid()); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ListDir with link %q: %v, want ErrInvalidName", name, err)
		}
	}
	for _, p := range []string{filepath.Join(base, "escaped"), filepath.Join(filepath.Dir(base), "escaped"), "/abs"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("export wrote %s", p)
		}
	}
}
