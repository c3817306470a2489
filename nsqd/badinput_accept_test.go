package nsqd_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/nsqd"
)

// Limits of the nsqd used by the bad-input tests, small enough to exceed cheaply.
const (
	badMaxMsgSize  = 1024
	badMaxBodySize = 4096
	badMaxMPUBMsgs = (badMaxBodySize - 4) / 5 // 818
	unknownID      = "0000000000000000"
	longName       = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" // 65 bytes
)

// badInputCase is one row: what the client sends on a fresh connection and
// the exact frame nsqd must answer with.
type badInputCase struct {
	name string
	// auth selects the nsqd that requires AUTH.
	auth bool
	// noMagic: send is responsible for the magic.
	noMagic bool
	// setup runs on the fresh connection before send (e.g. SUB); its replies are consumed.
	setup func(c *testutil.V2Conn)
	send  []byte
	// want lists the acceptable frames: error texts "E_..." or response data
	// (e.g. "OK"). Only one alternative where the spec allows two.
	want []string
	// fatal: nsqd must close the connection right after the error frame;
	// otherwise the connection must stay open and keep working.
	fatal bool
}

func subscribed(topic string) func(c *testutil.V2Conn) {
	return func(c *testutil.V2Conn) { c.Subscribe(topic, "c") }
}

func identifyJSON(v map[string]any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return testutil.Command("IDENTIFY", b)
}

