package bucket

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// recordingHandler keeps the messages of the records logged at Warn or
// above.
type recordingHandler struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newRecordingLogger() (*slog.Logger, func() []string) {
	h := recordingHandler{new(sync.Mutex), new([]string)}
	return slog.New(h), func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append([]string(nil), *h.msgs...)
	}
}

func (h recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h recordingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h recordingHandler) WithGroup(string) slog.Handler                { return h }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.msgs = append(*h.msgs, r.Message)
	return nil
}

// TestListingErrorNotSilent: AllKeysChan dropped an iteration error (the
// channel just closed), so GC took a partial listing for the whole store:
// it reported success and left every block after the failure uncollected.
// Now the listing error is logged, and GC fails with it instead of
// sweeping a partial listing.
func TestListingErrorNotSilent(t *testing.T) {
	log, logged := newRecordingLogger()
	s, err := New(context.Background(), nil, t.TempDir(), WithInMemory(), WithGCInterval(0), WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := s.bs.Put(ctx, rawBlock(t, pseudoRandom(uint64(90+i), 1000))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil { // the entries move to pebble
		t.Fatal(err)
	}
	// An index entry that does not decode, sorting before every real one
	// ("0" < "C", where base32 multihash keys start): the scan fails on it.
	if err := s.ds.DB.Set([]byte(packIndexPrefix+"/0BAD"), []byte("bad"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	keys, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys {
		n++
	}
	t.Logf("AllKeysChan listed %d keys; logged %q", n, logged())
	if !strings.Contains(strings.Join(logged(), "\n"), "list blocks") {
		t.Error("AllKeysChan ended early without logging why")
	}
	st, err := s.GC(ctx)
	t.Logf("GC: %+v, %v", st, err)
	if err == nil {
		t.Error("GC over a failed listing reported success")
	}
}
