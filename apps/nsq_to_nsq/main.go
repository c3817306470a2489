// Command nsq_to_nsq consumes topics and re-publishes every message to other
// nsqds (NSQ's nsq_to_nsq). A message is finished only after a destination
// nsqd acknowledged it; a failed publish requeues it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
	"github.com/sluicemq/sluice/internal/cli"
	"github.com/sluicemq/sluice/protocol"
)

const name = "nsq_to_nsq"

func main() { cli.Main(run) }

type options struct {
	topics           clients.StringsFlag
	channel          string
	destTopic        string
	cons             clients.ConsumerFlags
	destAddrs        clients.StringsFlag
	prodOpts         clients.ConfigOpts
	mode             string
	statusEvery      int
	requireJSONField string
	requireJSONValue string
	whitelistFields  clients.StringsFlag
}

// NSQ's nsq_to_nsq words the help of both go-nsq option flags with "see".
const (
	consumerOptUsage = "option to passthrough to nsq.Consumer (may be given multiple times, see http://godoc.org/github.com/nsqio/go-nsq#Config)"
	producerOptUsage = "option to passthrough to nsq.Producer (may be given multiple times, see http://godoc.org/github.com/nsqio/go-nsq#Config)"
)

func run(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var o options
	t := cli.New(name, stdout, stderr)
	fs := t.Flags
	o.cons.Register(fs)
	fs.Lookup("consumer-opt").Usage = consumerOptUsage
	fs.StringVar(&o.channel, "channel", "nsq_to_nsq", "nsq channel")
	fs.Var(&o.destAddrs, "destination-nsqd-tcp-address", "destination nsqd TCP address (may be given multiple times)")
	fs.StringVar(&o.destTopic, "destination-topic", "", "use this destination topic for all consumed topics (default is consumed topic name)")
	fs.StringVar(&o.mode, "mode", "hostpool", "the upstream request mode options: round-robin, hostpool (default), epsilon-greedy")
	fs.Var(&o.prodOpts, "producer-opt", producerOptUsage)
	fs.StringVar(&o.requireJSONField, "require-json-field", "", "for JSON messages: only pass messages that contain this field")
	fs.StringVar(&o.requireJSONValue, "require-json-value", "", "for JSON messages: only pass messages in which the required field has this value")
	fs.IntVar(&o.statusEvery, "status-every", 250, "the # of requests between logging status (per destination), 0 disables")
	fs.Var(&o.topics, "topic", "nsq topic (may be given multiple times)")
	fs.Var(&o.whitelistFields, "whitelist-json-field", "for JSON messages: pass this field (may be given multiple times)")
	if code, done := t.Parse(args); done {
		return code
	}
	return t.Exit(relay(ctx, o, t.Logger()))
}

func (o options) validate() error {
	switch {
	case len(o.topics) == 0 || o.channel == "":
		return errors.New("--topic and --channel are required")
	case !protocol.IsValidChannelName(o.channel):
		return fmt.Errorf("invalid --channel %q", o.channel)
	case o.destTopic != "" && !protocol.IsValidTopicName(o.destTopic):
		return fmt.Errorf("invalid --destination-topic %q", o.destTopic)
	case len(o.destAddrs) == 0:
		return errors.New("--destination-nsqd-tcp-address required")
	case len(o.cons.NSQDAddrs) == 0 && len(o.cons.LookupdAddrs) == 0:
		return errors.New("--nsqd-tcp-address or --lookupd-http-address required")
	case len(o.cons.NSQDAddrs) > 0 && len(o.cons.LookupdAddrs) > 0:
		return errors.New("use --nsqd-tcp-address or --lookupd-http-address not both")
	case o.requireJSONValue != "" && o.requireJSONField == "":
		return errors.New("--require-json-value requires --require-json-field")
	case o.cons.MaxInFlight < 1:
		return fmt.Errorf("invalid --max-in-flight %d", o.cons.MaxInFlight)
	}
	for _, t := range o.topics {
		if !protocol.IsValidTopicName(t) {
			return fmt.Errorf("invalid --topic %q", t)
		}
	}
	return nil
}

