package admin

import (
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// TestAuditEmptyTopicAction: POST /api/topics/:topic {"action":"empty"} empties
// the topic's own queue on every producing nsqd and posts an empty_topic
// notification (§11.4).
func TestAuditEmptyTopicAction(t *testing.T) {
	s := startScenario(t)
	sink := newNotificationSink(t)
	a := startAdmin(t, s.c, func(o *Options) { o.NotificationHTTPEndpoint = sink.srv.URL + "/notify" })
	// A paused topic keeps what is published in its own queue.
	for i, n := range s.c.NSQDs {
		mustPost(t, n.HTTP, "/topic/pause", url.Values{"topic": {scTopic}})
		p := newProducer(t, n.TCP)
		for j := range 5 {
			if err := p.Publish(scTopic, []byte("held "+strconv.Itoa(i)+"-"+strconv.Itoa(j))); err != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	for _, n := range s.c.NSQDs {
		waitFor(t, 10*time.Second, "topic depth 5 on "+n.HTTP, func() bool {
			tp := nodeStatsOf(t, n.HTTP).topic(scTopic)
			return tp != nil && tp.Depth == 5
		})
	}
	code, b := call(t, http.MethodPost, a.url("/api/topics/"+scTopic), map[string]string{"action": "empty"}, nil)
	if code != http.StatusOK || decode[messageResponse](t, b).Message != "" {
		t.Fatalf("empty topic: %d %s", code, b)
	}
	for _, n := range s.c.NSQDs {
		tp := nodeStatsOf(t, n.HTTP).topic(scTopic)
		if tp == nil || tp.Depth != 0 || !tp.Paused {
			t.Fatalf("topic on %s after empty: %+v, want depth 0 and still paused", n.HTTP, tp)
		}
	}
	waitFor(t, 5*time.Second, "empty_topic notification", func() bool { return len(sink.all()) >= 1 })
	got := sink.all()
	if len(got) != 1 || got[0].Action != "empty_topic" || got[0].Topic != scTopic || got[0].Channel != "" || got[0].RemoteIP != "127.0.0.1" {
		t.Fatalf("notifications %+v, want one empty_topic for %s", got, scTopic)
	}
}

// TestAuditInactiveTopics: GET /api/topics?inactive=true lists, in lookupd
// mode, the topics lookupd knows with no producer, each with its channels.
func TestAuditInactiveTopics(t *testing.T) {
	s := startScenario(t)
	a := startAdmin(t, s.c, nil)
	mustPost(t, s.c.LookupdHTTP, "/topic/create", url.Values{"topic": {"ghost"}})
	mustPost(t, s.c.LookupdHTTP, "/channel/create", url.Values{"topic": {"ghost"}, "channel": {"g1"}})
	var resp struct {
		Topics  map[string][]string `json:"topics"`
		Message string              `json:"message"`
	}
	getJSON(t, a.url("/api/topics?inactive=true"), &resp)
	if want := map[string][]string{"ghost": {"g1"}}; !reflect.DeepEqual(resp.Topics, want) || resp.Message != "" {
		t.Fatalf("/api/topics?inactive=true = %+v, want topics %v and no message", resp, want)
	}
}
