package protocol

// The nsqd /stats schema (protocol.md §9.5), shared by nsqd (which produces
// it), nsqadmin and nsq_stat (which decode it) and the statsd pusher.
//
// Field order is the wire order: encoding/json writes struct fields in
// declaration order, and the reference's key order is part of what tools
// and golden tests compare.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"time"
)

// StatsResponse is the body of GET /stats?format=json.
type StatsResponse struct {
	Version   string       `json:"version"`
	Health    string       `json:"health"` // "OK" or "NOK - <error>"
	StartTime int64        `json:"start_time"`
	Topics    []TopicStats `json:"topics"` // nil encodes as null (unknown topic filter)
	// Memory is omitted when nil (include_mem=false).
	Memory *MemStats `json:"memory,omitempty"`
	// Producers are connections that published at least once; nil encodes as
	// null (none, or include_clients=false).
	Producers []ClientStats `json:"producers"`
}

// TopicStats is one topic of /stats.
type TopicStats struct {
	TopicName string `json:"topic_name"`
	// Channels is never encoded as null: a nil slice is written as [].
	Channels     []ChannelStats `json:"channels"`      // never nil in /stats (§9.5: [] not null); producers must set it
	Depth        int64          `json:"depth"`         // memory + disk
	BackendDepth int64          `json:"backend_depth"` // disk part of Depth
	MessageCount int64          `json:"message_count"`
	MessageBytes int64          `json:"message_bytes"`
	Paused       bool           `json:"paused"`
	// E2ELatency is the merge of the channels' estimates.
	E2ELatency E2ELatency `json:"e2e_processing_latency"`

	// Sluice's keys, present only on durable topics so that a user who
	// sets nothing sees NSQ's shape.
	Durable        bool    `json:"durable,omitempty"`
	RetentionTime  *string `json:"retention_time,omitempty"`  // Go duration; "0s" = finished segments go at once
	RetentionBytes *int64  `json:"retention_bytes,omitempty"` // 0 = none kept by size
	// Message policies (Sluice): present only on topics that set one.
	*TopicPolicyStats
	// Replication (Sluice): present only on replicated topics.
	*TopicReplicaStats
}

// TopicReplicaStats are the keys of a replicated topic.
type TopicReplicaStats struct {
	Replicas int    `json:"replicas"`
	Leader   string `json:"leader"` // broadcast_address:tcp_port; "" while there is none
	// ReplicaLag, on the leader only: entries each replica's log is
	// behind the leader's, by broadcast_address:tcp_port (the leader at 0).
	ReplicaLag map[string]uint64 `json:"replica_lag,omitempty"`
}

// TopicPolicyStats are the policy keys of a topic that sets a TTL or a
// max_depth.
type TopicPolicyStats struct {
	TTL           string `json:"ttl"` // Go duration; "" when unset
	MaxDepth      int64  `json:"max_depth"`
	Overflow      string `json:"overflow"` // "reject" or "drop_oldest"
	ExpiredCount  int64  `json:"expired_count"`
	DroppedCount  int64  `json:"dropped_count"`
	RejectedCount int64  `json:"rejected_count"`
}

// ChannelPolicyStats are the policy keys of a channel that enforces one
// (effective values: the node's --max-attempts and the topic's TTL
// applied).
type ChannelPolicyStats struct {
	MaxAttempts       int    `json:"max_attempts"` // 0 = unlimited
	DeadLetterTopic   string `json:"dead_letter_topic"`
	TTL               string `json:"ttl"` // Go duration; "" when unset
	DeadLetteredCount int64  `json:"dead_lettered_count"`
	ExpiredCount      int64  `json:"expired_count"`
}

