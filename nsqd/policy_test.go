package nsqd_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
	"github.com/sluicemq/sluice/protocol"
)

// storageModes runs a policy test in NSQ's default storage mode, with
// --mem-queue-size=0 (everything through go-diskqueue), and with durable
// topics.
var storageModes = []struct {
	name string
	opts func(*nsqd.Options)
}{
	{"memory", func(*nsqd.Options) {}},
	{"disk", func(o *nsqd.Options) { o.MemQueueSize = 0 }},
	{"durable", durableOpts},
}

func forEachMode(t *testing.T, extra func(*nsqd.Options), test func(t *testing.T, h *testutil.NSQDHandle)) {
	for _, mode := range storageModes {
		t.Run(mode.name, func(t *testing.T) {
			h := testutil.StartNSQD(t, func(o *nsqd.Options) {
				mode.opts(o)
				if extra != nil {
					extra(o)
				}
			})
			test(t, h)
		})
	}
}

func policyStats(t *testing.T, h *testutil.NSQDHandle) *protocol.StatsResponse {
	t.Helper()
	r := testutil.HTTPDo(t, http.MethodGet, h.URL("/stats?format=json"), nil)
	var s protocol.StatsResponse
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("decode /stats: %v (%s)", err, r.Body)
	}
	return &s
}

func findTopic(s *protocol.StatsResponse, name string) *protocol.TopicStats {
	for i := range s.Topics {
		if s.Topics[i].TopicName == name {
			return &s.Topics[i]
		}
	}
	return nil
}

func findChannel(s *protocol.StatsResponse, topic, channel string) *protocol.ChannelStats {
	if tp := findTopic(s, topic); tp != nil {
		for i := range tp.Channels {
			if tp.Channels[i].ChannelName == channel {
				return &tp.Channels[i]
			}
		}
	}
	return nil
}

type deadLetterList struct {
	Count       int `json:"count"`
	DeadLetters []struct {
		ID              string `json:"id"`
		DeadLetterTopic string `json:"dead_letter_topic"`
		Topic           string `json:"topic"`
		Channel         string `json:"channel"`
		Attempts        int    `json:"attempts"`
		Reason          string `json:"reason"`
		Time            string `json:"time"`
		OriginalID      string `json:"original_id"`
	} `json:"dead_letters"`
}

func listDeadLetters(t *testing.T, h *testutil.NSQDHandle, topic, channel string) deadLetterList {
	t.Helper()
	r := testutil.HTTPDo(t, http.MethodGet, h.URL("/channel/dead_letters?topic="+topic+"&channel="+channel), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /channel/dead_letters: %v", r)
	}
	var l deadLetterList
	if err := json.Unmarshal(r.Body, &l); err != nil {
		t.Fatalf("decode dead letters: %v (%s)", err, r.Body)
	}
	return l
}

// requeuer is a go-nsq handler that fails (REQ) every message and counts
// deliveries per body.
type requeuer struct {
	mu     sync.Mutex
	counts map[string]int
}

func (r *requeuer) HandleMessage(m *nsq.Message) error {
	r.mu.Lock()
	r.counts[string(m.Body)]++
	r.mu.Unlock()
	return errors.New("always fails")
}

func (r *requeuer) count(body string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[body]
}

func TestMaxAttemptsMovesAnAlwaysRequeuedMessageToTheDeadLetterTopic(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=orders"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=orders&channel=billing&max_attempts=3"), nil)
		testutil.MustPost(t, h.URL("/pub?topic=orders"), []byte("poison"))

		cfg := testutil.NewConfig()
		cfg.MaxAttempts = 0         // the server decides
		cfg.MaxBackoffDuration = 0  // no client backoff between attempts
		cfg.DefaultRequeueDelay = 0 // REQ at once
		rq := &requeuer{counts: map[string]int{}}
		c := testutil.NewConsumer(t, h.TCPAddr, "orders", "billing", cfg, rq)
		testutil.WaitFor(t, 10*time.Second, func() bool {
			s := findChannel(policyStats(t, h), "orders", "billing")
			return s != nil && s.ChannelPolicyStats != nil && s.DeadLetteredCount == 1
		}, "the message to be dead-lettered")
		time.Sleep(200 * time.Millisecond) // a fourth delivery would come now
		testutil.StopConsumer(t, c)
		if n := rq.count("poison"); n != 3 {
			t.Fatalf("delivered %d times with max_attempts=3", n)
		}

		s := policyStats(t, h)
		cs := findChannel(s, "orders", "billing")
		if cs.MaxAttempts != 3 || cs.DeadLetterTopic != "orders.dlq" || cs.TTL != "" || cs.Depth != 0 || cs.InFlightCount != 0 {
			t.Fatalf("channel stats: %+v %+v", cs, cs.ChannelPolicyStats)
		}
		dl := listDeadLetters(t, h, "orders", "billing")
		if dl.Count != 1 || len(dl.DeadLetters) != 1 {
			t.Fatalf("dead letters: %+v", dl)
		}
		d := dl.DeadLetters[0]
		if d.DeadLetterTopic != "orders.dlq" || d.Topic != "orders" || d.Channel != "billing" || d.Attempts != 3 || d.Reason != "max_attempts" {
			t.Fatalf("dead letter record: %+v", d)
		}
		if _, err := time.Parse(time.RFC3339Nano, d.Time); err != nil {
			t.Fatalf("time %q: %v", d.Time, err)
		}
		metrics := string(testutil.HTTPDo(t, http.MethodGet, h.URL("/metrics"), nil).Body)
		if !strings.Contains(metrics, `nsqd_channel_dead_lettered_total{channel="billing",topic="orders"} 1`) {
			t.Fatalf("/metrics lacks the dead-letter counter:\n%s", metrics)
		}
		if strings.Contains(metrics, `nsqd_channel_dead_lettered_total{channel="inspect"`) {
			t.Fatalf("/metrics has policy counters for a channel without a policy")
		}

		// the dead-letter topic holds the original body for its first channel
		got := consumeN(t, h.TCPAddr, "orders.dlq", "inspect", 1)
		if got[0] != "poison" {
			t.Fatalf("dead-letter topic delivered %q", got[0])
		}
		// consumed there: the record goes
		testutil.WaitFor(t, 5*time.Second, func() bool { return listDeadLetters(t, h, "orders", "billing").Count == 0 },
			"the record of the consumed dead letter to go")
	})
}

