// Package testutil holds the helpers Sluice's acceptance tests share: starting
// and restarting a real nsqd on ephemeral ports, a raw V2 protocol connection,
// go-nsq producer/consumer helpers, a polling WaitFor, a real HTTP auth server
// (protocol.md §12.2), throw-away TLS certificates and /stats decoding.
//
// Everything here talks to daemons through their public API and real sockets;
// nothing reaches into daemon internals. Every helper that starts something
// registers its shutdown with t.Cleanup.
//
// A typical test:
//
//	h := testutil.StartNSQD(t, func(o *nsqd.Options) { o.MemQueueSize = 100 })
//
//	// raw protocol, exact bytes
//	c := testutil.DialV2(t, h.TCPAddr)          // sends "  V2"
//	c.Identify(map[string]any{"heartbeat_interval": 1000})
//	c.Subscribe("orders", "archive")
//	c.Ready(1)
//	testutil.DialV2(t, h.TCPAddr).Publish("orders", []byte("hi"))
//	m := c.ExpectMessage()                        // decoded §2.4 frame
//	c.Finish(m.ID)
//	c.Send("FIN "+m.ID, nil)
//	c.ExpectError("E_FIN_FAILED FIN " + m.ID + " failed ID not in flight")
//
//	// go-nsq
//	got := testutil.NewCollector()
//	testutil.NewConsumer(t, h.TCPAddr, "orders", "billing", nil, got)
//	testutil.NewProducer(t, h.TCPAddr, nil).Publish("orders", []byte("x"))
//	testutil.WaitFor(t, 5*time.Second, func() bool { return got.Len() == 1 }, "one delivery")
//
//	// HTTP and /stats
//	testutil.MustPost(t, h.URL("/channel/pause?topic=orders&channel=billing"), nil)
//	s := testutil.GetStats(t, h.HTTPAddr, "&topic=orders")
//	_ = s.Channel("orders", "billing").Paused
//
//	// restart on the same data directory (graceful exit first)
//	h = testutil.RestartNSQD(t, h)
//
// Set SLUICE_TEST_LOG=1 to see the daemons' and go-nsq's logs.
package testutil
