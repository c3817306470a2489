package admin

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/internal/httpv1"
)

// routes builds the router: pages, static assets, the JSON API and /config, all under BasePath.
func (a *Admin) routes() http.Handler {
	r := httpv1.NewRouter(a.logger)
	base := strings.TrimSuffix(a.opts.BasePath, "/")
	p := func(path string) string { return base + path }

	for _, page := range []string{"/", "/topics", "/topics/:topic", "/topics/:topic/:channel",
		"/nodes", "/nodes/:node", "/counter", "/lookup"} {
		r.GET(p(page), a.servePage)
	}
	r.GET(p("/static/*filepath"), a.serveStatic)
	r.GET(p("/ping"), func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		httpv1.PlainText(w, http.StatusOK, "OK")
	})

	r.GET(p("/api/topics"), httpv1.V1(a.getTopics))
	r.GET(p("/api/topics/:topic"), httpv1.V1(a.getTopic))
	r.GET(p("/api/topics/:topic/:channel"), httpv1.V1(a.getChannel))
	r.GET(p("/api/topics/:topic/:channel/dead_letters"), httpv1.V1(a.getDeadLetters))
	r.GET(p("/api/nodes"), httpv1.V1(a.getNodes))
	r.GET(p("/api/nodes/:node"), httpv1.V1(a.getNode))
	r.GET(p("/api/counter"), httpv1.V1(a.getCounter))
	r.GET(p("/api/settings"), httpv1.V1(a.getSettings))
	r.GET(p("/api/overview"), httpv1.V1(a.getOverview))
	r.GET(p("/api/history"), httpv1.V1(a.getHistory))
	r.GET(p("/api/lookup"), httpv1.V1(a.getLookup))

	r.POST(p("/api/topics"), a.admin(a.createTopicChannel))
	r.POST(p("/api/topics/:topic"), a.admin(a.topicAction))
	r.POST(p("/api/topics/:topic/:channel"), a.admin(a.channelAction))
	r.DELETE(p("/api/topics/:topic"), a.admin(a.deleteTopic))
	r.DELETE(p("/api/topics/:topic/:channel"), a.admin(a.deleteChannel))
	r.DELETE(p("/api/nodes/:node"), a.admin(a.tombstoneTopicProducer))

	r.GET(p("/config/:opt"), httpv1.V1(a.configOption))
	r.PUT(p("/config/:opt"), httpv1.V1(a.configOption))
	return securityHeaders(r)
}

// contentSecurityPolicy lets pages run only the UI's own scripts (no inline script, no
// event-handler attributes, no eval), so even markup that slipped through escaping cannot
// execute; it also forbids framing (clickjacking of the action buttons).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"

// securityHeaders adds the browser hardening headers to every answer.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// readResult turns upstream failures of a read into the answer's message, adding the
// sampler's lost nodes; it fails with 502 when nothing could be read at all.
func (a *Admin) readResult(errs []error, nothingRead bool) (string, error) {
	if nothingRead && len(errs) > 0 {
		return "", httpv1.Err{Code: http.StatusBadGateway, Text: "UPSTREAM_ERROR: " + strings.TrimPrefix(warningText(errs), "WARNING: ")}
	}
	return warningText(append(errs, a.sampler.lostNodes()...)), nil
}

// getTopics handles GET /api/topics[?inactive=true].
func (a *Admin) getTopics(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	topics, errs := a.cluster.topics(ctx)
	q, _ := httpv1.Query(r)
	if q.Get("inactive") == "true" && a.cluster.lookupMode() {
		inactive := map[string][]string{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxFanOut)
		for _, t := range topics {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				producers, perrs := a.cluster.topicProducers(ctx, t)
				if len(producers) > 0 || len(perrs) > 0 {
					return
				}
				channels, _ := a.cluster.lookupdChannels(ctx, t)
				mu.Lock()
				inactive[t] = channels
				mu.Unlock()
			}()
		}
		wg.Wait()
		msg, err := a.readResult(errs, len(errs) >= len(a.cluster.lookupdAddrs()))
		if err != nil {
			return nil, err
		}
		return struct {
			Topics  map[string][]string `json:"topics"`
			Message string              `json:"message"`
		}{inactive, msg}, nil
	}
	msg, err := a.readResult(errs, len(topics) == 0 && a.cluster.lookupMode() && len(errs) >= len(a.cluster.lookupdAddrs()))
	if err != nil {
		return nil, err
	}
	return struct {
		Topics  []string `json:"topics"`
		Message string   `json:"message"`
	}{topics, msg}, nil
}