func TestMaxAttemptsCountsTimeouts(t *testing.T) {
	forEachMode(t, func(o *nsqd.Options) { o.MsgTimeout = 300 * time.Millisecond }, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=jobs"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=jobs&channel=w&max_attempts=2&dead_letter_topic=jobs-dead"), nil)
		testutil.MustPost(t, h.URL("/pub?topic=jobs"), []byte("slow"))
		c := testutil.DialV2(t, h.TCPAddr)
		defer c.Close()
		c.Subscribe("jobs", "w")
		c.Ready(5)
		for i := 1; i <= 2; i++ {
			m := c.ExpectMessageWithin(5 * time.Second)
			if m.Attempts != uint16(i) || string(m.Body) != "slow" {
				t.Fatalf("delivery %d: attempts %d body %q", i, m.Attempts, m.Body)
			}
			// never finished: it times out
		}
		c.ExpectNothing(800 * time.Millisecond)
		dl := listDeadLetters(t, h, "jobs", "w")
		if dl.Count != 1 || dl.DeadLetters[0].DeadLetterTopic != "jobs-dead" || dl.DeadLetters[0].Attempts != 2 {
			t.Fatalf("dead letters: %+v", dl)
		}
		if got := consumeN(t, h.TCPAddr, "jobs-dead", "x", 1); got[0] != "slow" {
			t.Fatalf("dead-letter topic delivered %q", got[0])
		}
		cs := findChannel(policyStats(t, h), "jobs", "w")
		if cs.DeadLetteredCount != 1 || cs.TimeoutCount != 2 {
			t.Fatalf("channel stats %+v %+v", cs, cs.ChannelPolicyStats)
		}
	})
}

func TestTTLExpiresMessagesWithoutConsumers(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=ticks"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=ticks&channel=c&ttl=500ms"), nil)
		var bodies [][]byte
		for i := range 200 {
			bodies = append(bodies, []byte(fmt.Sprintf("old-%d", i)))
		}
		p := testutil.DialV2(t, h.TCPAddr)
		defer p.Close()
		p.Send("MPUB ticks", testutil.MPUBBody(bodies))
		p.ExpectOK()
		// (no depth check here: with --mem-queue-size=0 a message moving from
		// disk to memory is briefly in neither; expired_count below counts all)
		start := time.Now()
		testutil.WaitFor(t, 5*time.Second, func() bool { return findChannel(policyStats(t, h), "ticks", "c").Depth == 0 },
			"expired messages to leave the channel without consumers")
		t.Logf("depth 200 -> 0 in %v after publish+%v", time.Since(start), 500*time.Millisecond)
		cs := findChannel(policyStats(t, h), "ticks", "c")
		if cs.ExpiredCount != 200 || cs.TTL != "500ms" || cs.DeadLetteredCount != 0 || cs.DeadLetterTopic != "" {
			t.Fatalf("channel stats %+v %+v", cs, cs.ChannelPolicyStats)
		}
		// fresh messages are delivered
		p.Publish("ticks", []byte("fresh"))
		if got := consumeN(t, h.TCPAddr, "ticks", "c", 1); got[0] != "fresh" {
			t.Fatalf("got %q", got[0])
		}
	})
}

