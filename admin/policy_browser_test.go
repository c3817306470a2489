package admin

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Message policies in the UI, against real nsqd nodes in headless Chromium.

// attr returns attribute name of the first element matching sel ("" when absent).
func (b *browser) attr(sel, name string) string {
	b.t.Helper()
	return run(b, chromedp.Evaluate[string]("(function(){var e=document.querySelector("+jsString(sel)+");return e?(e.getAttribute("+jsString(name)+")||''):''})()"))
}

// cell returns the text of the first element matching sel, read in one evaluation (waiting
// for it to exist): the pages replace their tables and figures on every refresh, and a node
// queried first and read after may have been replaced in between.
func (b *browser) cell(sel string) string {
	b.t.Helper()
	var got string
	waitFor(b.t, 15*time.Second, sel+" on the page", func() bool {
		got = run(b, chromedp.Evaluate[string]("(function(){var e=document.querySelector("+jsString(sel)+");return e?'='+e.innerText:''})()"))
		return got != ""
	})
	return strings.TrimSpace(got[1:])
}

// cellNumber parses the figure in sel ("1,234" -> 1234).
func (b *browser) cellNumber(sel string) int64 {
	b.t.Helper()
	s := strings.ReplaceAll(b.cell(sel), ",", "")
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.t.Fatalf("%s shows %q, not a number", sel, s)
	}
	return v
}

// answerConfirm clicks sel, reads the confirmation dialog's question, and answers it: Confirm
// when ok, Cancel otherwise.
func (b *browser) answerConfirm(sel string, ok bool) string {
	b.t.Helper()
	button := "#modal-cancel"
	if ok {
		button = "#modal-ok"
	}
	b.do(chromedp.Click(chromedp.CSS(sel)), chromedp.WaitVisible(chromedp.CSS(button)))
	question := b.text("#modal-text")
	b.do(chromedp.Click(chromedp.CSS(button)))
	return question
}

// openDetails opens the <details> around sel by clicking its summary, unless it is open.
func (b *browser) openDetails(sel string) {
	b.t.Helper()
	if !run(b, chromedp.Evaluate[bool]("document.querySelector("+jsString(sel)+").open")) {
		b.do(chromedp.Click(chromedp.CSS(sel + " > summary")))
	}
}

// shot writes the page as it is now to <name>.png (screenshots reloads; this keeps what the
// test opened).
func (b *browser) shot(name string) {
	b.t.Helper()
	png := run(b, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.out, name+".png"), png, 0o644); err != nil {
		b.t.Fatalf("write screenshot: %v", err)
	}
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// dropRefusedRequestLogs waits for the browser to log the refused API request (Chromium logs
// every 4xx/5xx answer as a console error) and drops those entries.
func (b *browser) dropRefusedRequestLogs(status string) {
	b.t.Helper()
	waitFor(b.t, 5*time.Second, "the browser to log the "+status, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			if strings.Contains(p, status) {
				return true
			}
		}
		return false
	})
	b.takeProblems()
}

