package nsqd

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves GET /metrics in the Prometheus exposition format
// (text, or whatever the scraper negotiates). Each handler owns a private
// registry holding a collector that turns one stats snapshot per scrape
// (the same snapshot /stats serves) into topic and channel metrics, plus the
// Go runtime and process collectors. Nothing is registered globally.
func (n *NSQD) metricsHandler() httprouter.Handle {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newStatsCollector(n),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slogPromLogger{n.logger.With("component", "metrics")},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg, // promhttp_metric_handler_errors_total
	})
	return func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		h.ServeHTTP(w, r)
	}
}

// slogPromLogger adapts slog to promhttp.Logger.
type slogPromLogger struct{ l *slog.Logger }

func (s slogPromLogger) Println(v ...any) {
	s.l.Error("serving metrics", "err", v)
}

// Label names.
var (
	topicLabels    = []string{"topic"}
	channelLabels  = []string{"topic", "channel"}
	topicQLabels   = []string{"topic", "quantile"}
	channelQLabels = []string{"topic", "channel", "quantile"}
)

// statsCollector is a prometheus.Collector over NSQD.Stats. Metric values are
// the /stats figures (§9.5) as of the scrape; counters are the since-start
// totals nsqd keeps, so they reset when nsqd restarts, which Prometheus'
// rate() handles.
type statsCollector struct {
	n *NSQD

	healthy, startTime, topics *prometheus.Desc

	topicDepth, topicBackendDepth, topicPaused, topicChannels   *prometheus.Desc
	topicMessages, topicMessageBytes                            *prometheus.Desc
	topicE2E, topicE2ECount                                     *prometheus.Desc
	chDepth, chBackendDepth, chInFlight, chDeferred, chClients  *prometheus.Desc
	chPaused, chMessages, chRequeued, chTimedOut, chE2E, chE2EN *prometheus.Desc
	durableSyncs, durableBytes                                  *prometheus.Desc
	topicExpired, topicDropped, topicRejected                   *prometheus.Desc
	chDeadLettered, chExpired                                   *prometheus.Desc
}

