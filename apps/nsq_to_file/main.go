// Command nsq_to_file consumes topics and writes their messages to files,
// one body per line, rolling files by size, time and date, optionally
// gzipped, discovering topics by pattern through nsqlookupd (NSQ's
// nsq_to_file). A message is finished only once it is fsynced to a file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/cli"
	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/protocol"
)

const name = "nsq_to_file"

func main() { cli.Main(run) }

type options struct {
	topics         clients.StringsFlag
	topicPattern   string
	topicRefresh   time.Duration
	channel        string
	cons           clients.ConsumerFlags
	http           clients.HTTPClientFlags
	outputDir      string
	workDir        string
	datetimeFormat string
	filenameFormat string
	hostIdentifier string
	gzip           bool
	gzipLevel      int
	rotateSize     int64
	rotateInterval time.Duration
	syncInterval   time.Duration
	skipEmpty      bool
}

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	level := new(slog.LevelVar)
	t := cli.New(name, stdout, stderr)
	fs := t.Flags
	o.cons.Register(fs)
	o.http.Register(fs, 5*time.Second)
	fs.StringVar(&o.channel, "channel", "nsq_to_file", "nsq channel")
	fs.StringVar(&o.datetimeFormat, "datetime-format", "%Y-%m-%d_%H", "strftime compatible format for <DATETIME> in filename format")
	fs.StringVar(&o.filenameFormat, "filename-format", "<TOPIC>.<HOST><REV>.<DATETIME>.log", "output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced. <REV> is increased when file already exists)")
	fs.BoolVar(&o.gzip, "gzip", false, "gzip output files.")
	fs.IntVar(&o.gzipLevel, "gzip-level", 6, "gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)")
	fs.StringVar(&o.hostIdentifier, "host-identifier", "", "value to output in log filename in place of hostname. <SHORT_HOST> and <HOSTNAME> are valid replacement tokens")
	fs.Var(config.LevelFlag{Var: level}, "log-level", "set log verbosity: debug, info, warn, error, or fatal")
	logPrefix := fs.String("log-prefix", "["+name+"] ", "log message prefix")
	fs.StringVar(&o.outputDir, "output-dir", "/tmp", "directory to write output files to")
	fs.DurationVar(&o.rotateInterval, "rotate-interval", 0, "rotate the file every duration")
	fs.Int64Var(&o.rotateSize, "rotate-size", 0, "rotate the file when it grows bigger than `rotate-size` bytes")
	fs.BoolVar(&o.skipEmpty, "skip-empty-files", false, "skip writing empty files")
	fs.DurationVar(&o.syncInterval, "sync-interval", 30*time.Second, "sync file to disk every duration")
	fs.Var(&o.topics, "topic", "nsq topic (may be given multiple times)")
	fs.StringVar(&o.topicPattern, "topic-pattern", "", "only log topics matching the following pattern")
	fs.DurationVar(&o.topicRefresh, "topic-refresh", time.Minute, "how frequently the topic list should be refreshed")
	fs.StringVar(&o.workDir, "work-dir", "", "directory for in-progress files before moving to output-dir")
	if code, done := t.Parse(args); done {
		return code
	}
	return t.Exit(archive(ctx, o, config.NewLogger(stderr, *logPrefix, level)))
}

func (o *options) validate() (*regexp.Regexp, error) {
	switch {
	case o.channel == "" || !protocol.IsValidChannelName(o.channel):
		return nil, fmt.Errorf("invalid --channel %q", o.channel)
	case len(o.cons.NSQDAddrs) == 0 && len(o.cons.LookupdAddrs) == 0:
		return nil, errors.New("--nsqd-tcp-address or --lookupd-http-address required.")
	case len(o.cons.NSQDAddrs) > 0 && len(o.cons.LookupdAddrs) > 0:
		return nil, errors.New("use --nsqd-tcp-address or --lookupd-http-address not both")
	case len(o.topics) == 0 && o.topicPattern == "" && len(o.cons.LookupdAddrs) == 0:
		return nil, errors.New("--topic or --topic-pattern required")
	case len(o.topics) == 0 && len(o.cons.LookupdAddrs) == 0:
		return nil, errors.New("--lookupd-http-address must be specified when no --topic specified")
	case o.gzipLevel < 1 || o.gzipLevel > 9:
		return nil, fmt.Errorf("invalid --gzip-level value (%d), should be 1-9", o.gzipLevel)
	case o.rotateSize < 0 || o.rotateInterval < 0:
		return nil, errors.New("--rotate-size and --rotate-interval must not be negative")
	case o.syncInterval <= 0:
		return nil, fmt.Errorf("invalid --sync-interval %v", o.syncInterval)
	case o.cons.MaxInFlight < 1:
		return nil, fmt.Errorf("invalid --max-in-flight %d", o.cons.MaxInFlight)
	case o.topicRefresh <= 0:
		return nil, fmt.Errorf("invalid --topic-refresh %v", o.topicRefresh)
	}
	if (o.gzip || o.rotateSize > 0 || o.rotateInterval > 0 || o.workDir != "") && !strings.Contains(o.filenameFormat, "<REV>") {
		return nil, errors.New("missing <REV> in --filename-format when gzip, rotation, or work dir enabled")
	}
	for _, t := range o.topics {
		if !protocol.IsValidTopicName(t) {
			return nil, fmt.Errorf("invalid --topic %q", t)
		}
	}
	if o.topicPattern == "" {
		return nil, nil
	}
	re, err := regexp.Compile(o.topicPattern)
	if err != nil {
		return nil, fmt.Errorf("invalid --topic-pattern: %w", err)
	}
	for _, t := range o.topics {
		if !re.MatchString(t) {
			return nil, fmt.Errorf("--topic %q does not match --topic-pattern %q", t, o.topicPattern)
		}
	}
	return re, nil
}

