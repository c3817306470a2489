package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/sluicemq/sluice/internal/httpv1"
)

// The admin's side of message policies: changing a topic's or a channel's settings on
// every node that carries it, listing a channel's dead letters and redriving them. nsqd
// checks every value; the admin passes the values on as given and shows nsqd's refusal
// (400 INVALID_TTL: ..., naming the parameter) to the user.

// Topic and channel settings: the keys of the admin's JSON bodies and the nsqd query
// parameters they become. The create body names the channel's TTL channel_ttl, beside the
// topic's ttl.
var (
	topicPolicyKeys         = map[string]string{"ttl": "ttl", "max_depth": "max_depth", "overflow": "overflow"}
	channelPolicyKeys       = map[string]string{"max_attempts": "max_attempts", "dead_letter_topic": "dead_letter_topic", "ttl": "ttl"}
	createChannelPolicyKeys = map[string]string{"max_attempts": "max_attempts", "dead_letter_topic": "dead_letter_topic", "channel_ttl": "ttl"}
)

// policyParams picks the settings named in keys out of a JSON body into q (nsqd's
// parameter names) and reports how many it found. A value is a JSON string or number,
// passed on as written ("10m", 1000, "1000"); anything else is 400 INVALID_ARG_<KEY>.
func policyParams(body map[string]json.RawMessage, keys map[string]string, q url.Values) (int, error) {
	n := 0
	for key, param := range keys {
		raw, ok := body[key]
		if !ok {
			continue
		}
		v, err := settingValue(raw)
		if err != nil {
			return 0, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_" + strings.ToUpper(key) + ": " + key + " must be a string or a number"}
		}
		q.Set(param, v)
		n++
	}
	return n, nil
}

func settingValue(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var num json.Number
	if err := json.Unmarshal(raw, &num); err == nil {
		return num.String(), nil
	}
	return "", errors.New("not a string or a number")
}

// configure handles {"action":"config", <settings>} on a topic (ttl, max_depth, overflow)
// or a channel (max_attempts, dead_letter_topic, ttl): POST /topic/config or
// /channel/config to every node carrying the topic. A channel is configured where it
// exists; nodes without it are left alone. Unknown keys are refused, so a misspelt
// setting is not silently dropped.
func (a *Admin) configure(r *http.Request, topic, channel string, body map[string]json.RawMessage) (any, error) {
	keys, kind := topicPolicyKeys, "topic"
	q := url.Values{"topic": {topic}}
	if channel != "" {
		keys, kind = channelPolicyKeys, "channel"
		q.Set("channel", channel)
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for k := range body {
		if _, ok := keys[k]; !ok && k != "action" {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: fmt.Sprintf("INVALID_ARG: %q is not a %s setting (%s)", k, kind, strings.Join(names, ", "))}
		}
	}
	n, err := policyParams(body, keys, q)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "MISSING_ARG_SETTINGS: give " + strings.Join(names, ", ")}
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	if len(producers) == 0 && len(errs) == 0 {
		return nil, httpv1.Err{Code: http.StatusNotFound, Text: "TOPIC_NOT_FOUND: no nsqd carries topic " + topic}
	}
	attempts := len(producers) + countLookupErrs(errs)
	perrs := a.cluster.nsqdPost(ctx, producers, "/"+kind+"/config", q)
	if channel != "" {
		var missing int
		perrs, missing = dropMissing(perrs)
		if missing == len(producers) && len(producers) > 0 {
			return nil, httpv1.Err{Code: http.StatusNotFound, Text: "CHANNEL_NOT_FOUND"}
		}
		attempts -= missing
	}
	errs = append(errs, perrs...)
	if !refusedEverywhere(errs, attempts) {
		a.record(r, "configure_"+kind, topic, channel, "", "settings", settingsText(q))
	}
	return policyResult(errs, attempts)
}

// redriveResponse answers a redrive: how many dead letters the nodes moved back.
type redriveResponse struct {
	Moved   int64  `json:"moved"`
	Message string `json:"message"`
}

