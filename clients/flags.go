package clients

import (
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nsqio/go-nsq"
)

// StringsFlag is a repeatable string flag.Value ("may be given multiple
// times"), as NSQ's tools use for --topic, --nsqd-tcp-address, ...
type StringsFlag []string

// String implements flag.Value.
func (s *StringsFlag) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value: each call appends one value.
func (s *StringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// Unique returns the values in the order given, without repeats (a topic
// given twice is consumed once).
func (s StringsFlag) Unique() []string {
	seen := make(map[string]bool, len(s))
	out := make([]string, 0, len(s))
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// ConfigOpts collects --consumer-opt / --producer-opt values ("key,value" or a
// bare "key" meaning true) for later application to a go-nsq Config, so that
// a bad option is reported once, with its text, after flag parsing.
type ConfigOpts []string

// String implements flag.Value.
func (o *ConfigOpts) String() string { return strings.Join(*o, " ") }

// Set implements flag.Value.
func (o *ConfigOpts) Set(v string) error {
	*o = append(*o, v)
	return nil
}

// Apply sets every collected option on cfg through go-nsq's Config.Set (the
// same "key,value" rules as nsq.ConfigFlag) and validates the result. The
// error names the offending option.
func (o ConfigOpts) Apply(cfg *nsq.Config) error {
	for _, opt := range o {
		f := nsq.ConfigFlag{Config: cfg}
		if err := f.Set(opt); err != nil {
			return fmt.Errorf("invalid option %q: %w", opt, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid options: %w", err)
	}
	return nil
}

// NSQ's help texts for --consumer-opt and --producer-opt. (nsq_to_nsq words
// both "(may be given multiple times, see http://...)".)
const (
	ConsumerOptUsage = "option to passthrough to nsq.Consumer (may be given multiple times, http://godoc.org/github.com/nsqio/go-nsq#Config)"
	ProducerOptUsage = "option to passthrough to nsq.Producer (may be given multiple times, http://godoc.org/github.com/nsqio/go-nsq#Config)"
)

// LookupdHTTPAddressUsage is NSQ's help text for --lookupd-http-address.
const LookupdHTTPAddressUsage = "lookupd HTTP address (may be given multiple times)"

// DefaultMaxInFlight is the default of the consuming tools' --max-in-flight.
const DefaultMaxInFlight = 200

// ConsumerFlags are the flags NSQ's consuming tools (nsq_tail, nsq_to_file,
// nsq_to_http, nsq_to_nsq) define alike: where to find the topics and how to
// configure the go-nsq Consumer. --topic and --channel differ from tool to
// tool (one topic or several, default channel, help text) and stay with
// each tool, as do the checks, whose order sets which error a tool reports.
type ConsumerFlags struct {
	NSQDAddrs    StringsFlag // --nsqd-tcp-address
	LookupdAddrs StringsFlag // --lookupd-http-address
	Opts         ConfigOpts  // --consumer-opt
	MaxInFlight  int         // --max-in-flight
}

// Register defines --nsqd-tcp-address, --lookupd-http-address,
// --consumer-opt and --max-in-flight on fs with NSQ's defaults and help.
func (f *ConsumerFlags) Register(fs *flag.FlagSet) {
	fs.Var(&f.NSQDAddrs, "nsqd-tcp-address", "nsqd TCP address (may be given multiple times)")
	fs.Var(&f.LookupdAddrs, "lookupd-http-address", LookupdHTTPAddressUsage)
	fs.Var(&f.Opts, "consumer-opt", ConsumerOptUsage)
	fs.IntVar(&f.MaxInFlight, "max-in-flight", DefaultMaxInFlight, "max number of messages to allow in flight")
}

// Config returns the go-nsq Config a consuming tool runs with: userAgent,
// --max-in-flight, unlimited attempts, then --consumer-opt on top. go-nsq
// would finish (drop) a message after 5 attempts; a tool must not drop what
// it could not deliver, so attempts are unlimited unless --consumer-opt
// max_attempts,N says otherwise.
func (f *ConsumerFlags) Config(userAgent string) (*nsq.Config, error) {
	cfg := nsq.NewConfig()
	cfg.UserAgent = userAgent
	cfg.MaxInFlight = f.MaxInFlight
	cfg.MaxAttempts = 0
	if err := f.Opts.Apply(cfg); err != nil {
		return nil, fmt.Errorf("--consumer-opt: %w", err)
	}
	return cfg, nil
}

// ProducerConfig returns the go-nsq Config a tool's producers run with:
// userAgent, then the --producer-opt values opts on top.
func ProducerConfig(userAgent string, opts ConfigOpts) (*nsq.Config, error) {
	cfg := nsq.NewConfig()
	cfg.UserAgent = userAgent
	if err := opts.Apply(cfg); err != nil {
		return nil, fmt.Errorf("--producer-opt: %w", err)
	}
	return cfg, nil
}

// HTTPClientFlags are NSQ's --http-client-connect-timeout and
// --http-client-request-timeout, for the tools that query nsqd or
// nsqlookupd over HTTP.
type HTTPClientFlags struct {
	ConnectTimeout time.Duration
	RequestTimeout time.Duration
}

// Register defines both flags on fs; the connect timeout defaults to 2s and
// the request timeout to requestTimeout (it differs between tools).
func (f *HTTPClientFlags) Register(fs *flag.FlagSet, requestTimeout time.Duration) {
	fs.DurationVar(&f.ConnectTimeout, "http-client-connect-timeout", 2*time.Second, "timeout for HTTP connect")
	fs.DurationVar(&f.RequestTimeout, "http-client-request-timeout", requestTimeout, "timeout for HTTP request")
}

// Client returns an HTTP client with these timeouts (NewHTTPClient).
func (f HTTPClientFlags) Client() *http.Client {
	return NewHTTPClient(f.ConnectTimeout, f.RequestTimeout)
}
