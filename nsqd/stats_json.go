package nsqd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"time"

	"github.com/sluicemq/sluice/internal/quantile"
	"github.com/sluicemq/sluice/protocol"
)

// statsFlushSize is how much of the document writeStatsJSON and
// writeStatsText gather before they hand it to the writer.
const statsFlushSize = 32 << 10

// writeStatsJSON writes the /stats?format=json document of filter f to w,
// topic by topic and channel by channel, as it walks them: no snapshot of
// every channel is built, and the document never sits whole in memory
// (with 100,000 channels it is about 27 MB). The bytes are those of
// json.Marshal(n.statsAt(f, now)) — the same keys in the same order, the
// same types and the same escaping — which the tests check.
func (n *NSQD) writeStatsJSON(w io.Writer, f StatsFilter, now time.Time) error {
	sw := statsJSONWriter{w: w, b: make([]byte, 0, statsFlushSize+4<<10)}
	b := append(sw.b, `{"version":`...)
	b = appendJSONString(b, Version)
	b = append(b, `,"health":`...)
	b = appendJSONString(b, n.Health())
	b = append(b, `,"start_time":`...)
	b = strconv.AppendInt(b, n.startTime.Unix(), 10)
	b = append(b, `,"topics":`...)
	sw.b = b

	var topics []*Topic
	if f.Topic != "" {
		if t, ok := n.ExistingTopic(f.Topic); ok {
			topics = []*Topic{t}
		}
	} else {
		topics = n.topicList()
	}
	if f.Topic != "" && len(topics) == 0 {
		sw.b = append(sw.b, "null"...)
	} else {
		sw.b = append(sw.b, '[')
		first := true
		for _, t := range topics {
			if f.Channel != "" {
				if _, ok := t.existingChannel(f.Channel); !ok {
					continue
				}
			}
			if !first {
				sw.b = append(sw.b, ',')
			}
			first = false
			if err := sw.topic(t, f, now); err != nil {
				return err
			}
		}
		sw.b = append(sw.b, ']')
	}

	if f.IncludeMem {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if err := sw.marshal(`,"memory":`, protocol.NewMemStats(&ms)); err != nil {
			return err
		}
	}
	var producers []protocol.ClientStats
	if f.IncludeClients {
		producers = n.producerStats(f.Topic)
	}
	if err := sw.marshal(`,"producers":`, producers); err != nil {
		return err
	}
	sw.b = append(sw.b, '}')
	return sw.flush()
}

// writeStatsText writes the text format of /stats for filter f to w, topic
// by topic (one topic's stats at a time), through a buffer of
// statsFlushSize: the bytes of protocol.WriteText(n.statsAt(f, now)).
func (n *NSQD) writeStatsText(w io.Writer, f StatsFilter, now time.Time) error {
	bw := bufio.NewWriterSize(w, statsFlushSize)
	head := &protocol.StatsResponse{Version: Version, Health: n.Health(), StartTime: n.startTime.Unix()}
	if f.IncludeMem {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		head.Memory = protocol.NewMemStats(&ms)
	}
	protocol.WriteTextHeader(bw, head, now, runtime.Version())
	var topics []*Topic
	if f.Topic != "" {
		if t, ok := n.ExistingTopic(f.Topic); ok {
			topics = []*Topic{t}
		}
	} else {
		topics = n.topicList()
	}
	written := 0
	for _, t := range topics {
		ts, ok := t.stats(f, now)
		if !ok {
			continue
		}
		if written == 0 {
			bw.WriteString("Topics:\n")
		}
		written++
		protocol.WriteTopicText(bw, &ts, now)
	}
	if written == 0 {
		bw.WriteString("Topics: None\n\n")
	}
	var producers []protocol.ClientStats
	if f.IncludeClients {
		producers = n.producerStats(f.Topic)
	}
	protocol.WriteProducersText(bw, producers, now)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write stats: %w", err)
	}
	return nil
}

// statsJSONWriter gathers encoded JSON in b and writes it to w in blocks
// of about statsFlushSize.
type statsJSONWriter struct {
	w io.Writer
	b []byte
}

func (sw *statsJSONWriter) flush() error {
	if len(sw.b) == 0 {
		return nil
	}
	_, err := sw.w.Write(sw.b)
	sw.b = sw.b[:0]
	if err != nil {
		return fmt.Errorf("write stats: %w", err)
	}
	return nil
}

func (sw *statsJSONWriter) maybeFlush() error {
	if len(sw.b) < statsFlushSize {
		return nil
	}
	return sw.flush()
}

// marshal appends key and v encoded by encoding/json (for the parts that
// are rare or small: memory, producers, clients).
func (sw *statsJSONWriter) marshal(key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode stats %s: %w", key, err)
	}
	sw.b = append(sw.b, key...)
	sw.b = append(sw.b, data...)
	return nil
}