func TestTopicTTLExpiresWhatTheTopicHoldsWithoutChannels(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=held&ttl=400ms"), nil)
		p := testutil.DialV2(t, h.TCPAddr)
		defer p.Close()
		for i := range 50 {
			p.Publish("held", []byte(fmt.Sprintf("m%d", i)))
		}
		// held before they expire (with --mem-queue-size=0 the pump moves
		// a message from the disk queue to memory now and then, and for
		// that moment neither counts it: look again)
		testutil.WaitFor(t, 300*time.Millisecond, func() bool { return findTopic(policyStats(t, h), "held").Depth == 50 },
			"the topic to hold all 50 messages")
		testutil.WaitFor(t, 5*time.Second, func() bool { return findTopic(policyStats(t, h), "held").Depth == 0 },
			"the topic's expired messages to go")
		ts := findTopic(policyStats(t, h), "held")
		if ts.TopicPolicyStats == nil || ts.ExpiredCount != 50 || ts.TTL != "400ms" || ts.MaxDepth != 0 || ts.Overflow != "reject" {
			t.Fatalf("topic stats %+v", ts.TopicPolicyStats)
		}
		// a channel inherits the topic's TTL
		testutil.MustPost(t, h.URL("/channel/create?topic=held&channel=c"), nil)
		if cs := findChannel(policyStats(t, h), "held", "c"); cs.ChannelPolicyStats == nil || cs.TTL != "400ms" {
			t.Fatalf("channel of a topic with a TTL: %+v", cs.ChannelPolicyStats)
		}
	})
}

func TestExpiredMessageIsDeadLetteredWhenTheChannelHasADeadLetterTopic(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=quotes"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=quotes&channel=c&ttl=300ms&dead_letter_topic=quotes-expired"), nil)
		testutil.MustPost(t, h.URL("/pub?topic=quotes"), []byte("stale"))
		time.Sleep(400 * time.Millisecond)
		// a consumer arriving after the TTL never sees it
		c := testutil.DialV2(t, h.TCPAddr)
		defer c.Close()
		c.Subscribe("quotes", "c")
		c.Ready(1)
		c.ExpectNothing(1500 * time.Millisecond)
		dl := listDeadLetters(t, h, "quotes", "c")
		if dl.Count != 1 || dl.DeadLetters[0].Reason != "ttl" || dl.DeadLetters[0].Attempts != 0 {
			t.Fatalf("dead letters %+v", dl)
		}
		cs := findChannel(policyStats(t, h), "quotes", "c")
		if cs.ExpiredCount != 1 || cs.DeadLetteredCount != 1 {
			t.Fatalf("stats %+v", cs.ChannelPolicyStats)
		}
		if got := consumeN(t, h.TCPAddr, "quotes-expired", "x", 1); got[0] != "stale" {
			t.Fatalf("got %q", got[0])
		}
	})
}

func TestMaxDepthRejectRefusesPublishesUntilTheChannelDrains(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=bounded&max_depth=5&overflow=reject"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=bounded&channel=c"), nil)
		p := testutil.DialV2(t, h.TCPAddr)
		defer p.Close()
		for i := range 5 {
			p.Publish("bounded", []byte(fmt.Sprintf("m%d", i)))
		}
		p.Send("PUB bounded", []byte("one too many"))
		p.ExpectError("E_PUB_FAILED PUB failed: topic bounded is at its max_depth of 5 messages (overflow=reject)")
		p.Send("MPUB bounded", testutil.MPUBBody([][]byte{[]byte("a"), []byte("b")}))
		p.ExpectError("E_MPUB_FAILED MPUB failed: topic bounded is at its max_depth of 5 messages (overflow=reject)")
		r := testutil.HTTPPost(t, h.URL("/pub?topic=bounded"), []byte("http"))
		if r.Status != http.StatusServiceUnavailable || !strings.Contains(testutil.ErrorMessage(r), "max_depth of 5") {
			t.Fatalf("HTTP /pub at the limit: %v", r)
		}
		ts := findTopic(policyStats(t, h), "bounded")
		if ts.RejectedCount != 4 || ts.MaxDepth != 5 || ts.Overflow != "reject" {
			t.Fatalf("topic stats %+v", ts.TopicPolicyStats)
		}
		if got := consumeN(t, h.TCPAddr, "bounded", "c", 5); len(got) != 5 {
			t.Fatalf("consumed %d", len(got))
		}
		// the same connection publishes again
		p.Publish("bounded", []byte("after drain"))
		if got := consumeN(t, h.TCPAddr, "bounded", "c", 1); got[0] != "after drain" {
			t.Fatalf("got %q", got[0])
		}
	})
}

