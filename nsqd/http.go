package nsqd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/internal/httpv1"
	"github.com/sluicemq/sluice/internal/statsd"
	"github.com/sluicemq/sluice/protocol"
)

func errf(code int, text string) error { return httpv1.Err{Code: code, Text: text} }

// publishError is the HTTP answer to a failed publish: a durable topic says
// why its write failed (a full disk, say); otherwise the topic is exiting.
func publishError(err error) error {
	var dw *durableWriteError
	if errors.As(err, &dw) {
		return errf(http.StatusServiceUnavailable, "PUB_FAILED: "+dw.Error())
	}
	var dl *depthLimitError
	if errors.As(err, &dl) {
		return errf(http.StatusServiceUnavailable, "PUB_FAILED: "+dl.Error())
	}
	var re *replicationError
	if errors.As(err, &re) {
		return errf(http.StatusServiceUnavailable, "PUB_FAILED: "+re.Error())
	}
	return errf(http.StatusServiceUnavailable, "EXITING")
}

// startHTTP serves the HTTP API on the plain and TLS listeners.
func (n *NSQD) startHTTP() {
	router := n.router()
	if n.httpListener != nil {
		var h http.Handler = router
		if n.opts.TLSRequired == TLSRequired {
			h = n.tlsRequiredHandler()
		}
		n.serveHTTP(n.httpListener, h, nil)
	}
	if n.httpsListener != nil {
		n.serveHTTP(n.httpsListener, router, n.tlsConfig)
	}
}

func (n *NSQD) serveHTTP(ln net.Listener, h http.Handler, tlsCfg *tls.Config) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.logger.Handler(), slog.LevelWarn),
	}
	n.httpServers = append(n.httpServers, srv)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.logger.Error("http server stopped", "err", err)
		}
	}()
}

// tlsRequiredHandler answers every plain-HTTP request with 403 TLS_REQUIRED
// and the HTTPS port (§9).
func (n *NSQD) tlsRequiredHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := fmt.Sprintf(`{"message": "TLS_REQUIRED", "https_port": %d}`, portOf(n.HTTPSAddr()))
		h := w.Header()
		h.Set(httpv1.HeaderNSQContentType, httpv1.NSQContentTypeV1)
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, body)
	})
}

func (n *NSQD) router() *httprouter.Router {
	r := httpv1.NewRouter(n.logger)
	r.GET("/ping", func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		h := n.Health()
		if h != "OK" {
			httpv1.PlainText(w, http.StatusInternalServerError, h)
			return
		}
		httpv1.PlainText(w, http.StatusOK, "OK")
	})
	r.GET("/info", httpv1.V1(n.doInfo))
	r.POST("/pub", httpv1.V1(n.doPUB))
	r.POST("/mpub", httpv1.V1(n.doMPUB))
	r.GET("/stats", n.serveStats)

	r.POST("/topic/create", httpv1.V1(n.doTopicCreate))
	r.POST("/topic/delete", httpv1.V1(n.doTopicDelete))
	r.POST("/topic/empty", httpv1.V1(n.doTopicAction(func(t *Topic) error { return t.empty() }, true)))
	r.POST("/topic/pause", httpv1.V1(n.doTopicAction(func(t *Topic) error { t.setPaused(true); return n.persistMetadata() }, false)))
	r.POST("/topic/unpause", httpv1.V1(n.doTopicAction(func(t *Topic) error { t.setPaused(false); return n.persistMetadata() }, false)))
	r.POST("/topic/step-down", httpv1.V1(n.doTopicStepDown))

	r.POST("/channel/create", httpv1.V1(n.doChannelCreate))
	r.POST("/channel/delete", httpv1.V1(n.doChannelAction(func(t *Topic, ch *Channel) error { return n.DeleteChannel(t, ch.name) })))
	r.POST("/channel/empty", httpv1.V1(n.doChannelAction(func(_ *Topic, ch *Channel) error { return ch.empty() })))
	r.POST("/channel/pause", httpv1.V1(n.doChannelAction(func(_ *Topic, ch *Channel) error { ch.setPaused(true); return n.persistMetadata() })))
	r.POST("/channel/unpause", httpv1.V1(n.doChannelAction(func(_ *Topic, ch *Channel) error { ch.setPaused(false); return n.persistMetadata() })))

	n.routePolicies(r)

	r.GET("/config/:opt", httpv1.V1(n.doConfig))
	r.PUT("/config/:opt", httpv1.V1(n.doConfig))

	r.HandlerFunc(http.MethodGet, "/debug/pprof", func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, "/debug/pprof/", http.StatusMovedPermanently)
	})
	r.HandlerFunc(http.MethodGet, "/debug/pprof/", pprof.Index)
	r.HandlerFunc(http.MethodGet, "/debug/pprof/cmdline", pprof.Cmdline)
	r.HandlerFunc(http.MethodGet, "/debug/pprof/symbol", pprof.Symbol)
	r.HandlerFunc(http.MethodPost, "/debug/pprof/symbol", pprof.Symbol)
	r.HandlerFunc(http.MethodGet, "/debug/pprof/profile", pprof.Profile)
	r.HandlerFunc(http.MethodGet, "/debug/pprof/trace", pprof.Trace)
	for _, name := range []string{"heap", "goroutine", "block", "threadcreate", "mutex", "allocs"} {
		r.Handler(http.MethodGet, "/debug/pprof/"+name, pprof.Handler(name))
	}
	r.PUT("/debug/setblockrate", httpv1.V1(func(_ http.ResponseWriter, req *http.Request, _ httprouter.Params) (any, error) {
		rate, err := strconv.Atoi(req.URL.Query().Get("rate"))
		if err != nil {
			return nil, errf(http.StatusBadRequest, "INVALID_REQUEST")
		}
		runtime.SetBlockProfileRate(rate)
		return nil, nil
	}))
	r.POST("/debug/freememory", httpv1.V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		debug.FreeOSMemory()
		return nil, nil
	}))
	r.GET("/metrics", n.metricsHandler())
	return r
}