func hostIdentifier(spec string) (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("read hostname: %w", err)
	}
	if spec == "" {
		return host, nil
	}
	short, _, _ := strings.Cut(host, ".")
	return strings.NewReplacer("<SHORT_HOST>", short, "<HOSTNAME>", host).Replace(spec), nil
}

// archiver owns the per-topic consumers and writers.
type archiver struct {
	o      options
	cfg    *nsq.Config
	wcfg   *writerConfig
	logger *slog.Logger

	stopping chan int // closed on shutdown: writers sync every message
	failed   chan error
	stopOnce sync.Once

	wg        sync.WaitGroup // topic writers
	mu        sync.Mutex     // guards consumers and errs
	consumers map[string]*nsq.Consumer
	errs      []error
}

func archive(ctx context.Context, o options, logger *slog.Logger) error {
	re, err := o.validate()
	if err != nil {
		return err
	}
	host, err := hostIdentifier(o.hostIdentifier)
	if err != nil {
		return err
	}
	workDir := o.workDir
	if workDir == "" {
		workDir = o.outputDir
	}
	for _, d := range []string{o.outputDir, workDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	cfg, err := o.cons.Config(cli.UserAgent(name))
	if err != nil {
		return err
	}
	gzipLevel := 0
	if o.gzip {
		gzipLevel = o.gzipLevel
	}
	a := &archiver{
		o: o, cfg: cfg, logger: logger,
		wcfg: &writerConfig{
			namer: fileNamer{
				format: o.filenameFormat, datetimeFormat: o.datetimeFormat, host: host, gzip: o.gzip,
				useRev: o.gzip || o.rotateSize > 0 || o.rotateInterval > 0 || o.workDir != "",
			},
			outputDir: o.outputDir, workDir: workDir, gzipLevel: gzipLevel,
			rotateSize: o.rotateSize, rotateInterval: o.rotateInterval, syncInterval: o.syncInterval,
			skipEmpty: o.skipEmpty, maxInFlight: cfg.MaxInFlight,
		},
		stopping:  make(chan int),
		failed:    make(chan error, 1),
		consumers: make(map[string]*nsq.Consumer),
	}
	defer a.shutdown()

	for _, t := range o.topics {
		if err := a.addTopic(t); err != nil {
			return err
		}
	}
	var refresh <-chan time.Time
	var hc *http.Client
	if len(o.topics) == 0 {
		hc = o.http.Client()
		a.discover(ctx, hc, re)
		t := time.NewTicker(o.topicRefresh)
		defer t.Stop()
		refresh = t.C
	}
	for {
		select {
		case <-ctx.Done():
			// A file that fails to close at shutdown still fails the run.
			a.shutdown()
			a.mu.Lock()
			defer a.mu.Unlock()
			return errors.Join(a.errs...)
		case err := <-a.failed:
			return err
		case <-refresh:
			a.discover(ctx, hc, re)
		}
	}
}

// discover starts a writer for every new topic lookupd knows that matches
// re (all topics when re is nil). Lookupd errors are logged and retried at
// the next refresh.
func (a *archiver) discover(ctx context.Context, hc *http.Client, re *regexp.Regexp) {
	topics, err := clients.LookupTopics(ctx, hc, a.o.cons.LookupdAddrs)
	if err != nil {
		a.logger.Warn("topic discovery failed, retrying at the next refresh", "err", err)
		return
	}
	for _, t := range topics {
		if re != nil && !re.MatchString(t) {
			continue
		}
		a.mu.Lock()
		_, known := a.consumers[t]
		a.mu.Unlock()
		if known {
			continue
		}
		if err := a.addTopic(t); err != nil {
			a.logger.Error("cannot archive discovered topic", "topic", t, "err", err)
		}
	}
}

// addTopic starts the consumer and the writer goroutine of one topic.
func (a *archiver) addTopic(topic string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.consumers[topic]; ok {
		return nil
	}
	w := newTopicWriter(a.wcfg, topic, a.logger)
	c, err := clients.StartConsumer(clients.ConsumerOptions{
		Topic: topic, Channel: a.o.channel, Config: a.cfg,
		NSQDAddrs: a.o.cons.NSQDAddrs, LookupdAddrs: a.o.cons.LookupdAddrs,
		Handler: w, Logger: a.logger,
	})
	if err != nil {
		return err
	}
	a.logger.Info("archiving topic", "topic", topic)
	a.consumers[topic] = c
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		err := w.loop(a.stopping, c.StopChan, c.IsStarved, func(err error) {
			select {
			case a.failed <- fmt.Errorf("topic %s: %w", topic, err):
			default:
			}
			c.Stop()
		})
		if err != nil {
			a.mu.Lock()
			a.errs = append(a.errs, err)
			a.mu.Unlock()
		}
	}()
	return nil
}

// shutdown stops every consumer, lets the writers sync and close their
// files, and waits for them. It is idempotent.
func (a *archiver) shutdown() {
	a.stopOnce.Do(a.stop)
}

func (a *archiver) stop() {
	close(a.stopping)
	a.mu.Lock()
	cs := make([]*nsq.Consumer, 0, len(a.consumers))
	for _, c := range a.consumers {
		cs = append(cs, c)
	}
	a.mu.Unlock()
	if err := clients.StopConsumers(cs); err != nil {
		a.logger.Warn("consumers did not stop cleanly", "err", err)
	}
	a.wg.Wait()
}
