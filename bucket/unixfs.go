package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"time"

	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// DirEntry is one entry of a UnixFS directory.
type DirEntry struct {
	Name  string  `json:"name"`
	Cid   cid.Cid `json:"cid"`
	Size  int64   `json:"size"` // file size in bytes; for a directory, its cumulative DAG size
	IsDir bool    `json:"isDir"`
}

// importFile chunks r into 256 KiB raw leaves under a balanced UnixFS file
// node (CIDv1) and adds every block to add.
func importFile(add ipld.DAGService, r io.Reader) (ipld.Node, error) {
	return importFileChunked(add, r, ChunkSize)
}

func importFileChunked(add ipld.DAGService, r io.Reader, chunk int64) (ipld.Node, error) {
	dbp := helpers.DagBuilderParams{
		Dagserv:    add,
		Maxlinks:   helpers.DefaultLinksPerBlock,
		RawLeaves:  true,
		CidBuilder: cidBuilder,
	}
	db, err := dbp.New(chunker.NewSizeSplitter(r, chunk))
	if err != nil {
		return nil, err
	}
	return balanced.Layout(db)
}

// dirNode builds a plain (non-HAMT) UnixFS directory over links, sorted by
// name as dag-pb requires, and adds it to add.
func dirNode(ctx context.Context, add ipld.NodeAdder, links []*ipld.Link) (ipld.Node, error) {
	sort.Slice(links, func(i, j int) bool { return links[i].Name < links[j].Name })
	nd := ft.EmptyDirNode()
	if err := nd.SetCidBuilder(cidBuilder); err != nil {
		return nil, err
	}
	for i, l := range links {
		if i > 0 && links[i-1].Name == l.Name {
			return nil, fmt.Errorf("%w: duplicate entry %q", ErrInvalidName, l.Name)
		}
		if err := nd.AddRawLink(l.Name, l); err != nil {
			return nil, err
		}
	}
	if err := add.Add(ctx, nd); err != nil {
		return nil, fmt.Errorf("store directory node: %w", err)
	}
	return nd, nil
}

func namedLink(name string, nd ipld.Node) (*ipld.Link, error) {
	l, err := ipld.MakeLink(nd)
	if err != nil {
		return nil, err
	}
	l.Name = name
	return l, nil
}

// ImportDir imports the directory tree at dir as UnixFS (CIDv1, raw leaves,
// 256 KiB chunks) and pins it for the result TTL. It returns the root CID
// and the total bytes of file data. Symlinks, devices, pipes and sockets are
// refused, as are invalid names and directories over the entry limit.
func (s *Store) ImportDir(ctx context.Context, dir string) (cid.Cid, int64, error) {
	return s.ImportDirPinned(ctx, dir, s.cfg.resultTTL, "result")
}

// ImportDirPinned is ImportDir with the pin's TTL and name given (one pin
// record written, not a default one and then the caller's).
func (s *Store) ImportDirPinned(ctx context.Context, dir string, ttl time.Duration, name string) (cid.Cid, int64, error) {
	unlock, err := s.lockWrite()
	if err != nil {
		return cid.Undef, 0, err
	}
	defer unlock()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return cid.Undef, 0, fmt.Errorf("import %s: %w", dir, err)
	}
	defer root.Close()
	batch := newBatchDAG(ctx, s.dag)
	defer batch.Wait()
	imp := dirImporter{ctx: ctx, root: root, add: batch, maxEntries: s.cfg.maxDirEntries}
	nd, size, err := imp.dir(".", 0)
	if err != nil {
		return cid.Undef, 0, fmt.Errorf("import %s: %w", dir, err)
	}
	if err := batch.Commit(); err != nil {
		return cid.Undef, 0, fmt.Errorf("import %s: commit blocks: %w", dir, err)
	}
	if err := s.pin(ctx, nd.Cid(), ttl, name); err != nil {
		return cid.Undef, 0, err
	}
	return nd.Cid(), size, nil
}

type dirImporter struct {
	ctx        context.Context
	root       *os.Root
	add        ipld.DAGService
	maxEntries int
}

func (d *dirImporter) dir(rel string, depth int) (ipld.Node, int64, error) {
	if depth > DefaultMaxDepth {
		return nil, 0, fmt.Errorf("%s: %w: deeper than %d levels", rel, ErrTooLarge, DefaultMaxDepth)
	}
	if err := d.ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := d.root.Open(rel)
	if err != nil {
		return nil, 0, err
	}
	ents, err := f.ReadDir(d.maxEntries + 1)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("read directory %s: %w", rel, err)
	}
	if len(ents) > d.maxEntries {
		return nil, 0, fmt.Errorf("directory %s: %w: more than %d entries", rel, ErrTooLarge, d.maxEntries)
	}
	var links []*ipld.Link
	var total int64
	for _, e := range ents {
		name := e.Name()
		p := path.Join(rel, name)
		if err := ValidateName(name); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", p, err)
		}
		var nd ipld.Node
		var size int64
		switch t := e.Type(); {
		case t.IsDir():
			nd, size, err = d.dir(p, depth+1)
		case t.IsRegular():
			nd, size, err = d.file(p)
		default:
			err = fmt.Errorf("%s: %w: file type %s (only regular files and directories)", p, ErrUnsupported, t)
		}
		if err != nil {
			return nil, 0, err
		}
		l, err := namedLink(name, nd)
		if err != nil {
			return nil, 0, err
		}
		links = append(links, l)
		total += size
	}
	nd, err := dirNode(d.ctx, d.add, links)
	return nd, total, err
}