// ChannelStats is one channel of a topic in /stats.
type ChannelStats struct {
	ChannelName   string `json:"channel_name"`
	Depth         int64  `json:"depth"` // memory + disk, excluding in-flight and deferred
	BackendDepth  int64  `json:"backend_depth"`
	InFlightCount int64  `json:"in_flight_count"`
	DeferredCount int64  `json:"deferred_count"`
	MessageCount  int64  `json:"message_count"`
	RequeueCount  int64  `json:"requeue_count"`
	TimeoutCount  int64  `json:"timeout_count"`
	ClientCount   int    `json:"client_count"` // always reported
	// Clients is [] when none and nil (null) when include_clients=false.
	Clients    []ClientStats `json:"clients"`
	Paused     bool          `json:"paused"`
	E2ELatency E2ELatency    `json:"e2e_processing_latency"`
	// Message policies (Sluice): present only on channels that enforce one.
	*ChannelPolicyStats
}

// ClientStats is one client connection: a consumer under its channel or a
// publisher under StatsResponse.Producers.
type ClientStats struct {
	ClientID      string `json:"client_id"` // IDENTIFY client_id (remote IP before IDENTIFY)
	Hostname      string `json:"hostname"`
	Version       string `json:"version"` // always "V2"
	RemoteAddress string `json:"remote_address"`
	State         int    `json:"state"` // §3.1
	ReadyCount    int64  `json:"ready_count"`
	InFlightCount int64  `json:"in_flight_count"`
	MessageCount  int64  `json:"message_count"` // deliveries
	FinishCount   int64  `json:"finish_count"`
	RequeueCount  int64  `json:"requeue_count"`
	ConnectTS     int64  `json:"connect_ts"` // Unix seconds
	SampleRate    int    `json:"sample_rate"`
	Deflate       bool   `json:"deflate"`
	Snappy        bool   `json:"snappy"`
	UserAgent     string `json:"user_agent"`

	Authed          bool   `json:"authed,omitempty"`
	AuthIdentity    string `json:"auth_identity,omitempty"`
	AuthIdentityURL string `json:"auth_identity_url,omitempty"`
	// PubCounts lists the topics this connection published to (omitted when empty).
	PubCounts []PubCount `json:"pub_counts,omitempty"`

	TLS                           bool   `json:"tls"`
	TLSCipherSuite                string `json:"tls_cipher_suite"`
	TLSVersion                    string `json:"tls_version"`
	TLSNegotiatedProtocol         string `json:"tls_negotiated_protocol"`
	TLSNegotiatedProtocolIsMutual bool   `json:"tls_negotiated_protocol_is_mutual"`
}

// PubCount is the number of messages a producer published to one topic.
type PubCount struct {
	Topic string `json:"topic"`
	Count int64  `json:"count"`
}

// MemStats are the Go runtime figures of /stats (and statsd's mem.*).
type MemStats struct {
	HeapObjects       uint64 `json:"heap_objects"`
	HeapIdleBytes     uint64 `json:"heap_idle_bytes"`
	HeapInUseBytes    uint64 `json:"heap_in_use_bytes"`
	HeapReleasedBytes uint64 `json:"heap_released_bytes"`
	GCPauseUsec100    uint64 `json:"gc_pause_usec_100"` // max recent GC pause, µs
	GCPauseUsec99     uint64 `json:"gc_pause_usec_99"`
	GCPauseUsec95     uint64 `json:"gc_pause_usec_95"`
	NextGCBytes       uint64 `json:"next_gc_bytes"`
	GCTotalRuns       uint64 `json:"gc_total_runs"`
}

