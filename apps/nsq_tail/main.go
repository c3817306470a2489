// Command nsq_tail consumes topics and writes every message body to stdout,
// one per line (NSQ's nsq_tail). With --n it stops after exactly n messages.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/cli"
)

const name = "nsq_tail"

func main() { cli.Main(run) }

type options struct {
	topics     clients.StringsFlag
	channel    string
	cons       clients.ConsumerFlags
	n          int
	printTopic bool
}

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	t := cli.New(name, stdout, stderr)
	fs := t.Flags
	o.cons.Register(fs)
	fs.StringVar(&o.channel, "channel", "", "NSQ channel")
	fs.IntVar(&o.n, "n", 0, "total messages to show (will wait if starved)")
	fs.BoolVar(&o.printTopic, "print-topic", false, "print topic name where message was received")
	fs.Var(&o.topics, "topic", "NSQ topic (may be given multiple times)")
	if code, done := t.Parse(args); done {
		return code
	}
	return t.Exit(tail(ctx, o, stdout, t.Logger()))
}

// printer writes message bodies to the output, counting them against the
// --n limit. Its lock serialises the handlers of every topic's consumer.
type printer struct {
	mu         sync.Mutex
	w          *bufio.Writer
	limit      int // 0 = unlimited
	printed    int
	printTopic bool
	done       chan struct{} // closed when limit is reached
	err        error         // first write error; also closes done
	consumers  []*nsq.Consumer
}

// pause sets every consumer's RDY to 0 so that nsqd sends nothing more once
// the limit is reached (otherwise a requeued message would come straight
// back). Called with mu held.
func (p *printer) pause() {
	for _, c := range p.consumers {
		c.ChangeMaxInFlight(0)
	}
}

// handler returns the go-nsq handler for one topic. A message beyond the
// limit is requeued, not finished: nothing is acknowledged without being
// printed.
func (p *printer) handler(topic string) nsq.HandlerFunc {
	return func(m *nsq.Message) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err != nil || (p.limit > 0 && p.printed >= p.limit) {
			m.RequeueWithoutBackoff(0)
			return nil
		}
		if p.printTopic {
			p.w.WriteString(topic)
			p.w.WriteString(" | ")
		}
		p.w.Write(m.Body)
		p.w.WriteByte('\n')
		if err := p.w.Flush(); err != nil {
			p.err = fmt.Errorf("write stdout: %w", err)
			p.pause()
			close(p.done)
			return p.err
		}
		p.printed++
		if p.limit > 0 && p.printed == p.limit {
			p.pause()
			close(p.done)
		}
		return nil
	}
}

func tail(ctx context.Context, o options, stdout io.Writer, logger *slog.Logger) error {
	switch {
	case len(o.topics) == 0:
		return errors.New("--topic required")
	case len(o.cons.NSQDAddrs) == 0 && len(o.cons.LookupdAddrs) == 0:
		return errors.New("--nsqd-tcp-address or --lookupd-http-address required")
	case len(o.cons.NSQDAddrs) > 0 && len(o.cons.LookupdAddrs) > 0:
		return errors.New("use --nsqd-tcp-address or --lookupd-http-address not both")
	case o.n < 0:
		return fmt.Errorf("invalid --n %d", o.n)
	case o.cons.MaxInFlight < 1:
		return fmt.Errorf("invalid --max-in-flight %d", o.cons.MaxInFlight)
	}
	channel := o.channel
	if channel == "" {
		channel = fmt.Sprintf("tail%06d#ephemeral", rand.IntN(1000000))
	}
	// Do not take more than we will print. Unlimited attempts (Config):
	// print every message, however often it was attempted before.
	if o.n > 0 && o.n < o.cons.MaxInFlight {
		o.cons.MaxInFlight = o.n
	}
	cfg, err := o.cons.Config(cli.UserAgent(name))
	if err != nil {
		return err
	}

	p := &printer{w: bufio.NewWriter(stdout), limit: o.n, printTopic: o.printTopic, done: make(chan struct{})}
	var consumers []*nsq.Consumer
	defer func() {
		if err := clients.StopConsumers(consumers); err != nil {
			logger.Warn("consumers did not stop cleanly", "err", err)
		}
	}()
	for _, topic := range o.topics.Unique() {
		c, err := clients.StartConsumer(clients.ConsumerOptions{
			Topic: topic, Channel: channel, Config: cfg,
			NSQDAddrs: o.cons.NSQDAddrs, LookupdAddrs: o.cons.LookupdAddrs,
			Handler: p.handler(topic), Logger: logger,
		})
		if err != nil {
			return err
		}
		consumers = append(consumers, c)
		p.mu.Lock()
		p.consumers = append(p.consumers, c)
		if p.limit > 0 && p.printed >= p.limit {
			c.ChangeMaxInFlight(0)
		}
		p.mu.Unlock()
	}
	select {
	case <-ctx.Done():
		return nil
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	}
}
