package admin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests drive the real UI in headless Chromium (Debian's chromium package).
// They fail, never skip, when no browser is installed.

// chromiumPath finds the browser: $SLUICE_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH.
func chromiumPath() string {
	if p := os.Getenv("SLUICE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// outputDir is where screenshots go: $SLUICE_TEST_OUTPUT or <repo>/testoutput, in admin/.
func outputDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLUICE_TEST_OUTPUT")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "testoutput")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatalf("no go.mod above %s; set SLUICE_TEST_OUTPUT", wd)
			}
		}
	}
	dir = filepath.Join(dir, "admin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create test output folder: %v", err)
	}
	return dir
}

// browser is one headless Chromium tab plus what its console reported.
type browser struct {
	t   *testing.T
	ctx context.Context
	out string

	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Fatal("headless Chromium not found: the admin UI browser tests need it. Install Debian's chromium " +
			"(apt-get install -y chromium) or set SLUICE_CHROMIUM to a Chrome/Chromium binary")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx, out: outputDir(t)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		wg.Wait()
	})
	// The first action starts the browser and must run on the tab's own context (a derived
	// context with a deadline would own the browser and end it when cancelled).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	msgs := chromedp.Console(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func run[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	return v
}

// open loads url and waits until the page has rendered its first answer.
func (b *browser) open(url string) {
	b.t.Helper()
	b.do(chromedp.Navigate(url))
	b.waitLoaded()
}

func (b *browser) waitLoaded() {
	b.t.Helper()
	b.do(chromedp.WaitReady(chromedp.CSS("body[data-loaded]")))
}

// text returns the rendered text of the first element matching sel (waiting for it).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return strings.TrimSpace(run(b, chromedp.Text(chromedp.CSS(sel))))
}

// number parses the figure in sel ("1,234" -> 1234).
func (b *browser) number(sel string) int64 {
	b.t.Helper()
	s := strings.ReplaceAll(b.text(sel), ",", "")
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.t.Fatalf("%s shows %q, not a number", sel, s)
	}
	return v
}

