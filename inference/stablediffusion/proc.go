package stablediffusion

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/swarmgen/swarmgen/inference"
)

// proc is one running `worker.py --serve` process and the goroutines that
// read its pipes. It owns those goroutines: they end when the process's
// pipes close, which kill() forces.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	pid    int
	log    *slog.Logger
	events chan event    // protocol events, in order
	quit   chan struct{} // closed by stop/kill: readers stop delivering
	exited chan struct{} // closed once the process has been waited for
	state  *os.ProcessState

	quitOnce sync.Once
	mu       sync.Mutex
	capture  *inference.TailBuffer // stderr of the request in flight, if any
}

// startProc starts the worker process and waits for its "ready" event.
func startProc(ctx context.Context, cfg *WarmConfig, key workerKey, log *slog.Logger) (*proc, error) {
	args := []string{cfg.WorkerScript, "--serve", "--cache-size", "1"}
	env := os.Environ()
	switch key.gpu {
	case "":
		args = append(args, "--device", "cpu")
		env = append(env, "CUDA_VISIBLE_DEVICES=")
	case "mps":
		args = append(args, "--device", "mps")
	default:
		args = append(args, "--device", "cuda")
		env = append(env, "CUDA_VISIBLE_DEVICES="+key.gpu)
	}
	for k, v := range cfg.Env {
		env = append(env, k+"="+v)
	}
	env = append(env, "PYTHONUNBUFFERED=1")
	cmd := exec.Command(cfg.Python, args...)
	cmd.Env = env
	setProcessGroup(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("sd worker stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("sd worker stdout: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("sd worker stderr: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start %s: %w", inference.ErrUnavailable, cfg.Python, err)
	}
	p := &proc{
		cmd:    cmd,
		stdin:  stdin,
		pid:    cmd.Process.Pid,
		log:    log.With("pid", cmd.Process.Pid),
		events: make(chan event, 64),
		quit:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	startup := inference.NewTailBuffer(cfg.LogCap)
	p.setCapture(startup)
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.readEvents(stdout) }()
	go func() { defer readers.Done(); p.readStderr(stderr) }()
	go func() {
		readers.Wait()
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
	}()

	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.kill()
				return nil, fmt.Errorf("%w: sd worker exited before ready (%s): %s", inference.ErrUnavailable, p.exitText(), tail(startup.Bytes(), 2000))
			}
			if ev.Event == evReady {
				p.setCapture(nil)
				p.log.Info("sd worker ready", "device", ev.Device, "dtype", ev.DType)
				return p, nil
			}
			if ev.Event == evError {
				p.kill()
				return nil, fmt.Errorf("%w: sd worker failed to start: %s", inference.ErrUnavailable, ev.Error)
			}
		case <-timer.C:
			p.kill()
			return nil, fmt.Errorf("%w: sd worker not ready after %s: %s", inference.ErrUnavailable, cfg.StartTimeout, tail(startup.Bytes(), 2000))
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		}
	}
}

// readEvents decodes protocol lines until EOF; closes p.events at the end.
func (p *proc) readEvents(r io.Reader) {
	defer close(p.events)
	lr := newLineReader(r, MaxEventLine)
	for {
		line, err := lr.next()
		if errors.Is(err, errLineTooLong) {
			p.log.Warn("sd worker wrote an overlong protocol line; dropped", "limit", MaxEventLine)
			continue
		}
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		ev, err := decodeEvent(line)
		if err != nil {
			p.log.Warn("sd worker protocol line ignored", "err", err, "line", tail(line, 200))
			continue
		}
		select {
		case p.events <- ev:
		case <-p.quit:
			// Nobody listens any more; keep draining so the process never
			// blocks on a full pipe while it shuts down.
		}
	}
}

// readStderr copies the worker's log to the current capture and slog.
func (p *proc) readStderr(r io.Reader) {
	lr := newLineReader(r, 64<<10)
	for {
		line, err := lr.next()
		if errors.Is(err, errLineTooLong) {
			continue
		}
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.capture != nil {
			_, _ = p.capture.Write(append(append([]byte(nil), line...), '\n'))
		}
		p.mu.Unlock()
		p.log.Debug("sd worker", "stderr", string(line))
	}
}

func (p *proc) setCapture(b *inference.TailBuffer) {
	p.mu.Lock()
	p.capture = b
	p.mu.Unlock()
}

// send writes one request line.
func (p *proc) send(r request) error {
	b, err := jsonLine(r)
	if err != nil {
		return err
	}
	if _, err := p.stdin.Write(b); err != nil {
		return fmt.Errorf("write to sd worker: %w", err)
	}
	return nil
}

func (p *proc) stopReaders() { p.quitOnce.Do(func() { close(p.quit) }) }

// kill ends the process (and its group) and waits until it is reaped.
func (p *proc) kill() {
	p.stopReaders()
	killTree(p.cmd)
	_ = p.stdin.Close()
	<-p.exited
}

// stop asks the worker to exit (EOF on stdin) and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	p.stopReaders()
	_ = p.stdin.Close()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.log.Warn("sd worker did not exit on EOF; killing", "grace", grace)
		p.kill()
	}
}

// alive reports whether the process has not exited.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// exitCode returns the process exit code (-1 when killed by a signal or
// still running).
func (p *proc) exitCode() int {
	select {
	case <-p.exited:
		if p.state != nil {
			return p.state.ExitCode()
		}
	default:
	}
	return -1
}

func (p *proc) exitText() string {
	select {
	case <-p.exited:
		if p.state != nil {
			return p.state.String()
		}
		return "exited"
	default:
		return "running"
	}
}

// tail returns the last n bytes of b as a string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