// A channel with max_attempts=1 dead-letters a message a consumer REQs: the channel page shows
// the policy, the counts and the dead letter; Redrive, once confirmed, moves it back and says
// how many moved.
func TestBrowserChannelPageListsDeadLettersAndRedrivesThem(t *testing.T) {
	c := startCluster(t, 2)
	n0, n1 := c.NSQDs[0], c.NSQDs[1]
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"jobs"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"jobs"}, "channel": {"work"}, "max_attempts": {"1"}})
	}
	id := deadLetterOne(t, n0, "jobs", "work", "poison")
	a := startAdmin(t, c, nil)
	waitFor(t, 10*time.Second, "work on both nodes in the admin", func() bool {
		var ch channelResp
		return getJSONErr(a.url("/api/topics/jobs/work"), &ch) == nil && len(ch.Nodes) == 2
	})
	b := newBrowser(t)

	// The topic page counts the channel's dead letters.
	b.open(a.url("/topics/jobs"))
	if got := b.cellNumber(`#channels-table tr[data-channel="work"] td[data-k="dead_lettered_count"]`); got != 1 {
		t.Fatalf("topic page: work dead-lettered %d, want 1", got)
	}
	b.expectCleanConsole("topic with a dead-lettering channel")

	pageURL := a.url("/topics/jobs/work")
	b.open(pageURL)
	if got := b.cell(`#policy [data-k="max_attempts"]`); got != "1" {
		t.Fatalf("max attempts %q", got)
	}
	if got := b.cell(`#policy [data-k="dead_letter_topic"]`); got != "jobs.dlq" {
		t.Fatalf("dead-letter topic %q", got)
	}
	if href := b.attr(`#policy [data-k="dead_letter_topic"] a`, "href"); !strings.HasSuffix(href, "/topics/jobs.dlq") {
		t.Fatalf("dead-letter topic link %q", href)
	}
	if got := b.cell(`#policy [data-k="ttl"]`); got != "none" {
		t.Fatalf("ttl %q", got)
	}
	if got := b.cellNumber(`#policy [data-k="dead_lettered_count"]`); got != 1 {
		t.Fatalf("dead-lettered %d", got)
	}
	if got := b.cellNumber(`#dead-letters [data-k="dead_letter_count"]`); got != 1 {
		t.Fatalf("dead letter count %d", got)
	}
	if got := b.count(`#dead-letters tr[data-id]`); got != 1 {
		t.Fatalf("%d dead letter rows, want 1", got)
	}
	row := `#dead-letters tr[data-id] `
	for k, want := range map[string]string{"reason": "max_attempts", "original_id": id, "node": n0.HTTP, "attempts": "1", "body_size": "6 B", "dead_letter_topic": "jobs.dlq"} {
		if got := b.cell(row + `td[data-k="` + k + `"]`); got != want {
			t.Fatalf("dead letter %s %q, want %q", k, got, want)
		}
	}
	for node, want := range map[string]int64{n0.HTTP: 1, n1.HTTP: 0} {
		r := `#nodes-table tr[data-node="` + node + `"] `
		if got := b.cellNumber(r + `td[data-k="dead_lettered_count"]`); got != want {
			t.Fatalf("node %s dead-lettered %d, want %d", node, got, want)
		}
		if got := b.cellNumber(r + `td[data-k="dead_letters"]`); got != want {
			t.Fatalf("node %s dead letters %d, want %d", node, got, want)
		}
		if got := b.cell(r + `td[data-k="max_attempts"]`); got != "1" {
			t.Fatalf("node %s max attempts %q", node, got)
		}
	}
	b.expectCleanConsole("channel with a dead letter")
	b.screenshots(pageURL, "channel-dead-letters")

	// Cancel moves nothing.
	if got := b.answerConfirm(`button[data-act="redrive"]`, false); !strings.HasPrefix(got, "Redrive 1 dead letter of channel jobs/work? ") {
		t.Fatalf("confirmation %q", got)
	}
	if l := deadLettersOn(t, n0.HTTP, "jobs", "work"); l.Count != 1 {
		t.Fatalf("a cancelled redrive moved dead letters: %+v", l)
	}

	b.answerConfirm(`button[data-act="redrive"]`, true)
	if got := b.waitText("#redrive-result", "the redrive result", func(s string) bool { return s != "" }); got != "Redrive moved 1 dead letter back into jobs/work." {
		t.Fatalf("redrive result %q", got)
	}
	if got := b.cell("#flash"); got != "Redrive moved 1 dead letter back into jobs/work." {
		t.Fatalf("flash %q", got)
	}
	b.waitText(`#dead-letters [data-k="dead_letter_count"]`, "no dead letters left", func(s string) bool { return s == "0" })
	b.waitText(`#dead-letters`, "the empty dead letter list", func(s string) bool { return strings.Contains(s, "No dead letters.") })
	if n := b.count(`button[data-act="redrive"]`); n != 0 {
		t.Fatalf("%d Redrive buttons with nothing to redrive", n)
	}
	if l := deadLettersOn(t, n0.HTTP, "jobs", "work"); l.Count != 0 {
		t.Fatalf("after redrive node 0 lists %+v", l)
	}
	waitFor(t, 5*time.Second, "the message back in work", func() bool { return nodeStatsOf(t, n0.HTTP).channel("jobs", "work").Depth == 1 })
	b.waitText(`#figures [data-k="depth"]`, "the page to show depth 1", func(s string) bool { return s == "1" })
	b.expectCleanConsole("after redrive")
}

