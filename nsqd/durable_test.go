package nsqd_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

func durableOpts(o *nsqd.Options) { o.Durable = true }

// consumeN subscribes a raw consumer to topic/channel and returns the bodies
// of the first n messages, finishing each.
func consumeN(t *testing.T, addr, topic, channel string, n int) []string {
	t.Helper()
	c := testutil.DialV2(t, addr)
	defer c.Close()
	c.Subscribe(topic, channel)
	c.Ready(1)
	var got []string
	for len(got) < n {
		m := c.ExpectMessageWithin(5 * time.Second)
		got = append(got, string(m.Body))
		if len(got) == n {
			c.Ready(0) // nothing more is sent after the last FIN
		}
		c.Finish(string(m.ID[:]))
	}
	c.ExpectNothing(50 * time.Millisecond)
	return got
}

func TestDurableTopicPublishConsumeAndStatsShape(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	p := testutil.DialV2(t, h.TCPAddr)
	defer p.Close()
	for i := range 10 {
		p.Publish("dur", []byte(fmt.Sprintf("m%d", i)))
	}
	p.Send("MPUB dur", testutil.MPUBBody([][]byte{[]byte("b0"), []byte("b1"), []byte("b2")}))
	p.ExpectOK()
	got := consumeN(t, h.TCPAddr, "dur", "c", 13)
	if len(got) != 13 {
		t.Fatalf("got %d messages", len(got))
	}
	s := testutil.GetStats(t, h.HTTPAddr, "")
	var doc struct {
		Topics []map[string]json.RawMessage `json:"topics"`
	}
	if err := json.Unmarshal(s.Raw, &doc); err != nil {
		t.Fatal(err)
	}
	if string(doc.Topics[0]["durable"]) != "true" || string(doc.Topics[0]["retention_time"]) != `"0s"` || string(doc.Topics[0]["retention_bytes"]) != "0" {
		t.Fatalf("durable topic stats: %s", s.Raw)
	}
	if _, err := os.Stat(filepath.Join(h.DataPath, "durable", "dur.log", "00000000000000000000.seg")); err != nil {
		t.Fatalf("no segment file: %v", err)
	}
}

func TestNonDurableTopicKeepsNSQStatsShapeAndFiles(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	p := testutil.DialV2(t, h.TCPAddr)
	defer p.Close()
	p.Publish("plain", []byte("x"))
	s := testutil.GetStats(t, h.HTTPAddr, "")
	if strings.Contains(string(s.Raw), "durable") || strings.Contains(string(s.Raw), "retention") {
		t.Fatalf("non-durable stats mention durable keys: %s", s.Raw)
	}
	if _, err := os.Stat(filepath.Join(h.DataPath, "durable")); err == nil {
		t.Fatal("a durable folder was created without --durable")
	}
}

func TestDurableTopicKeepsUnfinishedMessagesAndProgressAcrossRestart(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=rt"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=rt&channel=c"), nil)
	p := testutil.DialV2(t, h.TCPAddr)
	for i := range 20 {
		p.Publish("rt", []byte(fmt.Sprintf("m%d", i)))
	}
	p.Close()
	first := consumeN(t, h.TCPAddr, "rt", "c", 5)
	h = testutil.RestartNSQD(t, h)
	rest := consumeN(t, h.TCPAddr, "rt", "c", 15)
	seen := map[string]bool{}
	for _, b := range append(first, rest...) {
		if seen[b] {
			t.Fatalf("message %s delivered twice after a clean restart", b)
		}
		seen[b] = true
	}
	if len(seen) != 20 {
		t.Fatalf("delivered %d distinct messages, want 20", len(seen))
	}
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("rt", "c")
	c.Ready(10)
	c.ExpectNothing(300 * time.Millisecond)
}

func TestDurableChannelStartEarliestLatestAndTime(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.Durable = true; o.RetentionTime = time.Hour })
	testutil.MustPost(t, h.URL("/topic/create?topic=rp"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=rp&channel=a"), nil)
	p := testutil.DialV2(t, h.TCPAddr)
	defer p.Close()
	for i := range 5 {
		p.Publish("rp", []byte(fmt.Sprintf("old%d", i)))
	}
	consumeN(t, h.TCPAddr, "rp", "a", 5)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(20 * time.Millisecond)
	for i := range 3 {
		p.Publish("rp", []byte(fmt.Sprintf("new%d", i)))
	}
	testutil.MustPost(t, h.URL("/channel/create?topic=rp&channel=e&start=earliest"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=rp&channel=l&start=latest"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=rp&channel=m&start="+mid), nil)
	if got := consumeN(t, h.TCPAddr, "rp", "e", 8); len(got) != 8 {
		t.Fatalf("earliest got %v", got)
	}
	got := consumeN(t, h.TCPAddr, "rp", "m", 3)
	for _, b := range got {
		if !strings.HasPrefix(b, "new") {
			t.Fatalf("start=time delivered %q", b)
		}
	}
	p.Publish("rp", []byte("after"))
	if got := consumeN(t, h.TCPAddr, "rp", "l", 1); got[0] != "after" {
		t.Fatalf("latest got %v", got)
	}
	r := testutil.HTTPPost(t, h.URL("/channel/create?topic=rp&channel=x&start=bogus"), nil)
	if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "START") {
		t.Fatalf("start=bogus: %v", r)
	}
}

func TestDurableDeferredPublishKeepsItsDeadlineAcrossRestart(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=dp"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=dp&channel=c"), nil)
	p := testutil.DialV2(t, h.TCPAddr)
	p.Send("DPUB dp 1500", []byte("later"))
	p.ExpectOK()
	p.Close()
	start := time.Now()
	h = testutil.RestartNSQD(t, h)
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("dp", "c")
	c.Ready(1)
	m := c.ExpectMessageWithin(5 * time.Second)
	if string(m.Body) != "later" {
		t.Fatalf("got %q", m.Body)
	}
	if el := time.Since(start); el < 1200*time.Millisecond {
		t.Fatalf("deferred message delivered %v after publish, before its 1.5s deadline", el)
	}
}
