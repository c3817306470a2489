package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

func topicCount(t *testing.T, h *testutil.NSQDHandle, topic string) int64 {
	t.Helper()
	tp := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Topic(topic)
	if tp == nil {
		return -1
	}
	return int64(tp.MessageCount)
}

// Every non-empty line reaches every nsqd given (fan-out), including a last
// line without a trailing newline.
func TestPublishesEveryLineToEveryNSQD(t *testing.T) {
	c := toolstest.StartCluster(t, 2, nil)
	in := "a\nb\n\nc\r\nlast"
	code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, strings.NewReader(in),
		"--topic", "fan", "--nsqd-tcp-address", c.NSQDs[0].TCPAddr, "--nsqd-tcp-address", c.NSQDs[1].TCPAddr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for i, h := range c.NSQDs {
		if got := topicCount(t, h, "fan"); got != 4 {
			t.Errorf("nsqd %d: topic message_count = %d, want 4", i, got)
		}
	}
}

func TestDelimiterAndRate(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	start := time.Now()
	code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, strings.NewReader("1,2,3,4,5,6,7,8,9,10"),
		"--topic", "rated", "--delimiter", ",", "--rate", "40", "--nsqd-tcp-address", h.TCPAddr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("10 messages at --rate 40 took %v, want >= 250ms", el)
	}
	if got := topicCount(t, h, "rated"); got != 10 {
		t.Errorf("message_count = %d, want 10", got)
	}
}

func TestBadInput(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	cases := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"no topic", "x\n", []string{"--nsqd-tcp-address", h.TCPAddr}, "--topic required"},
		{"no nsqd", "x\n", []string{"--topic", "t"}, "--nsqd-tcp-address required"},
		{"bad topic", "x\n", []string{"--topic", "a b", "--nsqd-tcp-address", h.TCPAddr}, `invalid --topic "a b"`},
		{"bad producer opt", "x\n", []string{"--topic", "t", "--nsqd-tcp-address", h.TCPAddr, "--producer-opt", "nosuch,1"}, "--producer-opt: invalid option"},
		{"unreachable nsqd", "x\n", []string{"--topic", "t", "--nsqd-tcp-address", "127.0.0.1:1"}, "connection refused"},
		{"message too big", strings.Repeat("x", 2<<20) + "\n", []string{"--topic", "big", "--nsqd-tcp-address", h.TCPAddr}, "E_BAD_MESSAGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, strings.NewReader(tc.stdin), tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
			}
			toolstest.CheckErrorLine(t, stderr, "to_nsq", tc.want)
		})
	}
}