func (d *dirImporter) file(rel string) (ipld.Node, int64, error) {
	f, err := d.root.Open(rel)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: %w: not a regular file", rel, ErrUnsupported)
	}
	nd, err := importFile(d.add, f)
	if err != nil {
		return nil, 0, fmt.Errorf("import file %s: %w", rel, err)
	}
	return nd, st.Size(), nil
}

// ImportFiles imports in-memory files as one UnixFS directory. Keys are
// slash-separated relative paths ("a.txt", "sub/b.png"); intermediate
// directories are created. The root is pinned for the result TTL.
func (s *Store) ImportFiles(ctx context.Context, files map[string][]byte) (cid.Cid, int64, error) {
	type tree struct {
		files map[string][]byte
		dirs  map[string]*tree
	}
	newTree := func() *tree { return &tree{files: map[string][]byte{}, dirs: map[string]*tree{}} }
	top := newTree()
	for p, data := range files {
		parts, err := splitRelPath(p)
		if err != nil {
			return cid.Undef, 0, err
		}
		t := top
		for _, dn := range parts[:len(parts)-1] {
			if _, clash := t.files[dn]; clash {
				return cid.Undef, 0, fmt.Errorf("%w: %q is both a file and a directory", ErrInvalidName, dn)
			}
			if t.dirs[dn] == nil {
				t.dirs[dn] = newTree()
			}
			t = t.dirs[dn]
		}
		fn := parts[len(parts)-1]
		if _, clash := t.dirs[fn]; clash {
			return cid.Undef, 0, fmt.Errorf("%w: %q is both a file and a directory", ErrInvalidName, fn)
		}
		t.files[fn] = data
	}
	unlock, err := s.lockWrite()
	if err != nil {
		return cid.Undef, 0, err
	}
	defer unlock()
	batch := newBatchDAG(ctx, s.dag)
	defer batch.Wait()
	var build func(t *tree) (ipld.Node, int64, error)
	build = func(t *tree) (ipld.Node, int64, error) {
		if len(t.files)+len(t.dirs) > s.cfg.maxDirEntries {
			return nil, 0, fmt.Errorf("%w: directory of more than %d entries", ErrTooLarge, s.cfg.maxDirEntries)
		}
		var links []*ipld.Link
		var total int64
		for name, data := range t.files {
			nd, err := importFile(batch, bytesReader(data))
			if err != nil {
				return nil, 0, err
			}
			l, err := namedLink(name, nd)
			if err != nil {
				return nil, 0, err
			}
			links = append(links, l)
			total += int64(len(data))
		}
		for name, sub := range t.dirs {
			nd, size, err := build(sub)
			if err != nil {
				return nil, 0, err
			}
			l, err := namedLink(name, nd)
			if err != nil {
				return nil, 0, err
			}
			links = append(links, l)
			total += size
		}
		nd, err := dirNode(ctx, batch, links)
		return nd, total, err
	}
	nd, size, err := build(top)
	if err != nil {
		return cid.Undef, 0, fmt.Errorf("import files: %w", err)
	}
	if err := batch.Commit(); err != nil {
		return cid.Undef, 0, fmt.Errorf("import files: commit blocks: %w", err)
	}
	if err := s.pin(ctx, nd.Cid(), s.cfg.resultTTL, "input"); err != nil {
		return cid.Undef, 0, err
	}
	return nd.Cid(), size, nil
}

// getNode reads one node from the local blockstore; a block that is not
// there is reported as ErrMissingBlock.
func (s *Store) getNode(ctx context.Context, c cid.Cid) (ipld.Node, error) {
	nd, err := s.dag.Get(ctx, c)
	if err != nil {
		if ipld.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s", ErrMissingBlock, c)
		}
		return nil, fmt.Errorf("read %s: %w", c, err)
	}
	return nd, nil
}

// nodeKind classifies a node as a UnixFS file, directory or something we
// do not handle.
func nodeKind(nd ipld.Node) (pb.Data_DataType, error) {
	switch n := nd.(type) {
	case *merkledag.RawNode:
		return ft.TFile, nil
	case *merkledag.ProtoNode:
		fsn, err := ft.FSNodeFromBytes(n.Data())
		if err != nil {
			return 0, fmt.Errorf("%w: %s: not UnixFS: %w", ErrUnsupported, nd.Cid(), err)
		}
		switch t := fsn.Type(); t {
		case ft.TFile, ft.TRaw, ft.TDirectory:
			return t, nil
		default:
			return 0, fmt.Errorf("%w: %s: UnixFS type %s", ErrUnsupported, nd.Cid(), t)
		}
	default:
		return 0, fmt.Errorf("%w: %s: codec 0x%x", ErrUnsupported, nd.Cid(), nd.Cid().Type())
	}
}

