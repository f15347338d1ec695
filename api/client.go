package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Response size limits. A node is trusted to speak the API, not to be
// well-behaved: every body the client reads is capped.
const (
	// DefaultMaxBody caps any JSON response body.
	DefaultMaxBody = 16 << 20
	// MaxErrorBody caps the body of a 4xx/5xx response.
	MaxErrorBody = 64 << 10
	// MaxRequestBody caps a job body the client will send.
	MaxRequestBody = 4 << 20
)

// ErrStop, returned by an Events callback, ends the stream without error.
var ErrStop = errors.New("api: stop reading events")

// Client talks to one node's HTTP API. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	hc      *http.Client
	maxBody int64
	agent   string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: one with no overall timeout,
// since event streams are long-lived; use contexts for deadlines).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithMaxBody sets the cap on JSON response bodies (default DefaultMaxBody).
func WithMaxBody(n int64) Option { return func(c *Client) { c.maxBody = n } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.agent = ua } }

// New returns a client for the node API at base, which is either a URL
// ("http://127.0.0.1:5080") or a bare host:port ("127.0.0.1:5080").
func New(base string, opts ...Option) (*Client, error) {
	u, err := ParseBase(base)
	if err != nil {
		return nil, err
	}
	c := &Client{
		base:    u,
		hc:      &http.Client{Transport: http.DefaultTransport},
		maxBody: DefaultMaxBody,
		agent:   "swarmgen-client",
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ParseBase turns "host:port" or an http(s) URL into a base URL.
func ParseBase(base string) (*url.URL, error) {
	base = strings.TrimSpace(base)
	if base == "" {
		return nil, errors.New("api address is empty")
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("api address %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("api address %q: scheme must be http or https", base)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("api address %q: no host", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// Base returns the base URL the client talks to.
func (c *Client) Base() string { return c.base.String() }

// Node is GET /v1/node.
func (c *Client) Node(ctx context.Context) (NodeInfo, error) {
	var v NodeInfo
	return v, c.do(ctx, http.MethodGet, "/v1/node", nil, &v)
}

// Peers is GET /v1/peers: the capacity table as the node sees it.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var v []Peer
	return v, c.do(ctx, http.MethodGet, "/v1/peers", nil, &v)
}

// Templates is GET /v1/templates.
func (c *Client) Templates(ctx context.Context) ([]Template, error) {
	var v []Template
	return v, c.do(ctx, http.MethodGet, "/v1/templates", nil, &v)
}

// Template is GET /v1/templates/{id}.
func (c *Client) Template(ctx context.Context, id string) (Template, error) {
	var v Template
	if err := checkID("template", id); err != nil {
		return v, err
	}
	return v, c.do(ctx, http.MethodGet, "/v1/templates/"+url.PathEscape(id), nil, &v)
}

// SubmitJob is POST /v1/jobs with a JSON job body.
func (c *Client) SubmitJob(ctx context.Context, body []byte) (CreatedJob, error) {
	var v CreatedJob
	if len(body) > MaxRequestBody {
		return v, fmt.Errorf("submit job: body is %d bytes, limit %d", len(body), MaxRequestBody)
	}
	return v, c.do(ctx, http.MethodPost, "/v1/jobs", body, &v)
}

// Jobs is GET /v1/jobs.
func (c *Client) Jobs(ctx context.Context) ([]Job, error) {
	var v []Job
	return v, c.do(ctx, http.MethodGet, "/v1/jobs", nil, &v)
}

// Job is GET /v1/jobs/{id}.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	var v Job
	if err := checkID("job", id); err != nil {
		return v, err
	}
	return v, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &v)
}

// CancelJob is DELETE /v1/jobs/{id}. It returns the job as the node
// reports it after the cancel, if the node sends a body.
func (c *Client) CancelJob(ctx context.Context, id string) (Job, error) {
	var v Job
	if err := checkID("job", id); err != nil {
		return v, err
	}
	return v, c.do(ctx, http.MethodDelete, "/v1/jobs/"+url.PathEscape(id), nil, &v)
}

// Logs is GET /v1/jobs/{id}/logs.
func (c *Client) Logs(ctx context.Context, id string) ([]TaskLog, error) {
	var v []TaskLog
	if err := checkID("job", id); err != nil {
		return v, err
	}
	return v, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/logs", nil, &v)
}

// Events streams GET /v1/jobs/{id}/events (server-sent events) and calls fn
// for each event, in order, on the calling goroutine. It returns when the
// server ends the stream (nil), when ctx is done (ctx.Err()), when fn
// returns an error (that error; ErrStop gives nil), or on a malformed or
// oversized event.
func (c *Client) Events(ctx context.Context, id string, fn func(Event) error) error {
	if err := checkID("job", id); err != nil {
		return err
	}
	path := "/v1/jobs/" + url.PathEscape(id) + "/events"
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %w", path, decodeError(resp))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("GET %s: content type %q, want text/event-stream", path, ct)
	}
	err = ReadEvents(resp.Body, fn)
	switch {
	case errors.Is(err, ErrStop):
		return nil
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Get fetches an absolute URL (for example a gateway URL the node
// advertised) with the client's transport and returns the response for the
// caller to stream; a non-2xx status is returned as *Error. The caller
// closes the body.
func (c *Client) Get(ctx context.Context, rawURL string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", rawURL, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", c.agent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", rawURL, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %w", rawURL, decodeError(resp))
	}
	return resp, nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	// path is already escaped (IDs go through url.PathEscape).
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	u.Path = p
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("User-Agent", c.agent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// do sends one request and decodes a JSON answer into out (if the response
// has a body).
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %w", method, path, decodeError(resp))
	}
	data, err := readLimited(resp.Body, c.maxBody)
	if err != nil {
		return fmt.Errorf("%s %s: reading response: %w", method, path, err)
	}
	if len(bytes.TrimSpace(data)) == 0 || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
	}
	return nil
}

// readLimited reads all of r, failing if it holds more than max bytes.
func readLimited(r io.Reader, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("response body exceeds %d bytes", max)
	}
	return data, nil
}

// decodeError turns a non-2xx response into *Error: the node's JSON error
// body when there is one, else the HTTP status and the start of the body.
func decodeError(resp *http.Response) *Error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
	e := &Error{}
	if err := json.Unmarshal(data, e); err != nil || e.Message == "" {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		e = &Error{Message: http.StatusText(resp.StatusCode)}
		if msg != "" {
			e.Message += ": " + msg
		}
	}
	e.StatusCode = resp.StatusCode
	return e
}

// checkID refuses IDs that would change the request path.
func checkID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s id is empty", kind)
	}
	if len(id) > 256 {
		return fmt.Errorf("%s id is %d bytes long, limit 256", kind, len(id))
	}
	if id == "." || id == ".." || strings.ContainsAny(id, "/\\?#\x00") {
		return fmt.Errorf("%s id %s: must not contain / \\ ? # or be . or ..", kind, strconv.Quote(id))
	}
	return nil
}

// Terminal reports whether a job or task status is final.
func Terminal(status string) bool {
	switch status {
	case JobCompleted, JobFailed, JobCancelled:
		return true
	}
	return false
}