// redrive handles {"action":"redrive"[, "max": N]} on a channel: POST /channel/redrive to
// every node carrying the topic, which moves the channel's dead letters back into it
// (max, when given, bounds each node's move). Nodes where the topic or channel is gone
// have nothing to move and are left out.
func (a *Admin) redrive(r *http.Request, topic, channel string, body map[string]json.RawMessage) (any, error) {
	q := url.Values{"topic": {topic}, "channel": {channel}}
	for k := range body {
		if k != "action" && k != "max" {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: fmt.Sprintf("INVALID_ARG: %q is not a redrive parameter (max)", k)}
		}
	}
	if raw, ok := body["max"]; ok {
		var max int64
		if json.Unmarshal(raw, &max) != nil || max <= 0 {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: "INVALID_ARG_MAX: max must be an integer > 0"}
		}
		q.Set("max", strconv.FormatInt(max, 10))
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	if len(producers) == 0 && len(errs) == 0 {
		return nil, httpv1.Err{Code: http.StatusNotFound, Text: "TOPIC_NOT_FOUND: no nsqd carries topic " + topic}
	}
	var moved int64
	var mu sync.Mutex
	perrs := fanOut(httpAddrs(producers), "nsqd", func(addr string) error {
		var resp struct {
			Moved int64 `json:"moved"`
		}
		if err := a.up.do(ctx, http.MethodPost, addr, "/channel/redrive?"+q.Encode(), &resp); err != nil {
			return err
		}
		mu.Lock()
		moved += resp.Moved
		mu.Unlock()
		return nil
	})
	perrs, missing := dropMissing(perrs)
	if missing == len(producers) && len(producers) > 0 {
		return nil, httpv1.Err{Code: http.StatusNotFound, Text: "CHANNEL_NOT_FOUND"}
	}
	errs = append(errs, perrs...)
	attempts := len(producers) - missing + countLookupErrs(errs)
	a.record(r, "redrive_channel", topic, channel, "", "moved", moved)
	res, err := policyResult(errs, attempts)
	if err != nil {
		return nil, err
	}
	return redriveResponse{Moved: moved, Message: res.(messageResponse).Message}, nil
}

// DeadLetter is one dead letter of a channel as nsqd lists it (GET /channel/dead_letters),
// with the node that holds it. Every string comes from the node and is untrusted.
type DeadLetter struct {
	Node            string `json:"node"`
	ID              string `json:"id"` // the message's ID on the dead-letter topic
	DeadLetterTopic string `json:"dead_letter_topic"`
	Topic           string `json:"topic"`
	Channel         string `json:"channel"`
	Attempts        int    `json:"attempts"`
	Reason          string `json:"reason"` // "max_attempts" or "ttl"
	Time            string `json:"time"`   // when it was dead-lettered, RFC 3339
	Timestamp       int64  `json:"timestamp"`
	OriginalID      string `json:"original_id"`
	BodySize        int    `json:"body_size"`

	at time.Time // Time parsed; zero when it does not parse
}

// deadLetterNode is how many dead letters of the channel one node holds, and how many of
// them the admin read.
type deadLetterNode struct {
	Node  string `json:"node"`
	Count int    `json:"count"`
	Read  int    `json:"read"`
}

const (
	// defaultDeadLetterRows and maxDeadLetterRows bound the rows of GET .../dead_letters.
	defaultDeadLetterRows = 100
	maxDeadLetterRows     = 1000
	// deadLetterScan is how many dead letters the admin reads from one node. nsqd lists
	// the oldest first and takes no offset, so the newest rows need the whole list; this
	// bounds what one page refresh may pull from a node with a huge backlog, at the price
	// of missing that node's newest letters (the answer's nodes say so).
	deadLetterScan = 5000
)

// getDeadLetters handles GET /api/topics/:topic/:channel/dead_letters[?limit=N]: the
// channel's dead letters on every node carrying the topic, newest first, at most limit
// (default 100) rows, with the total count and each node's. A node answering 404 (NSQ, or
// an nsqd without dead letters) has none.
func (a *Admin) getDeadLetters(_ http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error) {
	topic, channel := ps.ByName("topic"), ps.ByName("channel")
	if err := checkNames(topic, channel, true); err != nil {
		return nil, err
	}
	q, _ := httpv1.Query(r)
	limit := defaultDeadLetterRows
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > maxDeadLetterRows {
			return nil, httpv1.Err{Code: http.StatusBadRequest, Text: fmt.Sprintf("INVALID_ARG_LIMIT: limit must be an integer from 0 to %d", maxDeadLetterRows)}
		}
		limit = v
	}
	ctx, cancel := a.reqCtx(r)
	defer cancel()
	producers, errs := a.cluster.topicProducers(ctx, topic)
	path := "/channel/dead_letters?" + url.Values{"topic": {topic}, "channel": {channel}, "limit": {strconv.Itoa(deadLetterScan)}}.Encode()
	var (
		mu    sync.Mutex
		all   []*DeadLetter
		nodes = []deadLetterNode{}
		total int
	)
	derrs := fanOut(httpAddrs(producers), "nsqd", func(addr string) error {
		var resp struct {
			Count       int           `json:"count"`
			DeadLetters []*DeadLetter `json:"dead_letters"`
		}
		err := a.up.do(ctx, http.MethodGet, addr, path, &resp)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, d := range resp.DeadLetters {
			d.Node = addr
			d.at, _ = time.Parse(time.RFC3339Nano, d.Time)
		}
		mu.Lock()
		defer mu.Unlock()
		all = append(all, resp.DeadLetters...)
		nodes = append(nodes, deadLetterNode{Node: addr, Count: resp.Count, Read: len(resp.DeadLetters)})
		total += resp.Count
		return nil
	})
	errs = append(errs, derrs...)
	msg, err := a.readResult(errs, len(nodes) == 0 && len(producers) > 0)
	if err != nil {
		return nil, err
	}
	sortDeadLetters(all)
	if len(all) > limit {
		all = all[:limit]
	}
	if all == nil {
		all = []*DeadLetter{}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Node < nodes[j].Node })
	return struct {
		Count       int              `json:"count"`
		DeadLetters []*DeadLetter    `json:"dead_letters"`
		Nodes       []deadLetterNode `json:"nodes"`
		Message     string           `json:"message"`
	}{total, all, nodes, msg}, nil
}

