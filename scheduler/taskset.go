package scheduler

import "math/bits"

// taskSet is a set of a job's task positions that yields them in order.
// The Coordinator keeps its jobs' working sets in these (tasks that need a
// peer, tasks with live copies...) so that an event costs the same at any
// job size: scanning every task per event made a job O(tasks²).
//
// It is a bitmap with a summary bit per word, so next skips 4096
// positions per summary word: about 3 words to scan for a 10 000-task job.
// The zero value is an empty set of capacity 0; make one with newTaskSet.
type taskSet struct {
	words []uint64
	sum   []uint64 // bit w is set iff words[w] != 0
	n     int      // members
}

func newTaskSet(size int) taskSet {
	nw := (size + 63) / 64
	return taskSet{words: make([]uint64, nw), sum: make([]uint64, (nw+63)/64)}
}

func (s *taskSet) has(i int) bool { return s.words[i>>6]&(1<<(i&63)) != 0 }

// len returns the number of members.
func (s *taskSet) len() int { return s.n }

func (s *taskSet) add(i int) {
	w := i >> 6
	if s.words[w]&(1<<(i&63)) != 0 {
		return
	}
	s.words[w] |= 1 << (i & 63)
	s.sum[w>>6] |= 1 << (w & 63)
	s.n++
}

func (s *taskSet) remove(i int) {
	w := i >> 6
	if s.words[w]&(1<<(i&63)) == 0 {
		return
	}
	s.words[w] &^= 1 << (i & 63)
	if s.words[w] == 0 {
		s.sum[w>>6] &^= 1 << (w & 63)
	}
	s.n--
}

// set adds i if in, else removes it.
func (s *taskSet) set(i int, in bool) {
	if in {
		s.add(i)
	} else {
		s.remove(i)
	}
}

// next returns the smallest member ≥ i, or -1. Members added or removed
// during a walk (for i := s.next(0); i >= 0; i = s.next(i + 1)) are seen
// or not according to their position, as in a walk over a slice.
func (s *taskSet) next(i int) int {
	if i < 0 {
		i = 0
	}
	w := i >> 6
	if w >= len(s.words) {
		return -1
	}
	if m := s.words[w] & (^uint64(0) << (i & 63)); m != 0 {
		return w<<6 + bits.TrailingZeros64(m)
	}
	// The next non-empty word after w, from the summary.
	w++
	for sw := w >> 6; sw < len(s.sum); sw++ {
		m := s.sum[sw]
		if sw == w>>6 {
			m &= ^uint64(0) << (w & 63)
		}
		if m != 0 {
			nw := sw<<6 + bits.TrailingZeros64(m)
			return nw<<6 + bits.TrailingZeros64(s.words[nw])
		}
	}
	return -1
}
