package admin

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/internal/httpv1"
	"github.com/sluicemq/sluice/protocol"
)

// messageResponse is the body of every action answer: "" or a WARNING naming failures.
type messageResponse struct {
	Message string `json:"message"`
}

// user returns who the request says it is (the ACL header). A header given more than once
// is ambiguous (a client-sent value next to the proxy's) and names nobody.
func (a *Admin) user(r *http.Request) string {
	if a.opts.ACLHTTPHeader == "" {
		return ""
	}
	vals := r.Header.Values(a.opts.ACLHTTPHeader)
	if len(vals) != 1 {
		return ""
	}
	return strings.TrimSpace(vals[0])
}

// isAdmin tells whether r may act: everyone when no admin users are configured, else only
// a request whose ACL header names one of them (an empty name never matches).
func (a *Admin) isAdmin(r *http.Request) bool {
	if len(a.opts.AdminUsers) == 0 {
		return true
	}
	u := a.user(r)
	return u != "" && slices.Contains(a.opts.AdminUsers, u)
}

// checkNames answers 400 INVALID_TOPIC / INVALID_CHANNEL for names nsqd would refuse, so
// an action never sends garbage upstream.
func checkNames(topic, channel string, withChannel bool) error {
	if !protocol.IsValidTopicName(topic) {
		return httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_TOPIC"}
	}
	if withChannel && !protocol.IsValidChannelName(channel) {
		return httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_CHANNEL"}
	}
	return nil
}

// checkMutation refuses a mutating API request a browser could have been tricked into
// sending from another site (CSRF): a request the browser marks as cross-site is 403
// CROSS_SITE_REQUEST, and a request with a body must declare it as JSON (415
// UNSUPPORTED_MEDIA_TYPE otherwise), which an HTML form cannot do and a cross-origin
// script cannot do without a CORS preflight this server never grants. A DELETE without a
// body is accepted as is: browsers never send DELETE cross-site without that preflight.
func checkMutation(r *http.Request) error {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return httpv1.Err{Code: http.StatusForbidden, Text: "CROSS_SITE_REQUEST"}
	}
	hasBody := r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody)
	ct := r.Header.Get("Content-Type")
	if !hasBody && ct == "" && r.Method == http.MethodDelete {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return httpv1.Err{Code: http.StatusUnsupportedMediaType, Text: "UNSUPPORTED_MEDIA_TYPE: send Content-Type: application/json"}
	}
	return nil
}

// admin wraps a mutating handler: CSRF checks first (checkMutation), then 403 FORBIDDEN
// for non-admins.
func (a *Admin) admin(h httpv1.APIHandler) httprouter.Handle {
	return httpv1.V1(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
		if err := checkMutation(r); err != nil {
			a.logger.Warn("admin action refused", "reason", err.Error(), "remote_ip", remoteIP(r), "method", r.Method, "path", r.URL.Path,
				"content_type", r.Header.Get("Content-Type"), "origin", r.Header.Get("Origin"))
			return nil, err
		}
		if !a.isAdmin(r) {
			a.logger.Warn("admin action refused", "user", a.user(r), "remote_ip", remoteIP(r), "method", r.Method, "path", r.URL.Path)
			return nil, httpv1.Err{Code: http.StatusForbidden, Text: "FORBIDDEN"}
		}
		return h(w, r, ps)
	})
}

// actionResult turns the errors of an action that made `attempts` upstream calls into the
// answer: 502 when every call failed, 200 with a WARNING when some did.
func actionResult(errs []error, attempts int) (any, error) {
	if len(errs) > 0 && len(errs) >= attempts {
		return nil, httpv1.Err{Code: http.StatusBadGateway, Text: "UPSTREAM_ERROR: " + strings.TrimPrefix(warningText(errs), "WARNING: ")}
	}
	return messageResponse{Message: warningText(errs)}, nil
}