// NewMemStats derives MemStats from a runtime.MemStats (the caller reads it
// with runtime.ReadMemStats). GC pause percentiles are taken over the recent
// pauses the runtime keeps (up to 256), in microseconds.
func NewMemStats(ms *runtime.MemStats) *MemStats {
	n := min(int(ms.NumGC), len(ms.PauseNs))
	pauses := make([]uint64, 0, n)
	for i := 0; i < n; i++ {
		// PauseNs is a ring buffer; the most recent pause is at (NumGC+255)%256.
		pauses = append(pauses, ms.PauseNs[(int(ms.NumGC)-1-i+len(ms.PauseNs))%len(ms.PauseNs)])
	}
	slices.Sort(pauses)
	pct := func(q float64) uint64 {
		if len(pauses) == 0 {
			return 0
		}
		i := int(q*float64(len(pauses))+0.5) - 1
		i = max(0, min(i, len(pauses)-1))
		return pauses[i] / 1000
	}
	return &MemStats{
		HeapObjects:       ms.HeapObjects,
		HeapIdleBytes:     ms.HeapIdle,
		HeapInUseBytes:    ms.HeapInuse,
		HeapReleasedBytes: ms.HeapReleased,
		GCPauseUsec100:    pct(1),
		GCPauseUsec99:     pct(0.99),
		GCPauseUsec95:     pct(0.95),
		NextGCBytes:       ms.NextGC,
		GCTotalRuns:       uint64(ms.NumGC),
	}
}

// E2ELatency is an end-to-end processing latency estimate (§5.13): the number
// of samples in the window and the configured quantiles in configured order.
// Percentiles is null when no quantile is configured (or, for a topic, when it
// has no channel).
type E2ELatency struct {
	Count       int          `json:"count"`
	Percentiles []Percentile `json:"percentiles"`
}

// Percentile is one quantile of an E2ELatency; Value is in nanoseconds.
type Percentile struct {
	Quantile float64 `json:"quantile"`
	Value    float64 `json:"value"`
}

// WriteText renders s in the human-oriented text format of GET /stats
// (§9.5). now gives the uptime, the clients' connection ages and the time
// zone of start_time; goVersion is the Go version shown in the first line.
// Write errors are ignored (the peer is gone).
func WriteText(w io.Writer, s *StatsResponse, now time.Time, goVersion string) {
	bw := bufio.NewWriter(w)
	WriteTextHeader(bw, s, now, goVersion)
	if len(s.Topics) == 0 {
		bw.WriteString("Topics: None\n\n")
	} else {
		bw.WriteString("Topics:\n")
		for i := range s.Topics {
			WriteTopicText(bw, &s.Topics[i], now)
		}
	}
	WriteProducersText(bw, s.Producers, now)
	_ = bw.Flush() // a failed write to w is the caller's connection problem
}

// WriteTextHeader writes the part of the text format before the topics:
// version, start time, uptime, health and, when s.Memory is set, memory.
// (WriteTextHeader, "Topics:" or "Topics: None", WriteTopicText per topic
// and WriteProducersText make WriteText, for a writer that streams the
// topics.)
func WriteTextHeader(bw *bufio.Writer, s *StatsResponse, now time.Time, goVersion string) {
	start := time.Unix(s.StartTime, 0).In(now.Location())
	fmt.Fprintf(bw, "nsqd v%s (built w/%s)\n", s.Version, goVersion)
	fmt.Fprintf(bw, "start_time %s\n", start.Format(time.RFC3339))
	fmt.Fprintf(bw, "uptime %s\n\n", now.Sub(start))
	fmt.Fprintf(bw, "Health: %s\n\n", s.Health)

	if m := s.Memory; m != nil {
		bw.WriteString("Memory:\n")
		for _, kv := range []struct {
			k string
			v uint64
		}{
			{"heap_objects", m.HeapObjects},
			{"heap_idle_bytes", m.HeapIdleBytes},
			{"heap_in_use_bytes", m.HeapInUseBytes},
			{"heap_released_bytes", m.HeapReleasedBytes},
			{"gc_pause_usec_100", m.GCPauseUsec100},
			{"gc_pause_usec_99", m.GCPauseUsec99},
			{"gc_pause_usec_95", m.GCPauseUsec95},
			{"next_gc_bytes", m.NextGCBytes},
			{"gc_total_runs", m.GCTotalRuns},
		} {
			fmt.Fprintf(bw, "   %-25s\t%d\n", kv.k, kv.v)
		}
		bw.WriteString("\n")
	}
}

