package nsqd

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/julienschmidt/httprouter"
	"github.com/sluicemq/sluice/internal/httpv1"
	"github.com/sluicemq/sluice/protocol"
)

// HTTP endpoints of message policies: /topic/config, /channel/config,
// /channel/dead_letters, /channel/redrive. The policy parameters of
// /topic/create and /channel/create are read here too. A request answered
// 400 changes nothing.

func (n *NSQD) routePolicies(r *httprouter.Router) {
	r.POST("/topic/config", httpv1.V1(n.doTopicConfig))
	r.POST("/channel/config", httpv1.V1(n.doChannelConfig))
	r.GET("/channel/dead_letters", httpv1.V1(n.doDeadLetters))
	r.POST("/channel/redrive", httpv1.V1(n.doRedrive))
}

// topicPolicyFromQuery returns the topic policy q asks for on top of
// base, and whether q sets one at all.
func topicPolicyFromQuery(r *http.Request, base topicPolicy) (topicPolicy, bool, error) {
	q, _ := httpv1.Query(r)
	if !hasTopicPolicyParams(q) {
		return base, false, nil
	}
	p, err := parseTopicPolicy(q, base)
	return p, true, err
}

// applyTopicPolicy sets p on t and persists nsqd.dat.
func (n *NSQD) applyTopicPolicy(t *Topic, p topicPolicy) error {
	t.setPolicy(p)
	n.logger.Info("topic policy set", "topic", t.name, "ttl", p.ttl, "max_depth", p.maxDepth, "overflow", p.overflowMode())
	if !t.ephemeral {
		return n.persistMetadata()
	}
	return nil
}

// topicParam reads and checks the topic parameter of Sluice's own topic
// endpoints (NSQ's answer INVALID_TOPIC; these name the parameter).
func topicParam(r *http.Request) (url.Values, string, error) {
	q, _ := httpv1.Query(r)
	name := q.Get("topic")
	if name == "" {
		return q, "", errf(http.StatusBadRequest, "MISSING_ARG_TOPIC")
	}
	if !protocol.IsValidTopicName(name) {
		return q, "", errf(http.StatusBadRequest, "INVALID_ARG_TOPIC")
	}
	return q, name, nil
}

func (n *NSQD) doTopicConfig(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	q, name, err := topicParam(r)
	if err != nil {
		return nil, err
	}
	t, ok := n.ExistingTopic(name)
	if !ok {
		return nil, errf(http.StatusNotFound, "TOPIC_NOT_FOUND")
	}
	p, set, err := topicPolicyFromQuery(r, t.topicPolicyOf())
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, errf(http.StatusBadRequest, "MISSING_ARG_POLICY: give ttl, max_depth or overflow")
	}
	if t.repl != nil {
		// validated above; every replica applies it through the group
		if err := t.repl.proposePolicy(r.Context(), "", q); err != nil {
			return nil, errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
		}
		return nil, nil
	}
	if err := n.applyTopicPolicy(t, p); err != nil {
		return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
	}
	return nil, nil
}

// channelPolicyFromQuery returns the channel policy q asks for on top of
// base, checked against the topic's policy and the node default.
func (n *NSQD) channelPolicyFromQuery(r *http.Request, t *Topic, base channelPolicy) (channelPolicy, bool, error) {
	q, _ := httpv1.Query(r)
	if !hasChannelPolicyParams(q) {
		return base, false, nil
	}
	p, err := parseChannelPolicy(q, base, t.name)
	if err != nil {
		return p, true, err
	}
	if _, err := resolvePolicy(t.name, p, t.topicPolicyOf(), n.opts.MaxAttempts); err != nil {
		return p, true, policyError("dead_letter_topic", "%v", err)
	}
	return p, true, nil
}

