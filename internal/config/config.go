// Package config maps a daemon's command-line flags and its TOML config file
// onto one flag.FlagSet (protocol.md §15.1), and provides the NSQ-style logger
// every binary uses.
//
// Typical use in apps/<binary>/main.go:
//
//	fs := flag.NewFlagSet("nsqd", flag.ExitOnError)
//	... define flags ...
//	configPath := fs.String("config", "", "path to config file")
//	_ = fs.Parse(os.Args[1:])
//	if *configPath != "" {
//		if err := config.Load(fs, *configPath, map[string]string{"node-id": "id"}); err != nil { ... }
//	}
//
// Precedence is explicit flag > config file > built-in default: Load only
// touches flags that were not set on the command line.
package config

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Version is the version every Sluice daemon reports (a semver, see
// protocol.md §0.2; nsqadmin compares it between nodes).
const Version = "1.3.0"

// VersionLine returns "<daemon> v<version> (built w/<go version>)", the line
// printed by --version.
func VersionLine(daemon string) string {
	return fmt.Sprintf("%s v%s (built w/%s)", daemon, Version, runtime.Version())
}

// Load applies the TOML file at path onto fs. For every flag NOT set
// explicitly on the command line (fs must already be parsed), if the file has
// the flag's config key, the value is converted to a string and passed to the
// flag's Set.
//
// The config key is the flag name with '-' replaced by '_', unless
// keyOverrides maps the flag name to another key; an override to "" means the
// flag has no config key. The "config" flag itself is never read from the file.
//
// Conversions: strings as is (a quoted integer is accepted for integer and,
// meaning milliseconds, for duration flags); integers in decimal, or as
// milliseconds for duration flags (flags whose flag.Getter yields a
// time.Duration); integers for boolean flags mean 0 = false, other = true;
// floats in their shortest decimal form; booleans as "true"/"false"; arrays
// call Set once per element (a single comma-separated string is passed to Set
// once; list flags such as StringList split it). Unknown keys are ignored.
// The returned error names the bad key and value.
func Load(fs *flag.FlagSet, path string, keyOverrides map[string]string) error {
	var file map[string]any
	if _, err := toml.DecodeFile(path, &file); err != nil {
		return fmt.Errorf("load config file %q: %w", path, err)
	}
	return apply(fs, file, keyOverrides)
}

// LoadString is Load for TOML text already in memory.
func LoadString(fs *flag.FlagSet, text string, keyOverrides map[string]string) error {
	var file map[string]any
	if _, err := toml.Decode(text, &file); err != nil {
		return fmt.Errorf("parse config: %w", err)
	}
	return apply(fs, file, keyOverrides)
}

func apply(fs *flag.FlagSet, file map[string]any, keyOverrides map[string]string) error {
	explicit := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if explicit[f.Name] || f.Name == "config" {
			return
		}
		key, ok := keyOverrides[f.Name]
		if !ok {
			key = strings.ReplaceAll(f.Name, "-", "_")
		}
		if key == "" {
			return
		}
		raw, ok := file[key]
		if !ok {
			return
		}
		if err := setFlag(f, raw); err != nil {
			errs = append(errs, fmt.Errorf("config key %q (flag -%s) value %v: %w", key, f.Name, raw, err))
		}
	})
	return errors.Join(errs...)
}

func setFlag(f *flag.Flag, raw any) error {
	if list, ok := raw.([]any); ok {
		for _, elem := range list {
			if _, nested := elem.([]any); nested {
				return errors.New("nested arrays are not supported")
			}
			if err := setScalar(f, elem); err != nil {
				return err
			}
		}
		return nil
	}
	return setScalar(f, raw)
}

func setScalar(f *flag.Flag, raw any) error {
	s, err := scalarString(f, raw)
	if err != nil {
		return err
	}
	return f.Value.Set(s)
}

func scalarString(f *flag.Flag, raw any) (string, error) {
	switch v := raw.(type) {
	case string:
		if isDuration(f) && isDigits(v) {
			return v + "ms", nil
		}
		return v, nil
	case int64:
		switch {
		case isDuration(f):
			return strconv.FormatInt(v, 10) + "ms", nil
		case isBool(f):
			return strconv.FormatBool(v != 0), nil
		}
		return strconv.FormatInt(v, 10), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "", fmt.Errorf("unsupported number %v", v)
		}
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	default:
		return "", fmt.Errorf("unsupported TOML type %T", raw)
	}
}

func isDuration(f *flag.Flag) bool {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return false
	}
	_, ok = g.Get().(time.Duration)
	return ok
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// StringList is a repeatable flag.Value that also splits comma-separated
// values: "-x a -x b,c" yields [a b c]. Empty elements are dropped.
type StringList []string

// String joins the elements with commas.
func (l *StringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Set appends the comma-separated elements of value.
func (l *StringList) Set(value string) error {
	for _, part := range strings.Split(value, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// Get returns the list as a []string (flag.Getter).
func (l *StringList) Get() any { return []string(*l) }
