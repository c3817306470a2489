package clients

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nsqio/go-nsq"
)

// ConsumerOptions describes one consumer as the tools configure it.
type ConsumerOptions struct {
	Topic, Channel string
	// Config is the go-nsq configuration (already carrying --consumer-opt
	// and --max-in-flight); nil means nsq.NewConfig().
	Config *nsq.Config
	// NSQDAddrs and LookupdAddrs are where to find the topic; at least one
	// of the two must be non-empty.
	NSQDAddrs, LookupdAddrs []string
	// Handler handles messages with Concurrency goroutines (default 1).
	Handler     nsq.Handler
	Concurrency int
	// Logger receives go-nsq's logs; nil discards.
	Logger *slog.Logger
}

// StartConsumer creates a go-nsq Consumer, adds the handler and connects it
// to the given nsqd and lookupd addresses. On error nothing is left running.
func StartConsumer(o ConsumerOptions) (*nsq.Consumer, error) {
	if len(o.NSQDAddrs) == 0 && len(o.LookupdAddrs) == 0 {
		return nil, errors.New("no nsqd or nsqlookupd address")
	}
	cfg := o.Config
	if cfg == nil {
		cfg = nsq.NewConfig()
	}
	c, err := nsq.NewConsumer(o.Topic, o.Channel, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s/%s: %w", o.Topic, o.Channel, err)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c.SetLogger(NSQLogger{L: logger}, NSQLogLevel(logger))
	n := o.Concurrency
	if n < 1 {
		n = 1
	}
	c.AddConcurrentHandlers(o.Handler, n)
	if len(o.NSQDAddrs) > 0 {
		if err := c.ConnectToNSQDs(o.NSQDAddrs); err != nil {
			c.Stop()
			<-c.StopChan
			return nil, fmt.Errorf("consumer %s/%s: connect to nsqd: %w", o.Topic, o.Channel, err)
		}
	}
	if len(o.LookupdAddrs) > 0 {
		if err := c.ConnectToNSQLookupds(o.LookupdAddrs); err != nil {
			c.Stop()
			<-c.StopChan
			return nil, fmt.Errorf("consumer %s/%s: connect to nsqlookupd: %w", o.Topic, o.Channel, err)
		}
	}
	return c, nil
}

// StopConsumer stops c gracefully (CLS, wait for in-flight messages to be
// answered) and waits until it has stopped or ctx is done.
func StopConsumer(ctx context.Context, c *nsq.Consumer) error {
	c.Stop()
	select {
	case <-c.StopChan:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("consumer stop: %w", ctx.Err())
	}
}

// StopTimeout is how long the tools wait for their consumers to drain on
// shutdown.
const StopTimeout = 30 * time.Second

// StopConsumers stops every consumer concurrently and waits up to
// StopTimeout for all of them.
func StopConsumers(cs []*nsq.Consumer) error {
	ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	for _, c := range cs {
		c.Stop()
	}
	var errs []error
	for _, c := range cs {
		if err := StopConsumer(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
