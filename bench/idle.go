package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
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

// RunIdle opens o.IdleConns consumer connections (IDENTIFY with heartbeat
// o.IdleHeartbeat, SUB to one channel, RDY 1) against an nsqd running as a
// separate process, waits until every connection has answered at least one
// heartbeat with NOP, lets the daemon settle for o.IdleConnsSettle (its
// heartbeats still answered), measures its CPU time over o.IdleConnsWindow
// and then its VmRSS. The figure is the growth of VmRSS over the idle
// daemon's, divided by the connections. Where the daemon serves
// /debug/pprof (Sluice and NSQ both do), the growth of its Go memory
// statistics per connection is reported beside it, read without forcing a
// garbage collection. l must start a separate process.
//
// Connections come from 127.0.0.1 up to o.IdleConnsPerSource of them,
// then from 127.0.0.2, 127.0.0.3, ...: one source address has only the
// ephemeral port range (about 28,000 ports) to connect from.
func RunIdle(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioIdle, Target: l.Name()}
	if lim, err := RaiseNoFileLimit(); err != nil {
		r.Error = err.Error()
		return r
	} else if need := uint64(o.IdleConns) + 256; lim < need {
		r.Error = fmt.Sprintf("RLIMIT_NOFILE hard limit %d is below the %d needed", lim, need)
		return r
	}
	perSource := o.IdleConnsPerSource
	if perSource <= 0 {
		perSource = defaultConnsPerSource()
	}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		if n.PID == 0 {
			return fmt.Errorf("target %s does not run nsqd as a separate process; RSS per connection needs one", l.Name())
		}
		sources := (o.IdleConns + perSource - 1) / perSource
		r.Config = fmt.Sprintf("%d conns from %d source address(es): IDENTIFY heartbeat_interval=%s, SUB, RDY 1, heartbeats answered; "+
			"settle %s, CPU over %s; VmRSS of pid %d; %s",
			o.IdleConns, sources, o.IdleHeartbeat, o.IdleConnsSettle, o.IdleConnsWindow, n.PID, n.Note)
		return measureIdleConns(ctx, n, o, perSource, &r)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// measureIdleConns fills r with the figures of a node that has just
// started.
func measureIdleConns(ctx context.Context, n *Node, o Options, perSource int, r *Result) error {
	topic, channel := "bench_idle", "ch"
	if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
		return err
	}
	before, err := ProcessRSS(n.PID)
	if err != nil {
		return err
	}
	memBefore, _ := DaemonMemStats(ctx, n.HTTPAddr) // nil without /debug/pprof
	h := newIdleHolder(o.IdleConns)
	defer h.close()
	start := time.Now()
	stop := o.progressFor("idle connect@"+r.Target, int64(o.IdleConns), h.subscribed.Load)
	err = h.open(ctx, n.TCPAddr, topic, channel, o.IdleHeartbeat, perSource)
	stop()
	if err != nil {
		return err
	}
	r.extra("connect_seconds", roundTo(time.Since(start).Seconds(), 2))
	r.extra("source_addresses", h.sources)
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
	first, err := ProcessRSS(n.PID)
	if err != nil {
		return err
	}
	conns := int64(o.IdleConns)
	r.Messages = conns
	r.extra("rss_before_kb", before/1024)
	r.extra("rss_first_heartbeat_kb", first/1024)
	r.extra("rss_per_conn_first_heartbeat_bytes", (first-before)/conns)

	// Settle: what the connections' set-up left behind (garbage, stacks of
	// goroutines that have ended) is collected and returned to the OS at
	// the runtime's own pace, as it would be on a server left alone.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.IdleConnsSettle):
	}
	ticks0, err := ProcessCPUTicks(n.PID)
	if err != nil {
		return err
	}
	hb0, t0 := h.heartbeats.Load(), time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.IdleConnsWindow):
	}
	ticks1, err := ProcessCPUTicks(n.PID)
	if err != nil {
		return err
	}
	window := time.Since(t0)
	hbWindow := h.heartbeats.Load() - hb0
	after, err := ProcessRSS(n.PID) // before the HTTP reads below allocate in the daemon
	if err != nil {
		return err
	}
	if p := h.failed.Load(); p != nil {
		return *p
	}
	r.Seconds = roundTo(window.Seconds(), 3)
	r.extra("idle_cpu_percent", roundTo(float64(ticks1-ticks0)/clockTicksPerSecond/window.Seconds()*100, 2))
	r.extra("heartbeats_in_window", hbWindow)
	r.extra("heartbeats_expected_in_window", int64(float64(conns)*window.Seconds()/o.IdleHeartbeat.Seconds()))
	r.extra("rss_after_kb", after/1024)
	perConn := (after - before) / conns
	r.extra("rss_per_conn_bytes", perConn)
	r.extra("projected_1m_conns_gib", roundTo((float64(before)+float64(perConn)*1e6)/(1<<30), 2))
	r.extra("heartbeats_answered", h.heartbeats.Load())
	if memBefore != nil {
		if memAfter, err := DaemonMemStats(ctx, n.HTTPAddr); err == nil {
			r.extra("per_conn_bytes", memBreakdown(memBefore, memAfter, conns))
			r.extra("num_gc", memAfter["NumGC"])
		}
		if g, err := daemonGoroutines(ctx, n.HTTPAddr); err == nil {
			r.extra("goroutines", g)
		}
	}
	return nil
}

