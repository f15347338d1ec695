package bucket

import (
	"context"
	"errors"
	"testing"
)

func TestInlineCAR(t *testing.T) {
	ctx := context.Background()
	a, b := newStore(t, nil), newStore(t, nil)
	root, _, err := a.ImportFiles(ctx, map[string][]byte{"out.bin": pseudoRandom(40, 300<<10), "meta.json": []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	car, err := a.ExportCAR(ctx, root, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ExportCAR(ctx, root, 100<<10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("export over the limit: %v, want ErrTooLarge", err)
	}

	// A tampered byte in the last block's data, a truncated CAR and a
	// budget too small are refused, and nothing is stored.
	bad := append([]byte(nil), car...)
	bad[len(bad)-3] ^= 0x55
	for name, tc := range map[string]struct {
		car  []byte
		max  int64
		want error
	}{
		"tampered":             {bad, 1 << 20, ErrCorruptBlock},
		"truncated":            {car[:len(car)/2], 1 << 20, ErrCorruptBlock},
		"cut after the header": {carHeader(root), 1 << 20, ErrMissingBlock},
		"too large":            {car, 100 << 10, ErrTooLarge},
	} {
		err := b.ImportCAR(ctx, root, tc.car, tc.max)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if ok, _ := b.Has(ctx, root); ok {
			t.Fatalf("%s: root stored from a refused CAR", name)
		}
	}

	if err := b.ImportCAR(ctx, root, car, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := b.checkComplete(ctx, root); err != nil {
		t.Fatalf("imported DAG incomplete: %v", err)
	}
	pins, err := b.Pins(ctx)
	if err != nil || len(pins) != 1 || !pins[0].Root.Equals(root) {
		t.Fatalf("pins = %v, %v", pins, err)
	}
}

// FuzzImportCAR: whatever bytes a peer sends inline, ImportCAR never
// panics and, when it succeeds, the whole DAG is here and verified.
func FuzzImportCAR(f *testing.F) {
	root, body, _ := fuzzDAG(f)
	f.Add(append(carHeader(root), body...))
	f.Add(carHeader(root))
	f.Add(body)
	s := newStore(f, nil)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, car []byte) {
		if err := s.ImportCAR(ctx, root, car, 8<<20); err != nil {
			return
		}
		if _, err := s.checkComplete(ctx, root); err != nil {
			t.Fatalf("ImportCAR succeeded on an incomplete DAG: %v", err)
		}
	})
}
