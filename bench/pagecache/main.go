//go:build linux

// Command pagecache measures what appending a file in 4 MiB pwrites costs
// the writer, in CPU milliseconds per MB, plain and into a file
// preallocated with fallocate (FALLOC_FL_KEEP_SIZE), as bucket packs now
// are ahead of large appends; rounds alternate the two. The figures from
// the project's VM (ext4) are in docs/benchmarks.md.
//
// With -idle D it then waits D and writes twice more (preallocated): the
// first of these gets pages that were freed D ago, the second pages freed
// a moment ago. On the project's VM free memory goes back to the host a
// couple of seconds after it is freed (virtio-balloon free page
// reporting), and a page's next use then costs a fault on the host side:
// that shows as a first write several times as dear as the second (and as
// the first round, in a fresh process).
//
//	go run ./bench/pagecache -dir /tmp -mb 256 -rounds 3 -idle 10s
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const slab = 4 << 20 // a fetch appends 4 MiB slabs

func main() {
	dir := flag.String("dir", os.TempDir(), "directory to write into (the filesystem under test)")
	mb := flag.Int("mb", 256, "MB written per measurement")
	rounds := flag.Int("rounds", 3, "rounds of the three measurements")
	idle := flag.Duration("idle", 0, "then wait this long and write twice more (0: don't)")
	flag.Parse()
	work, err := os.MkdirTemp(*dir, "pagecache-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	src := make([]byte, *mb<<20)
	for i := range src {
		src[i] = byte(i*7 + i>>12)
	}
	n := 0
	path := func() string { n++; return filepath.Join(work, fmt.Sprint(n)) }
	fmt.Printf("%-22s %10s %10s\n", "", "CPU ms/MB", "wall ms/MB")
	for r := 1; r <= *rounds; r++ {
		for _, falloc := range []bool{false, true} {
			name := fmt.Sprintf("round %d, plain", r)
			if falloc {
				name = fmt.Sprintf("round %d, fallocate", r)
			}
			p := path()
			report(name, write(p, src, falloc))
			must(os.Remove(p))
		}
	}
	if *idle <= 0 {
		return
	}
	time.Sleep(*idle)
	for _, name := range []string{fmt.Sprintf("after %s idle, fallocate", *idle), "again at once, fallocate"} {
		p := path()
		report(name, write(p, src, true))
		must(os.Remove(p))
	}
}

type result struct {
	cpu, wall time.Duration
	mb        float64
}

func report(name string, r result) {
	fmt.Printf("%-28s %10.2f %10.2f\n", name, float64(r.cpu.Microseconds())/1000/r.mb, float64(r.wall.Microseconds())/1000/r.mb)
}

// write appends src to a new file at path in slab-sized pwrites; with
// falloc it reserves the file's blocks first, as a pack does.
func write(path string, src []byte, falloc bool) result {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	must(err)
	defer f.Close()
	c0, t0 := cpu(), time.Now()
	if falloc {
		_ = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, int64(len(src)))
	}
	for off := 0; off < len(src); off += slab {
		_, err := f.WriteAt(src[off:min(off+slab, len(src))], int64(off))
		must(err)
	}
	return result{cpu: cpu() - c0, wall: time.Since(t0), mb: float64(len(src)) / (1 << 20)}
}

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
