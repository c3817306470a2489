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
	// ScenarioGoNSQPubSub is go-nsq producers and consumers at once: the
	// pubsub-max load (LatencyMessages, unthrottled) through go-nsq.
	ScenarioGoNSQPubSub = "gonsq-pubsub"
)

// ExtraScenarios are accepted by Run but not run by default.
var ExtraScenarios = []string{ScenarioGoNSQMPUB, ScenarioGoNSQConsume, ScenarioGoNSQPubSub, ScenarioLookup, ScenarioCreateChannels}

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
		cpu := startCPUMeter(n)
		d, err := o.goNSQPublish(ctx, n.TCPAddr, topic, o.MPUBMessages, &sent)
		stop()
		cpu.report(&r, sent.Load(), "msg")
		r.setRate(sent.Load(), d, o.BodySize)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := WaitChannelDepth(wctx, n.HTTPAddr, topic, channel, o.MPUBMessages); err != nil {
			return err
		}
		return deleteBacklog(ctx, n, topic)
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
		cpu := startCPUMeter(n)
		gc, err := o.startGoNSQConsumers(n.TCPAddr, topic, channel, msgs)
		if err != nil {
			return err
		}
		defer gc.stop()
		stop := o.progressFor(r.Scenario+"@"+l.Name(), msgs, gc.got.Load)
		defer stop()
		end, err := gc.wait(ctx)
		if err != nil {
			return err
		}
		cpu.report(&r, gc.got.Load(), "msg")
		r.setRate(gc.got.Load(), end.Sub(gc.start), o.BodySize)
		r.extra("redelivered", gc.redeliv.Load())
		return o.checkDrained(ctx, n, &r, topic, channel)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// RunGoNSQPubSub publishes LatencyMessages with go-nsq producers
// (MultiPublish batches, unthrottled) while go-nsq consumers consume them;
// delivered msgs/s from the publish start to the last delivery and, for a
// child process, the daemon's CPU per delivered message.
func RunGoNSQPubSub(ctx context.Context, l Launcher, o Options) Result {
	r := Result{Scenario: ScenarioGoNSQPubSub, Target: l.Name()}
	err := o.withNode(ctx, l, o.LargeMemQueue, func(n *Node) error {
		msgs := o.LatencyMessages
		r.Config = fmt.Sprintf("%d go-nsq Producers MultiPublish %d x %d B, %d msgs unthrottled, while %d go-nsq Consumers MaxInFlight %d, auto FIN; --mem-queue-size=%d; %s",
			o.Conns, o.Batch, o.BodySize, msgs, o.Conns, o.RDY, o.LargeMemQueue, n.Note)
		topic, channel := "bench_gonsq_pubsub", "ch"
		if err := CreateChannel(ctx, n.HTTPAddr, topic, channel); err != nil {
			return err
		}
		gc, err := o.startGoNSQConsumers(n.TCPAddr, topic, channel, msgs)
		if err != nil {
			return err
		}
		defer gc.stop()
		stop := o.progressFor(r.Scenario+"@"+l.Name(), msgs, gc.got.Load)
		defer stop()
		cpu := startCPUMeter(n)
		start := time.Now()
		var sent atomic.Int64
		pd, perr := o.goNSQPublish(ctx, n.TCPAddr, topic, msgs, &sent)
		r.extra("publish_msgs_per_sec", rate(sent.Load(), pd))
		if perr != nil {
			return perr
		}
		end, err := gc.wait(ctx)
		if err != nil {
			return err
		}
		cpu.report(&r, gc.got.Load(), "msg")
		r.setRate(gc.got.Load(), end.Sub(start), o.BodySize)
		r.extra("redelivered", gc.redeliv.Load())
		return o.checkDrained(ctx, n, &r, topic, channel)
	})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// goNSQConsumers are Conns go-nsq Consumers (MaxInFlight RDY, auto FIN)
// counting deliveries until want.
type goNSQConsumers struct {
	consumers    []*nsq.Consumer
	got, redeliv atomic.Int64
	end          atomic.Int64 // Unix ns of the want-th delivery
	done         chan struct{}
	start        time.Time
	want         int64
}

func (o Options) startGoNSQConsumers(addr, topic, channel string, want int64) (*goNSQConsumers, error) {
	gc := &goNSQConsumers{done: make(chan struct{}), want: want, start: time.Now()}
	var doneOnce sync.Once
	cfg := nsq.NewConfig()
	cfg.MaxInFlight = o.RDY
	for i := 0; i < o.Conns; i++ {
		c, err := nsq.NewConsumer(topic, channel, cfg)
		if err != nil {
			gc.stop()
			return nil, fmt.Errorf("go-nsq consumer: %w", err)
		}
		c.SetLogger(quietLogger, nsq.LogLevelError)
		c.AddHandler(nsq.HandlerFunc(func(m *nsq.Message) error {
			if m.Attempts > 1 {
				gc.redeliv.Add(1)
			}
			if gc.got.Add(1) == want {
				gc.end.Store(time.Now().UnixNano())
				doneOnce.Do(func() { close(gc.done) })
			}
			return nil
		}))
		if err := c.ConnectToNSQD(addr); err != nil {
			gc.stop()
			return nil, fmt.Errorf("go-nsq consumer connect: %w", err)
		}
		gc.consumers = append(gc.consumers, c)
	}
	return gc, nil
}

// wait returns the time of the last expected delivery.
func (gc *goNSQConsumers) wait(ctx context.Context) (time.Time, error) {
	select {
	case <-gc.done:
		return time.Unix(0, gc.end.Load()), nil
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("go-nsq consumers got %d of %d: %w", gc.got.Load(), gc.want, ctx.Err())
	}
}

// stop stops every consumer and waits for them.
func (gc *goNSQConsumers) stop() {
	for _, c := range gc.consumers {
		c.Stop()
		<-c.StopChan
	}
	gc.consumers = nil
}
