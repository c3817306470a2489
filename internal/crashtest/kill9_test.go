package crashtest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// model is what the clients saw, for one topic across an nsqd's lives.
type model struct {
	mu        sync.Mutex
	acked     map[string]time.Time // body -> earliest allowed delivery (DPUB), zero otherwise
	delivered map[string][]time.Time
	finAt     map[string]time.Time // body -> when its FIN was sent (first life)
	life      int
	noDefer   bool     // producers send PUB instead of DPUB
	lateDups  []string // delivered after the restart though finished > 1 s before the kill
	early     []string // deferred messages delivered before their deadline
	life2     map[string]int
}

func newModel() *model {
	return &model{acked: map[string]time.Time{}, delivered: map[string][]time.Time{}, finAt: map[string]time.Time{}, life2: map[string]int{}}
}

// undeliveredLocked returns the acknowledged bodies never delivered; mu held.
func (m *model) undeliveredLocked() []string {
	var out []string
	for b := range m.acked {
		if len(m.delivered[b]) == 0 {
			out = append(out, b)
		}
	}
	return out
}

const topic, channel = "crash", "c"

func putFrameCmd(line string, body []byte) []byte {
	b := []byte(line + "\n")
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

// produce publishes on one connection until it fails, recording every
// publish that was answered OK.
func produce(addr string, id int, r *rand.Rand, m *model, stop <-chan struct{}) {
	c, err := dial(addr)
	if err != nil {
		return
	}
	defer c.c.Close()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		var cmd []byte
		var bodies []string
		var earliest time.Time
		now := time.Now()
		switch k := r.IntN(10); {
		case k < 5 || (k == 9 && m.noDefer):
			b := fmt.Sprintf("p%d-%d", id, n)
			bodies = []string{b}
			cmd = putFrameCmd("PUB "+topic, []byte(b))
		case k < 9:
			cnt := 1 + r.IntN(20)
			var payload []byte
			payload = binary.BigEndian.AppendUint32(payload, uint32(cnt))
			for i := range cnt {
				b := fmt.Sprintf("m%d-%d-%d", id, n, i)
				bodies = append(bodies, b)
				payload = binary.BigEndian.AppendUint32(payload, uint32(len(b)))
				payload = append(payload, b...)
			}
			cmd = putFrameCmd("MPUB "+topic, payload)
		default:
			ms := 300 + r.IntN(2000)
			b := fmt.Sprintf("d%d-%d", id, n)
			bodies = []string{b}
			earliest = now.Add(time.Duration(ms) * time.Millisecond)
			cmd = putFrameCmd(fmt.Sprintf("DPUB %s %d", topic, ms), []byte(b))
		}
		if c.send(cmd) != nil {
			return
		}
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		ft, data, err := protocol.ReadFrame(c.r)
		if err != nil {
			return // in doubt: not acknowledged, not required
		}
		if ft != protocol.FrameTypeResponse || string(data) != "OK" {
			continue
		}
		m.mu.Lock()
		for _, b := range bodies {
			m.acked[b] = earliest
		}
		m.mu.Unlock()
	}
}

// consume subscribes and finishes every message at once until the
// connection fails or stop is closed.
func consume(addr string, m *model, stop <-chan struct{}) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.c.Close()
	go func() {
		<-stop
		c.c.Close()
	}()
	if err := c.send([]byte("SUB " + topic + " " + channel + "\nRDY 200\n")); err != nil {
		return err
	}
	for {
		c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		ft, data, err := protocol.ReadFrame(c.r)
		if err != nil {
			return nil
		}
		switch ft {
		case protocol.FrameTypeResponse:
			if string(data) == "_heartbeat_" {
				c.send([]byte("NOP\n"))
			}
			continue
		case protocol.FrameTypeError:
			return fmt.Errorf("consumer got error %s", data)
		}
		now := time.Now()
		id := string(data[10:26])
		body := string(data[26:])
		m.mu.Lock()
		m.delivered[body] = append(m.delivered[body], now)
		if e := m.acked[body]; !e.IsZero() && now.Before(e.Add(-10*time.Millisecond)) {
			m.early = append(m.early, fmt.Sprintf("%s delivered %v before its deadline", body, e.Sub(now)))
		}
		if m.life == 2 {
			m.life2[body]++
		}
		m.mu.Unlock()
		if c.send([]byte("FIN "+id+"\n")) != nil {
			return nil
		}
		if m.life == 1 {
			m.mu.Lock()
			if _, ok := m.finAt[body]; !ok {
				m.finAt[body] = time.Now()
			}
			m.mu.Unlock()
		}
	}
}

