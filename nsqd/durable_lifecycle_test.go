package nsqd_test

import (
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

func TestDurableRequeueKeepsAttemptsAndDelayAcrossRestart(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=rq"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=rq&channel=c"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=rq"), []byte("again"))
	c := testutil.DialV2(t, h.TCPAddr)
	c.Subscribe("rq", "c")
	c.Ready(1)
	m := c.ExpectMessageWithin(5 * time.Second)
	c.Ready(0)
	c.Send("REQ "+string(m.ID[:])+" 1500", nil)
	c.ExpectNothing(50 * time.Millisecond)
	c.Close()
	requeued := time.Now()
	h = testutil.RestartNSQD(t, h)
	c = testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("rq", "c")
	c.Ready(1)
	m = c.ExpectMessageWithin(5 * time.Second)
	if el := time.Since(requeued); el < 1200*time.Millisecond {
		t.Fatalf("requeued message came back after %v, before its 1.5s delay", el)
	}
	if m.Attempts != 2 {
		t.Fatalf("attempts after restart = %d, want 2", m.Attempts)
	}
}

func TestDurableInFlightAtShutdownIsRedeliveredWithItsAttempts(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=inf"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=inf&channel=c"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=inf"), []byte("held"))
	c := testutil.DialV2(t, h.TCPAddr)
	c.Subscribe("inf", "c")
	c.Ready(1)
	c.ExpectMessageWithin(5 * time.Second)
	h = testutil.RestartNSQD(t, h) // the consumer never finished it
	c.Close()
	c = testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("inf", "c")
	c.Ready(1)
	m := c.ExpectMessageWithin(5 * time.Second)
	if string(m.Body) != "held" || m.Attempts != 2 {
		t.Fatalf("got %q attempts %d, want held with 2 attempts", m.Body, m.Attempts)
	}
}

func TestDurableTopicWithoutChannelsKeepsMessagesForTheFirstChannel(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	for i := range 3 {
		testutil.MustPost(t, h.URL("/pub?topic=first"), []byte(fmt.Sprint(i)))
	}
	if tp := testutil.GetStats(t, h.HTTPAddr, "").Topic("first"); tp == nil || tp.Depth != 3 {
		t.Fatalf("topic without channels: %+v, want depth 3", tp)
	}
	h = testutil.RestartNSQD(t, h)
	if got := consumeN(t, h.TCPAddr, "first", "c", 3); len(got) != 3 {
		t.Fatalf("first channel got %v", got)
	}
	// a second channel starts with new messages only, as in NSQ
	testutil.MustPost(t, h.URL("/channel/create?topic=first&channel=d"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=first"), []byte("new"))
	if got := consumeN(t, h.TCPAddr, "first", "d", 1); got[0] != "new" {
		t.Fatalf("second channel got %v", got)
	}
	// deleting every channel makes the topic queue again
	testutil.MustPost(t, h.URL("/channel/delete?topic=first&channel=c"), nil)
	testutil.MustPost(t, h.URL("/channel/delete?topic=first&channel=d"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=first"), []byte("queued"))
	if got := consumeN(t, h.TCPAddr, "first", "e", 1); got[0] != "queued" {
		t.Fatalf("channel after deletes got %v", got)
	}
}

func TestDurableChannelEmptyFinishesEverything(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=em"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=em&channel=c"), nil)
	for i := range 5 {
		testutil.MustPost(t, h.URL("/pub?topic=em"), []byte(fmt.Sprint(i)))
	}
	if ch := testutil.GetStats(t, h.HTTPAddr, "").Channel("em", "c"); ch == nil || ch.Depth != 5 {
		t.Fatalf("channel before empty: %+v", ch)
	}
	testutil.MustPost(t, h.URL("/channel/empty?topic=em&channel=c"), nil)
	if ch := testutil.GetStats(t, h.HTTPAddr, "").Channel("em", "c"); ch.Depth != 0 {
		t.Fatalf("channel after empty: %+v", ch)
	}
	h = testutil.RestartNSQD(t, h)
	testutil.MustPost(t, h.URL("/pub?topic=em"), []byte("after"))
	if got := consumeN(t, h.TCPAddr, "em", "c", 1); got[0] != "after" {
		t.Fatalf("after empty and restart got %v", got)
	}
}

func TestDurableFinishedSegmentsAreRemovedUnlessRetained(t *testing.T) {
	small := func(o *nsqd.Options) { o.Durable = true; o.DurableSegmentBytes = 4096 }
	h := testutil.StartNSQD(t, small)
	testutil.MustPost(t, h.URL("/topic/create?topic=gone"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=kept&retention_time=1h"), nil)
	for _, tp := range []string{"gone", "kept"} {
		testutil.MustPost(t, h.URL("/channel/create?topic="+tp+"&channel=c"), nil)
	}
	body := []byte(strings.Repeat("x", 500))
	for range 40 {
		testutil.MustPost(t, h.URL("/pub?topic=gone"), body)
		testutil.MustPost(t, h.URL("/pub?topic=kept"), body)
	}
	segs := func(tp string) int {
		m, _ := filepath.Glob(filepath.Join(h.DataPath, "durable", tp+".log", "*.seg"))
		return len(m)
	}
	if segs("gone") < 3 || segs("kept") < 3 {
		t.Fatalf("expected several segments, got %d and %d", segs("gone"), segs("kept"))
	}
	consumeN(t, h.TCPAddr, "gone", "c", 40)
	consumeN(t, h.TCPAddr, "kept", "c", 40)
	if !testutil.Eventually(5*time.Second, func() bool { return segs("gone") == 1 }) {
		t.Fatalf("finished segments of an unretained topic: %d left, want only the active one", segs("gone"))
	}
	if segs("kept") < 3 {
		t.Fatalf("retention_time=1h kept only %d segments", segs("kept"))
	}
	// and the retained ones replay
	testutil.MustPost(t, h.URL("/channel/create?topic=kept&channel=replay&start=earliest"), nil)
	if got := consumeN(t, h.TCPAddr, "kept", "replay", 40); len(got) != 40 {
		t.Fatalf("replay got %d", len(got))
	}
}

func TestDurableTopicCreateParameters(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=nd&durable=false"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=nd"), []byte("x"))
	if tp := testutil.GetStats(t, h.HTTPAddr, "").Topic("nd"); tp == nil || strings.Contains(string(testutil.GetStats(t, h.HTTPAddr, "&topic=nd").Raw), "durable") {
		t.Fatalf("durable=false topic shows as durable")
	}
	if _, err := os.Stat(filepath.Join(h.DataPath, "durable", "nd.log")); err == nil {
		t.Fatal("durable=false topic has a durable log")
	}
	for q, param := range map[string]string{
		"durable=maybe":          "DURABLE",
		"retention_time=forever": "RETENTION_TIME",
		"retention_bytes=-1":     "RETENTION_BYTES",
	} {
		r := testutil.HTTPPost(t, h.URL("/topic/create?topic=bad&"+q), nil)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), param) {
			t.Errorf("%s: %v, want 400 naming %s", q, r, param)
		}
	}
	r := testutil.HTTPPost(t, h.URL("/topic/create?topic=nd&durable=true"), nil)
	if r.Status != http.StatusConflict {
		t.Errorf("re-creating a non-durable topic as durable: %v, want 409", r)
	}
	h.Exit()
	md, err := os.ReadFile(filepath.Join(h.DataPath, "nsqd.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), `{"name":"nd","paused":false,"channels":null}`) {
		t.Fatalf("nsqd.dat for a non-durable topic gained keys: %s", md)
	}
}

func TestDurableNsqdDatMarksDurableTopics(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=d1&durable=true&retention_time=2h"), nil)
	testutil.MustPost(t, h.URL("/topic/create?topic=p1"), nil)
	h.Exit()
	md, err := os.ReadFile(filepath.Join(h.DataPath, "nsqd.dat"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), `"durable":true,"retention_time":"2h0m0s"`) {
		t.Fatalf("nsqd.dat: %s", md)
	}
	// without --durable, the durable topic comes back durable and the plain one plain
	h = testutil.RestartNSQD(t, h)
	s := testutil.GetStats(t, h.HTTPAddr, "")
	raw := string(s.Raw)
	if !strings.Contains(raw, `"topic_name":"d1"`) || strings.Count(raw, `"durable":true`) != 1 || !strings.Contains(raw, `"retention_time":"2h0m0s"`) {
		t.Fatalf("stats after restart: %s", raw)
	}
}

func TestDurableEphemeralChannelAndTopicAreNotDurable(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=eph%23ephemeral"), nil)
	if _, err := os.Stat(filepath.Join(h.DataPath, "durable", "eph#ephemeral.log")); err == nil {
		t.Fatal("ephemeral topic got a durable log")
	}
	r := testutil.HTTPPost(t, h.URL("/topic/create?topic=eph2%23ephemeral&durable=true"), nil)
	if r.Status != http.StatusBadRequest {
		t.Fatalf("durable ephemeral topic: %v, want 400", r)
	}
	testutil.MustPost(t, h.URL("/topic/create?topic=de"), nil)
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("de", "tmp#ephemeral")
	c.Ready(5)
	testutil.MustPost(t, h.URL("/pub?topic=de"), []byte("e"))
	if m := c.ExpectMessageWithin(5 * time.Second); string(m.Body) != "e" {
		t.Fatalf("ephemeral channel got %q", m.Body)
	}
}

func TestDurablePausedTopicHoldsDeliveryUntilUnpaused(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=pz"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=pz&channel=c"), nil)
	testutil.MustPost(t, h.URL("/topic/pause?topic=pz"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=pz"), []byte("wait"))
	c := testutil.DialV2(t, h.TCPAddr)
	defer c.Close()
	c.Subscribe("pz", "c")
	c.Ready(1)
	c.ExpectNothing(300 * time.Millisecond)
	testutil.MustPost(t, h.URL("/topic/unpause?topic=pz"), nil)
	if m := c.ExpectMessageWithin(5 * time.Second); string(m.Body) != "wait" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestDurableTopicDeleteRemovesItsFolder(t *testing.T) {
	h := testutil.StartNSQD(t, durableOpts)
	testutil.MustPost(t, h.URL("/topic/create?topic=del"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=del&channel=c"), nil)
	testutil.MustPost(t, h.URL("/pub?topic=del"), []byte("x"))
	testutil.MustPost(t, h.URL("/topic/delete?topic=del"), nil)
	if _, err := os.Stat(filepath.Join(h.DataPath, "durable", "del.log")); err == nil {
		t.Fatal("deleted durable topic left its folder")
	}
	h = testutil.RestartNSQD(t, h)
	if tp := testutil.GetStats(t, h.HTTPAddr, "").Topic("del"); tp != nil {
		t.Fatalf("deleted topic came back: %+v", tp)
	}
}
