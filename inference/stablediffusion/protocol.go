package stablediffusion

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// MaxEventLine bounds one line the worker writes on its protocol stream; a
// longer line is dropped (and logged), never buffered whole.
const MaxEventLine = 1 << 20

// Worker exit codes (worker.py): 2 bad parameters, 3 model unavailable.
const (
	ExitBadParams        = 2
	ExitModelUnavailable = 3
)

// Event kinds the worker emits.
const (
	evReady    = "ready"
	evProgress = "progress"
	evDone     = "done"
	evStats    = "stats"
	evError    = "error"
	evLoaded   = "loaded"
)

// request is one line to the worker.
type request struct {
	ID       string   `json:"id"`
	Op       string   `json:"op,omitempty"`
	Model    string   `json:"model,omitempty"`
	TaskDirs []string `json:"task_dirs,omitempty"`
}

// taskResult is the worker's verdict on one task directory.
type taskResult struct {
	TaskDir     string   `json:"task_dir"`
	OK          bool     `json:"ok"`
	Error       string   `json:"error"`
	ExitCode    int      `json:"exit_code"`
	Files       []string `json:"files"`
	LoadS       float64  `json:"load_s"`
	InferS      float64  `json:"infer_s"`
	BatchImages int      `json:"batch_images"`
}

// event is one line from the worker.
type event struct {
	ID      string       `json:"id"`
	Event   string       `json:"event"`
	TaskDir string       `json:"task_dir"`
	Value   float64      `json:"value"`
	Results []taskResult `json:"results"`
	Loads   int          `json:"loads"`
	Error   string       `json:"error"`
	PID     int          `json:"pid"`
	Device  string       `json:"device"`
	DType   string       `json:"dtype"`
	Cached  []string     `json:"cached"`
	Model   string       `json:"model"`
	LoadS   float64      `json:"load_s"`
	Exit    int          `json:"exit_code"`
}

var errBadEvent = errors.New("bad worker event")

// decodeEvent parses and checks one protocol line from the worker. The worker
// is our own script, but its stdout is still input: a broken or hostile
// interpreter must not crash the node.
func decodeEvent(line []byte) (event, error) {
	var ev event
	if len(line) > MaxEventLine {
		return ev, fmt.Errorf("%w: line of %d bytes over %d", errBadEvent, len(line), MaxEventLine)
	}
	line = bytes.TrimSpace(line)
	if err := json.Unmarshal(line, &ev); err != nil {
		return ev, fmt.Errorf("%w: %w", errBadEvent, err)
	}
	switch ev.Event {
	case evReady, evStats, evError, evLoaded:
	case evProgress:
		if math.IsNaN(ev.Value) || ev.Value < 0 || ev.Value > 1 {
			return ev, fmt.Errorf("%w: progress value %v out of [0,1]", errBadEvent, ev.Value)
		}
	case evDone:
		if ev.ID == "" {
			return ev, fmt.Errorf("%w: done event without id", errBadEvent)
		}
	default:
		return ev, fmt.Errorf("%w: unknown event %q", errBadEvent, ev.Event)
	}
	return ev, nil
}

// lineReader reads newline-terminated lines of at most max bytes; longer
// lines are skipped to their end and reported as errLineTooLong.
type lineReader struct {
	r   *bufio.Reader
	max int
}

var errLineTooLong = errors.New("line too long")

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its newline. The slice is valid until
// the next call.
func (l *lineReader) next() ([]byte, error) {
	var buf []byte
	tooLong := false
	for {
		chunk, err := l.r.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > l.max+1 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		switch {
		case tooLong && err == nil:
			return nil, errLineTooLong
		case err != nil && errors.Is(err, io.EOF) && len(buf) > 0 && !tooLong:
			return buf, nil
		case err != nil:
			return nil, err
		}
		return bytes.TrimRight(buf, "\r\n"), nil
	}
}