// TestDurableTopicSurvivesKill9 publishes with 8 connections (PUB, MPUB,
// DPUB) to a durable topic with a consumer attached, kills nsqd with
// SIGKILL at a random moment, restarts it on the same data and checks:
// every acknowledged message is delivered, nothing finished more than a
// second before the kill comes back, deferred messages are never early,
// and duplicates stay within what was in flight or just finished.
// SLUICE_CRASH_ROUNDS sets the rounds (default 3), SLUICE_CRASH_SEED
// replays one.
func TestDurableTopicSurvivesKill9(t *testing.T) {
	rounds := envInt(t, "SLUICE_CRASH_ROUNDS", 3)
	base := uint64(envInt(t, "SLUICE_CRASH_SEED", int(time.Now().UnixNano()%1e12)))
	t.Logf("base seed %d (SLUICE_CRASH_SEED=%d replays)", base, base)
	var totalAcked, totalDups, totalBound int
	for round := range rounds {
		seed := base + uint64(round)
		acked, dups, bound := killRound(t, seed)
		totalAcked += acked
		totalDups += dups
		totalBound += bound
		if t.Failed() {
			t.Fatalf("round %d failed: replay with SLUICE_CRASH_SEED=%d SLUICE_CRASH_ROUNDS=1", round, seed)
		}
	}
	t.Logf("%d rounds: %d acknowledged messages, 0 lost; %d delivered again after the kill (bound %d: in flight or finished in the last second)", rounds, totalAcked, totalDups, totalBound)
}