func TestPolicyParametersAreCheckedAndA400ChangesNothing(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=t"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=t&channel=c"), nil)
	long := strings.Repeat("x", 62)
	testutil.MustPost(t, h.URL("/topic/create?topic="+long), nil)
	cases := []struct{ path, code string }{
		{"/topic/create?topic=new1&ttl=abc", "INVALID_TTL"},
		{"/topic/create?topic=new1&ttl=-1s", "INVALID_TTL"},
		{"/topic/create?topic=new1&max_depth=-1", "INVALID_MAX_DEPTH"},
		{"/topic/create?topic=new1&max_depth=ten", "INVALID_MAX_DEPTH"},
		{"/topic/create?topic=new1&max_depth=10&overflow=sideways", "INVALID_OVERFLOW"},
		{"/topic/config?topic=t&ttl=1parsec", "INVALID_TTL"},
		{"/topic/config?topic=t&max_depth=5&overflow=", "INVALID_OVERFLOW"},
		{"/channel/create?topic=t&channel=new1&max_attempts=-1", "INVALID_MAX_ATTEMPTS"},
		{"/channel/create?topic=t&channel=new1&max_attempts=65536", "INVALID_MAX_ATTEMPTS"},
		{"/channel/create?topic=t&channel=new1&max_attempts=x", "INVALID_MAX_ATTEMPTS"},
		{"/channel/create?topic=t&channel=new1&dead_letter_topic=t", "INVALID_DEAD_LETTER_TOPIC"},
		{"/channel/create?topic=t&channel=new1&dead_letter_topic=bad!name", "INVALID_DEAD_LETTER_TOPIC"},
		{"/channel/create?topic=t&channel=new1&ttl=soon", "INVALID_TTL"},
		{"/channel/create?topic=" + long + "&channel=new1&max_attempts=3", "INVALID_DEAD_LETTER_TOPIC"},
		{"/channel/config?topic=t&channel=c&max_attempts=-2", "INVALID_MAX_ATTEMPTS"},
		{"/channel/config?topic=t&channel=c&max_attempts=3&dead_letter_topic=t", "INVALID_DEAD_LETTER_TOPIC"},
		{"/channel/config?topic=t&channel=c", "MISSING_ARG_POLICY"},
	}
	for _, tc := range cases {
		r := testutil.HTTPPost(t, h.URL(tc.path), nil)
		msg := testutil.ErrorMessage(r)
		if r.Status != http.StatusBadRequest || !strings.HasPrefix(msg, tc.code) {
			t.Errorf("POST %s: %v, want 400 %s", tc.path, r, tc.code)
		}
	}
	if r := testutil.HTTPPost(t, h.URL("/topic/config?topic=nope&ttl=1s"), nil); r.Status != http.StatusNotFound {
		t.Errorf("config of a missing topic: %v", r)
	}
	if r := testutil.HTTPPost(t, h.URL("/channel/config?topic=t&channel=nope&ttl=1s"), nil); r.Status != http.StatusNotFound {
		t.Errorf("config of a missing channel: %v", r)
	}
	s := policyStats(t, h)
	if findTopic(s, "new1") != nil {
		t.Errorf("a refused /topic/create created the topic")
	}
	if findChannel(s, "t", "new1") != nil || findChannel(s, long, "new1") != nil {
		t.Errorf("a refused /channel/create created the channel")
	}
	if tp := findTopic(s, "t"); tp.TopicPolicyStats != nil || tp.Channels[0].ChannelPolicyStats != nil {
		t.Errorf("a refused config changed a policy: %+v %+v", tp.TopicPolicyStats, tp.Channels[0].ChannelPolicyStats)
	}
	// the long topic accepts max_attempts with a dead-letter topic named
	testutil.MustPost(t, h.URL("/channel/create?topic="+long+"&channel=new1&max_attempts=3&dead_letter_topic=long-dead"), nil)
}

func TestPoliciesAreOnlyInStatsWhereSetAndSurviveRestart(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=plain"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=plain&channel=c"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=pol&ttl=1h&max_depth=100"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=pol&channel=a&max_attempts=7&ttl=10m"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=pol&channel=b"), nil)
	testutil.MustPost(t, h.URL("/topic/config?topic=pol&overflow=drop_oldest"), nil)
	testutil.MustPost(t, h.URL("/channel/config?topic=pol&channel=b&dead_letter_topic=pol-b-dead"), nil)

	check := func(when string) {
		r := testutil.HTTPDo(t, http.MethodGet, h.URL("/stats?format=json"), nil)
		var doc struct {
			Topics []map[string]json.RawMessage `json:"topics"`
		}
		if err := json.Unmarshal(r.Body, &doc); err != nil {
			t.Fatal(err)
		}
		for _, tp := range doc.Topics {
			var name string
			json.Unmarshal(tp["topic_name"], &name)
			_, hasTTL := tp["ttl"]
			if (name == "pol") != hasTTL {
				t.Errorf("%s: topic %s has ttl key: %v", when, name, hasTTL)
			}
			var chans []map[string]json.RawMessage
			json.Unmarshal(tp["channels"], &chans)
			for _, ch := range chans {
				if _, ok := ch["max_attempts"]; (name == "pol") != ok {
					t.Errorf("%s: channel of %s has max_attempts key: %v", when, name, ok)
				}
			}
		}
		s := policyStats(t, h)
		tp := findTopic(s, "pol")
		if tp.TTL != "1h0m0s" || tp.MaxDepth != 100 || tp.Overflow != "drop_oldest" {
			t.Errorf("%s: topic policy %+v", when, tp.TopicPolicyStats)
		}
		a, b := findChannel(s, "pol", "a"), findChannel(s, "pol", "b")
		if a.MaxAttempts != 7 || a.TTL != "10m0s" || a.DeadLetterTopic != "pol.dlq" {
			t.Errorf("%s: channel a %+v", when, a.ChannelPolicyStats)
		}
		if b.MaxAttempts != 0 || b.TTL != "1h0m0s" || b.DeadLetterTopic != "pol-b-dead" {
			t.Errorf("%s: channel b %+v", when, b.ChannelPolicyStats)
		}
	}
	check("before restart")
	h = testutil.RestartNSQD(t, h)
	check("after restart")

	data, err := os.ReadFile(filepath.Join(h.DataPath, "nsqd.dat"))
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Topics []map[string]any `json:"topics"`
	}
	if err := json.Unmarshal(data, &md); err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		_, hasTTL := tp["ttl"]
		if (tp["name"] == "pol") != hasTTL {
			t.Errorf("nsqd.dat topic %v: ttl key %v", tp["name"], hasTTL)
		}
		if tp["name"] == "plain" && len(tp) != 3 {
			t.Errorf("nsqd.dat: a topic without policies has keys %v, want NSQ's name, paused, channels", tp)
		}
	}
}