func (n *NSQD) doChannelConfig(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	t, ch, err := n.existingChannelParams(r)
	if err != nil {
		return nil, err
	}
	p, set, err := n.channelPolicyFromQuery(r, t, ch.channelPolicyOf())
	if err != nil {
		return nil, err
	}
	if !set {
		return nil, errf(http.StatusBadRequest, "MISSING_ARG_POLICY: give max_attempts, dead_letter_topic or ttl")
	}
	if t.repl != nil && !ch.ephemeral {
		q, _ := httpv1.Query(r)
		if err := t.repl.proposePolicy(r.Context(), ch.name, q); err != nil {
			return nil, errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
		}
		return nil, nil
	}
	if err := n.applyChannelPolicy(t, ch, p); err != nil {
		return nil, err
	}
	return nil, nil
}

func (n *NSQD) applyChannelPolicy(t *Topic, ch *Channel, p channelPolicy) error {
	if err := ch.applyPolicy(p, t.topicPolicyOf()); err != nil {
		return policyError("dead_letter_topic", "%v", err)
	}
	n.logger.Info("channel policy set", "topic", t.name, "channel", ch.name, "max_attempts", p.maxAttempts, "dead_letter_topic", p.deadLetterTopic, "ttl", p.ttl)
	if !ch.ephemeral {
		if err := n.persistMetadata(); err != nil {
			return errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
		}
	}
	return nil
}

// deadLetterJSON is one entry of /channel/dead_letters.
type deadLetterJSON struct {
	ID              string `json:"id"`
	DeadLetterTopic string `json:"dead_letter_topic"`
	Topic           string `json:"topic"`
	Channel         string `json:"channel"`
	Attempts        uint16 `json:"attempts"`
	Reason          string `json:"reason"`
	Time            string `json:"time"`
	Timestamp       int64  `json:"timestamp"`
	OriginalID      string `json:"original_id"`
	BodySize        int    `json:"body_size"`
}

func (n *NSQD) doDeadLetters(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	// the topic need not exist any more: its dead letters outlive it
	topic, channel, err := channelNames(r)
	if err != nil {
		return nil, err
	}
	q, _ := httpv1.Query(r)
	limit := -1
	if v, ok := q["limit"]; ok {
		l, err := strconv.Atoi(v[0])
		if err != nil || l < 0 {
			return nil, errf(http.StatusBadRequest, "INVALID_LIMIT: limit must be an integer >= 0")
		}
		limit = l
	}
	recs := n.deadLetters.list(topic, channel)
	out := struct {
		Count       int              `json:"count"`
		DeadLetters []deadLetterJSON `json:"dead_letters"`
	}{Count: len(recs), DeadLetters: []deadLetterJSON{}}
	for i, d := range recs {
		if limit >= 0 && i >= limit {
			break
		}
		out.DeadLetters = append(out.DeadLetters, deadLetterJSON{
			ID: d.ID, DeadLetterTopic: d.DeadLetter, Topic: d.Topic, Channel: d.Channel,
			Attempts: d.Attempts, Reason: d.Reason, Time: d.Time.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"),
			Timestamp: d.Timestamp, OriginalID: d.OriginalID, BodySize: d.bodySize(),
		})
	}
	return out, nil
}
func (n *NSQD) doRedrive(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
	t, ch, err := n.existingChannelParams(r)
	if err != nil {
		return nil, err
	}
	q, _ := httpv1.Query(r)
	max := -1
	if v, ok := q["max"]; ok {
		m, err := strconv.Atoi(v[0])
		if err != nil || m < 1 {
			return nil, errf(http.StatusBadRequest, "INVALID_MAX: max must be an integer >= 1")
		}
		max = m
	}
	moved, err := n.redrive(ch, max)
	if err != nil {
		if errors.Is(err, errExiting) {
			return nil, errf(http.StatusServiceUnavailable, "EXITING")
		}
		return nil, errf(http.StatusInternalServerError, "INTERNAL_ERROR: "+err.Error())
	}
	n.logger.Info("redrive", "topic", t.name, "channel", ch.name, "moved", moved)
	return struct {
		Moved int `json:"moved"`
	}{moved}, nil
}