func (n *NSQD) doInfo(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
	hostname, _ := os.Hostname()
	return struct {
		Version                string `json:"version"`
		BroadcastAddress       string `json:"broadcast_address"`
		Hostname               string `json:"hostname"`
		HTTPPort               int    `json:"http_port"`
		TCPPort                int    `json:"tcp_port"`
		StartTime              int64  `json:"start_time"`
		MaxHeartbeatInterval   int64  `json:"max_heartbeat_interval"`
		MaxOutputBufferSize    int64  `json:"max_output_buffer_size"`
		MaxOutputBufferTimeout int64  `json:"max_output_buffer_timeout"`
		MaxDeflateLevel        int    `json:"max_deflate_level"`
	}{
		Version:                Version,
		BroadcastAddress:       n.opts.BroadcastAddress,
		Hostname:               hostname,
		HTTPPort:               portOf(n.HTTPAddr()),
		TCPPort:                portOf(n.TCPAddr()),
		StartTime:              n.startTime.Unix(),
		MaxHeartbeatInterval:   int64(n.opts.MaxHeartbeatInterval),
		MaxOutputBufferSize:    n.opts.MaxOutputBufferSize,
		MaxOutputBufferTimeout: int64(n.opts.MaxOutputBufferTimeout),
		MaxDeflateLevel:        n.opts.MaxDeflateLevel,
	}, nil
}

// topicFromQuery reads and validates ?topic= and returns the topic, creating it.
func (n *NSQD) topicFromQuery(r *http.Request) (*Topic, error) {
	q, _ := httpv1.Query(r)
	name := q.Get("topic")
	if name == "" {
		if _, ok := q["topic"]; !ok {
			return nil, errf(http.StatusBadRequest, "MISSING_ARG_TOPIC")
		}
	}
	if !protocol.IsValidTopicName(name) {
		return nil, errf(http.StatusBadRequest, "INVALID_TOPIC")
	}
	t, err := n.GetTopic(name)
	if err != nil {
		return nil, publishError(err)
	}
	return t, nil
}

