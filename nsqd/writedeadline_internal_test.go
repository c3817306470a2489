package nsqd

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// A consumer that keeps answering (NOPs) but stops reading fills its
// socket; the write that then blocks must fail within about a heartbeat
// interval and end the connection, returning its messages to the channel.
func TestConsumerThatStopsReadingIsDroppedByTheWriteDeadline(t *testing.T) {
	n := startReviewNSQD(t)
	ident := []byte(`{"heartbeat_interval":1000,"output_buffer_timeout":25}`)
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(len(ident)))
	c := dialReview(t, n, "IDENTIFY\n"+string(size[:])+string(ident)+"SUB stalled ch\nRDY 2500\n")
	topic, err := n.GetTopic("stalled")
	if err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the consumer subscribed", func() bool {
		ch, ok := topic.existingChannel("ch")
		if !ok {
			return false
		}
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return len(ch.clients) == 1
	})
	ch, _ := topic.existingChannel("ch")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // answers like a live client, but never reads
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := c.Write([]byte("NOP\n")); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	body := bytes.Repeat([]byte{'x'}, 256<<10)
	for i := 0; i < 200; i++ { // 50 MiB: far more than the socket buffers hold
		if err := topic.putMessages(n.newMessages([][]byte{body}, 0, nil)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		ch.mu.Lock()
		clients := len(ch.clients)
		ch.mu.Unlock()
		if clients == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a consumer that stopped reading was still connected after 10 s with a 1 s heartbeat")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("dropped %v after the publishes", time.Since(start).Round(time.Millisecond))
	waitCond(t, "every message back in the channel", func() bool { return ch.depth() == 200 })
}