func TestNodeDefaultMaxAttemptsAppliesToChannelsCreatedBySUB(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MaxAttempts = 2 })
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("auto", "c")
	cs := findChannel(policyStats(t, h), "auto", "c")
	if cs.ChannelPolicyStats == nil || cs.MaxAttempts != 2 || cs.DeadLetterTopic != "auto.dlq" {
		t.Fatalf("effective policy %+v", cs.ChannelPolicyStats)
	}
	// a channel can opt out with max_attempts=0
	testutil.MustPost(t, h.URL("/channel/create?topic=auto&channel=unlimited&max_attempts=0"), nil)
	if cs := findChannel(policyStats(t, h), "auto", "unlimited"); cs.ChannelPolicyStats != nil {
		t.Fatalf("max_attempts=0 channel shows a policy: %+v", cs.ChannelPolicyStats)
	}
	// a topic whose default dead-letter name is not valid refuses SUB clearly
	long := strings.Repeat("y", 62)
	d := testutil.DialV2(t, h.TCPAddr)
	defer d.Close()
	d.Send("SUB "+long+" c", nil)
	f := d.MustFrame()
	if f.Type != testutil.FrameTypeError || !strings.Contains(string(f.Data), "dead_letter_topic") {
		t.Fatalf("SUB with an invalid default dead-letter topic: %v", f)
	}
}

func TestMaxDepthDropOldestKeepsTheNewest(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		p := testutil.DialV2(t, h.TCPAddr)
		defer p.Close()
		publish := func(topic string, from, to int) {
			for i := from; i < to; i++ {
				p.Publish(topic, []byte(fmt.Sprintf("m%d", i)))
			}
		}
		want := []string{"m7", "m8", "m9", "m10", "m11"}

		// a channel deeper than max_depth drops its oldest
		testutil.MustPost(t, h.URL("/topic/create?topic=latest&max_depth=5&overflow=drop_oldest"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=latest&channel=c"), nil)
		publish("latest", 0, 4)
		p.Send("MPUB latest", testutil.MPUBBody([][]byte{[]byte("m4"), []byte("m5"), []byte("m6")}))
		p.ExpectOK()
		publish("latest", 7, 12)
		testutil.WaitFor(t, 5*time.Second, func() bool { return findChannel(policyStats(t, h), "latest", "c").Depth == 5 }, "depth 5")
		if got := consumeN(t, h.TCPAddr, "latest", "c", 5); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("kept %v, want %v", got, want)
		}
		if ts := findTopic(policyStats(t, h), "latest"); ts.DroppedCount != 7 || ts.RejectedCount != 0 {
			t.Fatalf("topic stats %+v", ts.TopicPolicyStats)
		}

		// so does the topic itself while it has no channel
		testutil.MustPost(t, h.URL("/topic/create?topic=nochan&max_depth=5&overflow=drop_oldest"), nil)
		publish("nochan", 0, 12)
		testutil.WaitFor(t, 5*time.Second, func() bool { return findTopic(policyStats(t, h), "nochan").Depth == 5 }, "topic depth 5")
		if got := consumeN(t, h.TCPAddr, "nochan", "first", 5); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("first channel got %v, want %v", got, want)
		}
	})
}

func TestDeadLetterRecordsSurviveRestartAndGoWhenConsumed(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=src"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=src&channel=c&max_attempts=1"), nil)
		testutil.MustPost(t, h.URL("/pub?topic=src"), []byte("bad"))
		c := testutil.DialV2(t, h.TCPAddr)
		c.Subscribe("src", "c")
		c.Ready(1)
		m := c.ExpectMessageWithin(5 * time.Second)
		c.Send("REQ "+string(m.ID[:])+" 0", nil)
		c.ExpectNothing(300 * time.Millisecond)
		c.Close()
		if l := listDeadLetters(t, h, "src", "c"); l.Count != 1 {
			t.Fatalf("before restart: %+v", l)
		}
		h = testutil.RestartNSQD(t, h)
		l := listDeadLetters(t, h, "src", "c")
		if l.Count != 1 || l.DeadLetters[0].Reason != "max_attempts" || l.DeadLetters[0].Attempts != 1 {
			t.Fatalf("after restart: %+v", l)
		}
		if got := consumeN(t, h.TCPAddr, "src.dlq", "x", 1); got[0] != "bad" {
			t.Fatalf("got %q", got[0])
		}
		testutil.WaitFor(t, 5*time.Second, func() bool { return listDeadLetters(t, h, "src", "c").Count == 0 }, "the record to go")
		// the source channel is empty: the message went, it was not copied
		if d := findChannel(policyStats(t, h), "src", "c"); d.Depth != 0 || d.InFlightCount != 0 || d.DeferredCount != 0 {
			t.Fatalf("source channel after restart %+v", d)
		}
	})
}

