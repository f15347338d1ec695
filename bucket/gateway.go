package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/ipfs/boxo/gateway"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// BucketIndex maps job IDs to bucket roots. The node implements it over its
// job table. Implementations must be safe for concurrent use.
type BucketIndex interface {
	BucketRoot(jobID string) (cid.Cid, bool)
}

// MaxListingEntries bounds the entries of one bucket listing.
const MaxListingEntries = 10000

type gwConfig struct {
	log *slog.Logger
}

// GatewayOption configures NewGateway.
type GatewayOption func(*gwConfig)

// WithGatewayLogger sets the gateway's logger (default: the Store's).
func WithGatewayLogger(l *slog.Logger) GatewayOption { return func(c *gwConfig) { c.log = l } }

// Gateway is the read-only HTTP gateway. It is safe for concurrent use.
type Gateway struct {
	s       *Store
	buckets BucketIndex
	ipfs    http.Handler
	log     *slog.Logger
}

// NewGateway returns the read-only HTTP gateway over s:
//
//	GET/HEAD /ipfs/{cid}[/{path}]   boxo's gateway over the local blocks
//	                                (offline: never fetches from the network),
//	                                incl. ?format=car / application/vnd.ipld.car
//	GET/HEAD /buckets/{job}/        JSON listing (Accept: application/json)
//	                                or the HTML gallery
//	GET/HEAD /buckets/{job}/{path}  a file, with Range, ETag = CID
//
// Any other method is 405. Paths with "..", encoded separators,
// backslashes or NUL are 400.
func NewGateway(s *Store, buckets BucketIndex, opts ...GatewayOption) http.Handler {
	cfg := gwConfig{log: s.log}
	for _, o := range opts {
		o(&cfg)
	}
	g := &Gateway{s: s, buckets: buckets, log: cfg.log.With("component", "gateway")}
	backend, err := gateway.NewBlocksBackend(s.local)
	if err != nil {
		g.log.Error("ipfs gateway backend unavailable", "err", err)
		g.ipfs = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpError(w, http.StatusInternalServerError, "ipfs gateway unavailable")
		})
	} else {
		g.ipfs = gateway.NewHandler(gateway.Config{
			DeserializedResponses: true,
			NoDNSLink:             true,
		}, backend)
	}
	return g
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpError(w, http.StatusMethodNotAllowed, "read-only gateway: GET and HEAD only")
		return
	}
	segs, slash, err := splitURLPath(r.URL.EscapedPath())
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(segs) == 0 {
		httpError(w, http.StatusNotFound, "not found: use /buckets/{job}/ or /ipfs/{cid}")
		return
	}
	switch segs[0] {
	case "ipfs":
		// Content under /ipfs/ is arbitrary: sandbox it so an HTML file
		// cannot script the gateway's origin.
		w.Header().Set("Content-Security-Policy", "sandbox")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		g.ipfs.ServeHTTP(w, r)
	case "buckets":
		g.serveBucket(w, r, segs[1:], slash)
	default:
		httpError(w, http.StatusNotFound, "not found: use /buckets/{job}/ or /ipfs/{cid}")
	}
}

func (g *Gateway) serveBucket(w http.ResponseWriter, r *http.Request, segs []string, slash bool) {
	if len(segs) == 0 {
		httpError(w, http.StatusNotFound, "not found: /buckets/{job}/")
		return
	}
	job := segs[0]
	root, ok := g.buckets.BucketRoot(job)
	if !ok {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no bucket for job %q", job))
		return
	}
	ctx := r.Context()
	nd, err := g.resolve(ctx, root, segs[1:])
	if err != nil {
		g.fail(w, err)
		return
	}
	kind, err := nodeKind(nd)
	if err != nil {
		g.fail(w, err)
		return
	}
	if kind == ft.TDirectory {
		if !slash {
			http.Redirect(w, r, "/buckets/"+escapePath(segs...)+"/", http.StatusMovedPermanently)
			return
		}
		g.serveListing(w, r, job, root, segs[1:], nd)
		return
	}
	if slash {
		httpError(w, http.StatusNotFound, "not a directory")
		return
	}
	g.serveFile(w, r, segs[len(segs)-1], nd)
}

// resolve walks names from root through local UnixFS directories.
func (g *Gateway) resolve(ctx context.Context, root cid.Cid, names []string) (ipld.Node, error) {
	nd, err := g.s.getNode(ctx, root)
	if err != nil {
		return nil, err
	}
	for i, name := range names {
		if k, err := nodeKind(nd); err != nil {
			return nil, err
		} else if k != ft.TDirectory {
			return nil, fmt.Errorf("%w: %s is not a directory", ErrNotFound, path.Join(names[:i]...))
		}
		var next *ipld.Link
		for _, l := range nd.Links() {
			if l.Name == name {
				next = l
				break
			}
		}
		if next == nil {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, path.Join(names[:i+1]...))
		}
		if nd, err = g.s.getNode(ctx, next.Cid); err != nil {
			return nil, err
		}
	}
	return nd, nil
}