func (n *NSQD) doPUB(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	max := n.opts.MaxMsgSize
	if r.ContentLength > max {
		return nil, errf(http.StatusRequestEntityTooLarge, "MSG_TOO_BIG")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR")
	}
	if int64(len(body)) > max {
		return nil, errf(http.StatusRequestEntityTooLarge, "MSG_TOO_BIG")
	}
	if len(body) == 0 {
		return nil, errf(http.StatusBadRequest, "MSG_EMPTY")
	}
	t, err := n.topicFromQuery(r)
	if err != nil {
		return nil, err
	}
	var deferBy time.Duration
	q, _ := httpv1.Query(r)
	if _, ok := q["defer"]; ok {
		ms, err := strconv.ParseInt(q.Get("defer"), 10, 64)
		if err != nil || ms < 0 || time.Duration(ms)*time.Millisecond > n.opts.MaxReqTimeout {
			return nil, errf(http.StatusBadRequest, "INVALID_DEFER")
		}
		deferBy = time.Duration(ms) * time.Millisecond
	}
	if err := t.putMessages(n.newMessages([][]byte{body}, deferBy, nil)); err != nil {
		return nil, publishError(err)
	}
	return "OK", nil
}

func (n *NSQD) doMPUB(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	o := n.opts
	if r.ContentLength > o.MaxBodySize {
		return nil, errf(http.StatusRequestEntityTooLarge, "BODY_TOO_BIG")
	}
	t, err := n.topicFromQuery(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, o.MaxBodySize+1))
	if err != nil {
		return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR")
	}
	if int64(len(body)) > o.MaxBodySize {
		return nil, errf(http.StatusRequestEntityTooLarge, "BODY_TOO_BIG")
	}
	q, _ := httpv1.Query(r)
	var bodies [][]byte
	if _, ok := q["binary"]; ok && parseBoolParam(q.Get("binary")) {
		var perr *protocol.Error
		bodies, perr = protocol.ParseMPUB(body, o.MaxMsgSize, o.MaxBodySize, nil)
		if perr != nil {
			return nil, errf(http.StatusRequestEntityTooLarge, strings.TrimPrefix(perr.Code, "E_"))
		}
		b := n.newBatch(body[4:], len(bodies))
		if err := t.putBatch(b, uint64(len(body)-4-4*len(bodies))); err != nil {
			return nil, publishError(err)
		}
		return "OK", nil
	} else {
		for _, line := range bytes.Split(body, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			if int64(len(line)) > o.MaxMsgSize {
				return nil, errf(http.StatusRequestEntityTooLarge, "MSG_TOO_BIG")
			}
			bodies = append(bodies, line)
		}
	}
	if len(bodies) == 0 {
		return "OK", nil
	}
	if err := t.putMessages(n.newMessages(bodies, 0, nil)); err != nil {
		return nil, publishError(err)
	}
	return "OK", nil
}

// parseBoolParam implements §8.2: "false"/"0" are false, anything else true.
func parseBoolParam(v string) bool {
	return v != "false" && v != "0"
}

// serveStats answers GET /stats (§9.5), streamed as the topics are walked
// (see writeStatsJSON, writeStatsText): chunked, without a Content-Length,
// as NSQ answers a large /stats.
func (n *NSQD) serveStats(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	q, err := httpv1.Query(r)
	if err != nil {
		httpv1.WriteError(w, httpv1.ErrInvalidRequest.Code, httpv1.ErrInvalidRequest.Text)
		return
	}
	f := StatsFilter{
		Topic:          q.Get("topic"),
		Channel:        q.Get("channel"),
		IncludeClients: parseBoolParam(q.Get("include_clients")),
		IncludeMem:     parseBoolParam(q.Get("include_mem")),
	}
	now := time.Now()
	h := w.Header()
	h.Set(httpv1.HeaderNSQContentType, httpv1.NSQContentTypeV1)
	if q.Get("format") != "json" {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		err = n.writeStatsText(w, f, now)
	} else {
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		err = n.writeStatsJSON(w, f, now)
	}
	if err != nil {
		n.logger.Debug("stats response not sent whole", "err", err)
	}
}