func badInputCases() []badInputCase {
	mpub := func(parts ...any) []byte { return frame(append([]any{"MPUB badin\n"}, parts...)...) }
	return []badInputCase{
		// §2.1 magic
		{name: "bad magic V1", noMagic: true, send: []byte("  V1"), want: []string{"E_BAD_PROTOCOL"}, fatal: true},
		{name: "bad magic garbage", noMagic: true, send: []byte("GET / HTTP/1.1\r\n\r\n"), want: []string{"E_BAD_PROTOCOL"}, fatal: true},
		// §2.2 unknown commands
		{name: "unknown command", send: []byte("FOO\n"), want: []string{"E_INVALID invalid command FOO"}, fatal: true},
		{name: "lower-case nop", send: []byte("nop\n"), want: []string{"E_INVALID invalid command nop"}, fatal: true},
		// missing parameters
		{name: "PUB no topic", send: []byte("PUB\n"), want: []string{"E_INVALID PUB insufficient number of parameters"}, fatal: true},
		{name: "MPUB no topic", send: []byte("MPUB\n"), want: []string{"E_INVALID MPUB insufficient number of parameters"}, fatal: true},
		{name: "DPUB no timeout", send: []byte("DPUB badin\n"), want: []string{"E_INVALID DPUB insufficient number of parameters"}, fatal: true},
		{name: "SUB no channel", send: []byte("SUB badin\n"), want: []string{"E_INVALID SUB insufficient number of parameters"}, fatal: true},
		{name: "FIN no id", setup: subscribed("badin"), send: []byte("FIN\n"), want: []string{"E_INVALID FIN insufficient number of params"}, fatal: true},
		{name: "REQ no timeout", setup: subscribed("badin"), send: []byte("REQ " + unknownID + "\n"), want: []string{"E_INVALID REQ insufficient number of params"}, fatal: true},
		{name: "TOUCH no id", setup: subscribed("badin"), send: []byte("TOUCH\n"), want: []string{"E_INVALID TOUCH insufficient number of params"}, fatal: true},
		{name: "AUTH extra param", send: frame("AUTH x\n", 1, "s"), want: []string{"E_INVALID AUTH invalid number of parameters"}, fatal: true},
		{name: "AUTH when disabled", send: frame("AUTH\n", 6, "secret"), want: []string{"E_AUTH_DISABLED AUTH disabled"}, fatal: true},
		// §1 names
		{name: "PUB 64-byte topic ok", send: frame("PUB "+longName[:64]+"\n", 1, "x"), want: []string{"OK"}},
		{name: "PUB 64-byte ephemeral topic ok", send: frame("PUB "+longName[:54]+"#ephemeral\n", 1, "x"), want: []string{"OK"}},
		{name: "PUB 65-byte ephemeral topic", send: frame("PUB "+longName[:55]+"#ephemeral\n", 1, "x"), want: []string{`E_BAD_TOPIC PUB topic name "` + longName[:55] + `#ephemeral" is not valid`}, fatal: true},
		{name: "PUB topic . ok", send: frame("PUB .\n", 1, "x"), want: []string{"OK"}},
		{name: "PUB topic a-b_c.d ok", send: frame("PUB a-b_c.d\n", 1, "x"), want: []string{"OK"}},
		{name: "PUB topic with colon", send: frame("PUB a:b\n", 1, "x"), want: []string{`E_BAD_TOPIC PUB topic name "a:b" is not valid`}, fatal: true},
		{name: "PUB 65-byte topic", send: frame("PUB "+longName+"\n", 1, "x"), want: []string{`E_BAD_TOPIC PUB topic name "` + longName + `" is not valid`}, fatal: true},
		{name: "PUB ../x", send: frame("PUB ../x\n", 1, "x"), want: []string{`E_BAD_TOPIC PUB topic name "../x" is not valid`}, fatal: true},
		{name: "PUB x#ephemeralz", send: frame("PUB x#ephemeralz\n", 1, "x"), want: []string{`E_BAD_TOPIC PUB topic name "x#ephemeralz" is not valid`}, fatal: true},
		{name: "SUB 65-byte topic", send: []byte("SUB " + longName + " c\n"), want: []string{`E_BAD_TOPIC SUB topic name "` + longName + `" is not valid`}, fatal: true},
		{name: "SUB ../x channel", send: []byte("SUB badin ../x\n"), want: []string{`E_BAD_CHANNEL SUB channel name "../x" is not valid`}, fatal: true},
		{name: "SUB x#ephemeralz channel", send: []byte("SUB badin x#ephemeralz\n"), want: []string{`E_BAD_CHANNEL SUB channel name "x#ephemeralz" is not valid`}, fatal: true},
		{name: "SUB 65-byte channel", send: []byte("SUB badin " + longName + "\n"), want: []string{`E_BAD_CHANNEL SUB channel name "` + longName + `" is not valid`}, fatal: true},
		{name: "MPUB ../x", send: frame("MPUB ../x\n", 9, 1, 1, "x"), want: []string{
			`E_BAD_TOPIC MPUB topic name "../x" is not valid`,
			`E_BAD_TOPIC E_BAD_TOPIC MPUB topic name "../x" is not valid`, // reference quirk, §17.1
		}, fatal: true},
		{name: "DPUB ../x", send: frame("DPUB ../x 10\n", 1, "x"), want: []string{`E_BAD_TOPIC DPUB topic name "../x" is not valid`}, fatal: true},
		// §3.12 PUB sizes
		{name: "PUB max-msg-size ok", send: frame("PUB badin\n", badMaxMsgSize, repeat("m", badMaxMsgSize)), want: []string{"OK"}},
		{name: "PUB over max-msg-size", send: frame("PUB badin\n", badMaxMsgSize+1, repeat("m", badMaxMsgSize+1)), want: []string{"E_BAD_MESSAGE PUB message too big 1025 > 1024"}, fatal: true},
		{name: "PUB size 0", send: frame("PUB badin\n", 0), want: []string{"E_BAD_MESSAGE PUB invalid message body size 0"}, fatal: true},
		{name: "PUB negative size", send: frame("PUB badin\n", -1, "x"), want: []string{"E_BAD_MESSAGE PUB invalid message body size -1"}, fatal: true},
		{name: "PUB huge size", send: frame("PUB badin\n", int32(2147483647), "x"), want: []string{"E_BAD_MESSAGE PUB message too big 2147483647 > 1024"}, fatal: true},
		// §3.14 DPUB
		{name: "DPUB over max-msg-size", send: frame("DPUB badin 10\n", badMaxMsgSize+1, repeat("m", badMaxMsgSize+1)), want: []string{"E_BAD_MESSAGE DPUB message too big 1025 > 1024"}, fatal: true},
		{name: "DPUB negative timeout", send: frame("DPUB badin -1\n", 1, "x"), want: []string{"E_INVALID DPUB could not parse timeout -1"}, fatal: true},
		{name: "DPUB timeout over max", send: frame("DPUB badin 3600001\n", 1, "x"), want: []string{"E_INVALID DPUB timeout 3600001 out of range 0-3600000"}, fatal: true},
		// §3.13 MPUB
		{name: "MPUB over max-body-size", send: mpub(badMaxBodySize+1, 1, 1, "x"), want: []string{"E_BAD_BODY MPUB body too big 4097 > 4096"}, fatal: true},
		{name: "MPUB huge body size", send: mpub(int32(2147483647), 1, 1, "x"), want: []string{"E_BAD_BODY MPUB body too big 2147483647 > 4096"}, fatal: true},
		{name: "MPUB negative body size", send: mpub(-1, 1, 1, "x"), want: []string{"E_BAD_BODY MPUB invalid body size -1"}, fatal: true},
		{name: "MPUB body size 0", send: mpub(0), want: []string{"E_BAD_BODY MPUB invalid body size 0"}, fatal: true},
		{name: "MPUB count 0", send: mpub(4, 0), want: []string{"E_BAD_BODY MPUB invalid message count 0"}, fatal: true},
		{name: "MPUB negative count", send: mpub(4, -1), want: []string{"E_BAD_BODY MPUB invalid message count -1"}, fatal: true},
		{name: "MPUB count over max", send: mpub(4, badMaxMPUBMsgs+1), want: []string{"E_BAD_BODY MPUB invalid message count " + strconv.Itoa(badMaxMPUBMsgs+1)}, fatal: true},
		{name: "MPUB count says 2, message(1) size 0", send: mpub(13, 2, 1, "a", 0), want: []string{"E_BAD_MESSAGE MPUB invalid message(1) body size 0"}, fatal: true},
		{name: "MPUB negative message size", send: mpub(9, 1, -1, "x"), want: []string{"E_BAD_MESSAGE MPUB invalid message(0) body size -1"}, fatal: true},
		{name: "MPUB message over max-msg-size", send: mpub(4+4+badMaxMsgSize+1, 1, badMaxMsgSize+1, repeat("m", badMaxMsgSize+1)), want: []string{"E_BAD_MESSAGE MPUB message too big 1025 > 1024"}, fatal: true},
		// §3.3 IDENTIFY
		{name: "IDENTIFY negative size", send: frame("IDENTIFY\n", -1), want: []string{"E_BAD_BODY IDENTIFY invalid body size -1"}, fatal: true},
		{name: "IDENTIFY over max-body-size", send: frame("IDENTIFY\n", badMaxBodySize+1), want: []string{"E_BAD_BODY IDENTIFY body too big 4097 > 4096"}, fatal: true},
		{name: "IDENTIFY not JSON", send: frame("IDENTIFY\n", 8, "not json"), want: []string{"E_BAD_BODY IDENTIFY failed to decode JSON body"}, fatal: true},
		{name: "IDENTIFY wrong JSON type", send: identifyJSON(map[string]any{"client_id": 5}), want: []string{"E_BAD_BODY IDENTIFY failed to decode JSON body"}, fatal: true},
		{name: "IDENTIFY heartbeat too small", send: identifyJSON(map[string]any{"heartbeat_interval": 999}), want: []string{"E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid"}, fatal: true},
		{name: "IDENTIFY msg_timeout negative", send: identifyJSON(map[string]any{"msg_timeout": -5}), want: []string{"E_BAD_BODY IDENTIFY msg timeout (-5) is invalid"}, fatal: true},
		{name: "IDENTIFY sample_rate 100", send: identifyJSON(map[string]any{"sample_rate": 100}), want: []string{"E_BAD_BODY IDENTIFY sample rate (100) is invalid"}, fatal: true},
		{name: "IDENTIFY heartbeat too big", send: identifyJSON(map[string]any{"heartbeat_interval": 60001}), want: []string{"E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid"}, fatal: true},
		{name: "IDENTIFY heartbeat fraction", send: identifyJSON(map[string]any{"heartbeat_interval": 1000.5}), want: []string{"E_BAD_BODY IDENTIFY failed to decode JSON body"}, fatal: true},
		{name: "IDENTIFY output buffer size too small", send: identifyJSON(map[string]any{"output_buffer_size": 63}), want: []string{"E_BAD_BODY IDENTIFY output buffer size (63) is invalid"}, fatal: true},
		{name: "IDENTIFY output buffer size too big", send: identifyJSON(map[string]any{"output_buffer_size": 65537}), want: []string{"E_BAD_BODY IDENTIFY output buffer size (65537) is invalid"}, fatal: true},
		{name: "IDENTIFY output buffer timeout too small", send: identifyJSON(map[string]any{"output_buffer_timeout": 24}), want: []string{"E_BAD_BODY IDENTIFY output buffer timeout (24) is invalid"}, fatal: true},
		{name: "IDENTIFY output buffer timeout too big", send: identifyJSON(map[string]any{"output_buffer_timeout": 30001}), want: []string{"E_BAD_BODY IDENTIFY output buffer timeout (30001) is invalid"}, fatal: true},
		{name: "IDENTIFY msg_timeout too small", send: identifyJSON(map[string]any{"msg_timeout": 999}), want: []string{"E_BAD_BODY IDENTIFY msg timeout (999) is invalid"}, fatal: true},
		{name: "IDENTIFY msg_timeout too big", send: identifyJSON(map[string]any{"msg_timeout": 900001}), want: []string{"E_BAD_BODY IDENTIFY msg timeout (900001) is invalid"}, fatal: true},
		{name: "IDENTIFY limits ok", send: identifyJSON(map[string]any{"heartbeat_interval": 60000, "output_buffer_size": 65536, "output_buffer_timeout": 30000, "msg_timeout": 900000, "sample_rate": 99}), want: []string{"OK"}},
		{name: "IDENTIFY twice", setup: func(c *testutil.V2Conn) { c.Identify(map[string]any{"client_id": "one"}) }, send: identifyJSON(map[string]any{"client_id": "two"}), want: []string{"OK"}},
		{name: "IDENTIFY snappy and deflate", send: identifyJSON(map[string]any{"feature_negotiation": true, "snappy": true, "deflate": true}), want: []string{"E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"}, fatal: true},
		{name: "IDENTIFY after SUB", setup: subscribed("badin"), send: identifyJSON(map[string]any{}), want: []string{"E_INVALID cannot IDENTIFY in current state"}, fatal: true},
		// §3.6 RDY
		{name: "RDY before SUB", send: []byte("RDY 1\n"), want: []string{"E_INVALID cannot RDY in current state"}, fatal: true},
		{name: "RDY over max", setup: subscribed("badin"), send: []byte("RDY 2501\n"), want: []string{"E_INVALID RDY count 2501 out of range 0-2500"}, fatal: true},
		{name: "RDY negative", setup: subscribed("badin"), send: []byte("RDY -1\n"), want: []string{"E_INVALID RDY could not parse count -1"}, fatal: true},
		{name: "RDY above uint32", setup: subscribed("badin"), send: []byte("RDY 4294967296\n"), want: []string{"E_INVALID RDY count 4294967296 out of range 0-2500"}, fatal: true},
		// §3.7-3.9 unknown ids: non-fatal
		{name: "FIN unknown id", setup: subscribed("badin"), send: []byte("FIN " + unknownID + "\n"), want: []string{"E_FIN_FAILED FIN " + unknownID + " failed ID not in flight"}},
		{name: "REQ unknown id", setup: subscribed("badin"), send: []byte("REQ " + unknownID + " 0\n"), want: []string{"E_REQ_FAILED REQ " + unknownID + " failed ID not in flight"}},
		{name: "TOUCH unknown id", setup: subscribed("badin"), send: []byte("TOUCH " + unknownID + "\n"), want: []string{"E_TOUCH_FAILED TOUCH " + unknownID + " failed ID not in flight"}},
		{name: "FIN short id", setup: subscribed("badin"), send: []byte("FIN abc\n"), want: []string{"E_INVALID invalid message ID"}, fatal: true},
		{name: "FIN before SUB", send: []byte("FIN " + unknownID + "\n"), want: []string{"E_INVALID cannot FIN in current state"}, fatal: true},
		{name: "REQ bad timeout", setup: subscribed("badin"), send: []byte("REQ " + unknownID + " x\n"), want: []string{"E_INVALID REQ could not parse timeout x"}, fatal: true},
		// §3.5 SUB, §3.10 CLS
		{name: "SUB twice", setup: subscribed("badin"), send: []byte("SUB badin c2\n"), want: []string{"E_INVALID cannot SUB in current state"}, fatal: true},
		{name: "SUB with heartbeats disabled", setup: func(c *testutil.V2Conn) { c.Identify(map[string]any{"heartbeat_interval": -1}) }, send: []byte("SUB badin c\n"), want: []string{"E_INVALID cannot SUB with heartbeats disabled"}, fatal: true},
		{name: "CLS before SUB", send: []byte("CLS\n"), want: []string{"E_INVALID cannot CLS in current state"}, fatal: true},
		{name: "CLS twice", setup: func(c *testutil.V2Conn) {
			c.Subscribe("badin", "c")
			c.Send("CLS", nil)
			c.ExpectResponse("CLOSE_WAIT")
		}, send: []byte("CLS\n"), want: []string{"E_INVALID cannot CLS in current state"}, fatal: true},
		// §12.3 commands before AUTH when auth is required
		{name: "auth: PUB before AUTH", auth: true, send: frame("PUB badin\n", 1, "x"), want: []string{"E_AUTH_FIRST AUTH required before PUB"}, fatal: true},
		{name: "auth: MPUB before AUTH", auth: true, send: mpub(9, 1, 1, "x"), want: []string{"E_AUTH_FIRST AUTH required before MPUB"}, fatal: true},
		{name: "auth: DPUB before AUTH", auth: true, send: frame("DPUB badin 10\n", 1, "x"), want: []string{"E_AUTH_FIRST AUTH required before DPUB"}, fatal: true},
		{name: "auth: SUB before AUTH", auth: true, send: []byte("SUB badin c\n"), want: []string{"E_AUTH_FIRST AUTH required before SUB"}, fatal: true},
		{name: "auth: unknown secret", auth: true, send: frame("AUTH\n", 5, "wrong"), want: []string{"E_AUTH_FAILED AUTH failed"}, fatal: true},
		{name: "auth: no authorizations", auth: true, send: frame("AUTH\n", 5, "empty"), want: []string{"E_UNAUTHORIZED AUTH no authorizations found"}, fatal: true},
		{name: "auth: AUTH twice", auth: true, setup: func(c *testutil.V2Conn) {
			c.Send("AUTH", []byte("good"))
			c.MustFrame()
		}, send: frame("AUTH\n", 4, "good"), want: []string{"E_INVALID AUTH already set"}, fatal: true},
	}
}

