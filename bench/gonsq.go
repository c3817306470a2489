package bench

import (
	"context"
	"fmt"
	"io"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
)

// go-nsq variants: the same loads through go-nsq v1.1.0, what an ordinary Go
// user gets. They cost more on the client side than the raw clients, so
// compare them with each other (Sluice vs the reference), not with the raw
// scenarios.
const (
	ScenarioGoNSQMPUB    = "gonsq-mpub"
	ScenarioGoNSQConsume = "gonsq-consume"
)

// ExtraScenarios are accepted by Run but not run by default.
var ExtraScenarios = []string{ScenarioGoNSQMPUB, ScenarioGoNSQConsume}

var quietLogger = log.New(io.Discard, "", 0)

// goNSQPublish publishes msgs with Conns go-nsq Producers calling
// MultiPublish with Batch bodies of BodySize bytes.
func (o Options) goNSQPublish(ctx context.Context, addr, topic string, msgs int64, sent *atomic.Int64) (time.Duration, error) {
	cfg := nsq.NewConfig()
	producers := make([]*nsq.Producer, o.Conns)
	for i := range producers {
		p, err := nsq.NewProducer(addr, cfg)
		if err != nil {
			return 0, fmt.Errorf("go-nsq producer: %w", err)
		}
		p.SetLogger(quietLogger, nsq.LogLevelError)
		if err := p.Ping(); err != nil {
			return 0, fmt.Errorf("go-nsq producer connect: %w", err)
		}
		producers[i] = p
		defer p.Stop()
	}
	body := make([]byte, o.BodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	start := time.Now()
	per := msgs / int64(o.Conns)
	for i, p := range producers {
		n := per
		if i == 0 {
			n += msgs - per*int64(o.Conns)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([][]byte, o.Batch)
			for j := range batch {
				batch[j] = body
			}
			for n > 0 && ctx.Err() == nil {
				k := min(n, int64(o.Batch))
				if err := p.MultiPublish(topic, batch[:k]); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				n -= k
				sent.Add(k)
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return time.Since(start), fmt.Errorf("go-nsq MultiPublish: %w", *p)
	}
	return time.Since(start), ctx.Err()
}

// RunGoNSQMPUB is the mpub scenario with go-nsq producers.
func RunGoNSQMPUB(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioGoNSQMPUB, Target: l.Name()}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		r.Config = fmt.Sprintf("%d go-nsq Producers, MultiPublish %d x %d B; one channel, no consumer; --mem-queue-size=%d; %s",
			o.Conns, o.Batch, o.BodySize, o.LargeMemQueue, n.Note)
		topic, channel := "bench_gonsq_mpub", "ch"
		if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
			return err
		}
		var sent atomic.Int64
		stop := o.progressFor(r.Scenario+"@"+l.Name(), o.MPUBMessages, sent.Load)
		d, err := o.goNSQPublish(ctx, n.TCPAddr, topic, o.MPUBMessages, &sent)
		stop()
		r.setRate(sent.Load(), d, o.BodySize)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return WaitChannelDepth(wctx, n.HTTPAddr, topic, channel, o.MPUBMessages)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// RunGoNSQConsume is the consume scenario with go-nsq consumers (one
// Consumer per connection, MaxInFlight = RDY, auto-FIN).
func RunGoNSQConsume(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioGoNSQConsume, Target: l.Name()}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		msgs := o.ConsumeMessages
		r.Config = fmt.Sprintf("backlog %d x %d B, %d go-nsq Consumers MaxInFlight %d, auto FIN; --mem-queue-size=%d; %s",
			msgs, o.BodySize, o.Conns, o.RDY, o.LargeMemQueue, n.Note)
		topic, channel := "bench_gonsq_consume", "ch"
		if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
			return err
		}
		if _, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: msgs}); err != nil {
			return fmt.Errorf("fill backlog: %w", err)
		}
		if err := WaitChannelDepth(ctx, n.HTTPAddr, topic, channel, msgs); err != nil {
			return err
		}
		var got, redeliv atomic.Int64
		done := make(chan struct{})
		var doneOnce sync.Once
		var end atomic.Int64
		cfg := nsq.NewConfig()
		cfg.MaxInFlight = o.RDY
		consumers := make([]*nsq.Consumer, 0, o.Conns)
		defer func() {
			for _, c := range consumers {
				c.Stop()
				<-c.StopChan
			}
		}()
		start := time.Now()
		for i := 0; i < o.Conns; i++ {
			c, err := nsq.NewConsumer(topic, channel, cfg)
			if err != nil {
				return fmt.Errorf("go-nsq consumer: %w", err)
			}
			c.SetLogger(quietLogger, nsq.LogLevelError)
			c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
				if m.Attempts > 1 {
					redeliv.Add(1)
				}
				if got.Add(1) == msgs {
					end.Store(time.Now().UnixNano())
					doneOnce.Do(func() { close(done) })
				}
				return nil
			}))
			if err := c.ConnectToNSQD(n.TCPAddr); err != nil {
				return fmt.Errorf("go-nsq consumer connect: %w", err)
			}
			consumers = append(consumers, c)
		}
		stop := o.progressFor(r.Scenario+"@"+l.Name(), msgs, got.Load)
		defer stop()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("go-nsq consumers got %d of %d: %w", got.Load(), msgs, ctx.Err())
		}
		r.setRate(got.Load(), time.Unix(0, end.Load()).Sub(start), o.BodySize)
		r.extra("redelivered", redeliv.Load())
		return o.checkDrained(ctx, n, &r, topic, channel)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
