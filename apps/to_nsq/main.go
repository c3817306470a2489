// Command to_nsq reads stdin, splits it on a delimiter and publishes every
// non-empty record to a topic on every given nsqd (NSQ's to_nsq).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/cli"
	"github.com/sluicemq/sluice/protocol"
)

const name = "to_nsq"

func main() { cli.Main(run) }

type options struct {
	topic     string
	delimiter string
	rate      int
	nsqdAddrs clients.StringsFlag
	prodOpts  clients.ConfigOpts
}

// run is the whole tool; it returns the exit status. ctx cancellation
// (SIGINT/SIGTERM) stops reading and exits 0 after the records read so far
// are published.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o options
	t := cli.New(name, stdout, stderr)
	fs := t.Flags
	fs.StringVar(&o.topic, "topic", "", "NSQ topic to publish to")
	fs.StringVar(&o.delimiter, "delimiter", "\n", "character to split input from stdin")
	fs.IntVar(&o.rate, "rate", 0, "Throttle messages to n/second. 0 to disable")
	fs.Var(&o.nsqdAddrs, "nsqd-tcp-address", "destination nsqd TCP address (may be given multiple times)")
	fs.Var(&o.prodOpts, "producer-opt", clients.ProducerOptUsage)
	if code, done := t.Parse(args); done {
		return code
	}
	return t.Exit(publishStdin(ctx, o, stdin, t.Logger()))
}

func publishStdin(ctx context.Context, o options, stdin io.Reader, logger *slog.Logger) error {
	switch {
	case o.topic == "":
		return errors.New("--topic required")
	case !protocol.IsValidTopicName(o.topic):
		return fmt.Errorf("invalid --topic %q", o.topic)
	case len(o.nsqdAddrs) == 0:
		return errors.New("--nsqd-tcp-address required")
	case len(o.delimiter) != 1:
		return fmt.Errorf("--delimiter must be a single character, got %q", o.delimiter)
	case o.rate < 0:
		return fmt.Errorf("invalid --rate %d", o.rate)
	}
	cfg, err := clients.ProducerConfig(cli.UserAgent(name), o.prodOpts)
	if err != nil {
		return err
	}
	pool, err := clients.NewPool(clients.PoolOptions{Addrs: o.nsqdAddrs, Config: cfg, Logger: logger})
	if err != nil {
		return err
	}
	defer pool.Stop()

	records := make(chan []byte)
	readErr := make(chan error, 1)
	// The reader goroutine is owned by publishStdin: it ends at EOF or on a
	// read error. When ctx is cancelled while it blocks on stdin, it ends
	// when stdin is closed (the process is exiting then).
	go func() {
		defer close(records)
		readErr <- readRecords(ctx, stdin, o.delimiter[0], records)
	}()

	var tick *time.Ticker
	if o.rate > 0 {
		tick = time.NewTicker(time.Second / time.Duration(o.rate))
		defer tick.Stop()
	}
	for {
		var rec []byte
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case rec, ok = <-records:
		}
		if !ok {
			return <-readErr
		}
		if tick != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		if err := pool.PublishAll(o.topic, rec); err != nil {
			return fmt.Errorf("publish to topic %q: %w", o.topic, err)
		}
	}
}

// readRecords sends every non-empty delimited record of r to out. A final
// record without a trailing delimiter is published too (the reference drops
// it).
func readRecords(ctx context.Context, r io.Reader, delim byte, out chan<- []byte) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes(delim)
		rec := bytes.TrimSuffix(line, []byte{delim})
		if len(rec) > 0 {
			select {
			case out <- rec:
			case <-ctx.Done():
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
	}
}
