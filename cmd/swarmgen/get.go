package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	unixfile "github.com/ipfs/boxo/ipld/unixfs/file"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	carstore "github.com/ipld/go-car/v2/blockstore"
	"github.com/urfave/cli/v2"

	"github.com/swarmgen/swarmgen/api"
)

// Download limits. The gateway is a peer's word; the CIDs make its blocks
// verifiable, the limits make its size harmless.
const (
	defaultMaxDownload = 64 << 30 // bytes of CAR, and bytes written to disk
	maxBlockSize       = 4 << 20  // one block; UnixFS chunks are 256 KiB
	maxEntries         = 1 << 20  // files and directories written
	maxNameLen         = 255
)

// Sentinel errors of `job get`, for callers and tests.
var (
	errCorruptBlock = errors.New("block does not match its CID")
	errTooLarge     = errors.New("download exceeds the size limit")
	errBadEntry     = errors.New("refusing bucket entry")
)

type getOptions struct {
	maxBytes int64
	force    bool
	progress io.Writer // byte progress; nil = none
	tty      bool      // redraw progress in place
}

// getResult summarises a download.
type getResult struct {
	Job      string `json:"job"`
	CID      string `json:"cid"`
	Dir      string `json:"dir"`
	Files    int    `json:"files"`
	Bytes    int64  `json:"bytes"`    // file bytes written
	Blocks   int    `json:"blocks"`   // blocks verified
	CARBytes int64  `json:"carBytes"` // bytes downloaded
}

func jobGetCommand(e *cmdEnv) *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "download a completed job's bucket, verifying every block against its CID",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			apiFlag(), jsonFlag(),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, EnvVars: env("output"), Required: true, Usage: "write the bucket into `DIR` (created if missing)"},
			&cli.BoolFlag{Name: "force", EnvVars: env("force"), Usage: "overwrite files that already exist in DIR"},
			&cli.StringFlag{Name: "max-size", EnvVars: env("max-size"), Value: "64Gi", Usage: "refuse downloads larger than this (bytes fetched and bytes written)"},
		},
		Action: func(c *cli.Context) error {
			id, err := oneArg(c, "the job ID")
			if err != nil {
				return err
			}
			max, err := parseSize(c.String("max-size"))
			if err != nil || max <= 0 {
				return usageErrorf("--max-size %q: want a positive size", c.String("max-size"))
			}
			cl, err := e.client(c)
			if err != nil {
				return err
			}
			j, err := cl.Job(c.Context, id)
			if err != nil {
				return err
			}
			res, err := downloadJob(c.Context, e, cl, j, c.String("output"), getOptions{maxBytes: max, force: c.Bool("force")})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(e.io.out, res)
			}
			return nil
		},
	}
}