// topic appends one element of "topics", the keys in protocol.TopicStats's
// order.
func (sw *statsJSONWriter) topic(t *Topic, f StatsFilter, now time.Time) error {
	ts := t.statsHead()
	b := append(sw.b, `{"topic_name":`...)
	b = appendJSONString(b, ts.TopicName)
	b = append(b, `,"channels":[`...)
	sw.b = b
	var merged *quantile.Quantile
	first := true
	for _, ch := range t.channelList() {
		if f.Channel != "" && ch.name != f.Channel {
			continue
		}
		cs := ch.stats(f.IncludeClients, now)
		if !first {
			sw.b = append(sw.b, ',')
		}
		first = false
		var err error
		if sw.b, err = appendChannelStatsJSON(sw.b, &cs); err != nil {
			return err
		}
		if ch.e2e != nil {
			if merged == nil {
				merged = quantile.New(t.nsqd.opts.E2EProcessingLatencyWindowTime, t.nsqd.opts.E2EProcessingLatencyPercentiles)
			}
			merged.Merge(ch.e2e)
		}
		if err := sw.maybeFlush(); err != nil {
			return err
		}
	}
	if merged != nil {
		ts.E2ELatency = merged.Result(now)
	}
	b = append(sw.b, `],"depth":`...)
	b = strconv.AppendInt(b, ts.Depth, 10)
	b = append(b, `,"backend_depth":`...)
	b = strconv.AppendInt(b, ts.BackendDepth, 10)
	b = append(b, `,"message_count":`...)
	b = strconv.AppendInt(b, ts.MessageCount, 10)
	b = append(b, `,"message_bytes":`...)
	b = strconv.AppendInt(b, ts.MessageBytes, 10)
	b = append(b, `,"paused":`...)
	b = strconv.AppendBool(b, ts.Paused)
	b = append(b, `,"e2e_processing_latency":`...)
	b, err := appendE2EJSON(b, ts.E2ELatency)
	if err != nil {
		return err
	}
	if ts.Durable {
		b = append(b, `,"durable":true`...)
	}
	if ts.RetentionTime != nil {
		b = append(b, `,"retention_time":`...)
		b = appendJSONString(b, *ts.RetentionTime)
	}
	if ts.RetentionBytes != nil {
		b = append(b, `,"retention_bytes":`...)
		b = strconv.AppendInt(b, *ts.RetentionBytes, 10)
	}
	if ts.TopicPolicyStats != nil {
		if b, err = appendEmbeddedJSON(b, ts.TopicPolicyStats); err != nil {
			return err
		}
	}
	if ts.TopicReplicaStats != nil {
		if b, err = appendEmbeddedJSON(b, ts.TopicReplicaStats); err != nil {
			return err
		}
	}
	sw.b = append(b, '}')
	return sw.maybeFlush()
}

// appendChannelStatsJSON appends cs as encoding/json encodes a
// protocol.ChannelStats.
func appendChannelStatsJSON(b []byte, cs *protocol.ChannelStats) ([]byte, error) {
	b = append(b, `{"channel_name":`...)
	b = appendJSONString(b, cs.ChannelName)
	b = append(b, `,"depth":`...)
	b = strconv.AppendInt(b, cs.Depth, 10)
	b = append(b, `,"backend_depth":`...)
	b = strconv.AppendInt(b, cs.BackendDepth, 10)
	b = append(b, `,"in_flight_count":`...)
	b = strconv.AppendInt(b, cs.InFlightCount, 10)
	b = append(b, `,"deferred_count":`...)
	b = strconv.AppendInt(b, cs.DeferredCount, 10)
	b = append(b, `,"message_count":`...)
	b = strconv.AppendInt(b, cs.MessageCount, 10)
	b = append(b, `,"requeue_count":`...)
	b = strconv.AppendInt(b, cs.RequeueCount, 10)
	b = append(b, `,"timeout_count":`...)
	b = strconv.AppendInt(b, cs.TimeoutCount, 10)
	b = append(b, `,"client_count":`...)
	b = strconv.AppendInt(b, int64(cs.ClientCount), 10)
	b = append(b, `,"clients":`...)
	if cs.Clients == nil {
		b = append(b, "null"...)
	} else {
		data, err := json.Marshal(cs.Clients)
		if err != nil {
			return b, fmt.Errorf("encode stats of channel %s clients: %w", cs.ChannelName, err)
		}
		b = append(b, data...)
	}
	b = append(b, `,"paused":`...)
	b = strconv.AppendBool(b, cs.Paused)
	b = append(b, `,"e2e_processing_latency":`...)
	b, err := appendE2EJSON(b, cs.E2ELatency)
	if err != nil {
		return b, err
	}
	if cs.ChannelPolicyStats != nil {
		if b, err = appendEmbeddedJSON(b, cs.ChannelPolicyStats); err != nil {
			return b, err
		}
	}
	return append(b, '}'), nil
}

// appendE2EJSON appends an e2e_processing_latency object; percentiles
// (configured only with --e2e-processing-latency-percentile) are encoded
// by encoding/json, for its float format.
func appendE2EJSON(b []byte, e protocol.E2ELatency) ([]byte, error) {
	if e.Percentiles != nil {
		data, err := json.Marshal(e)
		if err != nil {
			return b, fmt.Errorf("encode stats e2e_processing_latency: %w", err)
		}
		return append(b, data...), nil
	}
	b = append(b, `{"count":`...)
	b = strconv.AppendInt(b, int64(e.Count), 10)
	return append(b, `,"percentiles":null}`...), nil
}

// appendEmbeddedJSON appends the keys of v, a struct embedded by pointer
// in a stats object, after a comma: encoding/json puts an embedded
// struct's keys into the object embedding it.
func appendEmbeddedJSON(b []byte, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return b, fmt.Errorf("encode stats %T: %w", v, err)
	}
	if len(data) <= 2 { // {}: no keys
		return b, nil
	}
	b = append(b, ',')
	return append(b, data[1:len(data)-1]...), nil
}

// appendJSONString appends s quoted as encoding/json quotes it. Topic and
// channel names are plain ASCII and are copied as they are; anything else
// goes through encoding/json (HTML-safe escapes, invalid UTF-8 replaced).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			data, _ := json.Marshal(s) // a string always encodes
			return append(b, data...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
