package bucket

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipldformat "github.com/ipfs/go-ipld-format"
)

// fuzzDAG builds a small UnixFS DAG in memory and returns its root and the
// CAR body (sections after the header) in the order the server sends.
func fuzzDAG(t testing.TB) (cid.Cid, []byte, int) {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	dag := merkledag.NewDAGService(blockservice.New(bs, nil))
	f, err := importFileChunked(dag, bytes.NewReader(pseudoRandom(50, 300)), 64)
	if err != nil {
		t.Fatal(err)
	}
	small, _ := importFile(dag, bytes.NewReader([]byte("hi")))
	l, _ := namedLink("f", f)
	l2, _ := namedLink("g", small)
	dir, err := dirNode(context.Background(), dag, []*ipldLink{l, l2})
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	n := 0
	stack := []cid.Cid{dir.Cid()}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		b, err := bs.Get(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		body.Write(sectionHeader(nil, c, len(b.RawData())))
		body.Write(b.RawData())
		n++
		if c.Type() == cid.DagProtobuf {
			nd, _ := merkledag.DecodeProtobuf(b.RawData())
			for i := len(nd.Links()) - 1; i >= 0; i-- {
				stack = append(stack, nd.Links()[i].Cid)
			}
		}
	}
	return dir.Cid(), body.Bytes(), n
}

// FuzzCarReader feeds arbitrary bytes to the fetch client's CAR reader and
// verifier. Whatever the input: no panic, every block handed to storage
// hashes to its CID, and success means exactly the DAG's blocks arrived.
func FuzzCarReader(f *testing.F) {
	root, body, nblocks := fuzzDAG(f)
	f.Add(append([]byte{0}, body...))
	f.Add(append([]byte{1}, append(carHeader(root), body...)...))
	f.Add(append([]byte{0}, body[:len(body)/2]...))
	bad := append([]byte{0}, body...)
	bad[len(bad)-5] ^= 0xff
	f.Add(bad)
	f.Add([]byte{0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Add(append([]byte{2}, body...))
	f.Add(append([]byte{4}, body...))
	// Receive buffers are reused across executions (a slab is > 2 MiB).
	var slabs [][]byte
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		var stream []byte
		if in[0]&1 == 1 {
			stream = in[1:] // header fuzzed too
		} else {
			stream = append(carHeader(root), in[1:]...)
		}
		// Bits 1-2 pick how the stream arrives: all at once, one byte per
		// read, or 7 bytes per read (sections split across reads).
		var r io.Reader = bytes.NewReader(stream)
		switch in[0] >> 1 & 3 {
		case 1:
			r = iotest.OneByteReader(r)
		case 2:
			r = &chunkReader{r: r, n: 7}
		}
		v := newDAGVerifier(root, 8<<20)
		getSlab := func() ([]byte, error) {
			if len(slabs) == 0 {
				return make([]byte, maxCarSection+binary.MaxVarintLen64), nil
			}
			b := slabs[len(slabs)-1]
			slabs = slabs[:len(slabs)-1]
			return b, nil
		}
		stored := 0
		emit := func(reg carRegion) error {
			for _, e := range reg.entries {
				data := reg.buf[e.loc.off : e.loc.off+int64(e.loc.n)]
				if sum := sha256.Sum256(data); !bytes.Equal(sum[:], e.hash[2:]) || len(e.hash) != 34 {
					t.Fatalf("emitted a block that does not hash to its CID: %s", e.hash.B58String())
				}
				if crc32.Checksum(data, castagnoli) != e.loc.crc {
					t.Fatalf("emitted block %s with a wrong CRC", e.hash.B58String())
				}
				stored++
			}
			slabs = append(slabs, reg.slab)
			return nil
		}
		err := receiveCAR(r, root, v, getSlab, emit, nil)
		if err == nil && v.done() && stored != nblocks {
			t.Fatalf("complete with %d blocks, DAG has %d", stored, nblocks)
		}
		// Unless the peer is refused (no fallback), every verified block is
		// handed on: the bitswap fallback will not ask for it again.
		refused := errors.Is(err, ErrCorruptBlock) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrUnsupported)
		if !refused && stored != v.blocks {
			t.Fatalf("verified %d blocks, emitted %d (err %v)", v.blocks, stored, err)
		}
		if err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatal("empty error text")
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), c.n)])
}

// FuzzBucketPath checks the gateway's path splitting: accepted segments are
// always single, safe names, and escaping them round-trips.
func FuzzBucketPath(f *testing.F) {
	for _, s := range []string{"/buckets/job1/task-0/image-0.png", "/buckets/../etc/passwd", "/buckets/j/%2e%2e/x",
		"/buckets/j/a%2Fb", "/a\\b", "//x", "/x/%00", "/ipfs/bafy/a%20b/", "/%c0%ae%c0%ae/", "/a/./b", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		segs, slash, err := splitURLPath(p)
		if err != nil {
			return
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") {
				t.Fatalf("unsafe segment %q accepted from %q", s, p)
			}
		}
		back := "/" + escapePath(segs...)
		if slash && len(segs) > 0 {
			back += "/"
		}
		segs2, _, err := splitURLPath(back)
		if err != nil || len(segs2) != len(segs) {
			t.Fatalf("re-split of %q (from %q): %v %q", back, p, err, segs2)
		}
		for i := range segs {
			if segs[i] != segs2[i] {
				t.Fatalf("roundtrip %q -> %q", segs[i], segs2[i])
			}
		}
	})
}

// FuzzManifest checks DecodeManifest on arbitrary bytes: no panic, and an
// accepted manifest re-encodes to one that is accepted again.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"job":"j","template":"sd","createdAt":"2026-11-27T10:00:00Z","tasks":[{"index":0,"taskId":"t0","seed":1,"params":{"prompt":"x"},"provider":"p","attempt":1,"cid":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","durationMs":5}]}`))
	f.Add([]byte(`{"job":"j","tasks":[{"index":-1}]}`))
	f.Add([]byte(`{"job":"j"} {}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			return
		}
		_ = m.Tasks
		for _, tk := range m.Tasks {
			_ = tk.Prompt()
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := DecodeManifest(out); err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
	})
}

// FuzzValidateName: accepted names are single safe path elements.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "..", ".", "a/b", "a\\b", "a\x00", "task-0", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName(s) != nil {
			return
		}
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") || len(s) > MaxNameLength {
			t.Fatalf("accepted %q", s)
		}
	})
}

type ipldLink = ipldformat.Link