// getTopic handles GET /api/topics/:topic.
func (a *Admin) getTopic(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	topic := ps.ByName("topic")
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	results, serrs := a.cluster.stats(ctx, producers, topic, "", false)
	errs = append(errs, serrs...)
	now := time.Now()
	var perNode []*TopicStats
	for _, res := range results {
		perNode = append(perNode, topicsOf(res, now)...)
	}
	aggs := aggregateTopics(perNode)
	var ts *TopicStats
	for _, t := range aggs {
		if t.TopicName == topic {
			ts = t
		}
	}
	if ts == nil {
		if len(errs) == 0 && !a.topicKnown(ctx, topic) {
			return nil, httpv1.Err{Code: http.StatusNotFound, Text: "TOPIC_NOT_FOUND"}
		}
		ts = &TopicStats{Node: "*", TopicName: topic, Nodes: []*TopicStats{}, Channels: []*ChannelStats{}, E2E: &E2ELatency{}}
	}
	msg, err := a.readResult(errs, len(results) == 0 && len(producers) > 0)
	if err != nil {
		return nil, err
	}
	return struct {
		*TopicStats
		Message string `json:"message"`
	}{ts, msg}, nil
}

func (a *Admin) topicKnown(ctx context.Context, topic string) bool {
	topics, _ := a.cluster.topics(ctx)
	return contains(topics, topic)
}

// getChannel handles GET /api/topics/:topic/:channel.
func (a *Admin) getChannel(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	topic, channel := ps.ByName("topic"), ps.ByName("channel")
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	results, serrs := a.cluster.stats(ctx, producers, topic, channel, true)
	errs = append(errs, serrs...)
	now := time.Now()
	var topics []*TopicStats
	for _, res := range results {
		topics = append(topics, topicsOf(res, now)...)
	}
	markStandby(topics) // a replicated topic's followers' channels stand by
	var perNode []*ChannelStats
	for _, t := range topics {
		for _, c := range t.Channels {
			if t.TopicName == topic && c.ChannelName == channel {
				perNode = append(perNode, c)
			}
		}
	}
	aggs := aggregateChannels(perNode)
	if len(aggs) == 0 {
		if len(errs) == 0 {
			return nil, httpv1.Err{Code: http.StatusNotFound, Text: "CHANNEL_NOT_FOUND"}
		}
		aggs = []*ChannelStats{{Node: "*", TopicName: topic, ChannelName: channel, Nodes: []*ChannelStats{},
			Clients: []*ClientStats{}, E2E: &E2ELatency{}}}
	}
	msg, err := a.readResult(errs, len(results) == 0 && len(producers) > 0)
	if err != nil {
		return nil, err
	}
	return struct {
		*ChannelStats
		Message string `json:"message"`
	}{aggs[0], msg}, nil
}

// NodeView is a node in GET /api/nodes: nsqadmin's fields plus what Sluice's nodes page shows.
type NodeView struct {
	*Producer
	// Node is the address the admin reaches the node at, its key in /api/nodes/:node.
	Node          string `json:"node"`
	Reachable     bool   `json:"reachable"`
	Error         string `json:"error,omitempty"`
	Health        string `json:"health"`
	StartTime     int64  `json:"start_time"`
	TopicCount    int    `json:"topic_count"`
	ChannelCount  int    `json:"channel_count"`
	ConsumerCount int    `json:"consumer_count"`
	PublisherCnt  int    `json:"publisher_count"`
	Connections   int    `json:"connections"`
}