func killRound(t *testing.T, seed uint64) (acked, dups, bound int) {
	r := rand.New(rand.NewPCG(seed, 9))
	n := newNode(t, t.TempDir(), "--durable", "--msg-timeout=60s")
	n.start()
	n.post("/topic/create?topic=" + topic)
	n.post("/channel/create?topic=" + topic + "&channel=" + channel)
	m := newModel()
	m.life = 1
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); consume(n.tcpAddr, m, stop) }()
	for p := range 8 {
		pr := rand.New(rand.NewPCG(seed, uint64(p)))
		wg.Add(1)
		go func() { defer wg.Done(); produce(n.tcpAddr, p, pr, m, stop) }()
	}
	time.Sleep(time.Duration(300+r.IntN(1700)) * time.Millisecond)
	n.kill()
	killedAt := time.Now()
	close(stop)
	wg.Wait()

	m.mu.Lock()
	m.life = 2
	var maxDeadline time.Time
	for _, e := range m.acked {
		if e.After(maxDeadline) {
			maxDeadline = e
		}
	}
	for body := range m.delivered {
		fin, finished := m.finAt[body]
		if !finished || fin.After(killedAt.Add(-time.Second)) {
			bound++ // in flight at the kill, or finished within its last second
		}
	}
	m.mu.Unlock()

	n.start()
	stop2 := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- consume(n.tcpAddr, m, stop2) }()
	deadline := time.Now().Add(20 * time.Second)
	if d := time.Until(maxDeadline) + 10*time.Second; d > 20*time.Second {
		deadline = time.Now().Add(d)
	}
	var lastNew time.Time
	lastCount := -1
	for time.Now().Before(deadline) {
		m.mu.Lock()
		missing := len(m.undeliveredLocked())
		count := len(m.life2)
		m.mu.Unlock()
		if count != lastCount {
			lastCount, lastNew = count, time.Now()
		}
		if missing == 0 && time.Since(lastNew) > time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop2)
	<-done
	n.kill()

	m.mu.Lock()
	defer m.mu.Unlock()
	lost := m.undeliveredLocked()
	for b := range m.life2 {
		if fin, ok := m.finAt[b]; ok {
			dups++
			if fin.Before(killedAt.Add(-time.Second)) {
				m.lateDups = append(m.lateDups, fmt.Sprintf("%s finished %v before the kill", b, killedAt.Sub(fin)))
			}
		} else if len(m.delivered[b]) > m.life2[b] {
			dups++ // delivered before the kill, not finished then
		}
	}
	t.Logf("seed %d: killed after %d acknowledged (%d delivered before the kill); after restart %d delivered, %d again (bound %d)",
		seed, len(m.acked), len(m.finAt), len(m.life2), dups, bound)
	if len(lost) > 0 {
		t.Errorf("seed %d: %d acknowledged messages lost, e.g. %s\nnsqd stderr:\n%s", seed, len(lost), strings.Join(lost[:min(5, len(lost))], ", "), n.stderr.String())
	}
	if len(m.lateDups) > 0 {
		t.Errorf("seed %d: finished messages delivered again: %s", seed, strings.Join(m.lateDups[:min(5, len(m.lateDups))], "; "))
	}
	if len(m.early) > 0 {
		t.Errorf("seed %d: deferred messages delivered early: %s", seed, strings.Join(m.early[:min(5, len(m.early))], "; "))
	}
	if dups > bound {
		t.Errorf("seed %d: %d messages delivered again, more than the %d in flight or just finished at the kill", seed, dups, bound)
	}
	return len(m.acked), dups, bound
}

// TestAttemptsSurviveKill9: a message delivered and left unfinished comes
// back after a kill -9 with its attempts counted (the delivery was
// journaled), not as a first delivery.
func TestAttemptsSurviveKill9(t *testing.T) {
	n := newNode(t, t.TempDir(), "--durable")
	n.start()
	n.post("/topic/create?topic=att")
	n.post("/channel/create?topic=att&channel=c")
	r, err := http.Post("http://"+n.httpAddr+"/pub?topic=att", "", strings.NewReader("poison"))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	deliver := func() uint16 {
		t.Helper()
		c, err := dial(n.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.c.Close()
		if err := c.send([]byte("SUB att c\nRDY 1\n")); err != nil {
			t.Fatal(err)
		}
		for {
			c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			ft, data, err := protocol.ReadFrame(c.r)
			if err != nil {
				t.Fatalf("waiting for the message: %v", err)
			}
			if ft == protocol.FrameTypeMessage {
				return binary.BigEndian.Uint16(data[8:10])
			}
		}
	}
	if a := deliver(); a != 1 {
		t.Fatalf("first delivery has attempts %d", a)
	}
	// the consumer went away without FIN: the message is requeued (journaled)
	if a := deliver(); a != 2 {
		t.Fatalf("second delivery has attempts %d", a)
	}
	// in flight on a connection kept open while nsqd is killed
	c, err := dial(n.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	c.send([]byte("SUB att c\nRDY 1\n"))
	for {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		ft, data, err := protocol.ReadFrame(c.r)
		if err != nil {
			t.Fatal(err)
		}
		if ft == protocol.FrameTypeMessage {
			if a := binary.BigEndian.Uint16(data[8:10]); a != 3 {
				t.Fatalf("third delivery has attempts %d", a)
			}
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // past the journal interval (100 ms)
	n.kill()
	n.start()
	if a := deliver(); a != 4 {
		t.Fatalf("after kill -9 the message came back with attempts %d, want 4 (three deliveries before the kill)", a)
	}
}
