package nsqd

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// metricsHandler serves /metrics in Prometheus' text exposition format,
// built from the same snapshot as /stats.
func (n *NSQD) metricsHandler() httprouter.Handle {
	return func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		s := n.Stats(StatsFilter{IncludeClients: false})
		var b strings.Builder
		help := func(name, typ, text string) {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, typ)
		}
		esc := func(v string) string { return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) }
		help("nsqd_topic_depth", "gauge", "Messages queued in the topic (memory + disk).")
		for _, t := range s.Topics {
			fmt.Fprintf(&b, "nsqd_topic_depth{topic=\"%s\"} %d\n", esc(t.TopicName), t.Depth)
		}
		help("nsqd_topic_messages_total", "counter", "Messages published to the topic since start.")
		for _, t := range s.Topics {
			fmt.Fprintf(&b, "nsqd_topic_messages_total{topic=\"%s\"} %d\n", esc(t.TopicName), t.MessageCount)
		}
		type chMetric struct {
			name, typ, help string
			val             func(i, j int) int64
		}
		metrics := []chMetric{
			{"nsqd_channel_depth", "gauge", "Messages queued in the channel (memory + disk).", func(i, j int) int64 { return s.Topics[i].Channels[j].Depth }},
			{"nsqd_channel_in_flight", "gauge", "Messages in flight.", func(i, j int) int64 { return s.Topics[i].Channels[j].InFlightCount }},
			{"nsqd_channel_deferred", "gauge", "Deferred messages.", func(i, j int) int64 { return s.Topics[i].Channels[j].DeferredCount }},
			{"nsqd_channel_messages_total", "counter", "Messages received by the channel.", func(i, j int) int64 { return s.Topics[i].Channels[j].MessageCount }},
			{"nsqd_channel_requeued_total", "counter", "Messages requeued.", func(i, j int) int64 { return s.Topics[i].Channels[j].RequeueCount }},
			{"nsqd_channel_timed_out_total", "counter", "Messages whose in-flight timeout expired.", func(i, j int) int64 { return s.Topics[i].Channels[j].TimeoutCount }},
			{"nsqd_channel_clients", "gauge", "Subscribed connections.", func(i, j int) int64 { return int64(s.Topics[i].Channels[j].ClientCount) }},
		}
		for _, m := range metrics {
			help(m.name, m.typ, m.help)
			for i, t := range s.Topics {
				for j, ch := range t.Channels {
					fmt.Fprintf(&b, "%s{topic=\"%s\",channel=\"%s\"} %d\n", m.name, esc(t.TopicName), esc(ch.ChannelName), m.val(i, j))
				}
			}
		}
		health := 1
		if s.Health != "OK" {
			health = 0
		}
		help("nsqd_healthy", "gauge", "1 when the last disk write succeeded.")
		fmt.Fprintf(&b, "nsqd_healthy %d\n", health)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write([]byte(b.String()))
	}
}
