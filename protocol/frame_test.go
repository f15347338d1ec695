package protocol

import (
	"bufio"
	"bytes"
	"errors"
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
