package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/internal/toolstest"
)

func publish(t *testing.T, h *testutil.NSQDHandle, topic string, bodies []string) {
	t.Helper()
	testutil.MustPost(t, h.URL("/mpub?topic="+topic), []byte(strings.Join(bodies, "\n")))
}

func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// drained waits until the tool's connection finished n messages and the
// channel holds none. (Counting FINs, not the channel's message_count: a
// channel may count messages a moment before they are visible in its depth.)
func drained(t *testing.T, h *testutil.NSQDHandle, topic, channel string, n int) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "&topic="+topic).Channel(topic, channel)
		if ch == nil {
			return false
		}
		var fin uint64
		for _, c := range ch.Clients {
			fin += c.FinishCount
		}
		return fin >= uint64(n) && ch.Depth == 0 && ch.InFlightCount == 0 && ch.DeferredCount == 0
	}, "channel %s/%s drained", topic, channel)
}

// files returns the sorted names in dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// readLines reads a file (gunzipping .gz) and returns its lines.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r = gz
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// exactlyOnce checks the union of the files' lines is want, each once.
func exactlyOnce(t *testing.T, dir string, names []string, want []string) {
	t.Helper()
	count := map[string]int{}
	total := 0
	for _, n := range names {
		for _, l := range readLines(t, filepath.Join(dir, n)) {
			count[l]++
			total++
		}
	}
	if total != len(want) {
		t.Errorf("files hold %d lines, want %d", total, len(want))
	}
	for _, w := range want {
		if count[w] != 1 {
			t.Errorf("%q written %d times, want 1", w, count[w])
		}
	}
}

