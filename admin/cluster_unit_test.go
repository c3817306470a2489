package admin

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestMergeProducersMarksOutOfDate(t *testing.T) {
	in := []*Producer{
		{RemoteAddress: "10.0.0.1:1000", BroadcastAddress: "a", TCPPort: 4150, HTTPPort: 4151, Version: "1.3.0",
			Topics: []ProducerTopic{{Topic: "t2"}, {Topic: "t1", Tombstoned: true}}},
		// The same node seen by a second lookupd: merged, topics united.
		{RemoteAddress: "10.0.0.1:2000", BroadcastAddress: "a", TCPPort: 4150, HTTPPort: 4151, Version: "1.3.0",
			Topics: []ProducerTopic{{Topic: "t3"}}},
		{RemoteAddress: "10.0.0.2:1000", BroadcastAddress: "b", TCPPort: 4150, HTTPPort: 4151, Version: "1.2.1"},
		{RemoteAddress: "10.0.0.3:1000", BroadcastAddress: "c", TCPPort: 4150, HTTPPort: 4151, Version: "1.3.0-rc1"},
		{RemoteAddress: "10.0.0.4:1000", BroadcastAddress: "d", TCPPort: 4150, HTTPPort: 4151, Version: "garbage"},
	}
	out := mergeProducers(in)
	if len(out) != 4 {
		t.Fatalf("merged into %d nodes, want 4", len(out))
	}
	a := out[0]
	if a.HTTPAddr() != "a:4151" || len(a.RemoteAddresses) != 2 || len(a.Topics) != 3 || a.Topics[0] != (ProducerTopic{"t1", true}) || a.OutOfDate {
		t.Fatalf("node a = %+v", a)
	}
	for _, p := range out[1:] {
		if !p.OutOfDate {
			t.Fatalf("node %s (%s) not marked out of date", p.HTTPAddr(), p.Version)
		}
	}
}

func TestSemverOrder(t *testing.T) {
	ordered := []string{"x", "0.9.9", "1.2.10", "1.3.0-alpha", "1.3.0-beta", "1.3.0", "v1.3.1", "2.0.0"}
	for i := 1; i < len(ordered); i++ {
		if !parseSemver(ordered[i-1]).less(parseSemver(ordered[i])) || parseSemver(ordered[i]).less(parseSemver(ordered[i-1])) {
			t.Fatalf("%s should sort before %s", ordered[i-1], ordered[i])
		}
	}
}

// TestFanOutBounded checks fanOut calls every address once, never more than maxFanOut at a time.
func TestFanOutBounded(t *testing.T) {
	var mu sync.Mutex
	running, peak, calls := 0, 0, 0
	addrs := make([]string, 5*maxFanOut)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d:4151", i)
	}
	release := make(chan struct{})
	go func() {
		// Let the first wave fill up before releasing everyone.
		for {
			mu.Lock()
			r := running
			mu.Unlock()
			if r == maxFanOut {
				close(release)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	errs := fanOut(addrs, "nsqd", func(string) error {
		mu.Lock()
		running++
		calls++
		peak = max(peak, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return errors.New("down")
	})
	if len(errs) != len(addrs) || calls != len(addrs) || peak != maxFanOut {
		t.Fatalf("errors %d, calls %d, peak concurrency %d (want %d, %d, %d)", len(errs), calls, peak, len(addrs), len(addrs), maxFanOut)
	}
}