func (n *NSQD) doTopicCreate(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	q, _ := httpv1.Query(r)
	cfg, err := n.topicConfigFromQuery(q)
	if err != nil {
		return nil, err
	}
	var base topicPolicy
	if t, ok := n.ExistingTopic(q.Get("topic")); ok {
		base = t.topicPolicyOf()
	}
	policy, setPolicy, err := topicPolicyFromQuery(r, base)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		t, err := n.topicFromQuery(r)
		if err != nil || !setPolicy {
			return nil, err
		}
		if err := n.applyTopicPolicy(t, policy); err != nil {
			return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
		}
		return nil, nil
	}
	name := q.Get("topic")
	if name == "" {
		return nil, errf(http.StatusBadRequest, "MISSING_ARG_TOPIC")
	}
	if !protocol.IsValidTopicName(name) {
		return nil, errf(http.StatusBadRequest, "INVALID_TOPIC")
	}
	if cfg.durable && protocol.IsEphemeral(name) {
		return nil, errf(http.StatusBadRequest, "INVALID_ARG_DURABLE: ephemeral topics are never durable")
	}
	if cfg.replicas > 0 {
		return nil, n.doReplicatedCreate(r.Context(), name, cfg, q, setPolicy)
	}
	if cl := n.cluster.Load(); cl != nil {
		if _, local := n.ExistingTopic(name); !local {
			// As GetTopic: not under the name of a replicated topic.
			t, err := n.beforeNewTopic(cl, name)
			if err != nil {
				return nil, publishError(err)
			}
			if t != nil && t.fwd {
				return nil, errf(http.StatusConflict, "TOPIC_EXISTS: "+(&errReplicatedElsewhere{topic: name}).Error())
			}
		}
	}
	t, err := n.getTopicWith(name, cfg)
	if err != nil {
		if errors.Is(err, errExiting) {
			return nil, errf(http.StatusServiceUnavailable, "EXITING")
		}
		return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
	}
	if t.isDurable() != cfg.durable {
		return nil, errf(http.StatusConflict, fmt.Sprintf("TOPIC_EXISTS: topic %s exists with durable=%v", name, t.isDurable()))
	}
	if setPolicy {
		if err := n.applyTopicPolicy(t, policy); err != nil {
			return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
		}
	}
	return nil, nil
}

// topicConfigFromQuery reads Sluice's topic parameters (durable,
// retention_time, retention_bytes); nil when none is given.
func (n *NSQD) topicConfigFromQuery(q url.Values) (*topicConfig, error) {
	_, hasD := q["durable"]
	_, hasT := q["retention_time"]
	_, hasB := q["retention_bytes"]
	_, hasR := q["replicas"]
	if !hasD && !hasT && !hasB && !hasR {
		return nil, nil
	}
	cfg := n.defaultTopicConfig(q.Get("topic"))
	cfg.retention = n.nodeRetention()
	if hasD {
		d, err := strconv.ParseBool(q.Get("durable"))
		if err != nil {
			return nil, errf(http.StatusBadRequest, "INVALID_ARG_DURABLE: durable must be true or false")
		}
		cfg.durable = d
	}
	if hasT {
		d, err := time.ParseDuration(q.Get("retention_time"))
		if err != nil || d < 0 {
			return nil, errf(http.StatusBadRequest, "INVALID_ARG_RETENTION_TIME: retention_time must be a Go duration >= 0 such as 72h")
		}
		cfg.retention.Time = d
	}
	if hasB {
		b, err := strconv.ParseInt(q.Get("retention_bytes"), 10, 64)
		if err != nil || b < 0 {
			return nil, errf(http.StatusBadRequest, "INVALID_ARG_RETENTION_BYTES: retention_bytes must be an integer >= 0")
		}
		cfg.retention.Bytes = b
	}
	if hasR {
		r, err := strconv.Atoi(q.Get("replicas"))
		if err != nil || r < 1 || r > maxReplicas {
			return nil, errf(http.StatusBadRequest, fmt.Sprintf("INVALID_ARG_REPLICAS: replicas must be an integer from 1 to %d, got %q", maxReplicas, q.Get("replicas")))
		}
		if hasD && !cfg.durable {
			return nil, errf(http.StatusBadRequest, "INVALID_ARG_REPLICAS: replicated topics are durable (durable=false given)")
		}
		cfg.durable, cfg.replicas = true, r
	}
	if (hasT || hasB) && !cfg.durable {
		return nil, errf(http.StatusBadRequest, "INVALID_ARG_RETENTION: retention_time and retention_bytes apply to durable topics only")
	}
	return &cfg, nil
}

