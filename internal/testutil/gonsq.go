package testutil

import (
	"io"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
)

// GoNSQLogger returns the logger and level for go-nsq objects created by
// tests: discarded unless LogEnv is set. Use with SetLogger.
func GoNSQLogger() (*log.Logger, nsq.LogLevel) {
	if envLogOn() {
		return log.New(logWriter{}, "", log.Lmicroseconds), nsq.LogLevelInfo
	}
	return log.New(io.Discard, "", 0), nsq.LogLevelError
}

// NewConfig returns a go-nsq config suited to tests: short lookupd poll
// interval, no backoff randomisation surprises.
func NewConfig() *nsq.Config {
	cfg := nsq.NewConfig()
	cfg.LookupdPollInterval = time.Second
	cfg.DefaultRequeueDelay = 0
	return cfg
}

// NewProducer connects a go-nsq producer to the nsqd TCP address addr (cfg
// may be nil) and pings it so connection failures surface immediately. It is
// stopped when the test ends.
func NewProducer(t testing.TB, addr string, cfg *nsq.Config) *nsq.Producer {
	t.Helper()
	if cfg == nil {
		cfg = NewConfig()
	}
	p, err := nsq.NewProducer(addr, cfg)
	if err != nil {
		t.Fatalf("nsq.NewProducer(%s): %v", addr, err)
	}
	l, lvl := GoNSQLogger()
	p.SetLogger(l, lvl)
	t.Cleanup(p.Stop)
	if err := p.Ping(); err != nil {
		t.Fatalf("producer ping %s: %v", addr, err)
	}
	return p
}

// NewConsumer starts a go-nsq consumer for topic/channel connected directly
// to the nsqd TCP address addr (cfg may be nil; MaxInFlight defaults to 1).
// The consumer is stopped, and waited for, when the test ends.
func NewConsumer(t testing.TB, addr, topic, channel string, cfg *nsq.Config, h nsq.Handler) *nsq.Consumer {
	t.Helper()
	if cfg == nil {
		cfg = NewConfig()
	}
	c, err := nsq.NewConsumer(topic, channel, cfg)
	if err != nil {
		t.Fatalf("nsq.NewConsumer(%s, %s): %v", topic, channel, err)
	}
	l, lvl := GoNSQLogger()
	c.SetLogger(l, lvl)
	c.AddHandler(h)
	t.Cleanup(func() { StopConsumer(t, c) })
	if err := c.ConnectToNSQD(addr); err != nil {
		t.Fatalf("consumer connect %s: %v", addr, err)
	}
	return c
}

// StopConsumer stops c and waits (bounded) until it has stopped. Safe to call
// more than once.
func StopConsumer(t testing.TB, c *nsq.Consumer) {
	t.Helper()
	c.Stop()
	select {
	case <-c.StopChan:
	case <-time.After(30 * time.Second):
		t.Errorf("consumer did not stop within 30s")
	}
}

// Delivery is one message as a Collector saw it.
type Delivery struct {
	ID        string
	Body      string
	Attempts  uint16
	Timestamp int64
	At        time.Time
}

// Collector is a go-nsq handler that records every delivery and finishes
// the message (go-nsq FINs automatically when HandleMessage returns nil).
type Collector struct {
	mu         sync.Mutex
	deliveries []Delivery
	counts     map[string]int
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{counts: make(map[string]int)}
}

// HandleMessage implements nsq.Handler.
func (c *Collector) HandleMessage(m *nsq.Message) error {
	d := Delivery{ID: string(m.ID[:]), Body: string(m.Body), Attempts: m.Attempts, Timestamp: m.Timestamp, At: time.Now()}
	c.mu.Lock()
	c.deliveries = append(c.deliveries, d)
	c.counts[d.Body]++
	c.mu.Unlock()
	return nil
}

// Len returns the number of deliveries so far.
func (c *Collector) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.deliveries)
}

// Deliveries returns a copy of every delivery so far.
func (c *Collector) Deliveries() []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Delivery(nil), c.deliveries...)
}

// Counts returns a copy of deliveries per body.
func (c *Collector) Counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	return m
}
