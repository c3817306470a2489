package crashtest

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDiskQueueSurvivesKill9 runs the default storage (no --durable) with
// --mem-queue-size=0, so that every message goes through a channel's
// go-diskqueue files: 8 connections publish (PUB and MPUB), nsqd is
// killed with SIGKILL at a random moment and restarted on the same data.
// A message acknowledged to a publisher was written to the files before
// the OK, and the page cache keeps it across the kill: every one is
// delivered after the restart when no consumer ran before the kill. With a
// consumer running before the kill, what nsqd held in memory at the kill
// (delivered but unfinished, or taken from disk for a waiting consumer) may
// be lost, as with NSQ, whose disk queue also counts a message read once
// it hands it over: at most what was in flight plus the refill window.
func TestDiskQueueSurvivesKill9(t *testing.T) {
	base := uint64(envInt(t, "SLUICE_CRASH_SEED", int(time.Now().UnixNano()%1e12)))
	t.Logf("base seed %d (SLUICE_CRASH_SEED=%d replays)", base, base)
	for i, withConsumer := range []bool{false, true} {
		seed := base + uint64(i)
		lost, acked := diskKillRound(t, seed, withConsumer)
		const rdy, refillWindow = 200, 64
		switch {
		case !withConsumer && len(lost) > 0:
			t.Errorf("seed %d, no consumer: %d of %d acknowledged messages lost after kill -9, e.g. %s",
				seed, len(lost), acked, strings.Join(lost[:min(5, len(lost))], ", "))
		case withConsumer && len(lost) > rdy+refillWindow:
			t.Errorf("seed %d, with a consumer: %d of %d acknowledged messages lost after kill -9, more than the %d in flight or in the refill window",
				seed, len(lost), acked, rdy+refillWindow)
		}
	}
}

// TestDiskWriteBufferLosesAtMostTheBufferOnKill9: with --disk-write-buffer
// a kill -9 loses the messages still collected in the channel's buffer
// (PUBs and these small MPUBs), and nothing else: fewer than fit in it (a
// record is at least 4+26+4 bytes here). Without the flag nothing is lost
// (TestDiskQueueSurvivesKill9).
func TestDiskWriteBufferLosesAtMostTheBufferOnKill9(t *testing.T) {
	base := uint64(envInt(t, "SLUICE_CRASH_SEED", int(time.Now().UnixNano()%1e12)))
	t.Logf("base seed %d (SLUICE_CRASH_SEED=%d replays)", base, base)
	const buffer, minRecord = 65536, 4 + 26 + 4
	for i := range 2 {
		seed := base + uint64(i)
		lost, acked := diskKillRound(t, seed, false, fmt.Sprintf("--disk-write-buffer=%d", buffer))
		if len(lost) >= buffer/minRecord {
			t.Errorf("seed %d: %d of %d acknowledged messages lost after kill -9, more than a %d-byte buffer holds",
				seed, len(lost), acked, buffer)
		}
	}
}

func diskKillRound(t *testing.T, seed uint64, withConsumer bool, flags ...string) (lost []string, acked int) {
	r := rand.New(rand.NewPCG(seed, 12))
	// small files, so that the kill often comes after a roll
	n := newNode(t, t.TempDir(), append([]string{"--mem-queue-size=0", "--max-bytes-per-file=65536"}, flags...)...)
	n.start()
	n.post("/topic/create?topic=" + topic)
	n.post("/channel/create?topic=" + topic + "&channel=" + channel)
	m := newModel()
	m.life = 1
	m.noDefer = true
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if withConsumer {
		wg.Add(1)
		go func() { defer wg.Done(); consume(n.tcpAddr, m, stop) }()
	}
	for p := range 8 {
		pr := rand.New(rand.NewPCG(seed, uint64(p)))
		wg.Add(1)
		go func() { defer wg.Done(); produce(n.tcpAddr, p, pr, m, stop) }()
	}
	time.Sleep(time.Duration(300+r.IntN(1700)) * time.Millisecond)
	n.kill()
	close(stop)
	wg.Wait()

	m.mu.Lock()
	m.life = 2
	m.mu.Unlock()
	n.start()
	stop2 := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- consume(n.tcpAddr, m, stop2) }()
	deadline := time.Now().Add(30 * time.Second)
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
		if (missing == 0 || withConsumer) && time.Since(lastNew) > 2*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop2)
	<-done
	n.kill()

	m.mu.Lock()
	defer m.mu.Unlock()
	lost = m.undeliveredLocked()
	t.Logf("seed %d (consumer before the kill: %v): %d acknowledged, %d delivered before the kill, %d after, %d lost",
		seed, withConsumer, len(m.acked), len(m.finAt), len(m.life2), len(lost))
	return lost, len(m.acked)
}