// TestBadInput sends each malformed input on a fresh connection and checks the
// exact error frame and whether the connection stays open (§3). A go-nsq
// producer and consumer stay connected throughout and must be unaffected.
func TestBadInput(t *testing.T) {
	limits := func(o *nsqd.Options) {
		o.MaxMsgSize = badMaxMsgSize
		o.MaxBodySize = badMaxBodySize
	}
	plain := testutil.StartNSQD(t, limits)
	auth := testutil.StartAuthServer(t)
	auth.Allow("good", testutil.AuthResponse{TTL: 3600, Identity: "good-user", Authorizations: []testutil.Authorization{
		{Topic: ".*", Channels: []string{".*"}, Permissions: []string{"subscribe", "publish"}},
	}})
	auth.Allow("empty", testutil.AuthResponse{TTL: 3600, Identity: "nobody", Authorizations: []testutil.Authorization{}})
	authed := testutil.StartNSQD(t, func(o *nsqd.Options) {
		limits(o)
		o.AuthHTTPAddresses = []string{auth.Addr}
	})

	// Bystanders connected throughout the table.
	producer := testutil.NewProducer(t, plain.TCPAddr, nil)
	if err := producer.Publish("alive", []byte("before")); err != nil {
		t.Fatalf("bystander publish: %v", err)
	}
	got := testutil.NewCollector()
	testutil.NewConsumer(t, plain.TCPAddr, "alive", "c", nil, got)
	testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 1 }, "bystander's first message")

	for _, tc := range badInputCases() {
		t.Run(tc.name, func(t *testing.T) {
			h := plain
			if tc.auth {
				h = authed
			}
			var c *testutil.V2Conn
			if tc.noMagic {
				c = testutil.DialRaw(t, h.TCPAddr)
			} else {
				c = testutil.DialV2(t, h.TCPAddr)
			}
			if tc.setup != nil {
				tc.setup(c)
			}
			// nsqd may reject a body before reading it and reset the
			// connection while we still write (§3.2): ignore write errors.
			_ = c.TryWrite(tc.send)
			f, err := c.ReadNonHeartbeat(testutil.DefaultReadTimeout)
			if err != nil {
				t.Fatalf("want %q, read failed: %v", tc.want, err)
			}
			wantType := testutil.FrameTypeError
			if len(tc.want[0]) < 2 || tc.want[0][:2] != "E_" {
				wantType = testutil.FrameTypeResponse
			}
			if f.Type != wantType || !slices.Contains(tc.want, string(f.Data)) {
				t.Fatalf("got %v, want %q", f, tc.want)
			}
			if tc.fatal {
				c.WaitClosed(3 * time.Second)
				return
			}
			// Still open and working.
			c.Publish("badin", []byte("still-open"))
		})
	}

	t.Run("bystanders unaffected", func(t *testing.T) {
		const n = 100
		for _, b := range bodies("after-", 0, n) {
			if err := producer.Publish("alive", b); err != nil {
				t.Fatalf("bystander publish: %v", err)
			}
		}
		testutil.WaitFor(t, 10*time.Second, func() bool { return got.Len() >= n+1 }, "bystander receives %d messages", n+1)
		counts := got.Counts()
		if len(counts) != n+1 {
			t.Fatalf("bystander got %d distinct bodies, want %d", len(counts), n+1)
		}
		for b, k := range counts {
			if k != 1 {
				t.Errorf("bystander got %q %d times", b, k)
			}
		}
	})
}

