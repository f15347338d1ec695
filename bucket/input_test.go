package bucket

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFetchURL(t *testing.T) {
	s := newStore(t, nil)
	data := pseudoRandom(40, 300<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/data/prompts.txt":
			w.Write(data)
		case "/chunked":
			w.Header().Set("Transfer-Encoding", "chunked")
			for i := 0; i < 10; i++ {
				w.Write(data[:1000])
				w.(http.Flusher).Flush()
			}
		case "/slow":
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Second)
		case "/redirect-file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	root, err := s.FetchURL(ctx, srv.URL+"/data/prompts.txt", 1<<20, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := s.ListDir(ctx, root)
	if err != nil || len(ents) != 1 || ents[0].Name != "prompts.txt" || ents[0].Size != int64(len(data)) {
		t.Fatalf("ListDir: %+v %v", ents, err)
	}
	dst := t.TempDir()
	if err := s.ExportDir(ctx, root, dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, map[string][]byte{"prompts.txt": data}, readTree(t, dst))

	if _, err := s.FetchURL(ctx, srv.URL+"/data/prompts.txt", 1000, 10*time.Second); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Content-Length over limit: %v", err)
	}
	if _, err := s.FetchURL(ctx, srv.URL+"/chunked", 5000, 10*time.Second); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("chunked body over limit: %v", err)
	}
	if _, err := s.FetchURL(ctx, srv.URL+"/chunked", 10000, 10*time.Second); err != nil {
		t.Fatalf("chunked body exactly at limit: %v", err)
	}
	if _, err := s.FetchURL(ctx, srv.URL+"/slow", 1000, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "300ms") {
		t.Fatalf("timeout: %v", err)
	}
	if _, err := s.FetchURL(ctx, srv.URL+"/missing", 1000, time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: %v", err)
	}
	if _, err := s.FetchURL(ctx, srv.URL+"/redirect-file", 1000, time.Second); err == nil {
		t.Fatal("redirect to file:// followed")
	}
	for _, u := range []string{"file:///etc/passwd", "ftp://x/y", "gopher://x", "/relative", "http://"} {
		if _, err := s.FetchURL(ctx, u, 1000, time.Second); err == nil {
			t.Fatalf("FetchURL(%q) accepted", u)
		}
	}
}

func TestImportRefusesSpecialFiles(t *testing.T) {
	s := newStore(t, nil)
	ctx := context.Background()
	outside := filepath.Join(t.TempDir(), "outside.txt")
	os.WriteFile(outside, []byte("secret"), 0o644)

	dir := t.TempDir()
	writeTree(t, dir, map[string][]byte{"ok.txt": []byte("ok")})
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ImportDir(ctx, dir); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "link") {
		t.Fatalf("symlink: %v", err)
	}

	dir2 := t.TempDir()
	if err := mkfifo(filepath.Join(dir2, "fifo")); err != nil {
		t.Skip("mkfifo:", err)
	}
	if _, _, err := s.ImportDir(ctx, dir2); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("fifo: %v", err)
	}
	if _, _, err := s.ImportFiles(ctx, map[string][]byte{"../x": nil}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("ImportFiles ../x: %v", err)
	}
	if _, _, err := s.ImportFiles(ctx, map[string][]byte{"/abs": nil}); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("ImportFiles /abs: %v", err)
	}
}
