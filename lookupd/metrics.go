package lookupd

import (
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// counters are the since-start event totals /metrics reports. Updated with
// atomics on the connection goroutines; no lock.
type counters struct {
	connections    atomic.Uint64 // registration connections accepted
	protocolErrors atomic.Uint64 // fatal V1 errors sent
	peersDropped   atomic.Uint64 // connections closed by --peer-read-timeout
}

// RegistryCounts is a summary of the registry for metrics.
type RegistryCounts struct {
	Peers, ActivePeers, Topics, Channels int
}

// Counts summarises the registry at now (ActivePeers applies the inactive
// filter). It costs O(topics).
func (r *Registry) Counts(now time.Time) RegistryCounts {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c := RegistryCounts{Peers: len(r.peers), Topics: len(r.topics)}
	for _, p := range r.peers {
		if r.activeLocked(p, now) {
			c.ActivePeers++
		}
	}
	for _, chans := range r.channels {
		c.Channels += len(chans)
	}
	return c
}

// metricsHandler serves GET /metrics in the Prometheus exposition format from
// a private registry: registry gauges and protocol counters read at scrape
// time, plus the Go runtime and process collectors.
func (d *Daemon) metricsHandler() httprouter.Handle {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		&lookupdCollector{d: d},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{d.logger},
		ErrorHandling: promhttp.ContinueOnError,
	})
	return func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) { h.ServeHTTP(w, r) }
}

type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) { p.l.Error("serving metrics", "err", v) }

var (
	descPeers       = prometheus.NewDesc("nsqlookupd_producers", "Identified nsqd registration connections.", nil, nil)
	descActivePeers = prometheus.NewDesc("nsqlookupd_active_producers", "Producers not hidden by --inactive-producer-timeout.", nil, nil)
	descTopics      = prometheus.NewDesc("nsqlookupd_topics", "Topic registrations (with or without producers).", nil, nil)
	descChannels    = prometheus.NewDesc("nsqlookupd_channels", "Channel registrations (with or without producers).", nil, nil)
	descOpenConns   = prometheus.NewDesc("nsqlookupd_open_connections", "Open registration connections (identified or not).", nil, nil)
	descConnsTotal  = prometheus.NewDesc("nsqlookupd_connections_total", "Registration connections accepted since start.", nil, nil)
	descErrorsTotal = prometheus.NewDesc("nsqlookupd_protocol_errors_total", "Fatal protocol errors sent to peers since start.", nil, nil)
	descDropped     = prometheus.NewDesc("nsqlookupd_peers_timed_out_total", "Connections closed by --peer-read-timeout since start.", nil, nil)
)

// lookupdCollector turns one registry summary per scrape into metrics.
type lookupdCollector struct{ d *Daemon }

func (c *lookupdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descActivePeers, descTopics, descChannels, descOpenConns, descConnsTotal, descErrorsTotal, descDropped} {
		ch <- d
	}
}

func (c *lookupdCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.d.registry.Counts(time.Now())
	c.d.mu.Lock()
	open := len(c.d.conns)
	c.d.mu.Unlock()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descPeers, counts.Peers)
	gauge(descActivePeers, counts.ActivePeers)
	gauge(descTopics, counts.Topics)
	gauge(descChannels, counts.Channels)
	gauge(descOpenConns, open)
	counter(descConnsTotal, c.d.stats.connections.Load())
	counter(descErrorsTotal, c.d.stats.protocolErrors.Load())
	counter(descDropped, c.d.stats.peersDropped.Load())
}
