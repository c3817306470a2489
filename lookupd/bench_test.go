package lookupd

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"
)

const (
	benchProducers = 10
	benchTopics    = 10000
)

// populate registers benchTopics topics (each with one channel) on
// benchProducers producers directly in the registry.
func populate(b *testing.B, d *Daemon) {
	b.Helper()
	r := d.Registry()
	for p := range benchProducers {
		id := fmt.Sprintf("10.0.0.%d:40000", p)
		r.AddPeer(PeerInfo{ID: id, RemoteAddress: id, Hostname: id, BroadcastAddress: id,
			TCPPort: 4150, HTTPPort: 4151, Version: "1.3.0"}, time.Now())
		for i := range benchTopics {
			r.Register(id, fmt.Sprintf("topic-%05d", i), "ch")
		}
	}
}

func benchGET(b *testing.B, path func(i int) string) {
	d := startLookupd(b, nil)
	populate(b, d)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	base := "http://" + d.HTTPAddr().String()
	var bytes int64
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		resp, err := client.Get(base + path(i))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		bytes = n
	}
	b.ReportMetric(float64(bytes), "resp-bytes")
}

// BenchmarkHTTPLookup: GET /lookup over HTTP with 10,000 topics on 10 producers.
func BenchmarkHTTPLookup(b *testing.B) {
	benchGET(b, func(i int) string { return fmt.Sprintf("/lookup?topic=topic-%05d", i%benchTopics) })
}

// BenchmarkHTTPNodes: GET /nodes over HTTP with 10,000 topics on 10 producers
// (100,000 topic entries in the response).
func BenchmarkHTTPNodes(b *testing.B) {
	benchGET(b, func(int) string { return "/nodes" })
}

// BenchmarkHTTPTopics: GET /topics with 10,000 topics.
func BenchmarkHTTPTopics(b *testing.B) {
	benchGET(b, func(int) string { return "/topics" })
}

// BenchmarkRegistryLookup: the registry part of /lookup alone.
func BenchmarkRegistryLookup(b *testing.B) {
	d := startLookupd(b, nil)
	populate(b, d)
	now := time.Now()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ps, _ := d.Registry().Lookup(fmt.Sprintf("topic-%05d", i%benchTopics), now); len(ps) != benchProducers {
			b.Fatal(len(ps))
		}
	}
}

// BenchmarkRegistrationConnections opens 1,000 registration connections,
// each doing IDENTIFY and one REGISTER, and reports the time per connection
// and the lookupd-side memory held per idle connection (heap + goroutine
// stacks, measured in-process, so the client side's sockets are included
// in the heap figure as an upper bound).
func BenchmarkRegistrationConnections(b *testing.B) {
	const conns = 1000
	for b.Loop() {
		b.StopTimer()
		d := startLookupd(b, nil)
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()

		start := time.Now()
		cs := make([]net.Conn, 0, conns)
		buf := make([]byte, 4096)
		for i := range conns {
			c, err := net.Dial("tcp", d.TCPAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			msg := append([]byte("  V1"), identifyMsg(identifyBody(fmt.Sprintf("n%d", i), 4150, 4151))...)
			msg = append(msg, fmt.Sprintf("REGISTER topic-%d ch\n", i%100)...)
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			// IDENTIFY reply then "OK" ([0 0 0 2]OK = 6 bytes).
			v := &v1conn{t: b, Conn: c}
			v.mustReply()
			if r := v.mustReply(); r != "OK" {
				b.Fatal(r)
			}
			_ = buf
			cs = append(cs, c)
		}
		elapsed := time.Since(start)
		b.StopTimer()

		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := len(d.Registry().Nodes(time.Now())); n != conns {
			b.Fatalf("nodes %d", n)
		}
		b.ReportMetric(float64(elapsed.Microseconds())/conns, "µs/conn")
		b.ReportMetric(float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse))/conns, "bytes/conn")
		for _, c := range cs {
			c.Close()
		}
		d.Exit()
		b.StartTimer()
	}
}

// BenchmarkRegistryNodes: the registry part of /nodes alone (sorted topics
// and tombstones for 10 producers x 10,000 topics).
func BenchmarkRegistryNodes(b *testing.B) {
	d := startLookupd(b, nil)
	populate(b, d)
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if n := d.Registry().Nodes(now); len(n) != benchProducers {
			b.Fatal(len(n))
		}
	}
}
