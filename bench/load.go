package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// PublishSpec describes a publishing load.
type PublishSpec struct {
	Addr, Topic string
	// Conns is the number of publishing connections; Messages are split
	// evenly between them.
	Conns    int
	Messages int64
	// Batch is the number of messages per MPUB; ignored with PUB.
	Batch int
	// BodySize is the message body size in bytes (at least 8: the first 8
	// bytes carry a timestamp for end-to-end latency).
	BodySize int
	// PUB sends one PUB per round trip instead of MPUB batches.
	PUB bool
	// Rate is the total offered rate in messages/s; 0 is unthrottled. When
	// throttled, each message carries its scheduled send time, so a
	// publisher that falls behind shows up in the latency figures instead
	// of hiding (no coordinated omission).
	Rate float64
	// Sent, if not nil, is incremented as batches are acknowledged.
	Sent *atomic.Int64
	// RoundTrips records the time of every command, from its write to its
	// OK (PublishResult.RoundTrips).
	RoundTrips bool
	// Gate, if not nil, bounds the backlog: each command waits until the
	// gate lets its messages through (see BacklogGate).
	Gate *BacklogGate
}

// PublishResult is the outcome of Publish.
type PublishResult struct {
	Messages int64
	Elapsed  time.Duration
	// RoundTrips holds every command's round trip in ns (only with
	// PublishSpec.RoundTrips), connection by connection.
	RoundTrips []int64
}

// Publish dials all connections, then sends spec.Messages messages, waiting
// for each command's OK before sending the next (one batch in flight per
// connection, like NSQ's bench_writer). The clock starts after every
// connection is established.
func Publish(ctx context.Context, spec PublishSpec) (PublishResult, error) {
	if spec.Conns < 1 {
		spec.Conns = 1
	}
	if spec.Batch < 1 || spec.PUB {
		spec.Batch = 1
	}
	conns := make([]*Conn, 0, spec.Conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < spec.Conns; i++ {
		c, err := Dial(ctx, spec.Addr)
		if err != nil {
			return PublishResult{}, err
		}
		conns = append(conns, c)
	}
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.SetDeadline(time.Now())
		}
	})
	defer stop()

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		total    atomic.Int64
		rttMu    sync.Mutex
		rtts     []int64
	)
	start := time.Now()
	per := spec.Messages / int64(spec.Conns)
	for i, c := range conns {
		n := per
		if i == 0 {
			n += spec.Messages - per*int64(spec.Conns)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rtt []int64
			if spec.RoundTrips {
				rtt = make([]int64, 0, n/int64(spec.Batch)+1)
			}
			sent, err := publishOn(ctx, c, spec, n, start, &rtt)
			total.Add(sent)
			if spec.RoundTrips {
				rttMu.Lock()
				rtts = append(rtts, rtt...)
				rttMu.Unlock()
			}
			if err != nil {
				errOnce.Do(func() { firstErr = err })
			}
		}()
	}
	wg.Wait()
	res := PublishResult{Messages: total.Load(), Elapsed: time.Since(start), RoundTrips: rtts}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return res, fmt.Errorf("publish to %s: %w", spec.Addr, firstErr)
	}
	return res, nil
}

// stamper gives message timestamps without allocating per batch.
type stamper struct {
	base     int64   // Unix ns of message 0 (throttled) or of this batch
	interval float64 // ns between scheduled messages; 0 = all at base
	first    int64   // index of the batch's first message
}

func (s *stamper) at(i int) int64 {
	if s.interval == 0 {
		return s.base
	}
	return s.base + int64(float64(s.first+int64(i))*s.interval)
}

// publishOn sends total messages on c; with spec.RoundTrips it appends the
// round trip of every command to *rtt.
func publishOn(ctx context.Context, c *Conn, spec PublishSpec, total int64, start time.Time, rtt *[]int64) (int64, error) {
	enc := NewBatch(spec.Topic, spec.BodySize)
	st := &stamper{}
	stampAt := st.at
	var localRate float64
	if spec.Rate > 0 {
		localRate = spec.Rate / float64(spec.Conns)
		st.base = start.UnixNano()
		st.interval = 1e9 / localRate
	}
	var sent int64
	for sent < total {
		n := total - sent
		if localRate > 0 {
			due := int64(time.Since(start).Seconds()*localRate) + 1
			if due > total {
				due = total
			}
			if due <= sent {
				next := start.Add(time.Duration(float64(sent) * st.interval))
				time.Sleep(time.Until(next))
				continue
			}
			n = due - sent
		} else {
			st.base = time.Now().UnixNano()
		}
		if n > int64(spec.Batch) {
			n = int64(spec.Batch)
		}
		if spec.Gate != nil {
			if err := spec.Gate.acquire(ctx, n); err != nil {
				return sent, err
			}
			if localRate == 0 {
				st.base = time.Now().UnixNano() // the send time, not the wait's start
			}
		}
		st.first = sent
		var frame []byte
		if spec.PUB {
			frame = enc.PUB(stampAt(0))
		} else {
			frame = enc.MPUB(int(n), stampAt)
		}
		var t0 time.Time
		if spec.RoundTrips {
			t0 = time.Now()
		}
		if err := c.WriteRaw(frame); err != nil {
			return sent, err
		}
		data, err := c.ReadResponse()
		if err != nil {
			return sent, err
		}
		if !bytes.Equal(data, okBody) {
			return sent, fmt.Errorf("%w %q to publish", errNotOK, data)
		}
		if spec.RoundTrips {
			*rtt = append(*rtt, int64(time.Since(t0)))
		}
		sent += n
		if spec.Sent != nil {
			spec.Sent.Add(n)
		}
	}
	return sent, nil
}