func relay(ctx context.Context, o options, logger *slog.Logger) error {
	if err := o.validate(); err != nil {
		return err
	}
	mode, err := clients.ParseMode(o.mode)
	if err != nil {
		return fmt.Errorf("--mode: %w", err)
	}
	pcfg, err := clients.ProducerConfig(cli.UserAgent(name), o.prodOpts)
	if err != nil {
		return err
	}
	ccfg, err := o.cons.Config(cli.UserAgent(name))
	if err != nil {
		return err
	}
	pool, err := clients.NewPool(clients.PoolOptions{Addrs: o.destAddrs, Config: pcfg, Mode: mode, Logger: logger})
	if err != nil {
		return err
	}
	defer pool.Stop()

	var consumers []*nsq.Consumer
	defer func() {
		if err := clients.StopConsumers(consumers); err != nil {
			logger.Warn("consumers did not stop cleanly", "err", err)
		}
	}()
	for _, topic := range o.topics.Unique() {
		dest := o.destTopic
		if dest == "" {
			dest = topic
		}
		h := &handler{o: &o, pool: pool, topic: dest, logger: logger.With("topic", topic), start: time.Now()}
		c, err := clients.StartConsumer(clients.ConsumerOptions{
			Topic: topic, Channel: o.channel, Config: ccfg,
			NSQDAddrs: o.cons.NSQDAddrs, LookupdAddrs: o.cons.LookupdAddrs,
			Handler: h, Concurrency: o.cons.MaxInFlight, Logger: logger,
		})
		if err != nil {
			return err
		}
		consumers = append(consumers, c)
	}
	<-ctx.Done()
	return nil
}

// handler re-publishes one source topic's messages.
type handler struct {
	o      *options
	pool   *clients.Pool
	topic  string // destination
	logger *slog.Logger
	start  time.Time
	count  atomic.Int64
}

// HandleMessage publishes the (filtered) body synchronously: returning nil
// finishes the message only after a destination acknowledged it; an error
// makes go-nsq requeue it.
func (h *handler) HandleMessage(m *nsq.Message) error {
	body, pass, err := h.filter(m.Body)
	if err != nil {
		h.logger.Warn("not a JSON message, dropped by --require-json-field / --whitelist-json-field", "id", string(m.ID[:]), "err", err)
		return nil
	}
	if !pass {
		return nil
	}
	if err := h.pool.Publish(h.topic, body); err != nil {
		h.logger.Error("publish failed, requeueing", "id", string(m.ID[:]), "err", err)
		return err
	}
	if n := h.count.Add(1); h.o.statusEvery > 0 && n%int64(h.o.statusEvery) == 0 {
		el := time.Since(h.start)
		h.logger.Info("status", "published", n, "rate_per_sec", int64(float64(n)/el.Seconds()))
	}
	return nil
}

// filter applies the JSON options. It returns the body to publish and
// whether the message passes.
func (h *handler) filter(body []byte) ([]byte, bool, error) {
	if h.o.requireJSONField == "" && len(h.o.whitelistFields) == 0 {
		return body, true, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, false, err
	}
	if f := h.o.requireJSONField; f != "" {
		raw, ok := doc[f]
		if !ok {
			return nil, false, nil
		}
		if v := h.o.requireJSONValue; v != "" && !jsonValueIs(raw, v) {
			return nil, false, nil
		}
	}
	if len(h.o.whitelistFields) == 0 {
		return body, true, nil
	}
	out := make(map[string]json.RawMessage, len(h.o.whitelistFields))
	for _, f := range h.o.whitelistFields {
		if raw, ok := doc[f]; ok {
			out[f] = raw
		}
	}
	b, err := json.Marshal(out)
	return b, true, err
}

// jsonValueIs compares a JSON value with the text of --require-json-value: a
// string by its content, anything else (number, bool) by its JSON text.
func jsonValueIs(raw json.RawMessage, want string) bool {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s == want
	}
	return string(raw) == want
}