// getNodes handles GET /api/nodes.
func (a *Admin) getNodes(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	nodes, errs := a.cluster.nodes(ctx)
	results, serrs := a.cluster.stats(ctx, nodes, "", "", true)
	errs = append(errs, serrs...)
	byNode := map[string]*nodeResult{}
	for _, res := range results {
		byNode[res.Node] = res
	}
	failed := map[string]string{}
	for _, e := range serrs {
		if ne, ok := e.(*nodeError); ok {
			failed[ne.Addr] = ne.Err.Error()
		}
	}
	views := []*NodeView{}
	for _, n := range nodes {
		v := &NodeView{Producer: n, Node: n.HTTPAddr()}
		if res, ok := byNode[n.HTTPAddr()]; ok {
			v.Reachable = true
			v.Health = res.Stats.Health
			v.StartTime = res.Stats.StartTime
			v.TopicCount = len(res.Stats.Topics)
			for _, t := range res.Stats.Topics {
				v.ChannelCount += len(t.Channels)
				for _, c := range t.Channels {
					v.ConsumerCount += c.ClientCount
				}
			}
			v.PublisherCnt = len(res.Stats.Producers)
			v.Connections = v.ConsumerCount + v.PublisherCnt
		} else {
			v.Error = failed[n.HTTPAddr()]
		}
		views = append(views, v)
	}
	for _, l := range a.sampler.lostProducers() {
		views = append(views, &NodeView{Producer: l.p, Node: l.p.HTTPAddr(), Error: l.err.Err.Error()})
	}
	msg, err := a.readResult(errs, len(nodes) == 0 && a.cluster.lookupMode() && len(errs) >= len(a.cluster.lookupdAddrs()))
	if err != nil {
		return nil, err
	}
	return struct {
		Nodes   []*NodeView `json:"nodes"`
		Message string      `json:"message"`
	}{views, msg}, nil
}

// getNode handles GET /api/nodes/:node.
func (a *Admin) getNode(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	addr := ps.ByName("node")
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	nodes, errs := a.cluster.nodes(ctx)
	var node *Producer
	for _, n := range nodes {
		if n.HTTPAddr() == addr {
			node = n
		}
	}
	if node == nil {
		return nil, httpv1.Err{Code: http.StatusNotFound, Text: "NODE_NOT_FOUND"}
	}
	results, serrs := a.cluster.stats(ctx, []*Producer{node}, "", "", true)
	errs = append(errs, serrs...)
	resp := struct {
		Node          string         `json:"node"`
		Hostname      string         `json:"hostname"`
		Version       string         `json:"version"`
		Health        string         `json:"health"`
		StartTime     int64          `json:"start_time"`
		Topics        []*TopicStats  `json:"topics"`
		Publishers    []*ClientStats `json:"publishers"`
		TotalMessages int64          `json:"total_messages"`
		TotalClients  int64          `json:"total_clients"`
		Message       string         `json:"message"`
	}{Node: addr, Hostname: node.Hostname, Version: node.Version, Topics: []*TopicStats{}, Publishers: []*ClientStats{}}
	if len(results) == 1 {
		res := results[0]
		now := time.Now()
		resp.Health, resp.StartTime = res.Stats.Health, res.Stats.StartTime
		resp.Topics = topicsOf(res, now)
		if resp.Topics == nil {
			resp.Topics = []*TopicStats{}
		}
		for _, t := range resp.Topics {
			resp.TotalMessages += t.MessageCount
			for _, c := range t.Channels {
				resp.TotalClients += int64(c.ClientCount)
			}
		}
		for _, p := range res.Stats.Producers {
			cp := *p
			cp.Node = addr
			cp.Connected = connectedFor(cp.ConnectTS, now)
			resp.Publishers = append(resp.Publishers, &cp)
		}
	}
	msg, err := a.readResult(errs, len(results) == 0)
	if err != nil {
		return nil, err
	}
	resp.Message = msg
	return resp, nil
}

