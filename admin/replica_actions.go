package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemq/sluice/internal/httpv1"
)

// Creating a replicated topic from the admin: POST /api/topics {"topic":"T","replicas":3}.

const (
	// maxReplicas is nsqd's bound on replicas=.
	maxReplicas = 7
	// replicaCreateTimeout bounds the replicated create: nsqd answers once the nodes have
	// agreed on the topic's placement through Raft and its group has a leader, and gives
	// up after 30 s.
	replicaCreateTimeout = 35 * time.Second
	// replicaWait bounds how long, once the topic is created, the admin waits for its
	// replicas to list it (to create the channel on one, or to set the settings on each).
	replicaWait = 10 * time.Second
)

// replicasParam reads the create body's "replicas": 0 (not replicated) when it is absent,
// null or "" (the form's empty field), else an integer from 1 to maxReplicas given as a JSON
// number or string; anything else is 400 INVALID_ARG_REPLICAS.
func replicasParam(raw map[string]json.RawMessage) (int, error) {
	v, ok := raw["replicas"]
	if !ok || string(v) == "null" {
		return 0, nil
	}
	s, err := settingValue(v)
	if err == nil && strings.TrimSpace(s) == "" {
		return 0, nil
	}
	n, aerr := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || aerr != nil || n < 1 || n > maxReplicas {
		return 0, httpv1.Err{Code: http.StatusBadRequest,
			Text: fmt.Sprintf("INVALID_ARG_REPLICAS: replicas must be an integer from 1 to %d, got %s", maxReplicas, v)}
	}
	return n, nil
}

// replicatedCreate is a create request for a replicated topic.
type replicatedCreate struct {
	topic, channel string
	replicas       int
	// nsqd's parameters: the topic's with its settings, the channel's with its own, and
	// how many settings each carries.
	topicQ, channelQ               url.Values
	topicSettings, channelSettings int
}

// createReplicated creates a replicated topic. POST /topic/create?topic=T&replicas=N (with
// the topic's settings) goes to ONE nsqd, the first node listed that can be reached: nsqd
// places the topic on N nodes itself, through Raft, so the admin never sends it to the
// others. nsqd's refusal is the answer, in nsqd's words (400 INVALID_..., 409
// TOPIC_EXISTS, 503 REPLICATION_FAILED). The topic is then registered with nsqlookupd like
// any created topic, and a channel given is created on one replica, which creates it on
// the others. nsqd keeps message policies per node and does not replicate them, so
// settings given are also sent to every other replica, once it lists the topic.
func (a *Admin) createReplicated(r *http.Request, c replicatedCreate) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(),
		max(a.opts.HTTPClientRequestTimeout, replicaCreateTimeout)+a.opts.HTTPClientConnectTimeout+replicaWait)
	defer cancel()
	nodes, errs := a.cluster.nodes(ctx)
	if len(nodes) == 0 {
		if len(errs) > 0 {
			return actionResult(errs, len(errs))
		}
		return nil, httpv1.Err{Code: http.StatusServiceUnavailable, Text: "NO_NODES: no nsqd to create the replicated topic on"}
	}
	c.topicQ.Set("replicas", strconv.Itoa(c.replicas))
	creator, err := a.createOnOne(ctx, nodes, c.topicQ)
	if err != nil {
		return nil, err
	}
	attempts := 1 + len(errs)
	a.record(r, "create_topic", c.topic, "", creator.HTTPAddr(), "settings", settingsText(c.topicQ))
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/topic/create", url.Values{"topic": {c.topic}})...)
	}

	want := 1
	if c.topicSettings > 0 || c.channelSettings > 0 {
		want = c.replicas
	}
	holders, plain, herrs := a.replicaHolders(ctx, nodes, creator, c.topic, want)
	if contains(plain, creator.HTTPAddr()) {
		return nil, httpv1.Err{Code: http.StatusBadGateway, Text: "UPSTREAM_ERROR: nsqd " + creator.HTTPAddr() +
			" created topic " + c.topic + " without replicas: it does not support replicated topics"}
	}
	if len(holders) < want {
		errs = append(errs, herrs...)
		if want > 1 {
			errs = append(errs, fmt.Errorf("only %d of the %d replicas of %s listed it within %s, and only they got its settings",
				len(holders), c.replicas, c.topic, replicaWait))
		}
	}
	if c.topicSettings > 0 {
		q := url.Values{}
		for k, v := range c.topicQ {
			if k != "replicas" {
				q[k] = v
			}
		}
		var others []*Producer // the creator applied them already
		for _, h := range holders {
			if h != creator {
				others = append(others, h)
			}
		}
		attempts += len(others)
		errs = append(errs, a.cluster.nsqdPost(ctx, others, "/topic/config", q)...)
	}
	if c.channel == "" {
		return policyResult(errs, attempts)
	}

	if len(holders) == 0 {
		return nil, httpv1.Err{Code: http.StatusBadGateway, Text: fmt.Sprintf(
			"UPSTREAM_ERROR: topic %s was created, but no replica listed it within %s, so channel %s was not created", c.topic, replicaWait, c.channel)}
	}
	// The channel is created on one replica; with settings on every one (each applies them
	// to the channel, created there by then or now).
	targets := holders[:1]
	if c.channelSettings > 0 {
		targets = holders
	}
	if ferrs := a.cluster.nsqdPost(ctx, targets[:1], "/channel/create", c.channelQ); len(ferrs) > 0 {
		text := "UPSTREAM_ERROR: " + ferrs[0].Error()
		code := http.StatusBadGateway
		if rc, msg := upstreamRefusal(ferrs[0]); rc == http.StatusBadRequest {
			text, code = msg, http.StatusBadRequest
		}
		return nil, httpv1.Err{Code: code, Text: text + " (topic " + c.topic + " was created, channel " + c.channel + " was not)"}
	}
	attempts += len(targets)
	errs = append(errs, a.cluster.nsqdPost(ctx, targets[1:], "/channel/create", c.channelQ)...)
	if a.cluster.lookupMode() {
		attempts += len(a.cluster.lookupdAddrs())
		errs = append(errs, a.cluster.lookupdPost(ctx, "/channel/create", url.Values{"topic": {c.topic}, "channel": {c.channel}})...)
	}
	a.record(r, "create_channel", c.topic, c.channel, targets[0].HTTPAddr(), "settings", settingsText(c.channelQ))
	return policyResult(errs, attempts)
}