// ConsumeSpec describes a group of consumers on one channel.
type ConsumeSpec struct {
	Addr, Topic, Channel string
	Conns                int
	// RDY is sent once per connection; nsqd treats it as a window (§3.6).
	RDY int
	// Expect is the number of deliveries after which the group stops.
	Expect int64
	// Latency records now - (timestamp in the body) for every delivery.
	Latency bool
	// HeartbeatMS and OutputBufferTimeoutMS go into IDENTIFY when > 0
	// (0 keeps the server's defaults, as go-nsq users get).
	HeartbeatMS           int
	OutputBufferTimeoutMS int
	// Gate, if not nil, is told of deliveries as they are counted.
	Gate *BacklogGate
}

// ConsumeResult is the outcome of a consumer group.
type ConsumeResult struct {
	// Messages counts deliveries (each FINed); Redelivered counts those with
	// attempts > 1.
	Messages, Redelivered int64
	// Start is when RDY was sent; End when the Expect-th delivery arrived.
	Start, End time.Time
	// Latencies are end-to-end latencies in ns (only with Latency).
	Latencies []int64
}

// ConsumerGroup is a set of subscribed consumer connections. Its goroutines
// are owned by the group and end by Wait.
type ConsumerGroup struct {
	spec     ConsumeSpec
	conns    []*Conn
	received atomic.Int64
	redeliv  atomic.Int64
	done     chan struct{}
	doneOnce sync.Once
	endNanos atomic.Int64
	start    time.Time
	wg       sync.WaitGroup
	mu       sync.Mutex
	lat      [][]int64
	err      error
	stopCtx  func() bool
}

// StartConsumers dials, IDENTIFYs and SUBs every connection, then sends RDY
// on all of them and starts reading. It returns once deliveries may flow.
func StartConsumers(ctx context.Context, spec ConsumeSpec) (*ConsumerGroup, error) {
	if spec.Conns < 1 {
		spec.Conns = 1
	}
	g := &ConsumerGroup{spec: spec, done: make(chan struct{})}
	identify := []byte(`{"feature_negotiation":false,"user_agent":"sluice-bench"`)
	if spec.HeartbeatMS > 0 {
		identify = fmt.Appendf(identify, `,"heartbeat_interval":%d`, spec.HeartbeatMS)
	}
	if spec.OutputBufferTimeoutMS > 0 {
		identify = fmt.Appendf(identify, `,"output_buffer_timeout":%d`, spec.OutputBufferTimeoutMS)
	}
	identify = append(identify, '}')
	for i := 0; i < spec.Conns; i++ {
		c, err := Dial(ctx, spec.Addr)
		if err == nil {
			g.conns = append(g.conns, c)
			err = c.Identify(identify)
		}
		if err == nil {
			err = c.Subscribe(spec.Topic, spec.Channel)
		}
		if err != nil {
			g.closeAll()
			return nil, fmt.Errorf("consumer %d on %s/%s: %w", i, spec.Topic, spec.Channel, err)
		}
	}
	g.stopCtx = context.AfterFunc(ctx, g.finish)
	g.start = time.Now()
	perConn := int(spec.Expect/int64(spec.Conns)) + 1024
	for _, c := range g.conns {
		var lat []int64
		if spec.Latency {
			lat = make([]int64, 0, perConn)
		}
		g.wg.Add(1)
		go g.read(c, lat)
	}
	return g, nil
}

// Received returns the deliveries so far (for progress reports).
func (g *ConsumerGroup) Received() int64 { return g.received.Load() }

// finish stops the group: readers blocked in a read wake up and exit.
func (g *ConsumerGroup) finish() {
	g.doneOnce.Do(func() {
		close(g.done)
		for _, c := range g.conns {
			c.nc.SetReadDeadline(time.Now())
		}
	})
}

func (g *ConsumerGroup) closeAll() {
	for _, c := range g.conns {
		c.Close()
	}
}

func (g *ConsumerGroup) fail(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.mu.Unlock()
	g.finish()
}