// fileSize returns the byte size of a UnixFS file node.
func fileSize(nd ipld.Node) int64 {
	switch n := nd.(type) {
	case *merkledag.RawNode:
		return int64(len(n.RawData()))
	case *merkledag.ProtoNode:
		if fsn, err := ft.FSNodeFromBytes(n.Data()); err == nil {
			return int64(fsn.FileSize())
		}
	}
	return 0
}

// ListDir lists the entries of the local UnixFS directory root.
func (s *Store) ListDir(ctx context.Context, root cid.Cid) ([]DirEntry, error) {
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.leave()
	nd, err := s.getNode(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	}
	if k, err := nodeKind(nd); err != nil {
		return nil, fmt.Errorf("list %s: %w", root, err)
	} else if k != ft.TDirectory {
		return nil, fmt.Errorf("list %s: %w: not a directory", root, ErrUnsupported)
	}
	out := make([]DirEntry, 0, len(nd.Links()))
	for _, l := range nd.Links() {
		if err := ValidateName(l.Name); err != nil {
			return nil, fmt.Errorf("list %s: %w", root, err)
		}
		child, err := s.getNode(ctx, l.Cid)
		if err != nil {
			return nil, fmt.Errorf("list %s/%s: %w", root, l.Name, err)
		}
		k, err := nodeKind(child)
		if err != nil {
			return nil, fmt.Errorf("list %s/%s: %w", root, l.Name, err)
		}
		e := DirEntry{Name: l.Name, Cid: l.Cid, IsDir: k == ft.TDirectory}
		if e.IsDir {
			e.Size = int64(l.Size)
		} else {
			e.Size = fileSize(child)
		}
		out = append(out, e)
	}
	return out, nil
}

// ExportDir writes the local UnixFS directory root into dir (created if
// absent) as plain files. Names are validated, existing files are never
// overwritten, nothing is written outside dir, and at most the configured
// export limit of bytes is written.
func (s *Store) ExportDir(ctx context.Context, root cid.Cid, dir string) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export %s: %w", root, err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("export %s: %w", root, err)
	}
	defer r.Close()
	nd, err := s.getNode(ctx, root)
	if err != nil {
		return fmt.Errorf("export %s: %w", root, err)
	}
	if k, err := nodeKind(nd); err != nil {
		return fmt.Errorf("export %s: %w", root, err)
	} else if k != ft.TDirectory {
		return fmt.Errorf("export %s: %w: root is not a directory", root, ErrUnsupported)
	}
	ex := exporter{s: s, ctx: ctx, root: r, budget: s.cfg.maxExport}
	if err := ex.dir(nd, ".", 0); err != nil {
		return fmt.Errorf("export %s to %s: %w", root, dir, err)
	}
	return nil
}

// WriteLocal writes a bucket to a local directory (dataDestination
// "local"); it is ExportDir under the name the node uses.
func (s *Store) WriteLocal(ctx context.Context, root cid.Cid, dir string) error {
	return s.ExportDir(ctx, root, dir)
}

type exporter struct {
	s      *Store
	ctx    context.Context
	root   *os.Root
	budget int64
}

func (e *exporter) dir(nd ipld.Node, rel string, depth int) error {
	if depth > DefaultMaxDepth {
		return fmt.Errorf("%s: %w: deeper than %d levels", rel, ErrTooLarge, DefaultMaxDepth)
	}
	if len(nd.Links()) > e.s.cfg.maxDirEntries {
		return fmt.Errorf("%s: %w: more than %d entries", rel, ErrTooLarge, e.s.cfg.maxDirEntries)
	}
	for _, l := range nd.Links() {
		if err := ValidateName(l.Name); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		p := path.Join(rel, l.Name)
		child, err := e.s.getNode(e.ctx, l.Cid)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		k, err := nodeKind(child)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if k == ft.TDirectory {
			if err := e.root.Mkdir(p, 0o755); err != nil {
				if !errors.Is(err, fs.ErrExist) {
					return err
				}
				st, lerr := e.root.Lstat(p)
				if lerr != nil || !st.IsDir() {
					return fmt.Errorf("%s: exists and is not a directory: %w", p, err)
				}
			}
			if err := e.dir(child, p, depth+1); err != nil {
				return err
			}
			continue
		}
		if err := e.file(child, p); err != nil {
			return err
		}
	}
	return nil
}

func (e *exporter) file(nd ipld.Node, rel string) error {
	size := fileSize(nd)
	if size > e.budget {
		return fmt.Errorf("%s: %w: export limit reached", rel, ErrTooLarge)
	}
	rd, err := uio.NewDagReader(e.ctx, nd, e.s.dag)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	f, err := e.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(rd, e.budget+1))
	e.budget -= n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ipld.IsNotFound(err) {
			return fmt.Errorf("%s: %w: %w", rel, ErrMissingBlock, err)
		}
		return fmt.Errorf("%s: %w", rel, err)
	}
	if e.budget < 0 {
		return fmt.Errorf("%s: %w: export limit reached", rel, ErrTooLarge)
	}
	return nil
}
