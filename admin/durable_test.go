package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Durable topics show as durable, with their retention, in the topic API
// and the overview; other topics keep the JSON they had.
func TestAPIShowsDurableTopicsAndRetention(t *testing.T) {
	c := startCluster(t, 2)
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"orders"}, "durable": {"true"}, "retention_time": {"2h"}})
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"plain"}})
	}
	a := startAdmin(t, c, nil)
	waitFor(t, 10*time.Second, "topics visible", func() bool {
		code, body := call(t, http.MethodGet, a.url("/api/topics/orders"), nil, nil)
		return code == http.StatusOK && strings.Contains(string(body), `"durable":true`)
	})
	tp := apiGet[topicResp](t, a, "/api/topics/orders")
	if !tp.Durable || tp.RetentionTime != "2h0m0s" || tp.RetentionBytes == nil || *tp.RetentionBytes != 0 {
		t.Fatalf("durable topic: durable=%v retention_time=%q retention_bytes=%v", tp.Durable, tp.RetentionTime, tp.RetentionBytes)
	}
	for _, n := range tp.Nodes {
		if !n.Durable || n.RetentionTime != "2h0m0s" {
			t.Fatalf("node %s: %+v", n.Node, n)
		}
	}
	_, body := call(t, http.MethodGet, a.url("/api/topics/plain"), nil, nil)
	if strings.Contains(string(body), "durable") || strings.Contains(string(body), "retention") {
		t.Fatalf("non-durable topic JSON mentions durable keys: %s", body)
	}
	ov := apiGet[struct {
		Topics []overviewTopic `json:"topics"`
	}](t, a, "/api/overview")
	seen := 0
	for _, row := range ov.Topics {
		switch row.TopicName {
		case "orders":
			seen++
			if !row.Durable {
				t.Fatalf("overview row of a durable topic: %+v", row)
			}
		case "plain":
			seen++
			if row.Durable {
				t.Fatalf("overview row of a plain topic: %+v", row)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("overview: %+v", ov.Topics)
	}
}

// The create form's durable option creates the topic durable on every node.
func TestAPICreatesDurableTopic(t *testing.T) {
	c := startCluster(t, 2)
	a := startAdmin(t, c, nil)
	code, b := call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "ledger", "durable": true}, nil)
	if code != http.StatusOK {
		t.Fatalf("create durable topic: %d %s", code, b)
	}
	for _, n := range c.NSQDs {
		rt := nodeStatsOf(t, n.HTTP).topic("ledger")
		if rt == nil || !rt.Durable {
			t.Fatalf("topic on %s: %+v, want durable", n.HTTP, rt)
		}
	}
	code, b = call(t, http.MethodPost, a.url("/api/topics"), map[string]any{"topic": "x#ephemeral", "durable": true}, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(b), "DURABLE") {
		t.Fatalf("durable ephemeral topic: %d %s", code, b)
	}
}