// downloadJob fetches j's bucket through the node's gateway as a CAR,
// verifies it and writes the tree into dir.
func downloadJob(ctx context.Context, e *cmdEnv, cl *api.Client, j api.Job, dir string, o getOptions) (getResult, error) {
	res := getResult{Job: j.ID, Dir: dir}
	if j.Bucket == nil || j.Bucket.CID == "" {
		return res, fmt.Errorf("job %s is %s and has no bucket yet", j.ID, j.Status)
	}
	root, err := cid.Decode(j.Bucket.CID)
	if err != nil {
		return res, fmt.Errorf("job %s: bucket CID %q: %w", j.ID, j.Bucket.CID, err)
	}
	res.CID = root.String()
	ni, err := cl.Node(ctx)
	if err != nil {
		return res, err
	}
	if ni.Gateway == "" {
		return res, fmt.Errorf("the node at %s serves no gateway (no \"gateway\" in GET /v1/node); start it with --gateway HOST:PORT", cl.Base())
	}
	gw, err := gatewayURL(ni.Gateway, cl.Base())
	if err != nil {
		return res, err
	}
	if o.progress == nil {
		o.progress, o.tty = e.io.err, e.io.errTTY
	}

	tmp, err := os.CreateTemp("", "swarmgen-get-*.car")
	if err != nil {
		return res, fmt.Errorf("temporary file for the CAR: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	u := gw + "/ipfs/" + root.String() + "?format=car&car-version=1&car-order=dfs&car-dups=n"
	resp, err := cl.Get(ctx, u, http.Header{"Accept": {"application/vnd.ipld.car;version=1;order=dfs;dups=n"}})
	if err != nil {
		return res, fmt.Errorf("downloading bucket %s: %w", root, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/vnd.ipld.car") {
		return res, fmt.Errorf("downloading bucket %s: gateway answered %q, want application/vnd.ipld.car", root, ct)
	}
	bar := newByteBar(o.progress, o.tty, "downloading "+shortCID(root), resp.ContentLength)
	res.Blocks, res.CARBytes, err = verifyCAR(io.TeeReader(bar.reader(resp.Body), tmp), root, o.maxBytes)
	bar.finish(err == nil)
	if err != nil {
		return res, fmt.Errorf("bucket %s from %s: %w", root, gw, err)
	}
	if err := tmp.Sync(); err != nil {
		return res, fmt.Errorf("temporary CAR: %w", err)
	}

	res.Files, res.Bytes, err = extractCAR(ctx, tmp.Name(), root, dir, o)
	if err != nil {
		return res, fmt.Errorf("writing bucket %s into %s: %w", root, dir, err)
	}
	fmt.Fprintf(e.io.err, "wrote %d files (%s) to %s; %d blocks (%s) verified against bucket %s\n",
		res.Files, formatSize(res.Bytes), dir, res.Blocks, formatSize(res.CARBytes), root)
	return res, nil
}

// gatewayURL makes the advertised gateway address dialable: a bare
// host:port gets http://, and an unspecified host (0.0.0.0, [::]) becomes
// the API's host, which is where the node evidently is.
func gatewayURL(advertised, apiBase string) (string, error) {
	u, err := api.ParseBase(advertised)
	if err != nil {
		return "", fmt.Errorf("node's gateway address: %w", err)
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		if a, err := url.Parse(apiBase); err == nil {
			u.Host = net.JoinHostPort(a.Hostname(), u.Port())
		}
	}
	return u.String(), nil
}

func shortCID(c cid.Cid) string {
	s := c.String()
	if len(s) > 16 {
		return s[:8] + "…" + s[len(s)-6:]
	}
	return s
}

// verifyCAR reads a CARv1 stream whose root must be root and checks every
// block against its CID by recomputing the multihash, within maxBytes of
// stream. It returns the block count and bytes read.
func verifyCAR(r io.Reader, root cid.Cid, maxBytes int64) (int, int64, error) {
	lr := &limitReader{r: r, left: maxBytes}
	// The buffer keeps reads (and the tee's writes behind them) large; the
	// CAR reader itself reads varints byte by byte.
	br, err := carv2.NewBlockReader(bufio.NewReaderSize(lr, 1<<20), carv2.WithTrustedCAR(true), carv2.MaxAllowedSectionSize(maxBlockSize),
		carv2.MaxAllowedHeaderSize(64<<10))
	if err != nil {
		return 0, lr.n, fmt.Errorf("reading CAR header: %w", err)
	}
	found := false
	for _, c := range br.Roots {
		found = found || c.Equals(root)
	}
	if !found {
		return 0, lr.n, fmt.Errorf("CAR roots %v do not include %s", br.Roots, root)
	}
	n := 0
	for {
		b, err := br.Next()
		if errors.Is(err, io.EOF) {
			return n, lr.n, nil
		}
		if err != nil {
			return n, lr.n, fmt.Errorf("reading block %d: %w", n+1, err)
		}
		c := b.Cid()
		sum, err := c.Prefix().Sum(b.RawData())
		if err != nil {
			return n, lr.n, fmt.Errorf("block %s: hashing: %w", c, err)
		}
		if !sum.Equals(c) {
			return n, lr.n, fmt.Errorf("block %s: %w (data hashes to %s)", c, errCorruptBlock, sum)
		}
		n++
	}
}

// limitReader fails once more than left bytes are read.
type limitReader struct {
	r    io.Reader
	left int64
	n    int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("%w (%s)", errTooLarge, formatSize(l.n))
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	l.left -= int64(n)
	return n, err
}

// extractCAR rebuilds the UnixFS tree under root, read from the verified
// CAR file, into dir.
func extractCAR(ctx context.Context, carPath string, root cid.Cid, dir string, o getOptions) (int, int64, error) {
	bs, err := carstore.OpenReadOnly(carPath)
	if err != nil {
		return 0, 0, fmt.Errorf("opening verified CAR: %w", err)
	}
	defer bs.Close()
	dserv := merkledag.NewDAGService(blockservice.New(bs, offline.Exchange(bs)))
	nd, err := dserv.Get(ctx, root)
	if err != nil {
		return 0, 0, fmt.Errorf("root block: %w", err)
	}
	top, err := unixfile.NewUnixfsFile(ctx, dserv, nd)
	if err != nil {
		return 0, 0, fmt.Errorf("root %s: %w", root, err)
	}
	defer top.Close()
	w := &treeWriter{left: o.maxBytes, force: o.force}
	if d, ok := top.(files.Directory); ok {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, 0, err
		}
		err = w.writeDir(d, dir, "")
	} else {
		// A single-file bucket: write it as DIR/<cid>.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, 0, err
		}
		err = w.write(top, filepath.Join(dir, root.String()), root.String())
	}
	return w.files, w.bytes, err
}

// treeWriter writes a UnixFS tree, refusing unsafe names and symlinks and
// bounding what it writes (a DAG may link one block many times).
type treeWriter struct {
	left    int64
	force   bool
	files   int
	entries int
	bytes   int64
}

func (w *treeWriter) writeDir(d files.Directory, path, rel string) error {
	it := d.Entries()
	for it.Next() {
		name := it.Name()
		if err := checkEntryName(name); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(rel, name), err)
		}
		if err := w.write(it.Node(), filepath.Join(path, name), filepath.Join(rel, name)); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("%s/: listing: %w", rel, err)
	}
	return nil
}