// record logs an admin action and queues its notification.
// attrs are extra key-value pairs for the log line (what was set, how many were moved).
func (a *Admin) record(r *http.Request, action, topic, channel, node string, attrs ...any) {
	user, _, _ := r.BasicAuth()
	a.logger.Info("admin action", append([]any{"action", action, "topic", topic, "channel", channel, "node", node,
		"user", a.user(r), "basic_auth_user", user, "remote_ip", remoteIP(r), "user_agent", r.UserAgent()}, attrs...)...)
	a.notifier.enqueue(Notification{
		Action: action, Topic: topic, Channel: channel, Node: node, Timestamp: time.Now().Unix(),
		User: user, RemoteIP: remoteIP(r), UserAgent: r.UserAgent(), URL: r.URL.String(), Via: a.hostname,
	})
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// decodeBody reads the JSON body into each of vs (a typed struct and a map of its raw
// keys, say).
func decodeBody(r *http.Request, vs ...any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_BODY"}
	}
	for _, v := range vs {
		if json.Unmarshal(body, v) != nil {
			return httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_BODY"}
		}
	}
	return nil
}

func (a *Admin) reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.opts.HTTPClientRequestTimeout+a.opts.HTTPClientConnectTimeout)
}

// createTopicChannel handles POST /api/topics {"topic","channel","durable","replicas"} plus
// optional message policy settings: "ttl", "max_depth", "overflow" for the topic and
// "max_attempts", "dead_letter_topic", "channel_ttl" for the channel. nsqlookupd only
// registers names, so a topic that is durable or has settings is created on the nsqd nodes
// themselves (every node), and so is its channel: one created later by a consumer's SUB
// would not have the settings. A value nsqd refuses everywhere is a 400 with nsqd's
// message, and nothing after it is created. With replicas (1 to 7) the topic is replicated
// and created through one node only (see createReplicated).
func (a *Admin) createTopicChannel(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	var body struct {
		Topic   string `json:"topic"`
		Channel string `json:"channel"`
		Durable bool   `json:"durable"`
	}
	var raw map[string]json.RawMessage
	if err := decodeBody(r, &body, &raw); err != nil {
		return nil, err
	}
	if !protocol.IsValidTopicName(body.Topic) {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_TOPIC"}
	}
	if body.Channel != "" && !protocol.IsValidChannelName(body.Channel) {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_CHANNEL"}
	}
	tq := url.Values{"topic": {body.Topic}}
	cq := url.Values{"topic": {body.Topic}, "channel": {body.Channel}}
	topicSettings, err := policyParams(raw, topicPolicyKeys, tq)
	if err != nil {
		return nil, err
	}
	nodeCQ := url.Values{"topic": {body.Topic}, "channel": {body.Channel}}
	channelSettings, err := policyParams(raw, createChannelPolicyKeys, nodeCQ)
	if err != nil {
		return nil, err
	}
	if channelSettings > 0 && body.Channel == "" {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_CHANNEL: max_attempts, dead_letter_topic and channel_ttl need a channel"}
	}
	replicas, err := replicasParam(raw)
	if err != nil {
		return nil, err
	}
	if replicas > 0 {
		if d, given := raw["durable"]; given && string(d) != "null" && !body.Durable {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_REPLICAS: replicated topics are durable (durable=false given)"}
		}
		if protocol.IsEphemeral(body.Topic) {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_REPLICAS: ephemeral topics are never replicated"}
		}
		return a.createReplicated(r, replicatedCreate{topic: body.Topic, channel: body.Channel, replicas: replicas,
			topicQ: tq, channelQ: nodeCQ, topicSettings: topicSettings, channelSettings: channelSettings})
	}
	if body.Durable {
		if protocol.IsEphemeral(body.Topic) {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_DURABLE: ephemeral topics are never durable"}
		}
		tq.Set("durable", "true")
	}
	onNodes := body.Durable || topicSettings > 0 || channelSettings > 0 || !a.cluster.lookupMode()
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	var errs []error
	attempts := 0
	var nodes []*Producer
	if onNodes {
		var nerrs []error
		nodes, nerrs = a.cluster.nodes(ctx)
		stage := append(nerrs, a.cluster.nsqdPost(ctx, nodes, "/topic/create", tq)...)
		if refusedEverywhere(stage, len(nodes)+len(nerrs)) {
			return policyResult(stage, len(nodes)+len(nerrs))
		}
		errs = append(errs, stage...)
		attempts += len(nodes) + len(nerrs)
	}
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/topic/create", url.Values{"topic": {body.Topic}})...)
	}
	a.record(r, "create_topic", body.Topic, "", "", "settings", settingsText(tq))
	if body.Channel == "" {
		return policyResult(errs, attempts)
	}
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/channel/create", cq)...)
	}
	targets := nodes
	if !onNodes {
		var perrs []error
		targets, perrs = a.cluster.topicProducers(ctx, body.Topic)
		errs = append(errs, perrs...)
	}
	stage := a.cluster.nsqdPost(ctx, targets, "/channel/create", nodeCQ)
	if refusedEverywhere(stage, len(targets)) {
		_, err := policyResult(stage, len(targets))
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: err.Error() + " (topic " + body.Topic + " was created, channel " + body.Channel + " was not)"}
	}
	errs = append(errs, stage...)
	attempts += len(targets)
	a.record(r, "create_channel", body.Topic, body.Channel, "", "settings", settingsText(nodeCQ))
	return policyResult(errs, attempts)
}

