package nsqd_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicemq/sluice/internal/testutil"
)

// frame concatenates raw byte pieces: strings are written as is, []byte as
// is, int32 as 4 big-endian bytes.
func frame(parts ...any) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			b.WriteString(v)
		case []byte:
			b.Write(v)
		case int32:
			b.Write(testutil.Int32(v))
		case int:
			b.Write(testutil.Int32(int32(v)))
		default:
			panic(fmt.Sprintf("frame: unsupported part %T", p))
		}
	}
	return b.Bytes()
}

// bodies returns n bodies "<prefix><i>".
func bodies(prefix string, from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf("%s%d", prefix, from+i))
	}
	return out
}

// channelStats fetches one channel's stats (nil when absent).
func channelStats(t testing.TB, h *testutil.NSQDHandle, topic, channel string) *testutil.ChannelStats {
	t.Helper()
	return testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Channel(topic, channel)
}

// topicStats fetches one topic's stats (nil when absent).
func topicStats(t testing.TB, h *testutil.NSQDHandle, topic string) *testutil.TopicStats {
	t.Helper()
	return testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Topic(topic)
}

// subscribe opens a raw V2 connection subscribed to topic/channel, after an
// IDENTIFY with fields (none when nil).
func subscribe(t testing.TB, h *testutil.NSQDHandle, topic, channel string, fields map[string]any) *testutil.V2Conn {
	t.Helper()
	c := testutil.DialV2(t, h.TCPAddr)
	if fields != nil {
		c.Identify(fields)
	}
	c.Subscribe(topic, channel)
	return c
}

// createChannel creates topic and channel over HTTP.
func createChannel(t testing.TB, h *testutil.NSQDHandle, topic, channel string) {
	t.Helper()
	testutil.MustPost(t, h.URL("/topic/create?topic="+topic), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic="+topic+"&channel="+channel), nil)
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }
