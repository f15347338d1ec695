package bucket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"time"

	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// maxRedirects bounds the redirects FetchURL follows.
const maxRedirects = 5

// FetchURL downloads an http(s) URL (dataSource "url") into the store as a
// directory holding one file, named after the URL's last path element
// ("input" when it has none), so that ListDir and the files partitioner
// treat it like any other input. At most maxBytes are accepted and the
// whole download must finish within timeout. The directory is pinned for
// the result TTL.
func (s *Store) FetchURL(ctx context.Context, rawURL string, maxBytes int64, timeout time.Duration) (cid.Cid, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return cid.Undef, fmt.Errorf("fetch url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return cid.Undef, fmt.Errorf("fetch url %q: scheme %q not allowed (http or https only)", rawURL, u.Scheme)
	}
	if u.Host == "" {
		return cid.Undef, fmt.Errorf("fetch url %q: no host", rawURL)
	}
	if maxBytes <= 0 {
		return cid.Undef, fmt.Errorf("fetch url %q: maxBytes must be positive", rawURL)
	}
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, cancelLink := s.linkCtx(ctx)
	defer cancelLink()
	client := &http.Client{
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to scheme %q not allowed", req.URL.Scheme)
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return cid.Undef, fmt.Errorf("fetch url %q: %w", rawURL, err)
	}
	req.Header.Set("User-Agent", "swarmgen-bucket/1")
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return cid.Undef, fmt.Errorf("fetch url %q: no response within %s: %w", rawURL, timeout, err)
		}
		return cid.Undef, fmt.Errorf("fetch url %q: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cid.Undef, fmt.Errorf("fetch url %q: HTTP status %s", rawURL, resp.Status)
	}
	if resp.ContentLength > maxBytes {
		return cid.Undef, fmt.Errorf("fetch url %q: %w: Content-Length %d, limit %d", rawURL, ErrTooLarge, resp.ContentLength, maxBytes)
	}
	name := path.Base(resp.Request.URL.Path)
	if ValidateName(name) != nil || name == "/" {
		name = "input"
	}
	// No GC lock while the body trickles in (see blockHold): each stored
	// batch and the pin take it; enter makes Close wait for us.
	if !s.enter() {
		return cid.Undef, ErrClosed
	}
	defer s.leave()
	hold := s.newHold()
	defer hold.release() // after batch.Wait: nothing is stored after it
	lr := &limitedReader{r: resp.Body, left: maxBytes}
	batch := newBatchDAG(ctx, heldDAG{s.dag, hold})
	batch.stored = s.testHookFetchStored
	defer batch.Wait()
	fnode, err := importFile(batch, lr)
	if err != nil {
		if lr.over {
			return cid.Undef, fmt.Errorf("fetch url %q: %w: body over %d bytes", rawURL, ErrTooLarge, maxBytes)
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return cid.Undef, fmt.Errorf("fetch url %q: download not finished within %s: %w", rawURL, timeout, err)
		}
		return cid.Undef, fmt.Errorf("fetch url %q: read body: %w", rawURL, err)
	}
	l, err := namedLink(name, fnode)
	if err != nil {
		return cid.Undef, err
	}
	dir, err := dirNode(ctx, batch, []*ipld.Link{l})
	if err != nil {
		return cid.Undef, err
	}
	if err := batch.Commit(); err != nil {
		return cid.Undef, fmt.Errorf("fetch url %q: commit: %w", rawURL, err)
	}
	err = hold.locked(func(func(mh.Multihash)) error {
		return s.pin(ctx, dir.Cid(), s.cfg.resultTTL, "input")
	})
	if err != nil {
		return cid.Undef, err
	}
	return dir.Cid(), nil
}

// heldDAG stores through a DAG service, each AddMany under the GC read
// lock, and holds the nodes it stored (or found stored) in hold.
type heldDAG struct {
	ipld.DAGService
	hold *blockHold
}

func (d heldDAG) Add(ctx context.Context, n ipld.Node) error {
	return d.AddMany(ctx, []ipld.Node{n})
}

func (d heldDAG) AddMany(ctx context.Context, ns []ipld.Node) error {
	return d.hold.locked(func(add func(mh.Multihash)) error {
		if err := d.DAGService.AddMany(ctx, ns); err != nil {
			return err
		}
		for _, n := range ns {
			add(n.Cid().Hash())
		}
		return nil
	})
}

// errBodyTooLarge stops the importer when the body passes the limit.
var errBodyTooLarge = errors.New("body over limit")

type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Probe for one more byte: exactly maxBytes is fine.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, errBodyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}
