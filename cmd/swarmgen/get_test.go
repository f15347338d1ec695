package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/gateway"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	carv2 "github.com/ipld/go-car/v2"
	mh "github.com/multiformats/go-multihash"

	"github.com/swarmgen/swarmgen/api"
)

// testDAG builds UnixFS DAGs the way the bucket package does (CIDv1, raw
// leaves, 256 KiB chunks) in a memory blockstore, and serves them through
// boxo's real gateway handler, so `job get` is tested against the CAR
// responses a node's gateway really produces.
type testDAG struct {
	bs    blockstore.Blockstore
	bsvc  blockservice.BlockService
	dserv ipld.DAGService
	cb    cid.Builder
}

func newTestDAG() *testDAG {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	bsvc := blockservice.New(bs, offline.Exchange(bs))
	return &testDAG{bs: bs, bsvc: bsvc, dserv: merkledag.NewDAGService(bsvc),
		cb: cid.V1Builder{Codec: cid.DagProtobuf, MhType: mh.SHA2_256}}
}

func (d *testDAG) file(t testing.TB, data []byte) ipld.Node {
	t.Helper()
	p := helpers.DagBuilderParams{Dagserv: d.dserv, Maxlinks: helpers.DefaultLinksPerBlock, RawLeaves: true, CidBuilder: d.cb}
	db, err := p.New(chunker.NewSizeSplitter(bytes.NewReader(data), 256<<10))
	if err != nil {
		t.Fatal(err)
	}
	nd, err := balanced.Layout(db)
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

func (d *testDAG) dir(t testing.TB, entries map[string]ipld.Node) ipld.Node {
	t.Helper()
	dir, err := uio.NewDirectory(d.dserv, uio.WithCidBuilder(d.cb))
	if err != nil {
		t.Fatal(err)
	}
	for name, nd := range entries {
		if err := dir.AddChild(context.Background(), name, nd); err != nil {
			t.Fatal(err)
		}
	}
	nd, err := dir.GetNode()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.dserv.Add(context.Background(), nd); err != nil {
		t.Fatal(err)
	}
	return nd
}

func (d *testDAG) gateway(t testing.TB) http.Handler {
	t.Helper()
	backend, err := gateway.NewBlocksBackend(d.bsvc)
	if err != nil {
		t.Fatal(err)
	}
	return gateway.NewHandler(gateway.Config{DeserializedResponses: true, NoDNSLink: true}, backend)
}

func pseudoRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// getFixture is a completed job whose bucket is served by a gateway.
type getFixture struct {
	api   *fakeAPI
	gw    *httptest.Server
	files map[string][]byte // relative path → content
	root  cid.Cid
}

func newGetFixture(t *testing.T, gw func(h http.Handler) http.Handler) *getFixture {
	d := newTestDAG()
	files := map[string][]byte{
		"task-0/image.png":   pseudoRandom(700<<10, 1), // 3 chunks
		"task-0/log.txt":     []byte("x"),
		"task-1/image.png":   pseudoRandom(1000, 2),
		"task-1/empty.txt":   {},
		"task-1/deep/a/b.js": []byte(`{"ok":true}`),
		"manifest.json":      []byte(`{"job":"j-1","tasks":[]}`),
	}
	b := d.dir(t, map[string]ipld.Node{
		"task-1": d.dir(t, map[string]ipld.Node{
			"image.png": d.file(t, files["task-1/image.png"]),
			"empty.txt": d.file(t, files["task-1/empty.txt"]),
			"deep":      d.dir(t, map[string]ipld.Node{"a": d.dir(t, map[string]ipld.Node{"b.js": d.file(t, files["task-1/deep/a/b.js"])})}),
		}),
		"task-0": d.dir(t, map[string]ipld.Node{
			"image.png": d.file(t, files["task-0/image.png"]),
			"log.txt":   d.file(t, files["task-0/log.txt"]),
		}),
		"manifest.json": d.file(t, files["manifest.json"]),
	})
	h := d.gateway(t)
	if gw != nil {
		h = gw(h)
	}
	mux := http.NewServeMux()
	mux.Handle("/ipfs/", h)
	gsrv := httptest.NewServer(mux)
	t.Cleanup(gsrv.Close)
	f := &getFixture{api: newFakeAPI(t), gw: gsrv, files: files, root: b.Cid()}
	f.api.json("GET /v1/jobs/j-1", 200, api.Job{ID: "j-1", Status: api.JobCompleted,
		Bucket: &api.Bucket{CID: b.Cid().String(), URL: gsrv.URL + "/buckets/j-1/"}})
	f.api.json("GET /v1/node", 200, api.NodeInfo{PeerID: "p", Gateway: gsrv.URL})
	return f
}

func TestJobGet(t *testing.T) {
	f := newGetFixture(t, nil)
	out := filepath.Join(t.TempDir(), "out")
	r := runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", out, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	var total int64
	for rel, want := range f.files {
		got, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes differ from the %d served", rel, len(got), len(want))
		}
		total += int64(len(want))
	}
	var res getResult
	if err := jsonUnmarshal(r.out, &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.out)
	}
	if res.Files != len(f.files) || res.Bytes != total || res.CID != f.root.String() || res.Blocks < 10 || res.CARBytes <= total {
		t.Fatalf("summary %+v (want %d files, %d bytes)", res, len(f.files), total)
	}
	if !strings.Contains(r.err, "verified against bucket "+f.root.String()) {
		t.Fatalf("stderr: %s", r.err)
	}
	// A second download into the same dir refuses to overwrite...
	r = runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", out)
	if r.code != exitError || !strings.Contains(r.err, "already exists (use --force") {
		t.Fatalf("overwrite: exit %d: %s", r.code, r.err)
	}
	// ...unless forced.
	if r := runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "-o", out, "--force", "j-1"); r.code != 0 {
		t.Fatalf("--force: exit %d: %s", r.code, r.err)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// tamper rewrites the gateway's CAR response with fn.
func tamper(fn func([]byte) []byte) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(fn(rec.Body.Bytes()))
		})
	}
}