// TestMPUBCountExceedsBody: the body holds 2 messages but announces 3. The
// reference reads the body by structure and waits for the missing message
// (then the read deadline closes the connection); a server that bounds the
// read by body_size answers E_BAD_MESSAGE/E_BAD_BODY. Either way nothing may
// be published and the connection must close within ~2 heartbeat intervals.
func TestMPUBCountExceedsBody(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c := testutil.DialV2(t, h.TCPAddr)
	c.Identify(map[string]any{"heartbeat_interval": 1000})
	c.Write(frame("MPUB mismatch\n", 4+5+6, 3, 1, "a", 2, "bb"))
	start := time.Now()
	for {
		f, err := c.ReadFrame(4 * time.Second)
		if err != nil {
			break // closed (or 4 s elapsed, caught below)
		}
		if f.Type == testutil.FrameTypeResponse && string(f.Data) == "_heartbeat_" {
			continue // deliberately not answered
		}
		code := string(f.Data)
		if i := indexByte(code, ' '); i >= 0 {
			code = code[:i]
		}
		if f.Type != testutil.FrameTypeError || (code != "E_BAD_BODY" && code != "E_BAD_MESSAGE") {
			t.Fatalf("got %v, want E_BAD_BODY/E_BAD_MESSAGE or a silent close", f)
		}
	}
	if d := time.Since(start); d > 3500*time.Millisecond {
		t.Fatalf("connection still open after %v", d)
	}
	if tp := topicStats(t, h, "mismatch"); tp != nil && tp.MessageCount != 0 {
		t.Fatalf("topic mismatch message_count = %d, want 0", tp.MessageCount)
	}
}