// deadLetterAll publishes bodies to topic and has a raw consumer of channel
// REQ every delivery until the channel's max_attempts=1 dead-letters them.
func deadLetterAll(t *testing.T, h *testutil.NSQDHandle, topic, channel string, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		testutil.MustPost(t, h.URL("/pub?topic="+topic), []byte(b))
	}
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe(topic, channel)
	c.Ready(len(bodies))
	for range bodies {
		m := c.ExpectMessageWithin(5 * time.Second)
		c.Send("REQ "+string(m.ID[:])+" 0", nil)
	}
	testutil.WaitFor(t, 5*time.Second, func() bool { return listDeadLetters(t, h, topic, channel).Count == len(bodies) },
		"%d dead letters", len(bodies))
}

func redrive(t *testing.T, h *testutil.NSQDHandle, query string) int {
	t.Helper()
	r := testutil.MustPost(t, h.URL("/channel/redrive?"+query), nil)
	var v struct {
		Moved int `json:"moved"`
	}
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("redrive answer %q: %v", r.Body, err)
	}
	return v.Moved
}

func TestRedriveMovesDeadLettersBackIntoTheirChannelOnly(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=pay"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=pay&channel=billing&max_attempts=1"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=pay&channel=audit"), nil)
		deadLetterAll(t, h, "pay", "billing", "a", "b", "c")
		if got := consumeN(t, h.TCPAddr, "pay", "audit", 3); len(got) != 3 {
			t.Fatalf("audit got %v", got)
		}
		if d := findTopic(policyStats(t, h), "pay.dlq").Depth; d != 3 {
			t.Fatalf("dead-letter topic depth %d", d)
		}

		before := listDeadLetters(t, h, "pay", "billing")
		if n := redrive(t, h, "topic=pay&channel=billing&max=2"); n != 2 {
			t.Fatalf("redrive max=2 moved %d", n)
		}
		after := listDeadLetters(t, h, "pay", "billing")
		if after.Count != 1 || after.DeadLetters[0].ID != before.DeadLetters[2].ID {
			t.Fatalf("records after redriving the oldest 2 of 3: %+v (before %+v)", after, before)
		}
		c := testutil.DialV2(t, h.TCPAddr)
		defer c.Close()
		c.Subscribe("pay", "billing")
		c.Ready(10)
		var got []string
		for range 2 {
			m := c.ExpectMessageWithin(5 * time.Second)
			if m.Attempts != 1 {
				t.Fatalf("redriven message delivered with attempts %d, want 1 (reset to 0 before)", m.Attempts)
			}
			got = append(got, string(m.Body))
			c.Finish(string(m.ID[:]))
		}
		slices.Sort(got)
		if len(got) != 2 || got[0] == got[1] {
			t.Fatalf("redriven: got %v", got)
		}
		c.ExpectNothing(100 * time.Millisecond)

		if n := redrive(t, h, "topic=pay&channel=billing"); n != 1 {
			t.Fatalf("second redrive moved %d", n)
		}
		if m := c.ExpectMessageWithin(5 * time.Second); slices.Contains(got, string(m.Body)) {
			t.Fatalf("got %q again", m.Body)
		} else {
			c.Finish(string(m.ID[:]))
		}
		if n := redrive(t, h, "topic=pay&channel=billing"); n != 0 {
			t.Fatalf("redrive with nothing left moved %d", n)
		}
		// the other channel of the topic never sees redriven messages
		a := testutil.DialV2(t, h.TCPAddr)
		defer a.Close()
		a.Subscribe("pay", "audit")
		a.Ready(10)
		a.ExpectNothing(300 * time.Millisecond)
		// nor does a consumer of the dead-letter topic (on disk they are
		// dropped as they are read)
		x := testutil.DialV2(t, h.TCPAddr)
		defer x.Close()
		x.Subscribe("pay.dlq", "inspect")
		x.Ready(10)
		x.ExpectNothing(300 * time.Millisecond)
	})
}

func TestRedriveTakesMessagesOffTheDeadLetterTopicsChannelsAcrossRestart(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=ship"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=ship&channel=c&max_attempts=1"), nil)
		testutil.MustPost(t, h.URL("/topic/create?topic=ship.dlq"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=ship.dlq&channel=inspect"), nil)
		deadLetterAll(t, h, "ship", "c", "x", "y")
		if d := findChannel(policyStats(t, h), "ship.dlq", "inspect").Depth; d != 2 {
			t.Fatalf("dead-letter channel depth %d", d)
		}
		if n := redrive(t, h, "topic=ship&channel=c"); n != 2 {
			t.Fatalf("moved %d", n)
		}
		h = testutil.RestartNSQD(t, h)
		x := testutil.DialV2(t, h.TCPAddr)
		defer x.Close()
		x.Subscribe("ship.dlq", "inspect")
		x.Ready(10)
		x.ExpectNothing(500 * time.Millisecond)
		got := consumeN(t, h.TCPAddr, "ship", "c", 2)
		if slices.Sort(got); strings.Join(got, ",") != "x,y" {
			t.Fatalf("channel after redrive and restart: %v", got)
		}
	})
}