// topicAction handles POST /api/topics/:topic {"action": pause|unpause|empty|config|step-down}.
func (a *Admin) topicAction(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	return a.act(r, ps.ByName("topic"), "")
}

// channelAction handles POST /api/topics/:topic/:channel {"action":
// pause|unpause|empty|config|redrive}.
func (a *Admin) channelAction(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	return a.act(r, ps.ByName("topic"), ps.ByName("channel"))
}

// act dispatches a topic's (channel "") or a channel's action. config carries the settings
// beside the action ({"action":"config","ttl":"10m"}), redrive an optional max.
func (a *Admin) act(r *http.Request, topic, channel string) (any, error) {
	if err := checkNames(topic, channel, channel != ""); err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	var action string
	if raw, ok := body["action"]; ok && json.Unmarshal(raw, &action) != nil {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ACTION"}
	}
	switch {
	case action == "pause" || action == "unpause" || action == "empty":
		return a.pauseEmpty(r, topic, channel, action)
	case action == "config":
		return a.configure(r, topic, channel, body)
	case action == "redrive" && channel != "":
		return a.redrive(r, topic, channel, body)
	case action == "step-down" && channel == "":
		return a.stepDown(r, topic)
	}
	return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ACTION"}
}

func (a *Admin) pauseEmpty(r *http.Request, topic, channel, action string) (any, error) {
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	kind, q := "topic", url.Values{"topic": {topic}}
	if channel != "" {
		kind = "channel"
		q.Set("channel", channel)
	}
	errs = append(errs, a.cluster.nsqdPost(ctx, producers, "/"+kind+"/"+action, q)...)
	a.record(r, action+"_"+kind, topic, channel, "")
	return actionResult(errs, len(producers)+countLookupErrs(errs))
}

// deleteTopic handles DELETE /api/topics/:topic: on every producing nsqd, then in every lookupd.
func (a *Admin) deleteTopic(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	topic := ps.ByName("topic")
	if err := checkNames(topic, "", false); err != nil {
		return nil, err
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	q := url.Values{"topic": {topic}}
	errs = append(errs, ignoreNotFound(a.cluster.nsqdPost(ctx, producers, "/topic/delete", q))...)
	attempts := len(producers) + countLookupErrs(errs)
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/topic/delete", q)...)
	}
	a.record(r, "delete_topic", topic, "", "")
	return actionResult(errs, attempts)
}

// deleteChannel handles DELETE /api/topics/:topic/:channel.
func (a *Admin) deleteChannel(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	topic, channel := ps.ByName("topic"), ps.ByName("channel")
	if err := checkNames(topic, channel, true); err != nil {
		return nil, err
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	q := url.Values{"topic": {topic}, "channel": {channel}}
	errs = append(errs, ignoreNotFound(a.cluster.nsqdPost(ctx, producers, "/channel/delete", q))...)
	attempts := len(producers) + countLookupErrs(errs)
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, ignoreNotFound(a.cluster.lookupdPost(ctx, "/channel/delete", q))...)
	}
	a.record(r, "delete_channel", topic, channel, "")
	return actionResult(errs, attempts)
}