// TestHalfFrameThenSilence: IDENTIFY heartbeat_interval 1000, then half a PUB
// and silence: nsqd closes the connection at the read deadline (2 intervals).
// The reference reports the failed body read first (E_BAD_MESSAGE PUB failed
// to read message body, as §3.12 lists); a silent close is accepted too.
func TestHalfFrameThenSilence(t *testing.T) {
	h := testutil.StartNSQD(t, nil)
	c := testutil.DialV2(t, h.TCPAddr)
	if got := string(c.Identify(map[string]any{"heartbeat_interval": 1000})); got != "OK" {
		t.Fatalf("IDENTIFY reply %q, want OK", got)
	}
	start := time.Now()
	c.Write(frame("PUB half\n", 10, "abc"))
	for {
		f, err := c.ReadFrame(5 * time.Second)
		if err != nil {
			break
		}
		if f.Type == testutil.FrameTypeResponse && string(f.Data) == "_heartbeat_" {
			continue // deliberately not answered
		}
		if f.Type != testutil.FrameTypeError || string(f.Data) != "E_BAD_MESSAGE PUB failed to read message body" {
			t.Fatalf("got %v, want E_BAD_MESSAGE PUB failed to read message body or a silent close", f)
		}
	}
	elapsed := time.Since(start)
	if elapsed < 1500*time.Millisecond || elapsed > 2600*time.Millisecond {
		t.Fatalf("closed after %v, want ~2s (1.5s..2.6s)", elapsed)
	}
	if tp := topicStats(t, h, "half"); tp != nil && tp.MessageCount != 0 {
		t.Fatalf("half-sent PUB was published: %+v", tp)
	}
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return -1
}

