package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The raw sinks of sink-pub and sink-consume run as a child process when
// the targets are child processes, so that the baseline pays the same
// cross-process scheduling as the daemons it is compared with. The child is
// the running executable itself (the sluice-bench runner, or a test binary)
// started with sinkChildEnv set: its main (or TestMain) calls
// RunSinkChildIfRequested first, which serves the sink and never returns.
//
// The child prints "addr HOST:PORT" once it listens, serves until its
// standard input closes (the parent is done, or gone), waits up to
// sinkChildGrace for the clients' connections to close, prints
// "counts RECEIVED SENT FINISHED" and exits.
const (
	sinkChildEnv   = "SLUICE_BENCH_SINK_CHILD"
	sinkChildGrace = 5 * time.Second
)

// RunSinkChildIfRequested turns the process into a sink child when the
// environment asks for one (see sinkChildEnv), and exits when it is done;
// otherwise it returns at once. Call it first in main and in TestMain.
func RunSinkChildIfRequested() {
	spec, ok := os.LookupEnv(sinkChildEnv)
	if !ok {
		return
	}
	if err := sinkChildMain(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sink child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// sinkChildSpec is what the parent asks of a child: "pub", or
// "consume MESSAGES BODYSIZE".
func sinkChildSpec(consumeMessages int64, bodySize int) string {
	if consumeMessages <= 0 {
		return "pub"
	}
	return fmt.Sprintf("consume %d %d", consumeMessages, bodySize)
}

func sinkChildMain(spec string, stdin io.Reader, stdout io.Writer) error {
	f := strings.Fields(spec)
	switch {
	case len(f) == 1 && f[0] == "pub":
		s, err := NewSink("127.0.0.1:0")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "addr %s\n", s.Addr())
		io.Copy(io.Discard, stdin)
		s.closeGrace(sinkChildGrace)
		_, err = fmt.Fprintf(stdout, "counts %d 0 0\n", s.Messages())
		return err
	case len(f) == 3 && f[0] == "consume":
		msgs, err1 := strconv.ParseInt(f[1], 10, 64)
		size, err2 := strconv.Atoi(f[2])
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("spec %q: %w", spec, err)
		}
		s, err := NewConsumeSink("127.0.0.1:0", msgs, size)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "addr %s\n", s.Addr())
		io.Copy(io.Discard, stdin)
		s.Close(sinkChildGrace)
		_, err = fmt.Fprintf(stdout, "counts 0 %d %d\n", s.Sent(), s.Finished())
		return err
	}
	return fmt.Errorf("unknown sink spec %q", spec)
}

// closeGrace is Close after waiting up to grace for the clients to close
// their connections.
func (s *Sink) closeGrace(grace time.Duration) error { return s.close(grace) }

// sinkCounts are what a sink saw: messages received (PUB sink), messages
// sent and FINs read (consume sink).
type sinkCounts struct{ received, sent, finished int64 }

// runningSink is a sink in this process or in a child process.
type runningSink struct {
	addr string
	pid  int // child process, or 0
	stop func() (sinkCounts, error)
}

// startSink starts the PUB sink (consumeMessages 0) or the consume sink, in
// this process or, with child, as a child process.
func startSink(ctx context.Context, child bool, consumeMessages int64, bodySize int) (*runningSink, error) {
	if child {
		return startSinkChild(ctx, sinkChildSpec(consumeMessages, bodySize))
	}
	if consumeMessages > 0 {
		s, err := NewConsumeSink("127.0.0.1:0", consumeMessages, bodySize)
		if err != nil {
			return nil, err
		}
		return &runningSink{addr: s.Addr(), stop: func() (sinkCounts, error) {
			err := s.Close(sinkChildGrace)
			return sinkCounts{sent: s.Sent(), finished: s.Finished()}, err
		}}, nil
	}
	s, err := NewSink("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &runningSink{addr: s.Addr(), stop: func() (sinkCounts, error) {
		err := s.closeGrace(sinkChildGrace)
		return sinkCounts{received: s.Messages()}, err
	}}, nil
}

// startSinkChild starts the running executable as a sink child and waits
// for its address.
func startSinkChild(ctx context.Context, spec string) (*runningSink, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("sink child: %w", err)
	}
	// -test.run=^$ makes a test binary without the TestMain hook run
	// nothing and exit instead of running its tests again; the hook runs
	// before any flag is parsed, so the runner ignores it.
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), sinkChildEnv+"="+spec)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("sink child: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("sink child: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sink child %s: %w", exe, err)
	}
	lines := make(chan string, 2)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var once sync.Once
	var waitErr error
	wait := func() error {
		once.Do(func() {
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case waitErr = <-done:
			case <-time.After(sinkChildGrace + 10*time.Second):
				cmd.Process.Kill()
				waitErr = fmt.Errorf("sink child did not exit; killed: %v", <-done)
			}
		})
		return waitErr
	}
	fail := func(why string) error {
		stdin.Close()
		cmd.Process.Kill()
		wait()
		return fmt.Errorf("sink child %s: %s; stderr: %s", exe, why, bytes.TrimSpace(stderr.Bytes()))
	}
	var addr string
	select {
	case l, ok := <-lines:
		if !ok || !strings.HasPrefix(l, "addr ") {
			return nil, fail(fmt.Sprintf("no address (got %q); a test binary must call bench.RunSinkChildIfRequested in TestMain", l))
		}
		addr = strings.TrimPrefix(l, "addr ")
	case <-time.After(10 * time.Second):
		return nil, fail("no address within 10s")
	case <-ctx.Done():
		return nil, fail(ctx.Err().Error())
	}
	stop := func() (sinkCounts, error) {
		stdin.Close()
		var c sinkCounts
		var l string
		select {
		case l = <-lines:
		case <-time.After(sinkChildGrace + 10*time.Second):
		}
		werr := wait()
		if _, err := fmt.Sscanf(l, "counts %d %d %d", &c.received, &c.sent, &c.finished); err != nil {
			return c, fmt.Errorf("sink child: no counts (got %q, exit %v); stderr: %s", l, werr, bytes.TrimSpace(stderr.Bytes()))
		}
		return c, werr
	}
	return &runningSink{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
}