// counterStat is one entry of GET /api/counter.
type counterStat struct {
	Node         string `json:"node"`
	TopicName    string `json:"topic_name"`
	ChannelName  string `json:"channel_name"`
	MessageCount int64  `json:"message_count"`
}

// getCounter handles GET /api/counter: every channel's message_count on every node.
func (a *Admin) getCounter(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	nodes, errs := a.cluster.nodes(ctx)
	results, serrs := a.cluster.stats(ctx, nodes, "", "", false)
	errs = append(errs, serrs...)
	stats := map[string]counterStat{}
	var total int64
	standby := standbyReplicas(results) // a replicated topic's channels count once, on its leader
	for _, res := range results {
		for _, t := range res.Stats.Topics {
			if standby[nodeTopic{res.Node, t.TopicName}] {
				continue
			}
			for _, c := range t.Channels {
				stats[t.TopicName+":"+c.ChannelName+":"+res.Node] = counterStat{res.Node, t.TopicName, c.ChannelName, c.MessageCount}
				total += c.MessageCount
			}
		}
	}
	msg, err := a.readResult(errs, len(results) == 0 && len(nodes) > 0)
	if err != nil {
		return nil, err
	}
	return struct {
		Stats   map[string]counterStat `json:"stats"`
		Total   int64                  `json:"total"`
		Message string                 `json:"message"`
	}{stats, total, msg}, nil
}

// getSettings handles GET /api/settings: what the UI needs to know about this server and user.
func (a *Admin) getSettings(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	return struct {
		Version          string `json:"version"`
		BasePath         string `json:"base_path"`
		User             string `json:"user"`
		IsAdmin          bool   `json:"is_admin"`
		LookupMode       bool   `json:"lookup_mode"`
		SampleIntervalMS int64  `json:"sample_interval_ms"`
		HistoryWindowS   int64  `json:"history_window_s"`
	}{config.Version, a.opts.BasePath, a.user(r), a.isAdmin(r), a.cluster.lookupMode(),
		a.opts.SampleInterval.Milliseconds(), int64(a.opts.HistoryWindow.Seconds())}, nil
}

// overviewTopic is one row of the topics page: Depth is the topic's own queue, ChannelDepth
// the sum of its channels' queues (the overview's Depth adds both up for the cluster).
type overviewTopic struct {
	TopicName     string     `json:"topic_name"`
	Depth         int64      `json:"depth"`
	ChannelDepth  int64      `json:"channel_depth"`
	InFlightCount int64      `json:"in_flight_count"`
	MessageCount  int64      `json:"message_count"`
	ClientCount   int        `json:"client_count"`
	Paused        bool       `json:"paused"`
	Durable       bool       `json:"durable,omitempty"`
	Channels      []string   `json:"channels"`
	NodeCount     int        `json:"node_count"`
	RateIn        *float64   `json:"rate_in"`
	Sparkline     []*float64 `json:"sparkline"`
	// Replicated topics only: replicas, leader, leader_node, replica_lag (see TopicReplica).
	*TopicReplica
}

// sparklinePoints is how many recent points the topics page plots per topic.
const sparklinePoints = 60

