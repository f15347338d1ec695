package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

func TestFrameRoundTripAndLimit(t *testing.T) {
	var buf bytes.Buffer
	in := &pb.Cancel{JobId: "job-1", TaskId: "task-2"}
	if err := WriteMsg(&buf, in); err != nil {
		t.Fatal(err)
	}
	raw := append([]byte(nil), buf.Bytes()...)
	var out pb.Cancel
	if err := ReadMsg(bufio.NewReader(&buf), 1024, &out); err != nil {
		t.Fatal(err)
	}
	if out.JobId != "job-1" || out.TaskId != "task-2" {
		t.Fatalf("got %v", &out)
	}
	if err := ReadMsg(bufio.NewReader(bytes.NewReader(raw)), 4, &out); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("frame over limit: %v", err)
	}
}

// FuzzReadMsg feeds arbitrary bytes to the frame reader of every stream
// protocol; it must return an error or a message, never panic or allocate
// past the limit.
func FuzzReadMsg(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteMsg(&buf, &pb.TaskRequest{Body: &pb.TaskRequest_Cancel{Cancel: &pb.Cancel{JobId: "j"}}})
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		_ = ReadMsg(r, MaxTaskRequest, &pb.TaskRequest{})
		r = bufio.NewReader(bytes.NewReader(data))
		_ = ReadMsg(r, MaxTableRequest, &pb.TableRequest{})
		r = bufio.NewReader(bytes.NewReader(data))
		_ = ReadMsg(r, MaxTaskUpdate, &pb.TaskUpdate{})
	})
}

func TestValidatePool(t *testing.T) {
	for _, ok := range []string{"public", "my-pool.v2", "a"} {
		if err := ValidatePool(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", "a/b", "x y", string(make([]byte, 65))} {
		if err := ValidatePool(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestLargeFrameGrowsAsItArrives: a large frame round-trips, and one whose
// announced length never arrives costs the reader eagerBody, not the
// announced length, however long the peer holds it.
func TestLargeFrameGrowsAsItArrives(t *testing.T) {
	for _, size := range []int{eagerBody - 10, eagerBody, eagerBody + 1, 3*eagerBody + 17, 900 << 10} {
		var buf bytes.Buffer
		in := &pb.Assignment{JobId: "j", AppParams: bytes.Repeat([]byte{'x'}, size)}
		if err := WriteMsg(&buf, in); err != nil {
			t.Fatal(err)
		}
		var out pb.Assignment
		if err := ReadMsg(bufio.NewReader(&buf), MaxTaskRequest, &out); err != nil || len(out.AppParams) != size {
			t.Fatalf("size %d: %v, %d bytes back", size, err, len(out.AppParams))
		}
	}
	// 900 KiB announced, 10 bytes sent, then the stream ends.
	body, err := readBody(bytes.NewReader(make([]byte, 10)), 900<<10)
	if err == nil || body != nil {
		t.Fatalf("short body: %v", err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	_, _ = readBody(bytes.NewReader(make([]byte, 10)), 900<<10)
	runtime.ReadMemStats(&ms)
	if grown := ms.TotalAlloc - before; grown > 2*eagerBody {
		t.Fatalf("a 900 KiB frame with 10 bytes sent allocated %d bytes", grown)
	}
}