func TestJobGetCorruptBlock(t *testing.T) {
	var needle []byte
	f := newGetFixture(t, tamper(func(car []byte) []byte {
		i := bytes.Index(car, needle)
		if i < 0 {
			return car
		}
		car = bytes.Clone(car)
		car[i+10] ^= 0xff // inside a leaf of task-0/image.png
		return car
	}))
	needle = f.files["task-0/image.png"][300<<10 : 300<<10+64]
	out := t.TempDir()
	_, err := downloadJob(context.Background(), &cmdEnv{io: stdio{err: &bytes.Buffer{}}}, mustClient(t, f.api.srv.URL),
		api.Job{ID: "j-1", Status: api.JobCompleted, Bucket: &api.Bucket{CID: f.root.String()}}, out, getOptions{maxBytes: 1 << 30})
	if !errors.Is(err, errCorruptBlock) {
		t.Fatalf("err = %v, want errCorruptBlock", err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("wrote %d entries from a corrupt download", len(ents))
	}
	r := runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", out)
	if r.code != exitError || !strings.Contains(r.err, "does not match its CID") {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
}

func TestJobGetTruncated(t *testing.T) {
	f := newGetFixture(t, tamper(func(car []byte) []byte { return car[:len(car)/2] }))
	r := runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", t.TempDir())
	if r.code != exitError {
		t.Fatalf("truncated CAR: exit %d: %s", r.code, r.err)
	}
}

func TestJobGetLimitsAndErrors(t *testing.T) {
	f := newGetFixture(t, nil)
	r := runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", t.TempDir(), "--max-size", "100Ki")
	if r.code != exitError || !strings.Contains(r.err, "exceeds the size limit") {
		t.Fatalf("max-size: exit %d: %s", r.code, r.err)
	}
	f.api.json("GET /v1/node", 200, api.NodeInfo{PeerID: "p"})
	r = runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", t.TempDir())
	if r.code != exitError || !strings.Contains(r.err, "serves no gateway") {
		t.Fatalf("no gateway: exit %d: %s", r.code, r.err)
	}
	f.api.json("GET /v1/jobs/j-1", 200, api.Job{ID: "j-1", Status: api.JobRunning})
	r = runCLI(t, "", "--api", f.api.srv.URL, "job", "get", "j-1", "-o", t.TempDir())
	if r.code != exitError || !strings.Contains(r.err, "job j-1 is running and has no bucket yet") {
		t.Fatalf("no bucket: exit %d: %s", r.code, r.err)
	}
}

func TestJobGetRefusesBadNames(t *testing.T) {
	d := newTestDAG()
	for _, name := range []string{"..", `a\b`} {
		root := d.dir(t, map[string]ipld.Node{name: d.file(t, []byte("evil"))})
		h := d.gateway(t)
		gsrv := httptest.NewServer(h)
		defer gsrv.Close()
		fa := newFakeAPI(t)
		fa.json("GET /v1/jobs/j-1", 200, api.Job{ID: "j-1", Status: api.JobCompleted, Bucket: &api.Bucket{CID: root.Cid().String()}})
		fa.json("GET /v1/node", 200, api.NodeInfo{Gateway: gsrv.URL})
		parent := t.TempDir()
		r := runCLI(t, "", "--api", fa.srv.URL, "job", "get", "j-1", "-o", filepath.Join(parent, "out"))
		if r.code != exitError || !strings.Contains(r.err, "refusing bucket entry") {
			t.Fatalf("%q: exit %d: %s", name, r.code, r.err)
		}
		if _, err := os.Stat(filepath.Join(parent, "evil")); err == nil {
			t.Fatal("wrote outside the output dir")
		}
	}
	for _, n := range []string{"", ".", "..", "a/b", `a\b`, "a\x00", strings.Repeat("x", 256)} {
		if checkEntryName(n) == nil {
			t.Errorf("checkEntryName(%q) accepted", n)
		}
	}
	if checkEntryName("image-0.png") != nil {
		t.Error("a plain name refused")
	}
}

func TestGatewayURL(t *testing.T) {
	for _, tc := range [][3]string{
		{"http://127.0.0.1:8080", "http://127.0.0.1:5080", "http://127.0.0.1:8080"},
		{"0.0.0.0:8080", "http://10.1.2.3:5080", "http://10.1.2.3:8080"},
		{"http://[::]:8080/", "http://node.lan:5080", "http://node.lan:8080"},
	} {
		if got, err := gatewayURL(tc[0], tc[1]); err != nil || got != tc[2] {
			t.Errorf("gatewayURL(%q, %q) = %q, %v; want %q", tc[0], tc[1], got, err, tc[2])
		}
	}
}

func mustClient(t *testing.T, base string) *api.Client {
	c, err := api.New(base)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzVerifyCAR feeds arbitrary bytes to the CAR verifier that reads the
// gateway's (untrusted) stream: it must fail cleanly, never panic or hang.
func FuzzVerifyCAR(f *testing.F) {
	d := newTestDAG()
	root := d.dir(f, map[string]ipld.Node{"a.txt": d.file(f, []byte("hello")), "b": d.file(f, pseudoRandom(3000, 3))})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/ipfs/"+root.Cid().String()+"?format=car", nil)
	d.gateway(f).ServeHTTP(rec, req)
	good := rec.Body.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x0a, 0xa1, 0x67, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		n, read, err := verifyCAR(bytes.NewReader(data), root.Cid(), 1<<20)
		if read > int64(len(data)) {
			t.Fatalf("read %d of %d bytes", read, len(data))
		}
		if err != nil {
			return
		}
		// Accepted: go-car's own checking reader must agree, block for block.
		br, cerr := carv2.NewBlockReader(bytes.NewReader(data), carv2.WithTrustedCAR(false))
		if cerr != nil {
			t.Fatalf("verifyCAR accepted what go-car rejects: %v", cerr)
		}
		m := 0
		for {
			_, cerr := br.Next()
			if errors.Is(cerr, io.EOF) {
				break
			}
			if cerr != nil {
				t.Fatalf("verifyCAR accepted block %d that go-car rejects: %v", m, cerr)
			}
			m++
		}
		if m != n {
			t.Fatalf("verifyCAR counted %d blocks, go-car %d", n, m)
		}
	})
}

func TestByteBar(t *testing.T) {
	var buf bytes.Buffer
	b := newByteBar(&buf, true, "downloading x", 2048)
	_, _ = io.Copy(io.Discard, b.reader(bytes.NewReader(make([]byte, 2048))))
	b.finish(true)
	out := buf.String()
	if !strings.Contains(out, "\r\033[K") || !strings.Contains(out, "100%  2Ki/2Ki") || !strings.HasSuffix(out, "done in 0s\n") {
		t.Fatalf("tty bar: %q", out)
	}
	buf.Reset()
	b = newByteBar(&buf, false, "downloading x", -1)
	_, _ = io.Copy(io.Discard, b.reader(bytes.NewReader(make([]byte, 5000))))
	b.finish(false)
	if out := buf.String(); strings.Contains(out, "\033") || !strings.HasPrefix(out, "downloading x  4.9Ki") || !strings.Contains(out, "failed") {
		t.Fatalf("plain bar: %q", out)
	}
}
