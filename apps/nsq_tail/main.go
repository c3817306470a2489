// Command nsq_tail consumes topics and writes every message body to stdout,
// one per line (NSQ's nsq_tail). With --n it stops after exactly n messages.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/config"
)

const name = "nsq_tail"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	topics       clients.StringsFlag
	channel      string
	nsqdAddrs    clients.StringsFlag
	lookupdAddrs clients.StringsFlag
	consOpts     clients.ConfigOpts
	maxInFlight  int
	n            int
	printTopic   bool
}

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.channel, "channel", "", "NSQ channel")
	fs.Var(&o.consOpts, "consumer-opt", "option to passthrough to nsq.Consumer (may be given multiple times, http://godoc.org/github.com/nsqio/go-nsq#Config)")
	fs.Var(&o.lookupdAddrs, "lookupd-http-address", "lookupd HTTP address (may be given multiple times)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 200, "max number of messages to allow in flight")
	fs.IntVar(&o.n, "n", 0, "total messages to show (will wait if starved)")
	fs.Var(&o.nsqdAddrs, "nsqd-tcp-address", "nsqd TCP address (may be given multiple times)")
	fs.BoolVar(&o.printTopic, "print-topic", false, "print topic name where message was received")
	fs.Var(&o.topics, "topic", "NSQ topic (may be given multiple times)")
	version := fs.Bool("version", false, "print version string")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, config.VersionLine(name))
		return 0
	}
	logger := config.NewLogger(stderr, "["+name+"] ", new(slog.LevelVar))
	if err := tail(ctx, o, stdout, logger); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
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
	case len(o.nsqdAddrs) == 0 && len(o.lookupdAddrs) == 0:
		return errors.New("--nsqd-tcp-address or --lookupd-http-address required")
	case len(o.nsqdAddrs) > 0 && len(o.lookupdAddrs) > 0:
		return errors.New("use --nsqd-tcp-address or --lookupd-http-address not both")
	case o.n < 0:
		return fmt.Errorf("invalid --n %d", o.n)
	case o.maxInFlight < 1:
		return fmt.Errorf("invalid --max-in-flight %d", o.maxInFlight)
	}
	channel := o.channel
	if channel == "" {
		channel = fmt.Sprintf("tail%06d#ephemeral", rand.IntN(1000000))
	}
	cfg := nsq.NewConfig()
	cfg.UserAgent = fmt.Sprintf("%s/%s go-nsq/%s", name, config.Version, nsq.VERSION)
	cfg.MaxInFlight = o.maxInFlight
	if o.n > 0 && o.n < cfg.MaxInFlight {
		cfg.MaxInFlight = o.n // do not take more than we will print
	}
	// Print every message, however often it was attempted before (go-nsq
	// would otherwise finish messages past 5 attempts unseen).
	cfg.MaxAttempts = 0
	if err := o.consOpts.Apply(cfg); err != nil {
		return fmt.Errorf("--consumer-opt: %w", err)
	}

	p := &printer{w: bufio.NewWriter(stdout), limit: o.n, printTopic: o.printTopic, done: make(chan struct{})}
	var consumers []*nsq.Consumer
	defer func() {
		if err := clients.StopConsumers(consumers); err != nil {
			logger.Warn("consumers did not stop cleanly", "err", err)
		}
	}()
	seen := make(map[string]bool)
	for _, topic := range o.topics {
		if seen[topic] {
			continue
		}
		seen[topic] = true
		c, err := clients.StartConsumer(clients.ConsumerOptions{
			Topic: topic, Channel: channel, Config: cfg,
			NSQDAddrs: o.nsqdAddrs, LookupdAddrs: o.lookupdAddrs,
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
