package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	ipld "github.com/ipfs/go-ipld-format"

	"github.com/swarmgen/swarmgen/api"
)

// BenchmarkJobGet measures `job get` end to end on loopback: boxo's gateway
// streams a 64 MiB bucket as a CAR, the CLI verifies every block and
// rebuilds the file. The -only cases split that into its phases;
// "plain-http" moves the same bytes over plain HTTP into a file, for the
// ratio.
func BenchmarkJobGet(b *testing.B) {
	const size = 64 << 20
	data := pseudoRandom(size, 9)
	d := newTestDAG()
	root := d.dir(b, map[string]ipld.Node{"task-0": d.dir(b, map[string]ipld.Node{"big.bin": d.file(b, data)})})
	mux := http.NewServeMux()
	mux.Handle("/ipfs/", d.gateway(b))
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(data) })
	gw := httptest.NewServer(mux)
	defer gw.Close()
	fa := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeTestJSON(w, 200, api.NodeInfo{Gateway: gw.URL})
	}))
	defer fa.Close()
	cl, err := api.New(fa.URL)
	if err != nil {
		b.Fatal(err)
	}
	job := api.Job{ID: "j", Status: api.JobCompleted, Bucket: &api.Bucket{CID: root.Cid().String()}}
	e := &cmdEnv{io: stdio{err: io.Discard}}

	b.Run("car+verify+extract", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			dir := filepath.Join(b.TempDir(), "out")
			if _, err := downloadJob(context.Background(), e, cl, job, dir, getOptions{maxBytes: 1 << 30}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The client's two phases alone, from a CAR fetched once.
	resp, err := http.Get(gw.URL + "/ipfs/" + root.Cid().String() + "?format=car&car-order=dfs&car-dups=n")
	if err != nil {
		b.Fatal(err)
	}
	car, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("gateway-car-only", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			resp, err := http.Get(gw.URL + "/ipfs/" + root.Cid().String() + "?format=car&car-order=dfs&car-dups=n")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.Run("verify-only", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, _, err := verifyCAR(bytes.NewReader(car), root.Cid(), 1<<30); err != nil {
				b.Fatal(err)
			}
		}
	})
	carPath := filepath.Join(b.TempDir(), "bucket.car")
	if err := os.WriteFile(carPath, car, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("extract-only", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, _, err := extractCAR(context.Background(), carPath, root.Cid(), filepath.Join(b.TempDir(), "o"), getOptions{maxBytes: 1 << 30}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plain-http", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			resp, err := http.Get(gw.URL + "/plain")
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Create(filepath.Join(b.TempDir(), "big.bin"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(f, resp.Body); err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			f.Close()
		}
	})
}