// createOnOne sends the replicated create to the first of the nodes that can be reached
// (a node refusing the connection is skipped; one that took the request is not, since it
// may be creating the topic) and returns it. An answer other than 200 ends it with nsqd's
// message, its status kept for a refusal (4xx) or 503, 502 otherwise.
func (a *Admin) createOnOne(ctx context.Context, nodes []*Producer, q url.Values) (*Producer, error) {
	var errs []error
	for _, n := range nodes {
		err := a.up.postLong(ctx, n.HTTPAddr(), "/topic/create", q)
		if err == nil {
			return n, nil
		}
		if code, msg := upstreamRefusal(err); code != 0 {
			if code != http.StatusServiceUnavailable && (code < 400 || code > 499) {
				code = http.StatusBadGateway
			}
			return nil, httpv1.Err{Code: code, Text: msg + " (nsqd " + n.HTTPAddr() + ")"}
		}
		errs = append(errs, &nodeError{Kind: "nsqd", Addr: n.HTTPAddr(), Err: err})
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			break
		}
	}
	return nil, httpv1.Err{Code: http.StatusBadGateway, Text: "UPSTREAM_ERROR: " + strings.TrimPrefix(warningText(errs), "WARNING: ")}
}

// replicaHolders reads the nodes' /stats of topic until want of them report it replicated
// or replicaWait has passed, and returns those that do (the creator first, when it is one),
// the addresses of those that list the topic without replica keys (a node that does not
// replicate, such as NSQ's, which ignores replicas= and creates a plain topic) and the last
// round's failures.
func (a *Admin) replicaHolders(ctx context.Context, nodes []*Producer, creator *Producer, topic string, want int) ([]*Producer, []string, []error) {
	ctx, cancel := context.WithTimeout(ctx, replicaWait)
	defer cancel()
	byAddr := map[string]*Producer{}
	for _, n := range nodes {
		byAddr[n.HTTPAddr()] = n
	}
	for {
		results, errs := a.cluster.stats(ctx, nodes, topic, "", false)
		var holders []*Producer
		var plain []string
		for _, res := range results {
			for _, t := range res.Stats.Topics {
				switch {
				case t.TopicName != topic:
				case t.TopicReplicaStats == nil:
					plain = append(plain, res.Node)
				case res.Node == creator.HTTPAddr():
					holders = append([]*Producer{byAddr[res.Node]}, holders...)
				default:
					holders = append(holders, byAddr[res.Node])
				}
			}
		}
		if len(holders) >= want || contains(plain, creator.HTTPAddr()) {
			return holders, plain, nil
		}
		select {
		case <-ctx.Done():
			return holders, plain, errs
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// replicatedOn tells whether node (its admin address) reports topic replicated. Tombstoning
// asks: /topic/delete on one replica deletes a replicated topic on all of them.
func (a *Admin) replicatedOn(ctx context.Context, node, topic string) bool {
	var st nodeStats
	q := url.Values{"format": {"json"}, "include_clients": {"false"}, "include_mem": {"false"}, "topic": {topic}}
	if a.up.do(ctx, http.MethodGet, node, "/stats?"+q.Encode(), &st) != nil {
		return false
	}
	for _, t := range st.Topics {
		if t.TopicName == topic && t.TopicReplicaStats != nil {
			return true
		}
	}
	return false
}

// stepDown hands a replicated topic's leadership to another replica: POST
// /topic/step-down?topic=T to one of its replicas (any takes it; the next is tried when one
// fails), as before taking the leader's node down.
func (a *Admin) stepDown(r *http.Request, topic string) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), replicaWait+5*time.Second)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	if len(producers) == 0 && len(errs) == 0 {
		return nil, httpv1.Err{Code: http.StatusNotFound, Text: "TOPIC_NOT_FOUND"}
	}
	q := url.Values{"topic": {topic}}
	for _, p := range producers {
		err := a.cluster.up.postLong(ctx, p.HTTPAddr(), "/topic/step-down", q)
		if err == nil {
			a.record(r, "step_down_topic", topic, "", p.HTTPAddr())
			return messageResponse{}, nil
		}
		errs = append(errs, err)
		if se := (*statusError)(nil); errors.As(err, &se) && se.Code == http.StatusBadRequest {
			// nsqd's words: not replicated, which every replica would say too
			text := se.Detail
			var m struct {
				Message string `json:"message"`
			}
			if json.Unmarshal([]byte(se.Detail), &m) == nil && m.Message != "" {
				text = m.Message
			}
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: text}
		}
	}
	return nil, httpv1.Err{Code: http.StatusBadGateway, Text: "UPSTREAM_ERROR: " + strings.TrimPrefix(warningText(errs), "WARNING: ")}
}
