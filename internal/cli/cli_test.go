package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/cli"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		done       bool
		wantStdout string
		wantStderr string // substring; "" means stderr must be empty
	}{
		{args: nil},
		{args: []string{"--topic", "x"}},
		{args: []string{"-h"}, code: 0, done: true, wantStderr: "Usage of demo:\n  -topic string\n    \tNSQ topic\n  -version\n    \tprint version string\n"},
		{args: []string{"--help"}, code: 0, done: true, wantStderr: "Usage of demo:"},
		{args: []string{"--nosuch"}, code: 2, done: true, wantStderr: "flag provided but not defined: -nosuch\nUsage of demo:"},
		{args: []string{"--version"}, code: 0, done: true, wantStdout: fmt.Sprintf("demo v1.3.0 (built w/%s)\n", runtime.Version())},
		// A bad flag wins over --version, as in the flag package.
		{args: []string{"--version", "--nosuch"}, code: 2, done: true, wantStderr: "flag provided but not defined"},
	} {
		var stdout, stderr bytes.Buffer
		tool := cli.New("demo", &stdout, &stderr)
		topic := tool.Flags.String("topic", "", "NSQ topic")
		code, done := tool.Parse(tc.args)
		if code != tc.code || done != tc.done {
			t.Errorf("Parse(%q) = %d, %v; want %d, %v", tc.args, code, done, tc.code, tc.done)
		}
		if stdout.String() != tc.wantStdout {
			t.Errorf("Parse(%q) stdout %q, want %q", tc.args, stdout.String(), tc.wantStdout)
		}
		if (tc.wantStderr == "") != (stderr.Len() == 0) || !strings.Contains(stderr.String(), tc.wantStderr) {
			t.Errorf("Parse(%q) stderr %q, want %q", tc.args, stderr.String(), tc.wantStderr)
		}
		if len(tc.args) == 2 && tc.args[0] == "--topic" && *topic != "x" {
			t.Errorf("--topic not parsed: %q", *topic)
		}
	}
}

func TestExit(t *testing.T) {
	var stdout, stderr bytes.Buffer
	tool := cli.New("demo", &stdout, &stderr)
	if code := tool.Exit(nil); code != 0 || stderr.Len() != 0 {
		t.Fatalf("Exit(nil) = %d, stderr %q", code, stderr.String())
	}
	if code := tool.Exit(fmt.Errorf("--topic: %w", errors.New("required"))); code != 1 || stderr.String() != "demo: --topic: required\n" {
		t.Fatalf("Exit(err) = %d, stderr %q", code, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Fatalf("stdout %q", stdout.String())
	}
}

func TestLoggerAndUserAgent(t *testing.T) {
	var stdout, stderr bytes.Buffer
	tool := cli.New("demo", &stdout, &stderr)
	tool.Logger().Debug("hidden")
	tool.Logger().Info("hello", "topic", "t")
	if !regexp.MustCompile(`^\[demo\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} INFO: hello topic=t\n$`).MatchString(stderr.String()) {
		t.Fatalf("log output %q", stderr.String())
	}
	if ua, want := cli.UserAgent("demo"), "demo/1.3.0 go-nsq/"+nsq.VERSION; ua != want {
		t.Fatalf("UserAgent = %q, want %q", ua, want)
	}
}