func (n *NSQD) doTopicDelete(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	q, _ := httpv1.Query(r)
	name := q.Get("topic")
	if name == "" {
		return nil, errf(http.StatusBadRequest, "MISSING_ARG_TOPIC")
	}
	if n.cluster.Load() != nil {
		if _, ok := n.cluster.Load().Assignment(name); ok {
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			if err := n.cluster.Load().DeleteTopic(ctx, name); err != nil {
				return nil, errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
			}
			return nil, nil
		}
	}
	if err := n.DeleteTopic(name); err != nil {
		return nil, errf(http.StatusNotFound, "TOPIC_NOT_FOUND")
	}
	return nil, nil
}

// doTopicAction runs fn on an existing topic; validate adds the name check
// that /topic/empty has and pause/unpause lack. The pause actions persist
// nsqd.dat themselves (§5.8).
func (n *NSQD) doTopicAction(fn func(*Topic) error, validate bool) httpv1.APIHandler {
	return func(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
		q, _ := httpv1.Query(r)
		name := q.Get("topic")
		if name == "" {
			return nil, errf(http.StatusBadRequest, "MISSING_ARG_TOPIC")
		}
		if validate && !protocol.IsValidTopicName(name) {
			return nil, errf(http.StatusBadRequest, "INVALID_TOPIC")
		}
		t, ok := n.ExistingTopic(name)
		if !ok {
			return nil, errf(http.StatusNotFound, "TOPIC_NOT_FOUND")
		}
		if err := fn(t); err != nil {
			n.logger.Error("topic action failed", "topic", name, "path", r.URL.Path, "err", err)
			return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR")
		}
		return nil, nil
	}
}

// channelParams validates topic and channel parameters in the order of §9.7
// and returns the existing topic.
func (n *NSQD) channelParams(r *http.Request) (*Topic, string, error) {
	topicName, channelName, err := channelNames(r)
	if err != nil {
		return nil, "", err
	}
	t, ok := n.ExistingTopic(topicName)
	if !ok {
		return nil, "", errf(http.StatusNotFound, "TOPIC_NOT_FOUND")
	}
	return t, channelName, nil
}

// channelNames reads and checks the topic and channel parameters.
func channelNames(r *http.Request) (topic, channel string, err error) {
	q, _ := httpv1.Query(r)
	topic, channel = q.Get("topic"), q.Get("channel")
	switch {
	case topic == "":
		return "", "", errf(http.StatusBadRequest, "MISSING_ARG_TOPIC")
	case !protocol.IsValidTopicName(topic):
		return "", "", errf(http.StatusBadRequest, "INVALID_ARG_TOPIC")
	case channel == "":
		return "", "", errf(http.StatusBadRequest, "MISSING_ARG_CHANNEL")
	case !protocol.IsValidChannelName(channel):
		return "", "", errf(http.StatusBadRequest, "INVALID_ARG_CHANNEL")
	}
	return topic, channel, nil
}

func (n *NSQD) doChannelCreate(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	t, name, err := n.channelParams(r)
	if err != nil {
		return nil, err
	}
	q, _ := httpv1.Query(r)
	start, err := parseChannelStart(q.Get("start"))
	if err != nil {
		return nil, errf(http.StatusBadRequest, "INVALID_ARG_START: "+err.Error())
	}
	if start.kind != "" && !t.isDurable() {
		return nil, errf(http.StatusBadRequest, "INVALID_ARG_START: start applies to channels of durable topics only")
	}
	existing, exists := t.existingChannel(name)
	base := defaultChannelPolicy()
	if exists {
		base = existing.channelPolicyOf()
	}
	policy, setPolicy, err := n.channelPolicyFromQuery(r, t, base)
	if err != nil {
		return nil, err
	}
	if setPolicy {
		start.policy = &policy
	}
	if t.repl != nil && !exists {
		// A replicated topic's channel is created through its group, so
		// every replica has it, from the same place in the log.
		if err := n.replicateChannel(r.Context(), t, name, start); err != nil {
			return nil, errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
		}
		exists = setPolicy // created without its policy: set it below
	}
	ch, err := n.getChannelFrom(t, name, start)
	if err != nil {
		if errors.Is(err, errExiting) {
			return nil, errf(http.StatusServiceUnavailable, "EXITING")
		}
		var pr *policyRefusal
		if errors.As(err, &pr) {
			return nil, policyError("dead_letter_topic", "%v", pr.err)
		}
		return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
	}
	if exists && setPolicy {
		return nil, n.applyChannelPolicy(t, ch, policy)
	}
	return nil, nil
}