// Admins edit a topic's and a channel's settings on their pages and give them at creation;
// nsqd's refusal of a value shows in the form; read-only users get no form.
func TestBrowserEditsPoliciesAndShowsRefusals(t *testing.T) {
	c := startCluster(t, 2)
	for _, n := range c.NSQDs {
		mustPost(t, n.HTTP, "/topic/create", url.Values{"topic": {"orders"}})
		mustPost(t, n.HTTP, "/channel/create", url.Values{"topic": {"orders"}, "channel": {"billing"}})
	}
	a := startAdmin(t, c, nil)
	ro := startAdmin(t, c, func(o *Options) { o.AdminUsers = []string{"boss"} })
	waitFor(t, 10*time.Second, "orders on both nodes in the admin", func() bool {
		var tp topicResp
		return getJSONErr(a.url("/api/topics/orders"), &tp) == nil && len(tp.Nodes) == 2
	})
	b := newBrowser(t)
	onBoth := func(what string, ok func(*nodeStats) bool) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() bool {
			for _, n := range c.NSQDs {
				if !ok(nodeStatsOf(t, n.HTTP)) {
					return false
				}
			}
			return true
		})
	}

	// Topic: nothing set yet, so nothing shown but the form.
	topicURL := a.url("/topics/orders")
	b.open(topicURL)
	if n := b.count(`#policy .figure`) + b.count(`#nodes-table td[data-k="ttl"]`); n != 0 {
		t.Fatalf("a topic without a policy shows %d policy figures or cells", n)
	}
	b.openDetails(`#policy-edit details`)
	b.do(chromedp.SendKeys(chromedp.CSS("#topic-policy-ttl"), "10m"),
		chromedp.SendKeys(chromedp.CSS("#topic-policy-max_depth"), "100"),
		chromedp.SetValue(chromedp.CSS("#topic-policy-overflow"), "drop_oldest"))
	if got := b.answerConfirm(`#topic-policy button[data-act="save-policy"]`, true); got != "Set ttl=10m, max_depth=100, overflow=drop_oldest on topic orders?" {
		t.Fatalf("save confirmation %q", got)
	}
	onBoth("the topic policy on both nodes", func(s *nodeStats) bool {
		tp := s.topic("orders")
		return tp.TopicPolicyStats != nil && tp.TTL == "10m0s" && tp.MaxDepth == 100 && tp.Overflow == "drop_oldest"
	})
	b.waitText(`#policy [data-k="ttl"]`, "the page to show the TTL", func(s string) bool { return s == "10m0s" })
	if got := b.cell(`#policy [data-k="max_depth"]`); got != "100, then drop oldest" {
		t.Fatalf("max depth %q", got)
	}
	for _, n := range c.NSQDs {
		if got := b.cell(`#nodes-table tr[data-node="` + n.HTTP + `"] td[data-k="ttl"]`); got != "10m0s" {
			t.Fatalf("node %s ttl %q", n.HTTP, got)
		}
	}
	// The form was refilled from the new settings.
	waitFor(t, 10*time.Second, "the form refilled from the new settings", func() bool {
		return run(b, chromedp.Evaluate[string](`document.getElementById("topic-policy-max_depth").value`)) == "100"
	})
	b.expectCleanConsole("topic policy saved")
	b.screenshots(topicURL, "topic-policy")

	// A value nsqd refuses: its message shows in the form, nothing changes.
	b.openDetails(`#policy-edit details`)
	b.do(chromedp.Clear(chromedp.CSS("#topic-policy-max_depth")), chromedp.SendKeys(chromedp.CSS("#topic-policy-max_depth"), "lots"))
	b.clickConfirm(`#topic-policy button[data-act="save-policy"]`)
	if got := b.waitText(`#topic-policy .form-error`, "the refusal in the form", func(s string) bool { return s != "" }); !strings.HasPrefix(got, "INVALID_MAX_DEPTH: ") || !strings.Contains(got, `"lots"`) {
		t.Fatalf("form error %q", got)
	}
	b.dropRefusedRequestLogs("400")
	b.shot("topic-policy-refused")
	for _, n := range c.NSQDs {
		if tp := nodeStatsOf(t, n.HTTP).topic("orders"); tp.MaxDepth != 100 {
			t.Fatalf("a refused value changed %s: %+v", n.HTTP, tp.TopicPolicyStats)
		}
	}

	// Channel: max attempts (the default dead-letter topic follows).
	b.open(a.url("/topics/orders/billing"))
	if got := b.cell(`#policy [data-k="ttl"]`); got != "10m0s" {
		t.Fatalf("channel page TTL (the topic's) %q", got)
	}
	b.openDetails(`#policy-edit details`)
	b.do(chromedp.SendKeys(chromedp.CSS("#channel-policy-max_attempts"), "3"))
	b.clickConfirm(`#channel-policy button[data-act="save-policy"]`)
	onBoth("the channel policy on both nodes", func(s *nodeStats) bool {
		ch := s.channel("orders", "billing")
		return ch.ChannelPolicyStats != nil && ch.MaxAttempts == 3 && ch.DeadLetterTopic == "orders.dlq"
	})
	b.waitText(`#policy [data-k="max_attempts"]`, "the page to show max attempts", func(s string) bool { return s == "3" })
	if got := b.cell(`#policy [data-k="dead_letter_topic"]`); got != "orders.dlq" {
		t.Fatalf("channel dead-letter topic %q", got)
	}
	if got := b.cellNumber(`#dead-letters [data-k="dead_letter_count"]`); got != 0 {
		t.Fatalf("channel dead letters %d", got)
	}
	b.expectCleanConsole("channel policy saved")

	// Read-only users see the settings, not the forms.
	for _, page := range []string{"/topics/orders", "/topics/orders/billing", "/lookup"} {
		b.open(ro.url(page))
		if n := b.count(`details.policy-edit`) + b.count(`button[data-act]`); n != 0 {
			t.Fatalf("read-only %s shows %d policy forms or buttons", page, n)
		}
	}
	b.open(ro.url("/topics/orders"))
	if got := b.cell(`#policy [data-k="ttl"]`); got != "10m0s" {
		t.Fatalf("read-only topic page TTL %q", got)
	}

	// Create with settings from the lookup page.
	b.open(a.url("/lookup"))
	b.do(chromedp.SendKeys(chromedp.CSS("#create-topic"), "fresh"), chromedp.SendKeys(chromedp.CSS("#create-channel"), "c"))
	b.openDetails(`#create-form details`)
	b.do(chromedp.SendKeys(chromedp.CSS("#create-ttl"), "5m"), chromedp.SendKeys(chromedp.CSS("#create-max-attempts"), "2"))
	b.shot("lookup-create-policy")
	if got := b.answerConfirm(`button[data-act="create"]`, true); got != "Create topic fresh and channel c with ttl=5m, max_attempts=2?" {
		t.Fatalf("create confirmation %q", got)
	}
	onBoth("fresh created with its settings on both nodes", func(s *nodeStats) bool {
		tp, ch := s.topic("fresh"), s.channel("fresh", "c")
		return tp != nil && tp.TopicPolicyStats != nil && tp.TTL == "5m0s" && ch != nil && ch.ChannelPolicyStats != nil && ch.MaxAttempts == 2
	})
	b.expectCleanConsole("create with settings")

	// The API refuses a config from a read-only user.
	if code, body := call(t, http.MethodPost, ro.url("/api/topics/orders"), map[string]any{"action": "config", "ttl": "1s"}, nil); code != http.StatusForbidden {
		t.Fatalf("read-only config: %d %s", code, body)
	}
}