// TestHTTPErrorsTable checks the HTTP API error codes of §9.3–9.7.
func TestHTTPErrorsTable(t *testing.T) {
	h := testutil.StartNSQD(t, func(o *nsqd.Options) {
		o.MaxMsgSize = badMaxMsgSize
		o.MaxBodySize = badMaxBodySize
	})
	testutil.MustPost(t, h.URL("/topic/create?topic=exists"), nil)
	testutil.MustPost(t, h.URL("/channel/create?topic=exists&channel=ch"), nil)
	big := []byte(repeat("m", badMaxMsgSize+1))
	cases := []struct {
		method, path string
		body         []byte
		status       int
		msg          string
	}{
		{"POST", "/pub?topic=exists", big, 413, "MSG_TOO_BIG"},
		{"POST", "/pub?topic=exists", []byte{}, 400, "MSG_EMPTY"},
		{"POST", "/pub", []byte("x"), 400, "MISSING_ARG_TOPIC"},
		{"POST", "/pub?topic=a%20b", []byte("x"), 400, "INVALID_TOPIC"},
		{"POST", "/pub?topic=../x", []byte("x"), 400, "INVALID_TOPIC"},
		{"POST", "/pub?topic=exists&defer=-1", []byte("x"), 400, "INVALID_DEFER"},
		{"POST", "/pub?topic=exists&defer=abc", []byte("x"), 400, "INVALID_DEFER"},
		{"POST", "/pub?topic=exists&defer=3600001", []byte("x"), 400, "INVALID_DEFER"},
		{"GET", "/pub?topic=exists", nil, 405, "METHOD_NOT_ALLOWED"},
		{"POST", "/mpub?topic=exists", []byte(repeat("m", badMaxBodySize+1)), 413, "BODY_TOO_BIG"},
		{"POST", "/mpub?topic=exists", append(append([]byte("ok\n"), big...), '\n'), 413, "MSG_TOO_BIG"},
		{"POST", "/mpub", []byte("x\n"), 400, "MISSING_ARG_TOPIC"},
		{"POST", "/mpub?topic=x%23ephemeralz", []byte("x\n"), 400, "INVALID_TOPIC"},
		{"POST", "/mpub?topic=exists&binary=true", frame(0), 413, "BAD_BODY"},
		{"POST", "/mpub?topic=exists&binary=true", frame(2, 1, "a", 0), 413, "BAD_MESSAGE"},
		{"POST", "/mpub?topic=exists&binary=true", frame(1, badMaxMsgSize+1, big), 413, "BAD_MESSAGE"},
		{"POST", "/topic/create", nil, 400, "MISSING_ARG_TOPIC"},
		{"POST", "/topic/create?topic=a%20b", nil, 400, "INVALID_TOPIC"},
		{"POST", "/topic/create?topic=" + longName, nil, 400, "INVALID_TOPIC"},
		{"POST", "/topic/delete", nil, 400, "MISSING_ARG_TOPIC"},
		{"POST", "/topic/delete?topic=nope", nil, 404, "TOPIC_NOT_FOUND"},
		{"POST", "/topic/empty?topic=nope", nil, 404, "TOPIC_NOT_FOUND"},
		{"POST", "/topic/empty?topic=../x", nil, 400, "INVALID_TOPIC"},
		{"POST", "/topic/pause", nil, 400, "MISSING_ARG_TOPIC"},
		{"POST", "/topic/pause?topic=nope", nil, 404, "TOPIC_NOT_FOUND"},
		{"POST", "/topic/unpause?topic=nope", nil, 404, "TOPIC_NOT_FOUND"},
		{"POST", "/channel/create?channel=ch", nil, 400, "MISSING_ARG_TOPIC"},
		{"POST", "/channel/create?topic=a%20b&channel=ch", nil, 400, "INVALID_ARG_TOPIC"},
		{"POST", "/channel/create?topic=exists", nil, 400, "MISSING_ARG_CHANNEL"},
		{"POST", "/channel/create?topic=exists&channel=a%20b", nil, 400, "INVALID_ARG_CHANNEL"},
		{"POST", "/channel/create?topic=nope&channel=ch", nil, 404, "TOPIC_NOT_FOUND"},
		{"POST", "/channel/delete?topic=exists&channel=nope", nil, 404, "CHANNEL_NOT_FOUND"},
		{"POST", "/channel/delete?topic=nope&channel=ch", nil, 404, "TOPIC_NOT_FOUND"},
		{"POST", "/channel/empty?topic=exists&channel=nope", nil, 404, "CHANNEL_NOT_FOUND"},
		{"POST", "/channel/pause?topic=exists&channel=nope", nil, 404, "CHANNEL_NOT_FOUND"},
		{"POST", "/channel/unpause?topic=exists&channel=nope", nil, 404, "CHANNEL_NOT_FOUND"},
		{"POST", "/channel/pause?topic=exists&channel=" + longName, nil, 400, "INVALID_ARG_CHANNEL"},
		{"GET", "/no/such/path", nil, 404, "NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %s", tc.method, tc.path), func(t *testing.T) {
			r := testutil.HTTPDo(t, tc.method, h.URL(tc.path), tc.body)
			if r.Status != tc.status || testutil.ErrorMessage(r) != tc.msg {
				t.Fatalf("got %v, want %d {\"message\":%q}", r, tc.status, tc.msg)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q, want application/json; charset=utf-8", ct)
			}
			if v := r.Header.Get("X-NSQ-Content-Type"); v != "nsq; version=1.0" {
				t.Errorf("X-NSQ-Content-Type %q, want nsq; version=1.0", v)
			}
			if tc.status == http.StatusMethodNotAllowed && r.Header.Get("Allow") == "" {
				t.Errorf("405 without Allow header")
			}
		})
	}
	// Nothing above may have published to "exists".
	if tp := topicStats(t, h, "exists"); tp == nil || tp.MessageCount != 0 {
		t.Fatalf("topic exists after error table: %+v, want present with message_count 0", tp)
	}
}