func (w *treeWriter) write(nd files.Node, path, rel string) error {
	w.entries++
	if w.entries > maxEntries {
		return fmt.Errorf("%w: more than %d entries", errTooLarge, maxEntries)
	}
	switch n := nd.(type) {
	case *files.Symlink:
		return fmt.Errorf("%s: %w: symlink (to %q)", rel, errBadEntry, n.Target)
	case files.File:
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if w.force {
			flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		f, err := os.OpenFile(path, flags, 0o644)
		if err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s: already exists (use --force to overwrite)", path)
			}
			return err
		}
		written, err := io.Copy(f, &limitReader{r: n, left: w.left})
		w.left -= written
		w.bytes += written
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		w.files++
		return nil
	case files.Directory:
		if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if st, err := os.Lstat(path); err != nil || !st.IsDir() {
			return fmt.Errorf("%s: exists and is not a directory", path)
		}
		return w.writeDir(n, path, rel)
	}
	return fmt.Errorf("%s: %w: unsupported node type %T", rel, errBadEntry, nd)
}

// checkEntryName refuses names that would leave the directory or are not
// portable file names.
func checkEntryName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w: name %q", errBadEntry, name)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: name longer than %d bytes", errBadEntry, maxNameLen)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: name %q contains a path separator or NUL", errBadEntry, name)
	}
	return nil
}

// byteBar draws a byte progress bar: redrawn in place on a terminal (at
// most every 100 ms), else nothing until the final line.
type byteBar struct {
	w     io.Writer
	tty   bool
	label string
	total int64 // -1 if unknown
	start time.Time

	mu   sync.Mutex
	n    int64
	last time.Time
}

func newByteBar(w io.Writer, tty bool, label string, total int64) *byteBar {
	return &byteBar{w: w, tty: tty, label: label, total: total, start: time.Now()}
}

func (b *byteBar) reader(r io.Reader) io.Reader { return &barReader{r: r, b: b} }

type barReader struct {
	r io.Reader
	b *byteBar
}

func (br *barReader) Read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	br.b.add(int64(n))
	return n, err
}

func (b *byteBar) add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += n
	if now := time.Now(); b.tty && now.Sub(b.last) >= 100*time.Millisecond {
		b.last = now
		fmt.Fprint(b.w, "\r\033[K"+b.text(now))
	}
}

func (b *byteBar) text(now time.Time) string {
	rate := ""
	if el := now.Sub(b.start).Seconds(); el > 0 {
		rate = "  " + formatSize(int64(float64(b.n)/el)) + "/s"
	}
	if b.total > 0 {
		f := min(float64(b.n)/float64(b.total), 1)
		filled := int(f * barWidth)
		return fmt.Sprintf("%s [%s%s] %3d%%  %s/%s%s", b.label, strings.Repeat("#", filled),
			strings.Repeat("-", barWidth-filled), int(f*100), formatSize(b.n), formatSize(b.total), rate)
	}
	return fmt.Sprintf("%s  %s%s", b.label, formatSize(b.n), rate)
}

func (b *byteBar) finish(ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	state := "done"
	if !ok {
		state = "failed"
	}
	if b.tty {
		fmt.Fprint(b.w, "\r\033[K")
	}
	fmt.Fprintf(b.w, "%s  %s in %s\n", b.text(time.Now()), state, formatDuration(time.Since(b.start)))
}
