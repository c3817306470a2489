package admin

import (
	"context"
	"encoding/json"
	"io"
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

// user returns who the request says it is (the ACL header).
func (a *Admin) user(r *http.Request) string {
	return r.Header.Get(a.opts.ACLHTTPHeader)
}

// isAdmin tells whether r may act: everyone when no admin users are configured.
func (a *Admin) isAdmin(r *http.Request) bool {
	return len(a.opts.AdminUsers) == 0 || slices.Contains(a.opts.AdminUsers, a.user(r))
}

// admin wraps a mutating handler: 403 FORBIDDEN for non-admins.
func (a *Admin) admin(h httpv1.APIHandler) httprouter.Handle {
	return httpv1.V1(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
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
func (a *Admin) record(r *http.Request, action, topic, channel, node string) {
	user, _, _ := r.BasicAuth()
	a.logger.Info("admin action", "action", action, "topic", topic, "channel", channel, "node", node,
		"user", a.user(r), "basic_auth_user", user, "remote_ip", remoteIP(r), "user_agent", r.UserAgent())
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

func decodeBody(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, v) != nil {
		return httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_BODY"}
	}
	return nil
}

func (a *Admin) reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.opts.HTTPClientRequestTimeout+a.opts.HTTPClientConnectTimeout)
}

// createTopicChannel handles POST /api/topics {"topic","channel"}.
func (a *Admin) createTopicChannel(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	var body struct {
		Topic   string `json:"topic"`
		Channel string `json:"channel"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	if !protocol.IsValidTopicName(body.Topic) {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_TOPIC"}
	}
	if body.Channel != "" && !protocol.IsValidChannelName(body.Channel) {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_CHANNEL"}
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	tq := url.Values{"topic": {body.Topic}}
	cq := url.Values{"topic": {body.Topic}, "channel": {body.Channel}}
	var errs []error
	attempts := 0
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/topic/create", tq)...)
		if body.Channel != "" {
			attempts += len(a.cluster.lookupdAddrs())
			errs = append(errs, a.cluster.lookupdPost(ctx, "/channel/create", cq)...)
			producers, perrs := a.cluster.topicProducers(ctx, body.Topic)
			errs = append(errs, perrs...)
			attempts += len(producers)
			errs = append(errs, a.cluster.nsqdPost(ctx, producers, "/channel/create", cq)...)
		}
	} else {
		nodes, nerrs := a.cluster.nodes(ctx)
		errs = append(errs, nerrs...)
		attempts += len(nodes) + len(nerrs)
		errs = append(errs, a.cluster.nsqdPost(ctx, nodes, "/topic/create", tq)...)
		if body.Channel != "" {
			attempts += len(nodes)
			errs = append(errs, a.cluster.nsqdPost(ctx, nodes, "/channel/create", cq)...)
		}
	}
	a.record(r, "create_topic", body.Topic, "", "")
	if body.Channel != "" {
		a.record(r, "create_channel", body.Topic, body.Channel, "")
	}
	return actionResult(errs, attempts)
}

// topicAction handles POST /api/topics/:topic {"action": pause|unpause|empty}.
func (a *Admin) topicAction(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	return a.pauseEmpty(r, ps.ByName("topic"), "")
}

// channelAction handles POST /api/topics/:topic/:channel {"action": pause|unpause|empty}.
func (a *Admin) channelAction(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	return a.pauseEmpty(r, ps.ByName("topic"), ps.ByName("channel"))
}

func (a *Admin) pauseEmpty(r *http.Request, topic, channel string) (any, error) {
	var body struct {
		Action string `json:"action"`
	}
	if err := decodeBody(r, &body); err != nil {
		return nil, err
	}
	switch body.Action {
	case "pause", "unpause", "empty":
	default:
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ACTION"}
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	kind, q := "topic", url.Values{"topic": {topic}}
	if channel != "" {
		kind = "channel"
		q.Set("channel", channel)
	}
	errs = append(errs, a.cluster.nsqdPost(ctx, producers, "/"+kind+"/"+body.Action, q)...)
	a.record(r, body.Action+"_"+kind, topic, channel, "")
	return actionResult(errs, len(producers)+countLookupErrs(errs))
}

// deleteTopic handles DELETE /api/topics/:topic: on every producing nsqd, then in every lookupd.
func (a *Admin) deleteTopic(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	topic := ps.ByName("topic")
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
	ctx, cancel := a.reqCtx(r)
	defer cancel()
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
