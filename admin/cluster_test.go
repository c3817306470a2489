//go:build !refdaemons

package admin

import (
	"testing"

	"github.com/sluicemq/sluice/internal/testutil"
	"github.com/sluicemq/sluice/lookupd"
	"github.com/sluicemq/sluice/nsqd"
)

// startCluster starts, in process on 127.0.0.1 ephemeral ports, one nsqlookupd and n nsqd
// registered with it (e2e latency percentiles enabled). Everything stops when the test ends.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with mutate applied to every nsqd's options; i is the
// nsqd's index in NSQDs, so a test can set up one node differently.
func startClusterWith(t *testing.T, n int, mutate func(i int, o *nsqd.Options)) *testCluster {
	t.Helper()
	lo := lookupd.NewOptions()
	lo.TCPAddress, lo.HTTPAddress, lo.BroadcastAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
	lo.Logger = testutil.TestLogger()
	l, err := lookupd.New(lo)
	if err != nil {
		t.Fatalf("lookupd.New: %v", err)
	}
	if err := l.Start(); err != nil {
		t.Fatalf("lookupd Start: %v", err)
	}
	t.Cleanup(l.Exit)
	c := &testCluster{LookupdHTTP: l.HTTPAddr().String(), LookupdTCP: l.TCPAddr().String()}
	for i := range n {
		h := testutil.StartNSQD(t, func(o *nsqd.Options) {
			o.NSQLookupdTCPAddresses = []string{l.TCPAddr().String()}
			o.E2EProcessingLatencyPercentiles = []float64{0.99, 0.5}
			if mutate != nil {
				mutate(i, o)
			}
		})
		c.NSQDs = append(c.NSQDs, &testNSQD{TCP: h.TCPAddr, HTTP: h.HTTPAddr, stop: h.Exit})
	}
	c.waitRegistered(t)
	return c
}
