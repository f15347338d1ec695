package bucket

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// TestEntryLinksParallel: checking a bucket's entries on several
// goroutines gives the same links, in order, as on one; and with missing
// DAGs at several places the error names the first of them in order,
// whatever the goroutines' timing.
func TestEntryLinksParallel(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, newHost(t))
	entries := make([]Entry, 300)
	for i := range entries {
		root, _, err := s.ImportFiles(ctx, map[string][]byte{"result.json": []byte(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		entries[i] = Entry{Name: TaskDirName(i), Root: root}
	}
	serial, err := s.entryLinks(ctx, entries, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{2, 4, 8} {
		got, err := s.entryLinks(ctx, entries, workers)
		if err != nil {
			t.Fatalf("%d workers: %v", workers, err)
		}
		if len(got) != len(serial) || cap(got) < len(entries)+1 {
			t.Fatalf("%d workers: %d links (cap %d), want %d (cap > %d)", workers, len(got), cap(got), len(serial), len(entries))
		}
		for i := range got {
			if got[i].Name != serial[i].Name || !got[i].Cid.Equals(serial[i].Cid) || got[i].Size != serial[i].Size {
				t.Fatalf("%d workers: link %d is %+v, want %+v", workers, i, got[i], serial[i])
			}
		}
	}
	missing, _ := cid.Decode("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
	bad := append([]Entry(nil), entries...)
	for _, i := range []int{290, 77, 200} {
		bad[i].Root = missing
	}
	for range 20 {
		_, err := s.entryLinks(ctx, bad, 4)
		if !errors.Is(err, ErrMissingBlock) || !strings.Contains(err.Error(), "entry task-77:") {
			t.Fatalf("err = %v, want the missing block of task-77 (the first missing in order)", err)
		}
	}
}
