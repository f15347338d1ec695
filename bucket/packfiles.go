package bucket

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// packDir is where pack files live: a directory (osPackDir) or memory
// (memPackDir, for WithInMemory). Implementations are safe for concurrent
// use; a packWriter is used by one goroutine at a time (packStore.wmu or
// syncMu), readers concurrently.
type packDir interface {
	create(name string) (packWriter, error)
	open(name string) (packReader, error)
	remove(name string) error
	list() ([]string, error)
	// trimTail releases space allocated past size at the end of the named
	// pack (left by reserve before a crash); best effort.
	trimTail(name string, size int64)
	// sync makes the directory's entries (created names) durable.
	sync() error
}

type packReader interface {
	io.ReaderAt
	size() (int64, error)
	Close() error
}

type packWriter interface {
	io.WriterAt
	// writeback starts writing [0, end) to the device without waiting for
	// it, after waiting for writeback started earlier unless the dir was
	// made with noWait (best effort).
	writeback(end int64)
	// reserve allocates [off, off+n) on the device ahead of the writes
	// that will fill it, without changing the file's size; best effort.
	reserve(off, n int64)
	// release gives back what reserve allocated past size; best effort.
	release(size int64)
	// syncData makes everything written durable.
	syncData() error
	Close() error
}

// osPackDir keeps packs as files in a directory.
type osPackDir struct {
	dir string
	// noWait: writeback never waits for the device. Under
	// WithDeferredSync nothing waits for durability until Sync, and a
	// writer that waited for the previous MiB to reach the device ran a
	// fetch at the disk's speed (~230 MB/s here) while the transport and
	// the hashing ran at twice that; the data still goes to the device
	// early, and Sync waits for what is left.
	noWait bool
}

func newOSPackDir(dir string, noWait bool) (*osPackDir, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	return &osPackDir{dir: dir, noWait: noWait}, nil
}

func (d *osPackDir) create(name string) (packWriter, error) {
	f, err := os.OpenFile(filepath.Join(d.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return osPackWriter{f, d.noWait}, nil
}

func (d *osPackDir) open(name string) (packReader, error) {
	f, err := os.Open(filepath.Join(d.dir, name))
	if err != nil {
		return nil, err
	}
	return osPackReader{f}, nil
}

func (d *osPackDir) remove(name string) error { return os.Remove(filepath.Join(d.dir, name)) }

func (d *osPackDir) list() ([]string, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (d *osPackDir) sync() error {
	f, err := os.Open(d.dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

type osPackReader struct{ *os.File }

func (r osPackReader) size() (int64, error) {
	st, err := r.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

type osPackWriter struct {
	*os.File
	noWait bool
}

func (w osPackWriter) writeback(end int64) {
	// SYNC_FILE_RANGE_WAIT_BEFORE|WRITE, as pebble does for its files: dirty
	// data does not pile up, and the final fdatasync finds little left. Not
	// every filesystem supports it; fdatasync is what counts.
	flags := unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE
	if w.noWait {
		flags = unix.SYNC_FILE_RANGE_WRITE
	}
	_ = unix.SyncFileRange(int(w.Fd()), 0, end, flags)
}

func (w osPackWriter) syncData() error { return unix.Fdatasync(int(w.Fd())) }

// reserve preallocates with FALLOC_FL_KEEP_SIZE: appending into blocks
// already allocated costs the writer less than appending past them (ext4
// on the project's VM, 4 MiB pwrites, `go run ./bench/pagecache`:
// 0.35–0.42 CPU-ms/MB against 0.46–0.57, and 1–2.5 in some runs), and the
// size, which open trusts as the end of the data, stays the bytes written.
// A filesystem without fallocate just appends as before.
func (w osPackWriter) reserve(off, n int64) {
	_ = unix.Fallocate(int(w.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// release truncates to size, which frees blocks reserved past it.
func (w osPackWriter) release(size int64) { _ = w.Truncate(size) }

func (d *osPackDir) trimTail(name string, size int64) {
	path := filepath.Join(d.dir, name)
	st, err := os.Stat(path)
	if err != nil {
		return
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Blocks*512 > size+reserveSlack {
		_ = os.Truncate(path, size)
	}
}

// reserveSlack is how far a pack's allocation may exceed its size before
// open trims it: filesystems round up to blocks, and to more than that
// when they preallocate on their own.
const reserveSlack = 1 << 20

// memPackDir keeps packs in memory, in 1 MiB chunks (no copying as a pack
// grows).
type memPackDir struct {
	mu    sync.Mutex
	packs map[string]*memPack
}

func newMemPackDir() *memPackDir { return &memPackDir{packs: map[string]*memPack{}} }

const memChunk = 1 << 20

type memPack struct {
	mu     sync.RWMutex
	chunks [][]byte
	n      int64
}

func (d *memPackDir) create(name string) (packWriter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.packs[name]; ok {
		return nil, fmt.Errorf("create %s: %w", name, fs.ErrExist)
	}
	p := &memPack{}
	d.packs[name] = p
	return p, nil
}

func (d *memPackDir) open(name string) (packReader, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.packs[name]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", name, fs.ErrNotExist)
	}
	return p, nil
}

func (d *memPackDir) remove(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.packs[name]; !ok {
		return fmt.Errorf("remove %s: %w", name, fs.ErrNotExist)
	}
	delete(d.packs, name)
	return nil
}

func (d *memPackDir) list() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.packs))
	for n := range d.packs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func (d *memPackDir) sync() error { return nil }

func (p *memPack) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	end := off + int64(len(b))
	for int64(len(p.chunks))*memChunk < end {
		p.chunks = append(p.chunks, make([]byte, memChunk))
	}
	for n := 0; n < len(b); {
		o := off + int64(n)
		n += copy(p.chunks[o/memChunk][o%memChunk:], b[n:])
	}
	p.n = max(p.n, end)
	return len(b), nil
}

func (p *memPack) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := 0
	for n < len(b) && off+int64(n) < p.n {
		o := off + int64(n)
		lim := min(int64(len(b)-n), p.n-o)
		n += copy(b[n:int64(n)+lim], p.chunks[o/memChunk][o%memChunk:])
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (p *memPack) size() (int64, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.n, nil
}

func (p *memPack) writeback(int64)           {}
func (p *memPack) reserve(int64, int64)      {}
func (p *memPack) release(int64)             {}
func (d *memPackDir) trimTail(string, int64) {}
func (p *memPack) syncData() error           { return nil }
func (p *memPack) Close() error              { return nil }
