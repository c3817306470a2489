package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// RaiseNoFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns the new soft limit. Setting it explicitly also makes child
// processes (an nsqd started by the bench) inherit the raised limit.
func RaiseNoFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit NOFILE %d: %w", lim.Max, err)
	}
	return lim.Cur, nil
}

// ProcessRSS returns VmRSS of a process in bytes, from /proc/<pid>/status.
func ProcessRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("VmRSS:")) {
			continue
		}
		fields := bytes.Fields(line[len("VmRSS:"):])
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// RunIdle opens IdleConns consumer connections (IDENTIFY with heartbeat
// IdleHeartbeat, SUB to one channel, RDY 1) against an nsqd running as a
// separate process, waits until every connection has answered at least one
// heartbeat with NOP, and reports the growth of the process's VmRSS divided
// by the number of connections. l must start a separate process.
func RunIdle(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioIdle, Target: l.Name()}
	if lim, err := RaiseNoFileLimit(); err != nil {
		r.Error = err.Error()
		return r
	} else if need := uint64(o.IdleConns) + 256; lim < need {
		r.Error = fmt.Sprintf("RLIMIT_NOFILE hard limit %d is below the %d needed", lim, need)
		return r
	}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		if n.PID == 0 {
			return fmt.Errorf("target %s does not run nsqd as a separate process; RSS per connection needs one", l.Name())
		}
		r.Config = fmt.Sprintf("%d conns: IDENTIFY heartbeat_interval=%s, SUB, RDY 1, heartbeats answered; VmRSS of pid %d; %s",
			o.IdleConns, o.IdleHeartbeat, n.PID, n.Note)
		topic, channel := "bench_idle", "ch"
		if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
			return err
		}
		before, err := ProcessRSS(n.PID)
		if err != nil {
			return err
		}
		h := newIdleHolder(o.IdleConns)
		defer h.close()
		start := time.Now()
		stop := o.progressFor("idle connect@"+l.Name(), int64(o.IdleConns), h.subscribed.Load)
		err = h.open(ctx, n.TCPAddr, topic, channel, o.IdleHeartbeat)
		stop()
		if err != nil {
			return err
		}
		r.extra("connect_seconds", round(time.Since(start).Seconds()*100)/100)
		// Every connection answers one heartbeat: the server has run its
		// per-connection timers at least once.
		wctx, cancel := context.WithTimeout(ctx, 3*o.IdleHeartbeat+30*time.Second)
		defer cancel()
		if err := h.waitHeartbeats(wctx); err != nil {
			return err
		}
		ts, err := GetTopicStats(ctx, n.HTTPAddr, topic)
		if err != nil {
			return err
		}
		if len(ts.Channels) != 1 || ts.Channels[0].ClientCount != int64(o.IdleConns) {
			return fmt.Errorf("nsqd reports %+v, want %d clients on %s", ts.Channels, o.IdleConns, channel)
		}
		after, err := ProcessRSS(n.PID)
		if err != nil {
			return err
		}
		r.Messages = int64(o.IdleConns)
		r.extra("rss_before_kb", before/1024)
		r.extra("rss_after_kb", after/1024)
		r.extra("rss_per_conn_bytes", (after-before)/int64(o.IdleConns))
		r.extra("heartbeats_answered", h.heartbeats.Load())
		return nil
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// idleHolder owns the idle connections and one reader goroutine per
// connection (the bench side; the server's cost is what is measured).
type idleHolder struct {
	mu         sync.Mutex
	conns      []*Conn
	answered   []atomic.Bool
	heartbeats atomic.Int64
	subscribed atomic.Int64
	withHB     atomic.Int64
	failed     atomic.Pointer[error]
	wg         sync.WaitGroup
}

func newIdleHolder(n int) *idleHolder {
	return &idleHolder{conns: make([]*Conn, n), answered: make([]atomic.Bool, n)}
}

// open dials and subscribes all connections, 64 at a time.
func (h *idleHolder) open(ctx context.Context, addr, topic, channel string, hb time.Duration) error {
	identify := fmt.Appendf(nil, `{"feature_negotiation":false,"user_agent":"sluice-bench-idle","heartbeat_interval":%d}`, hb.Milliseconds())
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for i := range h.conns {
		if firstErr.Load() != nil || ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := DialSmall(ctx, addr)
			if err == nil {
				h.mu.Lock()
				h.conns[i] = c
				h.mu.Unlock()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				err = c.Identify(identify)
			}
			if err == nil {
				err = c.Subscribe(topic, channel)
			}
			if err == nil {
				err = c.Ready(1)
			}
			if err == nil {
				err = c.Flush()
			}
			if err != nil {
				err = fmt.Errorf("idle conn %d: %w", i, err)
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			c.SetDeadline(time.Time{})
			h.subscribed.Add(1)
			h.wg.Add(1)
			go h.serve(i, c)
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

// serve answers heartbeats until the connection is closed.
func (h *idleHolder) serve(i int, c *Conn) {
	defer h.wg.Done()
	for {
		typ, data, err := c.ReadFrame()
		if err != nil {
			return
		}
		if typ == FrameResponse && bytes.Equal(data, heartbeat) {
			c.Nop()
			if err := c.Flush(); err != nil {
				return
			}
			h.heartbeats.Add(1)
			if !h.answered[i].Swap(true) {
				h.withHB.Add(1)
			}
		} else if typ != FrameResponse {
			err := fmt.Errorf("idle conn %d: unexpected frame type %d: %q", i, typ, data)
			h.failed.CompareAndSwap(nil, &err)
			return
		}
	}
}

func (h *idleHolder) waitHeartbeats(ctx context.Context) error {
	want := int64(len(h.conns))
	for {
		if p := h.failed.Load(); p != nil {
			return *p
		}
		if h.withHB.Load() >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d idle connections answered a heartbeat: %w", h.withHB.Load(), want, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (h *idleHolder) close() {
	h.mu.Lock()
	for _, c := range h.conns {
		if c != nil {
			c.Close()
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
}