func (g *ConsumerGroup) read(c *Conn, lat []int64) {
	defer g.wg.Done()
	defer func() {
		g.mu.Lock()
		g.lat = append(g.lat, lat)
		g.mu.Unlock()
	}()
	err := c.Ready(g.spec.RDY)
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		g.fail(fmt.Errorf("send RDY: %w", err))
		return
	}
	var pending int64 // deliveries not yet added to g.received
	account := func() {
		if pending == 0 {
			return
		}
		if g.spec.Gate != nil {
			g.spec.Gate.delivered(pending)
		}
		if g.received.Add(pending) >= g.spec.Expect {
			g.endNanos.CompareAndSwap(0, time.Now().UnixNano())
			g.finish()
		}
		pending = 0
	}
	for {
		if c.Buffered() == 0 {
			account()
			if err := c.Flush(); err != nil {
				g.fail(fmt.Errorf("flush FIN: %w", err))
				return
			}
		}
		typ, data, err := c.ReadFrame()
		if err != nil {
			account()
			c.Flush() // FINs for what was received, best effort
			select {
			case <-g.done:
			default:
				g.fail(fmt.Errorf("consumer read: %w", err))
			}
			return
		}
		switch typ {
		case FrameMessage:
			if len(data) < msgIDEnd {
				g.fail(fmt.Errorf("short message frame (%d bytes)", len(data)))
				return
			}
			if lat != nil {
				lat = append(lat, time.Now().UnixNano()-bodyStamp(data[msgIDEnd:]))
			}
			if data[msgTimestampEnd] != 0 || data[msgTimestampEnd+1] > 1 {
				g.redeliv.Add(1)
			}
			if err := c.Finish(data[msgAttemptsEnd:msgIDEnd]); err != nil {
				g.fail(err)
				return
			}
			pending++
			if pending >= 256 {
				account()
			}
		case FrameResponse:
			if bytes.Equal(data, heartbeat) {
				c.Nop()
			}
		case FrameError:
			g.fail(fmt.Errorf("nsqd error to consumer: %s", data))
			return
		}
	}
}

// Wait blocks until Expect deliveries arrived, a reader failed or the
// context ended, then closes the connections and returns the result.
func (g *ConsumerGroup) Wait() (ConsumeResult, error) {
	<-g.done
	g.wg.Wait()
	g.stopCtx()
	g.closeAll()
	res := ConsumeResult{Messages: g.received.Load(), Redelivered: g.redeliv.Load(), Start: g.start}
	if e := g.endNanos.Load(); e != 0 {
		res.End = time.Unix(0, e)
	} else {
		res.End = time.Now()
	}
	if g.spec.Latency {
		n := 0
		for _, l := range g.lat {
			n += len(l)
		}
		res.Latencies = make([]int64, 0, n)
		for _, l := range g.lat {
			res.Latencies = append(res.Latencies, l...)
		}
	}
	if g.err != nil {
		return res, g.err
	}
	if res.Messages < g.spec.Expect {
		return res, fmt.Errorf("consumers on %s/%s got %d of %d messages", g.spec.Topic, g.spec.Channel, res.Messages, g.spec.Expect)
	}
	return res, nil
}

// BacklogGate bounds what a publisher may have published and the consumers
// not yet received: a command of n messages waits while issued + n −
// delivered would exceed the bound. The consumers count deliveries in
// groups (up to 256 per connection, or whatever their read buffer held), so
// the backlog can briefly look larger than it is.
type BacklogGate struct {
	mu           sync.Mutex
	cond         sync.Cond
	bound        int64
	issued, done int64
	waiting      int
	closed       bool
	// Waits counts the commands that had to wait.
	Waits atomic.Int64
}

// NewBacklogGate returns a gate that keeps at most bound messages
// published and not yet delivered.
func NewBacklogGate(bound int64) *BacklogGate {
	g := &BacklogGate{bound: bound}
	g.cond.L = &g.mu
	return g
}

// acquire waits until n more messages fit under the bound (a command larger
// than the bound passes once nothing is outstanding), or ctx ends.
func (g *BacklogGate) acquire(ctx context.Context, n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.issued+n-g.done > g.bound && g.issued > g.done {
		g.Waits.Add(1)
		stop := context.AfterFunc(ctx, func() {
			g.mu.Lock()
			g.closed = true
			g.cond.Broadcast()
			g.mu.Unlock()
		})
		defer stop()
		g.waiting++
		for !g.closed && g.issued+n-g.done > g.bound && g.issued > g.done {
			g.cond.Wait()
		}
		g.waiting--
		if g.closed {
			return ctx.Err()
		}
	}
	g.issued += n
	return nil
}

// delivered counts n deliveries and wakes waiting publishers.
func (g *BacklogGate) delivered(n int64) {
	g.mu.Lock()
	g.done += n
	if g.waiting > 0 {
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}
