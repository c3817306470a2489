package clients

import (
	"fmt"
	"strings"

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