func host(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Every message is written exactly once; files roll by size with increasing
// revisions in the default name format.
func TestWritesEveryMessageOnceRollingBySize(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	out := t.TempDir()
	want := bodies("msg", 100) // 8 bytes + newline each
	publish(t, h, "arch", want)
	r := toolstest.Start(t, run, nil, "--topic", "arch", "--nsqd-tcp-address", h.TCPAddr,
		"--output-dir", out, "--rotate-size", "200", "--sync-interval", "50ms")
	drained(t, h, "arch", "nsq_to_file", 100)
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	names := files(t, out)
	re := regexp.MustCompile(`^arch\.` + regexp.QuoteMeta(host(t)) + `-(\d{6})\.\d{4}-\d{2}-\d{2}_\d{2}\.log$`)
	for i, n := range names {
		m := re.FindStringSubmatch(n)
		if m == nil || m[1] != fmt.Sprintf("%06d", i) {
			t.Errorf("file %d named %q", i, n)
		}
		if st, _ := os.Stat(filepath.Join(out, n)); st.Size() > 200+9 {
			t.Errorf("%s is %d bytes, want <= 209", n, st.Size())
		}
	}
	if len(names) < 4 {
		t.Errorf("%d files, want >= 4 (900 bytes rolled at 200); stderr:\n%s", len(names), r.Stderr.String())
	}
	exactlyOnce(t, out, names, want)
}

// gzip + work dir: in-progress files live in the work dir, finished ones
// are moved to the output dir as complete gzip streams.
func TestGzipWorkDir(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	out, work := t.TempDir(), t.TempDir()
	want := bodies("gz", 300)
	publish(t, h, "gzt", want[:100])
	r := toolstest.Start(t, run, nil, "--topic", "gzt", "--nsqd-tcp-address", h.TCPAddr,
		"--output-dir", out, "--work-dir", work, "--gzip", "--gzip-level", "9", "--rotate-size", "300",
		"--sync-interval", "50ms", "--filename-format", "<TOPIC><REV>.<DATETIME>.log", "--datetime-format", "%Y%m%d")
	// A gzip file grows on disk only when it is flushed (every
	// --sync-interval): messages that all arrive within one interval fit
	// in one file whatever --rotate-size says, so the rest comes in two
	// more batches, each after a flush.
	drained(t, h, "gzt", "nsq_to_file", 100)
	time.Sleep(150 * time.Millisecond)
	publish(t, h, "gzt", want[100:200])
	drained(t, h, "gzt", "nsq_to_file", 200)
	time.Sleep(150 * time.Millisecond)
	publish(t, h, "gzt", want[200:])
	drained(t, h, "gzt", "nsq_to_file", 300)
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	if w := files(t, work); len(w) != 0 {
		t.Errorf("work dir not empty after exit: %v", w)
	}
	names := files(t, out)
	day := time.Now().Format("20060102")
	for i, n := range names {
		if n != fmt.Sprintf("gzt-%06d.%s.log.gz", i, day) {
			t.Errorf("file %d named %q", i, n)
		}
	}
	if len(names) < 2 {
		t.Errorf("%d files, want >= 2; stats %s\nstderr:\n%s", len(names), testutil.GetStats(t, h.HTTPAddr, "&topic=gzt").Raw, r.Stderr.String())
	}
	exactlyOnce(t, out, names, want)
}

// --rotate-interval closes the file while running; with a work dir it then
// appears in the output dir.
func TestRotateInterval(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	out, work := t.TempDir(), t.TempDir()
	publish(t, h, "ri", bodies("a", 3))
	r := toolstest.Start(t, run, nil, "--topic", "ri", "--nsqd-tcp-address", h.TCPAddr,
		"--output-dir", out, "--work-dir", work, "--rotate-interval", "200ms", "--sync-interval", "50ms")
	testutil.WaitFor(t, 20*time.Second, func() bool { return len(files(t, out)) == 1 }, "a rotated file in the output dir")
	exactlyOnce(t, out, files(t, out), bodies("a", 3))
	publish(t, h, "ri", bodies("b", 2))
	testutil.WaitFor(t, 20*time.Second, func() bool { return len(files(t, out)) == 2 }, "a second rotated file")
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	exactlyOnce(t, out, files(t, out), append(bodies("a", 3), bodies("b", 2)...))
}

// Without gzip, rotation or a work dir, a second run appends to the same file.
func TestPlainModeAppends(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	out := t.TempDir()
	args := []string{"--topic", "ap", "--nsqd-tcp-address", h.TCPAddr, "--output-dir", out,
		"--filename-format", "<TOPIC><REV>.log", "--sync-interval", "50ms"}
	for _, p := range []string{"x", "y"} {
		publish(t, h, "ap", bodies(p, 4))
		r := toolstest.Start(t, run, nil, args...)
		drained(t, h, "ap", "nsq_to_file", 4)
		if code := r.Stop(t, 40*time.Second); code != 0 {
			t.Fatalf("exit %d: %s", code, r.Stderr.String())
		}
	}
	names := files(t, out)
	if strings.Join(names, ",") != "ap.log" {
		t.Fatalf("files %v, want [ap.log]", names)
	}
	exactlyOnce(t, out, names, append(bodies("x", 4), bodies("y", 4)...))
}

// Topics are discovered through lookupd by pattern, including topics that
// appear later; non-matching topics are left alone.
func TestTopicPatternDiscovery(t *testing.T) {
	c := toolstest.StartCluster(t, 1, nil)
	h := c.NSQDs[0]
	out := t.TempDir()
	publish(t, h, "logs.a", bodies("a", 5))
	publish(t, h, "logs.b", bodies("b", 6))
	publish(t, h, "other", bodies("o", 2))
	c.WaitLookup(t, "other", 1)
	r := toolstest.Start(t, run, nil, "--lookupd-http-address", c.LookupdHTTP, "--topic-pattern", `^logs\.`,
		"--topic-refresh", "100ms", "--output-dir", out, "--sync-interval", "50ms",
		"--filename-format", "<TOPIC><REV>.log", "--consumer-opt", "lookupd_poll_interval,200ms")
	drained(t, h, "logs.a", "nsq_to_file", 5)
	drained(t, h, "logs.b", "nsq_to_file", 6)
	publish(t, h, "logs.c", bodies("c", 7))
	testutil.WaitFor(t, 20*time.Second, func() bool {
		return testutil.GetStats(t, h.HTTPAddr, "&topic=logs.c").Channel("logs.c", "nsq_to_file") != nil
	}, "logs.c discovered")
	drained(t, h, "logs.c", "nsq_to_file", 7)
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	if got := strings.Join(files(t, out), ","); got != "logs.a.log,logs.b.log,logs.c.log" {
		t.Fatalf("files %s", got)
	}
	exactlyOnce(t, out, []string{"logs.a.log"}, bodies("a", 5))
	exactlyOnce(t, out, []string{"logs.b.log"}, bodies("b", 6))
	exactlyOnce(t, out, []string{"logs.c.log"}, bodies("c", 7))
	if ch := testutil.GetStats(t, h.HTTPAddr, "&topic=other").Channel("other", "nsq_to_file"); ch != nil {
		t.Errorf("topic other was consumed")
	}
}

// A write failure stops the tool with exit 1 and requeues what was not
// written: nothing is acknowledged without being on disk.
func TestWriteFailureRequeues(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	out := t.TempDir()
	publish(t, h, "wf", bodies("w", 5))
	// The output "file" path is a directory: opening it fails.
	if err := os.Mkdir(filepath.Join(out, "wf.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := toolstest.RunSync(t, 40*time.Second, run, nil, "--topic", "wf", "--nsqd-tcp-address", h.TCPAddr,
		"--output-dir", out, "--filename-format", "<TOPIC>.log")
	if code != 1 {
		t.Fatalf("exit %d, stderr: %s", code, stderr)
	}
	toolstest.CheckErrorLine(t, stderr, "nsq_to_file", "nsq_to_file: topic wf: open output file")
	if !testutil.Eventually(20*time.Second, func() bool {
		ch := testutil.GetStats(t, h.HTTPAddr, "&topic=wf").Channel("wf", "nsq_to_file")
		return ch != nil && ch.Depth+int64(ch.DeferredCount) == 5 && ch.InFlightCount == 0
	}) {
		t.Fatalf("not all 5 messages back in the channel: %s\nstderr: %s", testutil.GetStats(t, h.HTTPAddr, "&topic=wf").Raw, stderr)
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no address", []string{"--topic", "t"}, "--nsqd-tcp-address or --lookupd-http-address required."},
		{"no topic", []string{"--nsqd-tcp-address", "127.0.0.1:1"}, "--topic or --topic-pattern required"},
		{"pattern without lookupd", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--topic-pattern", "x"}, "--lookupd-http-address must be specified when no --topic specified"},
		{"missing REV", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--topic", "t", "--gzip", "--filename-format", "<TOPIC>.log"}, "missing <REV> in --filename-format"},
		{"gzip level", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--topic", "t", "--gzip-level", "11"}, "invalid --gzip-level value (11), should be 1-9"},
		{"bad topic", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--topic", "a b"}, `invalid --topic "a b"`},
		{"topic outside pattern", []string{"--lookupd-http-address", "127.0.0.1:1", "--topic", "x", "--topic-pattern", "^f"}, "does not match --topic-pattern"},
		{"unreachable nsqd", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--topic", "t", "--output-dir", t.TempDir()}, "connection refused"},
		{"output dir is a file", []string{"--nsqd-tcp-address", "127.0.0.1:1", "--topic", "t", "--output-dir", "/dev/null/x"}, "create directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := toolstest.RunSync(t, 20*time.Second, run, nil, tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
			}
			toolstest.CheckErrorLine(t, stderr, "nsq_to_file", tc.want)
		})
	}
}

// A new <DATETIME> value starts a new file (here every second).
func TestRollsOnDatetimeChange(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	out := t.TempDir()
	r := toolstest.Start(t, run, nil, "--topic", "dt", "--nsqd-tcp-address", h.TCPAddr, "--output-dir", out,
		"--filename-format", "<TOPIC>.<DATETIME>.log", "--datetime-format", "%Y%m%d%H%M%S", "--sync-interval", "50ms")
	publish(t, h, "dt", bodies("one", 3))
	drained(t, h, "dt", "nsq_to_file", 3)
	start := time.Now().Unix()
	testutil.WaitFor(t, 5*time.Second, func() bool { return time.Now().Unix() != start }, "the next second")
	publish(t, h, "dt", bodies("two", 2))
	drained(t, h, "dt", "nsq_to_file", 5)
	if code := r.Stop(t, 40*time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, r.Stderr.String())
	}
	names := files(t, out)
	if len(names) < 2 {
		t.Fatalf("files %v, want at least 2", names)
	}
	// The first batch may itself straddle a second; no file may hold both.
	for _, n := range names {
		joined := strings.Join(readLines(t, filepath.Join(out, n)), ",")
		if strings.Contains(joined, "one-") && strings.Contains(joined, "two-") {
			t.Errorf("%s holds both batches: %s", n, joined)
		}
	}
	exactlyOnce(t, out, names, append(bodies("one", 3), bodies("two", 2)...))
}
