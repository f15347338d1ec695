package scheduler

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/swarmgen/swarmgen/api"
)

// checkIndexes recounts what the job keeps incrementally (needy,
// withCopies, queued, live, nCompleted) from its tasks and reports the
// first difference. FuzzCoordinator runs it after every step.
func (j *job) checkIndexes() error {
	live := map[peer.ID]int{}
	completed, needy, withCopies := 0, 0, 0
	for i, t := range j.tasks {
		if t.pos != i {
			return fmt.Errorf("%s: pos %d at %d", t.id, t.pos, i)
		}
		for _, cp := range t.copies {
			live[cp.peer]++
		}
		if t.status == api.TaskCompleted {
			completed++
		}
		if got, want := j.needy.has(i), t.needsPlacement(); got != want {
			return fmt.Errorf("%s: in needy %v, needs placement %v", t.id, got, want)
		}
		if got, want := j.withCopies.has(i), len(t.copies) > 0; got != want {
			return fmt.Errorf("%s: in withCopies %v, %d copies", t.id, got, len(t.copies))
		}
		if slices.ContainsFunc(t.copies, func(cp *attemptCopy) bool { return !cp.running }) && !j.queued.has(i) {
			return fmt.Errorf("%s: a copy not running, not in queued", t.id)
		}
		if j.needy.has(i) {
			needy++
		}
		if j.withCopies.has(i) {
			withCopies++
		}
	}
	if completed != j.nCompleted {
		return fmt.Errorf("%d tasks completed, counted %d", completed, j.nCompleted)
	}
	if !maps.Equal(live, j.live) {
		return fmt.Errorf("live copies per peer %v, counted %v", live, j.live)
	}
	if needy != j.needy.len() || withCopies != j.withCopies.len() {
		return fmt.Errorf("set sizes: needy %d (len %d), withCopies %d (len %d)", needy, j.needy.len(), withCopies, j.withCopies.len())
	}
	return nil
}

// TestTaskSet compares a taskSet with a map under random changes, across
// summary-word boundaries.
func TestTaskSet(t *testing.T) {
	for _, size := range []int{1, 63, 64, 65, 4095, 4096, 4097, 10000} {
		s := newTaskSet(size)
		ref := map[int]bool{}
		r := rand.New(rand.NewPCG(uint64(size), 1))
		for range 3 * size {
			i := r.IntN(size)
			in := r.IntN(3) != 0
			s.set(i, in)
			if in {
				ref[i] = true
			} else {
				delete(ref, i)
			}
		}
		if s.len() != len(ref) {
			t.Fatalf("size %d: len %d, want %d", size, s.len(), len(ref))
		}
		want := slices.Sorted(maps.Keys(ref))
		var got []int
		for i := s.next(0); i >= 0; i = s.next(i + 1) {
			got = append(got, i)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("size %d: walk %v, want %v", size, got, want)
		}
		if s.next(size) != -1 || s.next(size+64*64) != -1 {
			t.Fatalf("size %d: members past the end", size)
		}
		for _, i := range []int{0, size / 2, size - 1} {
			k, _ := slices.BinarySearch(want, i)
			w := -1
			if k < len(want) {
				w = want[k]
			}
			if g := s.next(i); g != w {
				t.Fatalf("size %d: next(%d) = %d, want %d", size, i, g, w)
			}
		}
	}
}