func TestRedriveLeavesADeadLetterInFlightOnTheDeadLetterTopic(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=busy"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=busy&channel=c&max_attempts=1"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=busy.dlq"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=busy.dlq&channel=inspect"), nil)
	deadLetterAll(t, h, "busy", "c", "one", "two")
	x := testutil.DialV2(t, h.TCPAddr)
	defer x.Close()
	x.Subscribe("busy.dlq", "inspect")
	x.Ready(1)
	m := x.ExpectMessageWithin(5 * time.Second)
	// max counts what can move: the one in flight is skipped, the other moves
	if n := redrive(t, h, "topic=busy&channel=c&max=1"); n != 1 {
		t.Fatalf("redrive max=1 with one of two in flight on the dead-letter topic moved %d", n)
	}
	if n := redrive(t, h, "topic=busy&channel=c"); n != 0 {
		t.Fatalf("redrive moved a dead letter in flight on the dead-letter topic: %d", n)
	}
	moved := consumeN(t, h.TCPAddr, "busy", "c", 1)
	if moved[0] == string(m.Body) {
		t.Fatalf("redrive moved %q, the dead letter in flight", moved[0])
	}
	x.Finish(string(m.ID[:]))
	testutil.WaitFor(t, 5*time.Second, func() bool { return listDeadLetters(t, h, "busy", "c").Count == 0 }, "record to go once finished")
	for _, bad := range []string{"topic=busy&channel=c&max=0", "topic=busy&channel=c&max=x", "topic=busy", "topic=busy&channel=nope"} {
		r := testutil.HTTPPost(t, h.URL("/channel/redrive?"+bad), nil)
		if r.Status != http.StatusBadRequest && r.Status != http.StatusNotFound {
			t.Errorf("redrive %s: %v", bad, r)
		}
	}
}

// expectDeliveryAt waits for one message on c and checks it arrives within
// 500 ms after due (and not before).
func expectDeliveryAt(t *testing.T, c *testutil.V2Conn, due time.Time, body string) {
	t.Helper()
	m := c.ExpectMessageWithin(time.Until(due) + 3*time.Second)
	at := time.Now()
	if string(m.Body) != body {
		t.Fatalf("got %q, want %q", m.Body, body)
	}
	if at.Before(due.Add(-100*time.Millisecond)) || at.After(due.Add(500*time.Millisecond)) {
		t.Fatalf("delivered %v from its deadline (want 0 to +500ms)", at.Sub(due))
	}
	c.Finish(string(m.ID[:]))
}

// keepDeferred runs a storage mode with --keep-deferred.
func keepDeferred(mode func(*nsqd.Options)) func(*nsqd.Options) {
	return func(o *nsqd.Options) {
		mode(o)
		o.KeepDeferred = true
	}
}

func TestDeferredPublishKeepsItsDeadlineAcrossRestart(t *testing.T) {
	for _, mode := range storageModes {
		t.Run(mode.name+"/with channel", func(t *testing.T) {
			h := testutil.StartNSQD(t, keepDeferred(mode.opts))
			testutil.MustPost(t, h.URL("/topic/create?topic=later"), nil)
			testutil.MustPost(t, h.URL("/channel/create?topic=later&channel=c"), nil)
			p := testutil.DialV2(t, h.TCPAddr)
			p.Send("DPUB later 3000", []byte("due"))
			p.ExpectOK()
			due := time.Now().Add(3 * time.Second)
			p.Close()
			time.Sleep(time.Second)
			h = testutil.RestartNSQD(t, h)
			c := testutil.DialV2(t, h.TCPAddr)
			defer c.Close()
			c.Subscribe("later", "c")
			c.Ready(1)
			expectDeliveryAt(t, c, due, "due")
		})
		t.Run(mode.name+"/burst without channel", func(t *testing.T) {
			h := testutil.StartNSQD(t, keepDeferred(mode.opts))
			p := testutil.DialV2(t, h.TCPAddr)
			// every deadline is at least this: a message is stamped when
			// nsqd takes it, after it was sent (the OKs may be read late)
			due := time.Now().Add(2500 * time.Millisecond)
			for i := range 20 {
				p.Send("DPUB burst 2500", []byte(fmt.Sprintf("d%d", i)))
			}
			for range 20 {
				p.ExpectOK()
			}
			p.Close()
			time.Sleep(500 * time.Millisecond)
			h = testutil.RestartNSQD(t, h)
			c := testutil.DialV2(t, h.TCPAddr)
			defer c.Close()
			c.Subscribe("burst", "c") // the first channel gets what the topic holds
			c.Ready(100)
			first := c.ExpectMessageWithin(5 * time.Second)
			if at := time.Now(); at.Before(due.Add(-100 * time.Millisecond)) {
				t.Fatalf("deferred message delivered %v before its deadline", due.Sub(at))
			}
			c.Finish(string(first.ID[:]))
			for range 19 {
				m := c.ExpectMessageWithin(2 * time.Second)
				c.Finish(string(m.ID[:]))
			}
		})
	}
}