// getOverview handles GET /api/overview: the topics page's rows and the cluster's figures.
func (a *Admin) getOverview(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	nodes, errs := a.cluster.nodes(ctx)
	results, serrs := a.cluster.stats(ctx, nodes, "", "", false)
	errs = append(errs, serrs...)
	var names []string
	if a.cluster.lookupMode() {
		var terrs []error
		names, terrs = a.cluster.topics(ctx)
		errs = append(errs, terrs...)
	}
	now := time.Now()
	var perNode []*TopicStats
	for _, res := range results {
		perNode = append(perNode, topicsOf(res, now)...)
	}
	byName := map[string]*TopicStats{}
	for _, t := range aggregateTopics(perNode) {
		byName[t.TopicName] = t
		if !contains(names, t.TopicName) {
			names = append(names, t.TopicName)
		}
	}
	sort.Strings(names)
	rows := []*overviewTopic{}
	var depth, inFlight int64
	for _, name := range names {
		row := &overviewTopic{TopicName: name, Channels: []string{}}
		if t, ok := byName[name]; ok {
			row.Depth, row.InFlightCount, row.MessageCount = t.Depth, t.InFlight, t.MessageCount
			row.ClientCount, row.Paused, row.NodeCount = t.ClientCount, t.Paused, len(t.Nodes)
			row.Durable, row.TopicReplica = t.Durable, t.TopicReplica
			for _, c := range t.Channels {
				row.Channels = append(row.Channels, c.ChannelName)
				row.ChannelDepth += c.Depth
			}
		}
		depth += row.Depth + row.ChannelDepth
		inFlight += row.InFlightCount
		k := SeriesKey{Topic: name}
		in, _ := a.sampler.latest(k)
		row.RateIn = nanToNil(in)
		row.Sparkline = a.sampler.series(k, sparklinePoints).In
		rows = append(rows, row)
	}
	in, out := a.sampler.latest(SeriesKey{})
	msg, err := a.readResult(errs, len(results) == 0 && len(nodes) > 0)
	if err != nil {
		return nil, err
	}
	return struct {
		Topics        []*overviewTopic `json:"topics"`
		NodeCount     int              `json:"node_count"`
		Depth         int64            `json:"depth"`
		InFlightCount int64            `json:"in_flight_count"`
		RateIn        *float64         `json:"rate_in"`
		RateOut       *float64         `json:"rate_out"`
		Message       string           `json:"message"`
	}{rows, len(nodes), depth, inFlight, nanToNil(in), nanToNil(out), msg}, nil
}

// getHistory handles GET /api/history?topic=T&channel=C&points=N: the series the graphs plot
// (the cluster's without topic). See History for what in, out and depth mean.
func (a *Admin) getHistory(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	q, _ := httpv1.Query(r)
	k := SeriesKey{Topic: q.Get("topic"), Channel: q.Get("channel")}
	if k.Topic == "" && k.Channel != "" {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_ARG_TOPIC"}
	}
	n := 0
	if s := q.Get("points"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_POINTS"}
		}
		n = v
	}
	s := a.sampler.series(k, n)
	return struct {
		Series
		IntervalMS int64  `json:"interval_ms"`
		WindowS    int64  `json:"window_s"`
		Message    string `json:"message"`
	}{s, a.opts.SampleInterval.Milliseconds(), int64(a.opts.HistoryWindow.Seconds()), warningText(a.sampler.lostNodes())}, nil
}

// lookupTopic is one topic's registrations in nsqlookupd.
type lookupTopic struct {
	Topic     string   `json:"topic"`
	Channels  []string `json:"channels"`
	Producers []string `json:"producers"`
}

// getLookup handles GET /api/lookup: every topic registered in nsqlookupd, its channels and
// the nodes producing it (empty in direct mode).
func (a *Admin) getLookup(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	out := []*lookupTopic{}
	var errs []error
	if a.cluster.lookupMode() {
		topics, terrs := a.cluster.topics(ctx)
		errs = append(errs, terrs...)
		out = make([]*lookupTopic, len(topics))
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxFanOut)
		for i, t := range topics {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				lt := &lookupTopic{Topic: t, Producers: []string{}}
				var e1, e2 []error
				lt.Channels, e1 = a.cluster.lookupdChannels(ctx, t)
				producers, e2 := a.cluster.topicProducers(ctx, t)
				for _, p := range producers {
					lt.Producers = append(lt.Producers, p.HTTPAddr())
				}
				out[i] = lt
				mu.Lock()
				errs = append(errs, e1...)
				errs = append(errs, e2...)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	msg, err := a.readResult(dedupErrors(errs), len(out) == 0 && len(errs) > 0 && len(errs) >= len(a.cluster.lookupdAddrs()))
	if err != nil {
		return nil, err
	}
	return struct {
		Topics   []*lookupTopic `json:"topics"`
		Lookupds []string       `json:"lookupds"`
		Message  string         `json:"message"`
	}{out, a.cluster.lookupdAddrs(), msg}, nil
}

func dedupErrors(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}