// memBreakdown divides the growth of the daemon's Go memory statistics by
// the connections: where the growth of VmRSS went. heap_idle_retained is
// heap memory that is free but not yet given back to the OS (it counts in
// RSS); gc_and_runtime_meta is GCSys+MSpanSys+MCacheSys+BuckHashSys;
// other_sys holds, among others, the runtime's poll descriptor of every
// socket (512 bytes each in Go 1.26).
func memBreakdown(before, after map[string]int64, conns int64) map[string]int64 {
	d := func(keys ...string) int64 {
		var v int64
		for _, k := range keys {
			v += after[k] - before[k]
		}
		return v / conns
	}
	retained := func(m map[string]int64) int64 { return m["HeapIdle"] - m["HeapReleased"] }
	return map[string]int64{
		"heap_inuse":          d("HeapInuse"),
		"heap_alloc":          d("HeapAlloc"),
		"heap_idle_retained":  (retained(after) - retained(before)) / conns,
		"stack_inuse":         d("StackInuse"),
		"other_sys":           d("OtherSys"),
		"gc_and_runtime_meta": d("GCSys", "MSpanSys", "MCacheSys", "BuckHashSys"),
	}
}

// DaemonMemStats reads the runtime.MemStats of a Go nsqd from the comment
// lines of GET /debug/pprof/heap?debug=1 ("# HeapInuse = 123"; "# Stack =
// inuse / sys" gives StackInuse and StackSys, likewise MSpan and MCache).
// It does not force a garbage collection.
func DaemonMemStats(ctx context.Context, httpAddr string) (map[string]int64, error) {
	body, err := httpGetBody(ctx, httpAddr, "/debug/pprof/heap?debug=1")
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64)
	for _, line := range bytes.Split(body, []byte("\n")) {
		k, v, ok := bytes.Cut(bytes.TrimPrefix(line, []byte("# ")), []byte(" = "))
		if !ok || len(line) < 2 || line[0] != '#' {
			continue
		}
		key := string(k)
		if a, b, pair := bytes.Cut(v, []byte(" / ")); pair {
			x, err1 := strconv.ParseInt(string(a), 10, 64)
			y, err2 := strconv.ParseInt(string(b), 10, 64)
			if err1 == nil && err2 == nil {
				out[key+"Inuse"], out[key+"Sys"] = x, y
			}
			continue
		}
		if x, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			out[key] = x
		}
	}
	if _, ok := out["HeapInuse"]; !ok {
		return nil, fmt.Errorf("no runtime.MemStats in /debug/pprof/heap?debug=1 of %s", httpAddr)
	}
	return out, nil
}