// existingChannelParams is channelParams for an existing channel (404
// CHANNEL_NOT_FOUND otherwise).
func (n *NSQD) existingChannelParams(r *http.Request) (*Topic, *Channel, error) {
	t, name, err := n.channelParams(r)
	if err != nil {
		return nil, nil, err
	}
	ch, ok := t.existingChannel(name)
	if !ok {
		return nil, nil, errf(http.StatusNotFound, "CHANNEL_NOT_FOUND")
	}
	return t, ch, nil
}

func (n *NSQD) doChannelAction(fn func(*Topic, *Channel) error) httpv1.APIHandler {
	return func(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
		t, ch, err := n.existingChannelParams(r)
		if err != nil {
			return nil, err
		}
		if err := fn(t, ch); err != nil {
			n.logger.Error("channel action failed", "topic", t.name, "channel", ch.name, "path", r.URL.Path, "err", err)
			return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR")
		}
		return nil, nil
	}
}

// doConfig serves GET and PUT /config/:opt (§9.8).
func (n *NSQD) doConfig(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	opt := ps.ByName("opt")
	if r.Method == http.MethodPut {
		body, err := io.ReadAll(io.LimitReader(r.Body, n.opts.MaxMsgSize+1))
		if err != nil || len(body) == 0 || int64(len(body)) > n.opts.MaxMsgSize {
			return nil, errf(http.StatusRequestEntityTooLarge, "INVALID_VALUE")
		}
		switch opt {
		case "nsqlookupd_tcp_addresses":
			var addrs []string
			if err := json.Unmarshal(body, &addrs); err != nil {
				return nil, errf(http.StatusBadRequest, "INVALID_VALUE")
			}
			n.lookup.SetAddresses(addrs)
		case "log_level":
			lvl, err := config.ParseLevel(string(body))
			if err != nil {
				return nil, errf(http.StatusBadRequest, "INVALID_VALUE")
			}
			if n.opts.LogLevelVar != nil {
				n.opts.LogLevelVar.Set(lvl)
			}
			n.mu.Lock()
			n.opts.LogLevel = strings.ToLower(string(body))
			n.mu.Unlock()
		default:
			return nil, errf(http.StatusBadRequest, "INVALID_OPTION")
		}
	}
	switch opt {
	case "nsqlookupd_tcp_addresses":
		addrs := n.lookup.Addresses()
		if addrs == nil {
			addrs = []string{}
		}
		return addrs, nil
	case "log_level":
		n.mu.RLock()
		lvl := n.opts.LogLevel
		n.mu.RUnlock()
		if n.opts.LogLevelVar != nil {
			lvl = config.LevelName(n.opts.LogLevelVar.Level())
		}
		return logLevelNumber(lvl), nil
	case "statsd_prefix":
		return statsd.Prefix(n.opts.StatsdPrefix, n.opts.BroadcastAddress, n.broadcastHTTPPort()), nil
	}
	v, ok := optionByKey(n.opts, opt)
	if !ok {
		return nil, errf(http.StatusBadRequest, "INVALID_OPTION")
	}
	if s, isString := v.(string); isString {
		return s, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

func logLevelNumber(name string) int {
	switch strings.ToLower(name) {
	case "debug":
		return 1
	case "info":
		return 2
	case "warn", "warning":
		return 3
	case "error":
		return 4
	case "fatal":
		return 5
	}
	return 2
}

// optionByKey finds the option whose cfg tag is key.
func optionByKey(o *Options, key string) (any, bool) {
	v := reflect.ValueOf(o).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("cfg"); tag == key && tag != "-" {
			return v.Field(i).Interface(), true
		}
	}
	return nil, false
}