func (g *Gateway) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		httpError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalidName):
		httpError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrUnsupported):
		httpError(w, http.StatusNotImplemented, err.Error())
	case errors.Is(err, ErrMissingBlock):
		g.log.Warn("bucket content missing locally", "err", err)
		httpError(w, http.StatusBadGateway, err.Error())
	default:
		g.log.Error("gateway error", "err", err)
		httpError(w, http.StatusInternalServerError, "internal error")
	}
}

func (g *Gateway) serveFile(w http.ResponseWriter, r *http.Request, name string, nd ipld.Node) {
	rd, err := uio.NewDagReader(r.Context(), nd, g.s.dag)
	if err != nil {
		g.fail(w, err)
		return
	}
	defer rd.Close()
	h := w.Header()
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		h.Set("Content-Type", ct)
	} // else http.ServeContent sniffs the first 512 bytes
	h.Set("Etag", `"`+nd.Cid().String()+`"`)
	h.Set("X-Ipfs-Roots", nd.Cid().String())
	h.Set("X-Content-Type-Options", "nosniff")
	// Bucket files are untrusted app output: never let them script the
	// gateway's origin.
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox")
	http.ServeContent(w, r, name, timeZero, rd)
}

// listEntry is one entry of a JSON bucket listing.
type listEntry struct {
	Path string `json:"path"` // relative to the bucket root
	Name string `json:"name"`
	Type string `json:"type"` // "file" or "directory"
	Size int64  `json:"size"`
	Cid  string `json:"cid"`
	URL  string `json:"url"`
}

type listing struct {
	Job      string      `json:"job"`
	Cid      string      `json:"cid"` // bucket root
	Path     string      `json:"path"`
	Entries  []listEntry `json:"entries"`
	Manifest *Manifest   `json:"manifest"`
}

// walkListing lists the directory nd recursively (depth first, names in
// directory order).
func (g *Gateway) walkListing(ctx context.Context, job string, prefix []string, nd ipld.Node, out *[]listEntry, depth int) error {
	if depth > DefaultMaxDepth {
		return fmt.Errorf("%w: deeper than %d levels", ErrTooLarge, DefaultMaxDepth)
	}
	for _, l := range nd.Links() {
		if err := ValidateName(l.Name); err != nil {
			return err
		}
		if len(*out) >= MaxListingEntries {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, MaxListingEntries)
		}
		child, err := g.s.getNode(ctx, l.Cid)
		if err != nil {
			return err
		}
		k, err := nodeKind(child)
		if err != nil {
			return err
		}
		p := append(append([]string{}, prefix...), l.Name)
		e := listEntry{Path: strings.Join(p, "/"), Name: l.Name, Cid: l.Cid.String(),
			URL: "/buckets/" + escapePath(append([]string{job}, p...)...)}
		if k == ft.TDirectory {
			e.Type, e.Size, e.URL = "directory", int64(l.Size), e.URL+"/"
			*out = append(*out, e)
			if err := g.walkListing(ctx, job, p, child, out, depth+1); err != nil {
				return err
			}
			continue
		}
		e.Type, e.Size = "file", fileSize(child)
		*out = append(*out, e)
	}
	return nil
}

// readManifest reads and decodes manifest.json at the bucket root; nil if
// absent or invalid (logged).
func (g *Gateway) readManifest(ctx context.Context, root cid.Cid) *Manifest {
	nd, err := g.resolve(ctx, root, []string{ManifestName})
	if err != nil {
		return nil
	}
	if fileSize(nd) > MaxManifestSize {
		g.log.Warn("manifest too large", "root", root)
		return nil
	}
	rd, err := uio.NewDagReader(ctx, nd, g.s.dag)
	if err != nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(rd, MaxManifestSize+1))
	if err != nil {
		return nil
	}
	m, err := DecodeManifest(b)
	if err != nil {
		g.log.Warn("bad manifest", "root", root, "err", err)
		return nil
	}
	return m
}

func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		if mt == "application/json" {
			return true
		}
	}
	return r.URL.Query().Get("format") == "json"
}

func (g *Gateway) serveListing(w http.ResponseWriter, r *http.Request, job string, root cid.Cid, sub []string, nd ipld.Node) {
	ctx := r.Context()
	var ents []listEntry
	if err := g.walkListing(ctx, job, sub, nd, &ents, 0); err != nil {
		g.fail(w, err)
		return
	}
	l := listing{Job: job, Cid: root.String(), Path: "/" + strings.Join(sub, "/"), Entries: ents,
		Manifest: g.readManifest(ctx, root)}
	if l.Entries == nil {
		l.Entries = []listEntry{}
	}
	w.Header().Set("Vary", "Accept")
	w.Header().Set("Etag", `"`+nd.Cid().String()+`"`)
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodHead {
			return
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(l)
		return
	}
	page := buildGallery(l, sub)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'sha256-"+galleryScriptHash+"'")
	if r.Method == http.MethodHead {
		return
	}
	if err := galleryTmpl.Execute(w, page); err != nil {
		g.log.Warn("render gallery", "job", job, "err", err)
	}
}
