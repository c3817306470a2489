package nsqd

import "testing"

func TestPublishingToTopicWithoutChannelsLeavesThePumpAsleep(t *testing.T) {
	n := startReviewNSQD(t)
	topic, err := n.GetTopic("nochan")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := topic.putMessages(n.newMessages([][]byte{[]byte("x")}, 0, nil)); err != nil {
			t.Fatal(err)
		}
		topic.mu.RLock()
		pumping := topic.pumping
		topic.mu.RUnlock()
		if pumping {
			t.Fatalf("publish %d started the pump of a topic no channel can take from", i)
		}
	}
	if d := topic.mem.len(); d != 100 {
		t.Fatalf("topic depth %d, want 100", d)
	}
	// the first channel still gets everything queued before it
	ch, _, err := topic.getChannel("late")
	if err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the queued messages in the new channel", func() bool { return ch.depth() == 100 })
}