// daemonGoroutines reads the goroutine count from GET
// /debug/pprof/goroutine?debug=1 ("goroutine profile: total N").
func daemonGoroutines(ctx context.Context, httpAddr string) (int64, error) {
	body, err := httpGetBody(ctx, httpAddr, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	const prefix = "goroutine profile: total "
	line, _, _ := bytes.Cut(body, []byte("\n"))
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return 0, fmt.Errorf("unexpected goroutine profile %q", line)
	}
	return strconv.ParseInt(string(line[len(prefix):]), 10, 64)
}

func httpGetBody(ctx context.Context, httpAddr, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// defaultConnsPerSource is how many connections the scenario opens from
// one source address: the ephemeral port range of
// /proc/sys/net/ipv4/ip_local_port_range (32768-60999 by default: 28,232
// ports) less 1,000 for the machine's other connections.
func defaultConnsPerSource() int {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, err1 := strconv.Atoi(f[0])
			z, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && z > a {
				lo, hi = a, z
			}
		}
	}
	return max(hi-lo+1-1000, 1000)
}

// sourceAddr is the local address of the i-th connection: nil (the
// kernel's choice, 127.0.0.1 towards a loopback nsqd) for the first
// perSource, then 127.0.0.2, 127.0.0.3, ... for each further perSource.
func sourceAddr(i, perSource int) *net.TCPAddr {
	k := i / perSource
	if k == 0 {
		return nil
	}
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, 0x7f000001+uint32(k))
	return &net.TCPAddr{IP: ip}
}

// idleHolder owns the idle connections and one reader goroutine per
// connection (the bench side; the server's cost is what is measured).
type idleHolder struct {
	sources    int // source addresses used
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

// open dials and subscribes all connections, 64 at a time, perSource from
// each source address (see sourceAddr).
func (h *idleHolder) open(ctx context.Context, addr, topic, channel string, hb time.Duration, perSource int) error {
	identify := fmt.Appendf(nil, `{"feature_negotiation":false,"user_agent":"sluice-bench-idle","heartbeat_interval":%d}`, hb.Milliseconds())
	h.sources = (len(h.conns) + perSource - 1) / perSource
	if h.sources > 1 {
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%d connections need %d source addresses (127.0.0.x), so nsqd must listen on a loopback address, not %s",
				len(h.conns), h.sources, addr)
		}
	}
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
			c, err := DialSmallFrom(ctx, addr, sourceAddr(i, perSource))
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

// The goals for idle connections, evaluated on Sluice at
// idleConnsGoalCount connections or more (the --full size; at a few
// thousand the daemon's fixed costs still move the figure).
const (
	goalIdleConnBytes      = 4096 // VmRSS growth per idle consumer connection
	goalIdleConns1MGiB     = 4.0  // a million of them, projected, in GiB
	idleConnsGoalCount     = 18_000
	idleConnsGoalCountText = "18,000"
)

// IdleConnsChecks reports the idle-conns figures of each target, with the
// issue's goals judged for Sluice's targets (named "sluice...") at
// idleConnsGoalCount connections or more. Failed and skipped results are
// left out.
func IdleConnsChecks(results []Result) []Check {
	var out []Check
	for _, r := range results {
		if r.Scenario != ScenarioIdle || r.Error != "" || r.Skipped != "" || r.Messages == 0 {
			continue
		}
		judged := strings.HasPrefix(r.Target, "sluice") && r.Messages >= idleConnsGoalCount
		for _, g := range []struct {
			key, name string
			limit     float64 // 0: a figure without a goal
		}{
			{"rss_per_conn_bytes", "idle-conns RSS bytes per connection", goalIdleConnBytes},
			{"projected_1m_conns_gib", "idle-conns 1M connections projected, GiB", goalIdleConns1MGiB},
			{"idle_cpu_percent", "idle-conns CPU % of one core", 0},
		} {
			v, ok := asFloat(r.Extra[g.key])
			if !ok {
				continue
			}
			c := Check{Name: g.name, Target: r.Target, Value: v}
			if judged && g.limit > 0 {
				met := v <= g.limit
				c.Goal, c.Met = "<= "+strconv.FormatFloat(g.limit, 'f', -1, 64), &met
			}
			out = append(out, c)
		}
	}
	return out
}
