package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ScenarioLookup measures nsqlookupd's GET /lookup with keep-alive HTTP
// clients against a registry of a few nsqd-like producers.
const ScenarioLookup = "lookupd-lookup"

// LookupOptions sizes lookupd-lookup.
type LookupOptions struct {
	// Requests GET /lookup requests are made in all by Clients keep-alive
	// connections, each asking for the topics in turn.
	Requests int64
	Clients  int
	// Producers nsqd-like producers register Topics topics each (one
	// channel per topic) over the lookupd TCP protocol before the run.
	Producers, Topics int
}

// LookupdLauncher runs an nsqlookupd binary (Sluice's apps/nsqlookupd or
// NSQ's) as a child process on 127.0.0.1.
type LookupdLauncher struct {
	Path string
}

// LookupdNode is a running nsqlookupd child process.
type LookupdNode struct {
	TCPAddr, HTTPAddr string
	PID               int
	stop              func() error
}

// Stop ends the process (SIGTERM, then kill after 10 s).
func (n *LookupdNode) Stop() error { return n.stop() }

// Launch starts nsqlookupd with its log in dir and returns once GET /ping
// answers.
func (b *LookupdLauncher) Launch(ctx context.Context, dir string) (*LookupdNode, error) {
	var lastErr error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		n, err := b.launchOnce(ctx, dir)
		if err == nil {
			return n, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func (b *LookupdLauncher) launchOnce(ctx context.Context, dir string) (*LookupdNode, error) {
	tcpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &LookupdNode{TCPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(tcpPort)),
		HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))}
	logPath := filepath.Join(dir, "nsqlookupd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create nsqlookupd log: %w", err)
	}
	cmd := exec.Command(b.Path, "--tcp-address="+n.TCPAddr, "--http-address="+n.HTTPAddr,
		"--broadcast-address=127.0.0.1", "--log-level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", b.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	n.PID = cmd.Process.Pid
	n.stop = func() error {
		select {
		case err := <-exited:
			return fmt.Errorf("nsqlookupd exited early: %w", err)
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			return nil
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("nsqlookupd did not exit within 10s of SIGTERM; killed")
		}
	}
	if err := waitHTTPReady(ctx, n.HTTPAddr, exited, defaultReadyTimeout); err != nil {
		_ = cmd.Process.Kill()
		tail, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("nsqlookupd %s not ready: %w; log: %s", b.Path, err, bytes.TrimSpace(tail))
	}
	return n, nil
}

// lookupProducer is one fake nsqd registered over the lookupd TCP protocol
// (V1): IDENTIFY, then REGISTER topic channel per topic.
type lookupProducer struct {
	c net.Conn
	r *bufio.Reader
}

func registerProducer(ctx context.Context, addr string, port int, topics []string) (*lookupProducer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial nsqlookupd %s: %w", addr, err)
	}
	p := &lookupProducer{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	body, _ := json.Marshal(map[string]any{"broadcast_address": "127.0.0.1", "hostname": "bench-" + strconv.Itoa(port),
		"tcp_port": port, "http_port": port + 1, "version": "1.3.0"})
	msg := append([]byte("  V1IDENTIFY\n"), binary.BigEndian.AppendUint32(nil, uint32(len(body)))...)
	msg = append(msg, body...)
	if err := p.roundTrip(msg, false); err != nil {
		c.Close()
		return nil, fmt.Errorf("IDENTIFY: %w", err)
	}
	for _, t := range topics {
		if err := p.roundTrip([]byte("REGISTER "+t+" ch\n"), true); err != nil {
			c.Close()
			return nil, fmt.Errorf("REGISTER %s: %w", t, err)
		}
	}
	c.SetDeadline(time.Time{})
	return p, nil
}