// sortDeadLetters orders dead letters newest first (ties by node, then ID).
func sortDeadLetters(dl []*DeadLetter) {
	sort.SliceStable(dl, func(i, j int) bool {
		a, b := dl[i], dl[j]
		if !a.at.Equal(b.at) {
			return a.at.After(b.at)
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.ID < b.ID
	})
}

// upstreamRefusal returns the status and V1 message of an upstream daemon's non-200
// answer ({"message":"INVALID_TTL: ..."}); 0 when err is not one.
func upstreamRefusal(err error) (int, string) {
	var se *statusError
	if !errors.As(err, &se) {
		return 0, ""
	}
	var body struct {
		Message string `json:"message"`
	}
	if json.Unmarshal([]byte(se.Detail), &body) == nil && body.Message != "" {
		return se.Code, body.Message
	}
	return se.Code, se.Detail
}

// dropMissing removes the 404 TOPIC_NOT_FOUND and CHANNEL_NOT_FOUND answers (the node does
// not carry what was asked about) and counts them. Any other 404, such as an nsqd that
// lacks the endpoint, stays an error.
func dropMissing(errs []error) ([]error, int) {
	var out []error
	missing := 0
	for _, e := range errs {
		code, msg := upstreamRefusal(e)
		if code == http.StatusNotFound && (strings.HasPrefix(msg, "TOPIC_NOT_FOUND") || strings.HasPrefix(msg, "CHANNEL_NOT_FOUND")) {
			missing++
			continue
		}
		out = append(out, e)
	}
	return out, missing
}

// refusedEverywhere tells whether every one of the attempts failed, at least one of them
// with a 400 from nsqd (a value it does not accept): then nothing changed anywhere.
func refusedEverywhere(errs []error, attempts int) bool {
	if len(errs) == 0 || len(errs) < attempts {
		return false
	}
	for _, e := range errs {
		if code, _ := upstreamRefusal(e); code == http.StatusBadRequest {
			return true
		}
	}
	return false
}

// policyResult is the answer to an action nsqd may refuse as a bad request. When no node
// accepted it and some refused it with 400, the answer is 400 with nsqd's messages (which
// name the parameter: "INVALID_TTL: ttl must be ..."); when some nodes accepted it, 200
// with a warning naming the others and what they said; otherwise actionResult's.
func policyResult(errs []error, attempts int) (any, error) {
	var refusals []string
	var others []error
	for _, e := range errs {
		if code, msg := upstreamRefusal(e); code == http.StatusBadRequest {
			if !contains(refusals, msg) {
				refusals = append(refusals, msg)
			}
			continue
		}
		others = append(others, e)
	}
	if len(refusals) == 0 {
		return actionResult(errs, attempts)
	}
	text := strings.Join(refusals, "; ")
	if len(others) > 0 {
		text += " (" + warningText(others) + ")"
	}
	if refusedEverywhere(errs, attempts) {
		return nil, httpv1.Err{Code: http.StatusBadRequest, Text: text}
	}
	var refusedBy []string
	for _, e := range errs {
		if code, _ := upstreamRefusal(e); code == http.StatusBadRequest {
			var ne *nodeError
			if errors.As(e, &ne) {
				refusedBy = append(refusedBy, ne.Addr)
			}
		}
	}
	return messageResponse{Message: "WARNING: refused by nsqd " + strings.Join(refusedBy, ", ") + ": " + text}, nil
}

// settingsText renders the settings sent, for the action log: "max_depth=10 ttl=1m".
func settingsText(q url.Values) string {
	var parts []string
	for k, v := range q {
		if k != "topic" && k != "channel" {
			parts = append(parts, k+"="+v[0])
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func httpAddrs(nodes []*Producer) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.HTTPAddr()
	}
	return out
}