func TestRequeueDelayKeepsItsDeadlineAcrossRestart(t *testing.T) {
	for _, mode := range storageModes {
		t.Run(mode.name, func(t *testing.T) {
			h := testutil.StartNSQD(t, keepDeferred(mode.opts))
			testutil.MustPost(t, h.URL("/topic/create?topic=retry"), nil)
			testutil.MustPost(t, h.URL("/channel/create?topic=retry&channel=c"), nil)
			testutil.MustPost(t, h.URL("/pub?topic=retry"), []byte("again"))
			c := testutil.DialV2(t, h.TCPAddr)
			c.Subscribe("retry", "c")
			c.Ready(1)
			m := c.ExpectMessageWithin(5 * time.Second)
			c.Ready(0)
			c.Send("REQ "+string(m.ID[:])+" 2500", nil)
			due := time.Now().Add(2500 * time.Millisecond)
			c.ExpectNothing(100 * time.Millisecond)
			c.Close()
			h = testutil.RestartNSQD(t, h)
			c = testutil.DialV2(t, h.TCPAddr)
			defer c.Close()
			c.Subscribe("retry", "c")
			c.Ready(1)
			expectDeliveryAt(t, c, due, "again")
		})
	}
}

func TestDeferredPublishToATopicWithoutChannelsWaitsWithMemQueueSizeZero(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize, o.KeepDeferred = 0, true })
	p := testutil.DialV2(t, h.TCPAddr)
	defer p.Close()
	for i := range 10 {
		p.Send("DPUB nochan 1500", []byte(fmt.Sprintf("d%d", i)))
	}
	for range 10 {
		p.ExpectOK()
	}
	due := time.Now().Add(1500 * time.Millisecond)
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("nochan", "c")
	c.Ready(10)
	for i := range 10 {
		m := c.ExpectMessageWithin(5 * time.Second)
		if at := time.Now(); at.Before(due.Add(-100 * time.Millisecond)) {
			t.Fatalf("message %d delivered %v before its deadline", i, due.Sub(at))
		}
		c.Finish(string(m.ID[:]))
	}
}

func TestWithoutKeepDeferredNoDeadlineFileIsWritten(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=d"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=d&channel=c"), nil)
	p := testutil.DialV2(t, h.TCPAddr)
	p.Send("DPUB d 60000", []byte("x"))
	p.ExpectOK()
	p.Close()
	h.Exit()
	if _, err := os.Stat(filepath.Join(h.DataPath, "deferred.dat")); !os.IsNotExist(err) {
		t.Fatalf("deferred.dat written without --keep-deferred: %v", err)
	}
}

func TestADeadLetterTheDeadLetterTopicRefusesStaysInItsChannel(t *testing.T) {
	forEachMode(t, nil, func(t *testing.T, h *testutil.NSQDHandle) {
		testutil.MustPost(t, h.URL("/topic/create?topic=full&max_depth=1&overflow=reject"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=full&channel=x"), nil)
		testutil.MustPost(t, h.URL("/pub?topic=full"), []byte("filler"))
		testutil.MustPost(t, h.URL("/topic/create?topic=src"), nil)
		testutil.MustPost(t, h.URL("/channel/create?topic=src&channel=c&max_attempts=1&dead_letter_topic=full"), nil)
		testutil.MustPost(t, h.URL("/pub?topic=src"), []byte("keep me"))
		c := testutil.DialV2(t, h.TCPAddr)
		defer c.Close()
		c.Subscribe("src", "c")
		c.Ready(1)
		m := c.ExpectMessageWithin(5 * time.Second)
		c.Ready(0)
		c.Send("REQ "+string(m.ID[:])+" 0", nil)
		c.ExpectNothing(300 * time.Millisecond)
		cs := findChannel(policyStats(t, h), "src", "c")
		if cs.DeadLetteredCount != 0 || cs.Depth+cs.DeferredCount+cs.InFlightCount != 1 {
			t.Fatalf("refused dead letter: %+v %+v", cs, cs.ChannelPolicyStats)
		}
		if ts := findTopic(policyStats(t, h), "full"); ts.RejectedCount == 0 {
			t.Fatalf("the dead-letter topic did not refuse: %+v", ts.TopicPolicyStats)
		}
		// room again: the message moves on its next try
		if got := consumeN(t, h.TCPAddr, "full", "x", 1); got[0] != "filler" {
			t.Fatalf("got %q", got[0])
		}
		if got := consumeN(t, h.TCPAddr, "full", "x", 1); got[0] != "keep me" {
			t.Fatalf("got %q", got[0])
		}
		// the dead letter is counted and finished just after its publish,
		// which the consumer may already have received
		testutil.WaitFor(t, 5*time.Second, func() bool {
			cs := findChannel(policyStats(t, h), "src", "c")
			return cs.DeadLetteredCount == 1 && cs.Depth+cs.DeferredCount+cs.InFlightCount == 0
		}, "the dead letter counted and gone from its channel")
	})
}