func newStatsCollector(n *NSQD) *statsCollector {
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &statsCollector{
		n:         n,
		healthy:   d("nsqd_healthy", "1 when nsqd is healthy (its last disk write succeeded), 0 otherwise.", nil),
		startTime: d("nsqd_start_time_seconds", "Unix time nsqd started.", nil),
		topics:    d("nsqd_topics", "Number of topics.", nil),

		topicDepth:        d("nsqd_topic_depth", "Messages queued in the topic, memory + disk (not yet copied to channels).", topicLabels),
		topicBackendDepth: d("nsqd_topic_backend_depth", "Disk part of nsqd_topic_depth.", topicLabels),
		topicPaused:       d("nsqd_topic_paused", "1 when the topic is paused.", topicLabels),
		topicChannels:     d("nsqd_topic_channels", "Number of channels of the topic.", topicLabels),
		topicMessages:     d("nsqd_topic_messages_total", "Messages published to the topic since nsqd started.", topicLabels),
		topicMessageBytes: d("nsqd_topic_message_bytes_total", "Body bytes published to the topic since nsqd started.", topicLabels),
		topicE2E:          d("nsqd_topic_e2e_processing_latency_seconds", "End-to-end processing latency quantiles over the sliding window, merged over the topic's channels.", topicQLabels),
		topicE2ECount:     d("nsqd_topic_e2e_processing_latency_samples", "Samples in the topic's end-to-end latency window.", topicLabels),

		chDepth:        d("nsqd_channel_depth", "Messages queued in the channel, memory + disk (excluding in flight and deferred).", channelLabels),
		chBackendDepth: d("nsqd_channel_backend_depth", "Disk part of nsqd_channel_depth.", channelLabels),
		chInFlight:     d("nsqd_channel_in_flight", "Messages delivered and not yet finished, requeued or timed out.", channelLabels),
		chDeferred:     d("nsqd_channel_deferred", "Deferred messages (DPUB, REQ with delay).", channelLabels),
		chClients:      d("nsqd_channel_clients", "Connections subscribed to the channel.", channelLabels),
		chPaused:       d("nsqd_channel_paused", "1 when the channel is paused.", channelLabels),
		chMessages:     d("nsqd_channel_messages_total", "Messages the channel received since nsqd started.", channelLabels),
		chRequeued:     d("nsqd_channel_requeued_total", "Messages requeued by consumers (REQ).", channelLabels),
		chTimedOut:     d("nsqd_channel_timed_out_total", "In-flight messages whose timeout expired.", channelLabels),
		chE2E:          d("nsqd_channel_e2e_processing_latency_seconds", "End-to-end processing latency quantiles over the sliding window.", channelQLabels),
		chE2EN:         d("nsqd_channel_e2e_processing_latency_samples", "Samples in the channel's end-to-end latency window.", channelLabels),

		durableSyncs: d("nsqd_durable_syncs_total", "fdatasync calls made for durable topic logs and cursor journals (present once a durable topic exists).", nil),
		durableBytes: d("nsqd_durable_bytes_written_total", "Bytes written to durable topic logs and cursor journals (present once a durable topic exists).", nil),

		topicExpired:   d("nsqd_topic_expired_total", "Messages the topic held itself (without channels) that expired by its ttl (topics with a policy only).", topicLabels),
		topicDropped:   d("nsqd_topic_dropped_total", "Messages dropped by max_depth with overflow=drop_oldest (topics with a policy only).", topicLabels),
		topicRejected:  d("nsqd_topic_rejected_total", "Messages refused by max_depth with overflow=reject (topics with a policy only).", topicLabels),
		chDeadLettered: d("nsqd_channel_dead_lettered_total", "Messages moved to the channel's dead-letter topic (channels with a policy only).", channelLabels),
		chExpired:      d("nsqd_channel_expired_total", "Messages of the channel that expired by its ttl (channels with a policy only).", channelLabels),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.healthy, c.startTime, c.topics,
		c.topicDepth, c.topicBackendDepth, c.topicPaused, c.topicChannels,
		c.topicMessages, c.topicMessageBytes, c.topicE2E, c.topicE2ECount,
		c.chDepth, c.chBackendDepth, c.chInFlight, c.chDeferred, c.chClients,
		c.chPaused, c.chMessages, c.chRequeued, c.chTimedOut, c.chE2E, c.chE2EN,
		c.durableSyncs, c.durableBytes,
		c.topicExpired, c.topicDropped, c.topicRejected, c.chDeadLettered, c.chExpired,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one snapshot per scrape.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.Stats(StatsFilter{})
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	gauge(c.healthy, boolFloat(s.Health == "OK"))
	gauge(c.startTime, float64(s.StartTime))
	gauge(c.topics, float64(len(s.Topics)))
	if cm := c.n.committer; cm != nil && (cm.Syncs() > 0 || c.n.hasDurableTopic()) {
		counter(c.durableSyncs, float64(cm.Syncs()))
		counter(c.durableBytes, float64(cm.BytesWritten()))
	}
	for _, t := range s.Topics {
		tn := t.TopicName
		gauge(c.topicDepth, float64(t.Depth), tn)
		gauge(c.topicBackendDepth, float64(t.BackendDepth), tn)
		gauge(c.topicPaused, boolFloat(t.Paused), tn)
		gauge(c.topicChannels, float64(len(t.Channels)), tn)
		counter(c.topicMessages, float64(t.MessageCount), tn)
		counter(c.topicMessageBytes, float64(t.MessageBytes), tn)
		if p := t.TopicPolicyStats; p != nil {
			counter(c.topicExpired, float64(p.ExpiredCount), tn)
			counter(c.topicDropped, float64(p.DroppedCount), tn)
			counter(c.topicRejected, float64(p.RejectedCount), tn)
		}
		if t.E2ELatency.Percentiles != nil {
			gauge(c.topicE2ECount, float64(t.E2ELatency.Count), tn)
			for _, p := range t.E2ELatency.Percentiles {
				gauge(c.topicE2E, p.Value/1e9, tn, formatQuantile(p.Quantile))
			}
		}
		for _, chs := range t.Channels {
			cn := chs.ChannelName
			gauge(c.chDepth, float64(chs.Depth), tn, cn)
			gauge(c.chBackendDepth, float64(chs.BackendDepth), tn, cn)
			gauge(c.chInFlight, float64(chs.InFlightCount), tn, cn)
			gauge(c.chDeferred, float64(chs.DeferredCount), tn, cn)
			gauge(c.chClients, float64(chs.ClientCount), tn, cn)
			gauge(c.chPaused, boolFloat(chs.Paused), tn, cn)
			counter(c.chMessages, float64(chs.MessageCount), tn, cn)
			counter(c.chRequeued, float64(chs.RequeueCount), tn, cn)
			counter(c.chTimedOut, float64(chs.TimeoutCount), tn, cn)
			if p := chs.ChannelPolicyStats; p != nil {
				counter(c.chDeadLettered, float64(p.DeadLetteredCount), tn, cn)
				counter(c.chExpired, float64(p.ExpiredCount), tn, cn)
			}
			if chs.E2ELatency.Percentiles != nil {
				gauge(c.chE2EN, float64(chs.E2ELatency.Count), tn, cn)
				for _, p := range chs.E2ELatency.Percentiles {
					gauge(c.chE2E, p.Value/1e9, tn, cn, formatQuantile(p.Quantile))
				}
			}
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// formatQuantile renders a quantile label value the way Prometheus
// summaries do ("0.99", "1").
func formatQuantile(q float64) string {
	return strconv.FormatFloat(q, 'g', -1, 64)
}
