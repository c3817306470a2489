package admin

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Replicated topics in the UI, against 3 real nsqd nodes in headless Chromium: the create
// form's replicas field makes a replicated topic through one node; the topic page shows
// "replicated ×3", the leader and each replica's role and lag; the topics list, the node
// page of a follower and the channel page mark them too.
func TestBrowserReplicatedTopic(t *testing.T) {
	rc := startReplicaCluster(t, 3)
	a := rc.startAdmin(t)
	mustPost(t, rc.NSQDs[0].HTTP, "/topic/create", url.Values{"topic": {"plain"}})
	b := newBrowser(t)

	// A bad count is refused with the parameter named, and nothing is created.
	b.open(a.url("/lookup"))
	b.do(chromedp.SendKeys(chromedp.CSS("#create-topic"), "orders"), chromedp.SendKeys(chromedp.CSS("#create-replicas"), "abc"))
	b.clickConfirm(`button[data-act="create"]`)
	b.waitText("#flash", "the refusal", func(s string) bool { return strings.HasPrefix(s, "Failed: INVALID_ARG_REPLICAS") })
	if calls := rc.createCalls(); len(calls) != 0 {
		t.Fatalf("a refused create reached nsqd: %q", calls)
	}
	// The 400 itself is the only console message the refusal leaves.
	_ = run(b, chromedp.Evaluate[int]("1"))
	for _, p := range b.takeProblems() {
		if !strings.Contains(p, "status of 400") {
			t.Fatalf("console after the refusal: %s", p)
		}
	}

	// replicas=3 with a channel: one create, sent to one node.
	b.open(a.url("/lookup"))
	b.do(chromedp.SendKeys(chromedp.CSS("#create-topic"), "orders"), chromedp.SendKeys(chromedp.CSS("#create-channel"), "billing"),
		chromedp.SendKeys(chromedp.CSS("#create-replicas"), "3"))
	b.shot("lookup-create-replicated")
	if q := b.answerConfirm(`button[data-act="create"]`, true); q != "Create topic orders replicated on 3 nodes and channel billing?" {
		t.Fatalf("confirmation %q", q)
	}
	b.waitText("#flash", "the create to finish", func(s string) bool { return strings.HasPrefix(s, "Done: ") || strings.HasPrefix(s, "Failed") })
	if got := b.text("#flash"); !strings.HasPrefix(got, "Done: ") {
		t.Fatalf("create: %q", got)
	}
	if calls := rc.createCalls(); len(calls) != 1 || !strings.Contains(calls[0], "replicas=3") {
		t.Fatalf("creates sent: %q, want one with replicas=3", calls)
	}
	leader := rc.waitReplicated(t, "orders", 3)
	leaderTCP, leaderNode := rc.NSQDs[leader].TCP, rc.proxies[leader].addr
	follower := rc.proxies[(leader+1)%3].addr
	b.expectCleanConsole("create replicated topic")

	// The topic page.
	topicURL := a.url("/topics/orders")
	b.open(topicURL)
	if got := b.cell(`#paused .badge.replicated`); got != "replicated ×3" {
		t.Fatalf("topic badge %q", got)
	}
	waitFor(t, 15*time.Second, "the leader and every replica's lag on the topic page", func() bool {
		b.do(chromedp.Reload())
		b.waitLoaded()
		lags := run(b, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('#nodes-table td[data-k="replica_lag"]')).map(function (e) { return e.innerText; }).join(",")`))
		return b.cell(`#replication [data-k="leader"]`) == leaderTCP && lags == "0,0,0"
	})
	if got, _ := url.PathUnescape(b.attr(`#replication [data-k="leader"] a`, "href")); !strings.HasSuffix(got, "/nodes/"+leaderNode) {
		t.Fatalf("leader links to %q, want its node page %s", got, leaderNode)
	}
	if r, n := b.cell(`#replication [data-k="replicas"]`), b.cell(`#replication [data-k="replicas_reporting"]`); r != "3" || n != "3 of 3" {
		t.Fatalf("replication figures: replicas %q reporting %q", r, n)
	}
	if l, f := b.count(`#nodes-table tr[data-role="leader"]`), b.count(`#nodes-table tr[data-role="follower"]`); l != 1 || f != 2 {
		t.Fatalf("nodes table: %d leader and %d follower rows, want 1 and 2", l, f)
	}
	if got := b.cell(`#nodes-table tr[data-node="` + leaderNode + `"] td[data-k="node"] .badge`); got != "leader" {
		t.Fatalf("leader's row marked %q", got)
	}
	if got := b.cell(`#nodes-table tr[data-node="` + leaderNode + `"] td[data-k="address"]`); got != leaderTCP {
		t.Fatalf("leader's row replica address %q, want %s", got, leaderTCP)
	}
	if got := b.cell(`#nodes-table tr[data-node="` + follower + `"] td[data-k="node"] .badge`); got != "follower" {
		t.Fatalf("follower's row marked %q", got)
	}
	if got := b.cell(`#nodes-table tr[data-node="` + follower + `"] td[data-k="replica_lag"]`); got != "0" {
		t.Fatalf("follower's lag %q, want 0", got)
	}
	if n := b.count(`#nodes-table button[data-act="tombstone"]`); n != 0 {
		t.Fatalf("%d Tombstone buttons on a replicated topic's nodes (nsqd would delete it on every replica)", n)
	}
	b.expectCleanConsole("replicated topic page")
	b.screenshots(topicURL, "topic-replicated")

	// Step down: the leadership moves to another replica and the page shows it.
	if q := b.answerConfirm(`#topic-actions button[data-act="step-down"]`, true); !strings.HasPrefix(q, "Hand the leadership of topic orders") {
		t.Fatalf("step-down confirmation %q", q)
	}
	b.waitText("#flash", "the step-down to finish", func(s string) bool { return strings.HasPrefix(s, "Done") || strings.HasPrefix(s, "Failed") })
	if got := b.text("#flash"); !strings.HasPrefix(got, "Done") {
		t.Fatalf("step-down: %q", got)
	}
	next := rc.waitNewLeader(t, "orders", 3, leader)
	leader, leaderTCP, leaderNode = next, rc.NSQDs[next].TCP, rc.proxies[next].addr
	follower = rc.proxies[(leader+1)%3].addr
	waitFor(t, 15*time.Second, "the new leader on the topic page", func() bool {
		b.do(chromedp.Reload())
		b.waitLoaded()
		return b.cell(`#replication [data-k="leader"]`) == leaderTCP
	})
	b.expectCleanConsole("step-down")

	// The topics list: badge and replication cell; the plain topic has neither.
	b.open(a.url("/"))
	if got := b.cell(`tr[data-topic="orders"] .badge.replicated`); got != "replicated ×3" {
		t.Fatalf("topics list badge %q", got)
	}
	if got := b.cell(`tr[data-topic="orders"] td[data-k="replication"]`); !strings.HasPrefix(got, "leader "+leaderTCP) || !strings.Contains(got, "lag ") {
		t.Fatalf("topics list replication cell %q", got)
	}
	if n := b.count(`tr[data-topic="plain"] .badge.replicated`); n != 0 || b.cell(`tr[data-topic="plain"] td[data-k="replication"]`) != "–" {
		t.Fatalf("plain topic row marked replicated")
	}
	b.expectCleanConsole("topics list")
	b.open(a.url("/topics/plain"))
	if n := b.count(`#topic-actions button[data-act="step-down"]`); n != 0 || b.count(`#topic-actions button[data-act="pause-topic"]`) != 1 {
		t.Fatalf("plain topic page: %d Step down buttons (want none beside its Pause)", n)
	}
	b.screenshots(a.url("/"), "topics-replicated")

	// A follower's node page and the channel page mark the follower.
	b.open(a.url("/nodes/" + follower))
	if n := b.count(`#topics-table tr[data-topic="orders"]:not([data-channel]) .badge.follower`); n != 1 {
		t.Fatalf("follower's node page: %d follower badges on orders", n)
	}
	b.open(a.url("/topics/orders/billing"))
	if f := b.count(`#nodes-table tr[data-role="follower"] .badge.follower`); f != 2 || b.cell(`#replica-note`) == "" {
		t.Fatalf("channel page: %d follower rows, note %q", f, b.cell(`#replica-note`))
	}
	b.expectCleanConsole("node and channel pages")
}