func (b *browser) count(sel string) int {
	b.t.Helper()
	return run(b, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// waitText polls until the element's text satisfies ok.
func (b *browser) waitText(sel, what string, ok func(string) bool) string {
	b.t.Helper()
	var last string
	deadline := time.Now().Add(15 * time.Second)
	for {
		last = strings.TrimSpace(run(b, chromedp.Evaluate[string](fmt.Sprintf(
			"(function(){var e=document.querySelector(%q);return e?e.innerText:''})()", sel))))
		if ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s: %s shows %q", what, sel, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// click clicks sel, then the confirmation dialog's Confirm button.
func (b *browser) clickConfirm(sel string) {
	b.t.Helper()
	b.do(chromedp.Click(chromedp.CSS(sel)), chromedp.WaitVisible(chromedp.CSS("#modal-ok")), chromedp.Click(chromedp.CSS("#modal-ok")))
}

// takeProblems returns and clears the console errors seen so far.
func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

func (b *browser) expectCleanConsole(page string) {
	b.t.Helper()
	// Console events arrive asynchronously; give the last ones a moment to land.
	_ = run(b, chromedp.Evaluate[int]("1"))
	if p := b.takeProblems(); len(p) > 0 {
		b.t.Fatalf("%s: console errors:\n%s", page, strings.Join(p, "\n"))
	}
}

// screenshots reloads url at 1280 px and 390 px wide, checks nothing overflows the page
// horizontally, and writes <name>-<width>.png.
func (b *browser) screenshots(url, name string) {
	b.t.Helper()
	for _, w := range []int64{1280, 390} {
		b.do(chromedp.EmulateViewport(w, 900))
		b.open(url)
		if sw := run(b, chromedp.Evaluate[int64]("document.documentElement.scrollWidth")); sw > w {
			b.t.Errorf("%s at %d px: page is %d px wide (horizontal overflow)", name, w, sw)
		}
		png := run(b, chromedp.FullScreenshot(100))
		file := filepath.Join(b.out, fmt.Sprintf("%s-%d.png", name, w))
		if err := os.WriteFile(file, png, 0o644); err != nil {
			b.t.Fatalf("write screenshot: %v", err)
		}
		b.expectCleanConsole(fmt.Sprintf("%s at %d px", name, w))
	}
	b.do(chromedp.EmulateViewport(1280, 900))
}

// TestBrowserPages loads every page against a live cluster, compares the figures with the
// nodes' /stats, runs the actions through the UI, checks the read-only view and the warning
// for a dead node, and writes screenshots of every page at both widths.
func TestBrowserPages(t *testing.T) {
	s := startScenario(t)
	a := startAdmin(t, s.c, nil)
	// The read-only admin also serves under a base path.
	ro := startAdmin(t, s.c, func(o *Options) { o.AdminUsers = []string{"boss"}; o.BasePath = "/ops/" })
	b := newBrowser(t)
	n0, n1 := s.c.NSQDs[0].HTTP, s.c.NSQDs[1].HTTP
	base := a.url("/")
	waitFor(t, 10*time.Second, "two samples of the topic", func() bool {
		return len(a.sampler.series(SeriesKey{Topic: scTopic}, 0).T) >= 2
	})
	st0, st1 := nodeStatsOf(t, n0), nodeStatsOf(t, n1)
	sum := func(f func(*nodeStats) int64) int64 { return f(st0) + f(st1) }

	// Topics.
	b.open(base)
	row := `tr[data-topic="` + scTopic + `"] `
	if got, want := b.number(row+`td[data-k="message_count"]`), sum(func(s *nodeStats) int64 { return s.topic(scTopic).MessageCount }); got != want {
		t.Fatalf("topics page message count %d, want %d", got, want)
	}
	if got, want := b.number(row+`td[data-k="channel_depth"]`), sum(func(s *nodeStats) int64 {
		return s.channel(scTopic, scArchive).Depth + s.channel(scTopic, scBilling).Depth
	}); got != want || got != 17 {
		t.Fatalf("topics page channel depth %d, want %d", got, want)
	}
	if got := b.number(`#cluster-figures [data-k="node_count"]`); got != 2 {
		t.Fatalf("topics page shows %d nodes", got)
	}
	if b.count(row+".spark canvas") != 1 || b.count("#chart-main canvas") != 1 {
		t.Fatal("topics page lacks its charts")
	}
	b.expectCleanConsole("topics")
	b.screenshots(base, "topics")

	// Topic.
	topicURL := a.url("/topics/" + scTopic)
	b.open(topicURL)
	if got, want := b.number(`#figures [data-k="depth"]`), sum(func(s *nodeStats) int64 { return s.topic(scTopic).Depth }); got != want {
		t.Fatalf("topic depth %d, want %d", got, want)
	}
	if got := b.number(`#figures [data-k="message_count"]`); got != 17 {
		t.Fatalf("topic message count %d, want 17", got)
	}
	for _, n := range []struct {
		addr string
		st   *nodeStats
	}{{n0, st0}, {n1, st1}} {
		if got := b.number(`#nodes-table tr[data-node="` + n.addr + `"] td[data-k="message_count"]`); got != n.st.topic(scTopic).MessageCount {
			t.Fatalf("topic page node %s message count %d, want %d", n.addr, got, n.st.topic(scTopic).MessageCount)
		}
	}
	if got := b.number(`#channels-table tr[data-channel="` + scArchive + `"] td[data-k="depth"]`); got != 17 {
		t.Fatalf("topic page archive depth %d, want 17", got)
	}
	b.expectCleanConsole("topic")
	b.screenshots(topicURL, "topic")

	// Channel.
	billingURL := a.url("/topics/" + scTopic + "/" + scBilling)
	b.open(billingURL)
	if got := b.number(`#figures [data-k="message_count"]`); got != sum(func(s *nodeStats) int64 { return s.channel(scTopic, scBilling).MessageCount }) {
		t.Fatalf("billing message count %d", got)
	}
	if got := b.number(`#figures [data-k="client_count"]`); got != 2 || b.count(`#clients-table tr[data-client]`) != 2 {
		t.Fatalf("billing shows %d clients, %d client rows", got, b.count(`#clients-table tr[data-client]`))
	}
	var finished int64
	for _, st := range []*nodeStats{st0, st1} {
		c := st.channel(scTopic, scBilling).Clients[0]
		r := `#clients-table tr[data-client="` + c.RemoteAddress + `"] `
		if ua := b.text(r + `td[data-k="user_agent"]`); ua != c.UserAgent {
			t.Fatalf("client %s user agent %q, want %q", c.RemoteAddress, ua, c.UserAgent)
		}
		if h := b.text(r + `td[data-k="hostname"]`); h != c.Hostname {
			t.Fatalf("client %s hostname %q, want %q", c.RemoteAddress, h, c.Hostname)
		}
		if rdy := b.number(r + `td[data-k="ready_count"]`); rdy != c.ReadyCount {
			t.Fatalf("client %s RDY %d, want %d", c.RemoteAddress, rdy, c.ReadyCount)
		}
		finished += b.number(r + `td[data-k="finish_count"]`)
	}
	if finished != 17 {
		t.Fatalf("clients finished %d, want 17", finished)
	}
	if got := b.count(`#e2e tr[data-quantile]`); got != 2 {
		t.Fatalf("billing shows %d e2e percentiles, want 2", got)
	}
	b.expectCleanConsole("channel")
	b.screenshots(billingURL, "channel")

	// Nodes and a node.
	b.open(a.url("/nodes"))
	for _, n := range []struct {
		addr string
		st   *nodeStats
	}{{n0, st0}, {n1, st1}} {
		r := `tr[data-node="` + n.addr + `"] `
		if v := b.text(r + `td[data-k="version"]`); v != n.st.Version {
			t.Fatalf("node %s version %q, want %q", n.addr, v, n.st.Version)
		}
		if got := b.number(r + `td[data-k="topic_count"]`); got != int64(len(n.st.Topics)) {
			t.Fatalf("node %s topics %d", n.addr, got)
		}
		conns := int64(len(n.st.Producers))
		for _, c := range n.st.Topics[0].Channels {
			conns += int64(c.ClientCount)
		}
		if got := b.number(r + `td[data-k="connections"]`); got != conns {
			t.Fatalf("node %s connections %d, want %d", n.addr, got, conns)
		}
	}
	b.expectCleanConsole("nodes")
	b.screenshots(a.url("/nodes"), "nodes")
	nodeURL := a.url("/nodes/" + n0)
	b.open(nodeURL)
	if got := b.number(`#figures [data-k="total_messages"]`); got != st0.topic(scTopic).MessageCount {
		t.Fatalf("node page total messages %d", got)
	}
	if got := b.number(`#figures [data-k="total_clients"]`); got != 1 {
		t.Fatalf("node page total clients %d", got)
	}
	b.expectCleanConsole("node")
	b.screenshots(nodeURL, "node")

	// Lookup and counter.
	b.open(a.url("/lookup"))
	if got := b.text(`tr[data-topic="` + scTopic + `"] td[data-k="channels"]`); got != scArchive+", "+scBilling {
		t.Fatalf("lookup channels %q", got)
	}
	b.expectCleanConsole("lookup")
	b.screenshots(a.url("/lookup"), "lookup")
	b.open(a.url("/counter"))
	var total int64
	for _, st := range []*nodeStats{st0, st1} {
		for _, c := range st.topic(scTopic).Channels {
			total += c.MessageCount
		}
	}
	if got := b.number(`.counter`); got != total {
		t.Fatalf("counter shows %d, want %d", got, total)
	}
	b.expectCleanConsole("counter")
	// The page refreshes itself: three more messages reach both channels.
	p := newProducer(t, s.c.NSQDs[0].TCP)
	for range 3 {
		if err := p.Publish(scTopic, []byte("more")); err != nil {
			t.Fatal(err)
		}
	}
	b.waitText(".counter", "the counter to count 6 more", func(s string) bool { return s == strconv.FormatInt(total+6, 10) })
	b.screenshots(a.url("/counter"), "counter")
	waitFor(t, 10*time.Second, "billing to finish the new messages", func() bool { return s.billing.count() == 20 })
	st0 = nodeStatsOf(t, n0)

	// Actions through the UI: pause, unpause and empty the archive channel.
	archiveURL := a.url("/topics/" + scTopic + "/" + scArchive)
	archiveOn := func(what string, ok func(*rawChannel) bool) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() bool {
			for _, n := range []string{n0, n1} {
				if !ok(nodeStatsOf(t, n).channel(scTopic, scArchive)) {
					return false
				}
			}
			return true
		})
	}
	b.open(archiveURL)
	b.clickConfirm(`button[data-act="pause-channel"]`)
	archiveOn("archive paused in nsqd", func(c *rawChannel) bool { return c.Paused })
	b.do(chromedp.WaitVisible(chromedp.CSS(`button[data-act="unpause-channel"]`)))
	b.clickConfirm(`button[data-act="unpause-channel"]`)
	archiveOn("archive unpaused in nsqd", func(c *rawChannel) bool { return !c.Paused })
	b.do(chromedp.WaitVisible(chromedp.CSS(`button[data-act="pause-channel"]`)))
	// Cancel leaves everything as it is.
	b.do(chromedp.Click(chromedp.CSS(`button[data-act="empty-channel"]`)), chromedp.WaitVisible(chromedp.CSS("#modal-cancel")),
		chromedp.Click(chromedp.CSS("#modal-cancel")))
	if d := nodeStatsOf(t, n0).channel(scTopic, scArchive).Depth; d != 13 {
		t.Fatalf("cancelled empty changed the depth to %d", d)
	}
	b.clickConfirm(`button[data-act="empty-channel"]`)
	archiveOn("archive emptied in nsqd", func(c *rawChannel) bool { return c.Depth == 0 })
	b.waitText(`#figures [data-k="depth"]`, "the page to show depth 0", func(s string) bool { return s == "0" })
	b.expectCleanConsole("channel actions")

	// Create a topic and channel from the lookup page.
	b.open(a.url("/lookup"))
	b.do(chromedp.SendKeys(chromedp.CSS("#create-topic"), "fresh"), chromedp.SendKeys(chromedp.CSS("#create-channel"), "c9"))
	b.clickConfirm(`button[data-act="create"]`)
	waitFor(t, 10*time.Second, "fresh registered in nsqlookupd", func() bool { return slices.Contains(s.c.lookupdTopics(t), "fresh") })
	b.waitText(`tr[data-topic="fresh"] td[data-k="channels"]`, "the new registration on the page", func(s string) bool { return s == "c9" })
	b.expectCleanConsole("create")

	// A non-admin sees no action and the API refuses.
	for _, page := range []string{"/topics/" + scTopic, "/topics/" + scTopic + "/" + scArchive, "/lookup"} {
		b.open(ro.url("/ops" + page))
		if n := b.count("button[data-act]"); n != 0 {
			t.Fatalf("read-only %s shows %d action buttons", page, n)
		}
		if b.count("#create-form") != 0 {
			t.Fatalf("read-only %s shows the create form", page)
		}
		b.expectCleanConsole("read-only " + page)
	}
	b.open(ro.url("/ops/topics/" + scTopic + "/" + scArchive))
	if got := b.number(`#figures [data-k="message_count"]`); got != 20 {
		t.Fatalf("read-only channel page under /ops shows %d messages", got)
	}
	b.screenshots(ro.url("/ops/topics/"+scTopic+"/"+scArchive), "channel-readonly")
	status := run(b, chromedp.Evaluate[int](`fetch("api/topics/`+scTopic+`/`+scArchive+`", {method: "POST", headers: {"Content-Type": "application/json"}, body: '{"action":"pause"}'}).then(function (r) { return r.status; })`, chromedp.EvalAwaitPromise))
	if status != 403 {
		t.Fatalf("read-only API pause answered %d, want 403", status)
	}
	// The browser logs the refused request itself; wait for that entry and drop it.
	waitFor(t, 5*time.Second, "the browser to log the 403", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			if strings.Contains(p, "403") {
				return true
			}
		}
		return false
	})
	b.takeProblems()
	if nodeStatsOf(t, n0).channel(scTopic, scArchive).Paused {
		t.Fatal("a refused action paused the channel")
	}

	// One nsqd dies: pages still render and name it.
	s.c.kill(1)
	waitFor(t, 10*time.Second, "the sampler to notice the dead node", func() bool {
		return strings.Contains(warningText(a.sampler.lostNodes()), n1)
	})
	for _, page := range []struct{ path, name string }{{"/", "topics-nodedown"}, {"/topics/" + scTopic, "topic-nodedown"}, {"/nodes", "nodes-nodedown"}} {
		b.open(a.url(page.path))
		if w := b.waitText("#warning", "a warning naming "+n1, func(s string) bool { return strings.Contains(s, n1) }); !strings.Contains(w, "WARNING") {
			t.Fatalf("%s warning %q", page.path, w)
		}
		b.expectCleanConsole(page.name)
		b.screenshots(a.url(page.path), page.name)
	}
	b.open(topicURL)
	if got := b.number(`#figures [data-k="message_count"]`); got != 13 {
		t.Fatalf("topic page with a dead node shows %d messages, want node 0's 13", got)
	}

	// Delete the topic from its page: gone from nsqlookupd.
	b.clickConfirm(`button[data-act="delete-topic"]`)
	waitFor(t, 10*time.Second, "topic deleted from nsqlookupd", func() bool { return !slices.Contains(s.c.lookupdTopics(t), scTopic) })
	if nodeStatsOf(t, n0).topic(scTopic) != nil {
		t.Fatal("topic still on nsqd after delete")
	}
	b.do(chromedp.WaitReady(chromedp.CSS("#topics-table")))
}