// WriteProducersText writes the producers part of the text format, the
// last one.
func WriteProducersText(bw *bufio.Writer, producers []ClientStats, now time.Time) {
	if len(producers) == 0 {
		bw.WriteString("Producers: None\n")
		return
	}
	bw.WriteString("Producers:\n")
	for i := range producers {
		p := &producers[i]
		var total int64
		topics := make([]string, 0, len(p.PubCounts))
		for _, pc := range p.PubCounts {
			total += pc.Count
			topics = append(topics, fmt.Sprintf("%s=%d", pc.Topic, pc.Count))
		}
		fmt.Fprintf(bw, "   [%s %-21s] msgs: %-8d topics: %s connected: %s\n",
			p.Version, clientIdentity(p), total, strings.Join(topics, " "), connectedFor(p, now))
	}
}

// WriteTopicText writes one topic, its channels and their clients in the
// text format.
func WriteTopicText(bw *bufio.Writer, t *TopicStats, now time.Time) {
	lead := "   "
	if t.Paused {
		lead = "*P "
	}
	fmt.Fprintf(bw, "%s[%-15s] depth: %-5d be-depth: %-5d msgs: %-8d e2e%%: %s\n",
		lead, t.TopicName, t.Depth, t.BackendDepth, t.MessageCount, formatE2E(t.E2ELatency))
	for i := range t.Channels {
		c := &t.Channels[i]
		lead := "      "
		if c.Paused {
			lead = "   *P "
		}
		fmt.Fprintf(bw, "%s[%-25s] depth: %-5d be-depth: %-5d inflt: %-4d def: %-4d re-q: %-5d timeout: %-5d msgs: %-8d e2e%%: %s\n",
			lead, c.ChannelName, c.Depth, c.BackendDepth, c.InFlightCount, c.DeferredCount,
			c.RequeueCount, c.TimeoutCount, c.MessageCount, formatE2E(c.E2ELatency))
		for j := range c.Clients {
			cl := &c.Clients[j]
			fmt.Fprintf(bw, "        [%s %-21s] state: %d inflt: %-4d rdy: %-4d fin: %-8d re-q: %-8d msgs: %-8d connected: %s\n",
				cl.Version, clientIdentity(cl), cl.State, cl.InFlightCount, cl.ReadyCount,
				cl.FinishCount, cl.RequeueCount, cl.MessageCount, connectedFor(cl, now))
		}
	}
	bw.WriteString("\n")
}

// clientIdentity is "<hostname>:<remote port> <user agent>".
func clientIdentity(c *ClientStats) string {
	port := c.RemoteAddress
	if _, p, err := net.SplitHostPort(c.RemoteAddress); err == nil {
		port = p
	}
	return c.Hostname + ":" + port + " " + c.UserAgent
}

func connectedFor(c *ClientStats, now time.Time) time.Duration {
	return now.Sub(time.Unix(c.ConnectTS, 0)).Truncate(time.Second)
}

// formatE2E renders the percentiles as "225.1ms, 4.8s, 0.0ns" (one decimal,
// unit ns/us/ms/s); nothing when there are none.
func formatE2E(e E2ELatency) string {
	parts := make([]string, 0, len(e.Percentiles))
	for _, p := range e.Percentiles {
		parts = append(parts, FormatLatency(p.Value))
	}
	return strings.Join(parts, ", ")
}

// FormatLatency renders a latency in nanoseconds with one decimal in the
// largest of ns, us, ms and s that keeps the number at or above 1.
func FormatLatency(ns float64) string {
	v, unit := ns, "ns"
	for _, u := range []string{"us", "ms", "s"} {
		if v < 1000 {
			break
		}
		v, unit = v/1000, u
	}
	return fmt.Sprintf("%.1f%s", v, unit)
}