// tombstoneTopicProducer handles DELETE /api/nodes/:node {"topic"}: tombstone the node for
// the topic in every lookupd, then delete the topic on that node.
func (a *Admin) tombstoneTopicProducer(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	node := ps.ByName("node")
	var body struct {
		Topic string `json:"topic"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if body.Topic == "" {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_TOPIC"}
	}
	if err := checkNames(body.Topic, "", false); err != nil {
		return nil, err
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	// Only a node the cluster knows (listed, or remembered by the sampler) is contacted:
	// the address comes from the URL and must not make the admin POST to arbitrary hosts.
	if !a.knownNode(ctx, node) {
		return nil, httpv1.Err{Code: http.StatusNotFound, Text: "NODE_NOT_FOUND"}
	}
	if a.replicatedOn(ctx, node, body.Topic) {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "REPLICATED_TOPIC: topic " + body.Topic + " is replicated, and nsqd deletes a " +
			"replicated topic on every replica: one replica cannot be tombstoned (nsqd replaces a replica gone longer than --replica-timeout)"}
	}
	var errs []error
	attempts := 1
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/topic/tombstone", url.Values{"topic": {body.Topic}, "node": {node}})...)
	}
	errs = append(errs, ignoreNotFound(a.cluster.nsqdPost(ctx, []*Producer{{addr: node}}, "/topic/delete", url.Values{"topic": {body.Topic}}))...)
	a.record(r, "tombstone_topic_producer", body.Topic, "", node)
	return actionResult(errs, attempts)
}

// knownNode tells whether addr (host:http_port) is a node nsqlookupd (or the direct-mode
// list) reports, or one the sampler still remembers.
func (a *Admin) knownNode(ctx context.Context, addr string) bool {
	nodes, _ := a.cluster.nodes(ctx)
	for _, n := range nodes {
		if n.HTTPAddr() == addr {
			return true
		}
	}
	return a.sampler.remembers(addr)
}

func ignoreNotFound(errs []error) []error {
	var out []error
	for _, e := range errs {
		if !isNotFound(e) {
			out = append(out, e)
		}
	}
	return out
}

func countLookupErrs(errs []error) int {
	n := 0
	for _, e := range errs {
		if ne, ok := e.(*nodeError); ok && ne.Kind == "nsqlookupd" {
			n++
		}
	}
	return n
}

// configOption handles GET and PUT /config/:opt (nsqlookupd_http_addresses, log_level).
func (a *Admin) configOption(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	ip := net.ParseIP(remoteIP(r))
	if a.cidr == nil || ip == nil || !a.cidr.Contains(ip) {
		return nil, httpv1.Err{Code: http.StatusForbidden, Text: "FORBIDDEN"}
	}
	opt := ps.ByName("opt")
	if r.Method == http.MethodPut {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
		if err != nil || len(body) == 0 || len(body) > 1<<20 {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_VALUE"}
		}
		switch opt {
		case "nsqlookupd_http_addresses":
			var addrs []string
			if json.Unmarshal(body, &addrs) != nil || len(addrs) == 0 {
				return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_VALUE"}
			}
			for _, addr := range addrs {
				if checkNodeAddr(addr) != nil {
					return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_VALUE"}
				}
			}
			a.cluster.setLookupdAddrs(addrs)
		case "log_level":
			if a.opts.LogLevel == nil {
				return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_OPTION"}
			}
			lvl, err := config.ParseLevel(strings.TrimSpace(string(body)))
			if err != nil {
				return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_VALUE"}
			}
			a.opts.LogLevel.Set(lvl)
		default:
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_OPTION"}
		}
		a.logger.Info("config changed", "option", opt, "value", string(body), "remote_ip", remoteIP(r))
	}
	switch opt {
	case "nsqlookupd_http_addresses":
		return a.cluster.lookupdAddrs(), nil
	case "log_level":
		if a.opts.LogLevel == nil {
			return "info", nil
		}
		return config.LevelFlag{Var: a.opts.LogLevel}.String(), nil
	}
	return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_OPTION"}
}