// roundTrip writes msg and reads one reply (size-prefixed), which must be
// OK when wantOK.
func (p *lookupProducer) roundTrip(msg []byte, wantOK bool) error {
	if _, err := p.c.Write(msg); err != nil {
		return err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > 1<<20 {
		return fmt.Errorf("reply of %d bytes", size)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(p.r, data); err != nil {
		return err
	}
	if bytes.HasPrefix(data, []byte("E_")) || (wantOK && string(data) != "OK") {
		return fmt.Errorf("reply %q", data)
	}
	return nil
}

// RunLookup starts l's nsqlookupd (a child process), registers
// Lookup.Producers producers with Lookup.Topics topics each, then makes
// Lookup.Requests GET /lookup?topic=... requests over Lookup.Clients
// keep-alive connections (topics in turn), each answer checked to list
// every producer. Figures: requests/s and the daemon's CPU per request.
func RunLookup(ctx context.Context, target string, l *LookupdLauncher, o Options) Result {
	lo := o.Lookup
	r := Result{Scenario: ScenarioLookup, Target: target}
	if lo.Clients < 1 || lo.Producers < 1 || lo.Topics < 1 || lo.Requests < 1 {
		r.Error = fmt.Sprintf("lookup options %+v: nothing to measure", lo)
		return r
	}
	dir, err := os.MkdirTemp(o.TempDir, "sluice-bench-lookupd-")
	if err != nil {
		r.Error = fmt.Sprintf("log dir: %v", err)
		return r
	}
	defer os.RemoveAll(dir)
	n, err := l.Launch(ctx, dir)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	err = o.measureLookup(ctx, n, filepath.Base(l.Path), &r)
	if serr := n.Stop(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func (o Options) measureLookup(ctx context.Context, n *LookupdNode, bin string, r *Result) error {
	lo := o.Lookup
	r.Config = fmt.Sprintf("child process %s; %d producers registered over TCP with %d topics (1 channel) each; %d keep-alive HTTP/1.1 clients, GET /lookup?topic=..., topics in turn, every answer checked to list all %d producers",
		bin, lo.Producers, lo.Topics, lo.Clients, lo.Producers)
	topics := make([]string, lo.Topics)
	for i := range topics {
		topics[i] = fmt.Sprintf("bench_lookup_%03d", i)
	}
	for i := 0; i < lo.Producers; i++ {
		p, err := registerProducer(ctx, n.TCPAddr, 40000+2*i, topics)
		if err != nil {
			return fmt.Errorf("producer %d: %w", i, err)
		}
		defer p.c.Close()
	}
	var done atomic.Int64
	stop := o.progressFor(r.Scenario+"@"+r.Target, lo.Requests, done.Load)
	defer stop()
	per := lo.Requests / int64(lo.Clients)
	var wg sync.WaitGroup
	errs := make([]error, lo.Clients)
	conns := make([]net.Conn, lo.Clients)
	for i := range conns {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", n.HTTPAddr)
		if err != nil {
			return fmt.Errorf("dial nsqlookupd http: %w", err)
		}
		defer c.Close()
		conns[i] = c
	}
	// Every connection ends at ctx's end.
	unblock := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.SetDeadline(time.Now())
		}
	})
	defer unblock()
	cpu := startCPUMeterPID(n.PID)
	start := time.Now()
	for i, c := range conns {
		k := per
		if i == 0 {
			k += lo.Requests - per*int64(lo.Clients)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = lookupClient(c, n.HTTPAddr, topics, i, k, lo.Producers, &done)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.setRate(done.Load(), elapsed, 0)
	cpu.report(r, done.Load(), "req")
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// lookupClient makes k requests on c, starting at topic offset, and checks
// that every answer is 200 and lists producers producers.
func lookupClient(c net.Conn, host string, topics []string, offset int, k int64, producers int, done *atomic.Int64) error {
	reqs := make([][]byte, len(topics))
	for i, t := range topics {
		reqs[i] = []byte("GET /lookup?topic=" + t + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: sluice-bench\r\n\r\n")
	}
	br := bufio.NewReaderSize(c, 16<<10)
	var body []byte
	for j := int64(0); j < k; j++ {
		if _, err := c.Write(reqs[(offset+int(j))%len(reqs)]); err != nil {
			return fmt.Errorf("GET /lookup: %w", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("GET /lookup: %w", err)
		}
		body, err = readBody(resp, body[:0])
		if err != nil {
			return fmt.Errorf("GET /lookup: read answer: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /lookup: %s %s", resp.Status, body)
		}
		if got := bytes.Count(body, []byte(`"tcp_port"`)); got != producers {
			return fmt.Errorf("GET /lookup lists %d producers, want %d: %s", got, producers, body)
		}
		if resp.Close {
			return errors.New("GET /lookup: the server closed the keep-alive connection")
		}
		done.Add(1)
	}
	return nil
}

// readBody reads resp's body into buf (reused) and closes it.
func readBody(resp *http.Response, buf []byte) ([]byte, error) {
	defer resp.Body.Close()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
