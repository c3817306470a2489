package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Message-policy scenarios (Sluice): what every policy of a topic and its
// channel costs on the MPUB path and on the drain of a backlog, against no
// policy on the same node in the same run. The goal: within 10 %.
const (
	// ScenarioPolicy runs every scenario of PolicyScenarios.
	ScenarioPolicy = "policy"
	// ScenarioPolicyMPUB: MPUB into a topic with one channel and no
	// consumer, with no policy and with every policy (overflow=reject, then
	// overflow=drop_oldest).
	ScenarioPolicyMPUB = "policy-mpub"
	// ScenarioPolicyConsume: the drain of a backlog, with no policy and
	// with every policy.
	ScenarioPolicyConsume = "policy-consume"
	// ScenarioPolicyDurableMPUB and ScenarioPolicyDurableConsume: the same
	// on durable topics.
	ScenarioPolicyDurableMPUB    = "policy-durable-mpub"
	ScenarioPolicyDurableConsume = "policy-durable-consume"
)

// PolicyScenarios are the scenarios ScenarioPolicy stands for, in run
// order; each can also be selected by name.
var PolicyScenarios = []string{ScenarioPolicyMPUB, ScenarioPolicyConsume,
	ScenarioPolicyDurableMPUB, ScenarioPolicyDurableConsume}

// The policy a measured pass sets: every setting, with values that never
// act (nothing expires, is refused, dropped or dead-lettered), so that the
// figure is the cost of the bookkeeping alone. A pass checks that.
const (
	policyTTL         = time.Hour
	policyMaxAttempts = 5
	// policyDepthFactor times a pass's messages is the topic's max_depth.
	policyDepthFactor = 2
	// goalPolicyRatio: throughput with every policy >= 90 % of none.
	goalPolicyRatio = 0.9

	policyNone         = "none"
	overflowReject     = "reject"
	overflowDropOldest = "drop_oldest"
)

// policyNote explains the policy scenarios' figures in the report.
var policyNote = fmt.Sprintf("policy-*: one node per scenario; after two untimed warm-up passes (without, with the policy), passes of the same load alternate "+
	"no policy and every policy (MPUB: none, reject, drop_oldest, drop_oldest, reject, none; drain: none, policy, policy, none; "+
	"that order --policy-rounds times, --policy-mpub-rounds for policy-mpub), each on a fresh topic deleted after it, so that a steady drift cancels out. "+
	"msgs_per_sec = messages / time over the policy's passes, none_msgs_per_sec the same over the passes without, ratio_vs_none their ratio; "+
	"median_msgs_per_sec and none_median_msgs_per_sec are the median pass rates, median_ratio_vs_none theirs: the goal (>= %g) is checked on it, "+
	"as one pass slowed down by another process on this shared machine moves a median little and a sum a lot (both are printed). Policy: topic ttl=%s, max_depth=%d x the pass's messages, overflow; channel max_attempts=%d "+
	"(dead letters to <topic>.dlq), ttl=%s. /stats must show it before each pass; nothing may expire, be refused, dropped or dead-lettered.",
	goalPolicyRatio, policyTTL, policyDepthFactor, policyMaxAttempts, policyTTL)

// PolicyOptions sizes the policy scenarios.
type PolicyOptions struct {
	// MPUBMessages and ConsumeMessages are published (and drained) in each
	// pass on a topic of NSQ's storage; the Durable ones on a durable topic.
	MPUBMessages, ConsumeMessages               int64
	DurableMPUBMessages, DurableConsumeMessages int64
	// Rounds repeats the pass order: none, each policy, the policies in
	// reverse, none. MPUBRounds is that of policy-mpub, whose passes are
	// the shortest (a third of a second) and vary the most (the heap the
	// last pass left behind), so it can afford and needs more.
	Rounds, MPUBRounds int
}

// TopicPolicyStats are the policy keys of a topic's /stats entry (Sluice;
// present only on a topic that sets a policy).
type TopicPolicyStats struct {
	TTL           string `json:"ttl"`
	MaxDepth      int64  `json:"max_depth"`
	Overflow      string `json:"overflow"`
	ExpiredCount  int64  `json:"expired_count"`
	DroppedCount  int64  `json:"dropped_count"`
	RejectedCount int64  `json:"rejected_count"`
}

// ChannelPolicyStats are the policy keys of a channel's /stats entry
// (Sluice; present only on a channel that enforces a policy).
type ChannelPolicyStats struct {
	MaxAttempts       int    `json:"max_attempts"`
	DeadLetterTopic   string `json:"dead_letter_topic"`
	TTL               string `json:"ttl"`
	DeadLetteredCount int64  `json:"dead_lettered_count"`
	ExpiredCount      int64  `json:"expired_count"`
}

// policyScenario is one of PolicyScenarios: its storage, load, size and
// the overflow modes it measures (one result each).
type policyScenario struct {
	name    string
	durable bool
	consume bool
	msgs    int64
	modes   []string
}

func (o Options) policyScenarioOf(name string) (policyScenario, bool) {
	p := o.Policy
	switch name {
	case ScenarioPolicyMPUB:
		return policyScenario{name, false, false, p.MPUBMessages, []string{overflowReject, overflowDropOldest}}, true
	case ScenarioPolicyConsume:
		// the overflow mode acts on publishes only, and the fill is untimed
		return policyScenario{name, false, true, p.ConsumeMessages, []string{overflowReject}}, true
	case ScenarioPolicyDurableMPUB:
		return policyScenario{name, true, false, p.DurableMPUBMessages, []string{overflowReject, overflowDropOldest}}, true
	case ScenarioPolicyDurableConsume:
		return policyScenario{name, true, true, p.DurableConsumeMessages, []string{overflowReject}}, true
	}
	return policyScenario{}, false
}

func isPolicyScenario(name string) bool { return slices.Contains(PolicyScenarios, name) }

// resultName is the scenario of the result for overflow mode m: the
// scenario's name for reject, with "-drop-oldest" for drop_oldest.
func (ps policyScenario) resultName(m string) string {
	if m == overflowDropOldest {
		return ps.name + "-drop-oldest"
	}
	return ps.name
}

// policyPassOrder is none, each mode, the modes in reverse, none, rounds
// times: every setting sits at the same mean position, so a steady drift
// of the machine's speed during the run cancels out of the ratios.
func policyPassOrder(modes []string, rounds int) []string {
	var out []string
	for range max(rounds, 1) {
		out = append(out, policyNone)
		out = append(out, modes...)
		for i := len(modes) - 1; i >= 0; i-- {
			out = append(out, modes[i])
		}
		out = append(out, policyNone)
	}
	return out
}

// policyPass is the outcome of one measured pass.
type policyPass struct {
	mode                  string
	msgs                  int64
	elapsed               time.Duration
	redelivered, timeouts int64
	// shown is the policy as /stats showed it before the pass ran.
	shown string
}

// RunPolicyScenario runs one of PolicyScenarios on one node of l: two
// warm-up passes, then passes of the scenario's load on fresh topics,
// alternately without and with every policy (policyPassOrder). It returns
// a result per overflow mode with the rate over its passes, the same for
// the passes without a policy (none_msgs_per_sec), their ratio
// (ratio_vs_none), and the same three from the pass medians. A target
// without message policies, or without durable topics for the durable
// scenarios, gets a skipped result.
func RunPolicyScenario(ctx context.Context, l Launcher, o Options, name string) []Result {
	ps, ok := o.policyScenarioOf(name)
	if !ok {
		return []Result{{Scenario: name, Target: l.Name(), Error: fmt.Sprintf("unknown policy scenario (have %v)", PolicyScenarios)}}
	}
	if ps.durable && !supportsDurable(l) {
		return []Result{{Scenario: name, Target: l.Name(), Skipped: "this nsqd has no durable topics (no --durable flag)"}}
	}
	cfg := NodeConfig{MemQueueSize: o.LargeMemQueue}
	if ps.durable {
		cfg = NodeConfig{Durable: true}
	}
	rounds := o.Policy.Rounds
	if name == ScenarioPolicyMPUB {
		rounds = o.Policy.MPUBRounds
	}
	order := policyPassOrder(ps.modes, rounds)
	var (
		passes        []policyPass
		skipped, note string
		warmup        []int64
	)
	err := o.withNodeConfig(ctx, l, cfg, func(n *Node) error {
		note = n.Note
		var err error
		if skipped, err = probePolicies(ctx, n.HTTPAddr); err != nil || skipped != "" {
			return err
		}
		// Two untimed passes, one without and one with the policy, warm
		// the node up (heap grown, both code paths hot): the first passes
		// of a fresh process run at a quarter to a half of the later
		// ones' speed, which would count against whichever setting came first.
		for i, mode := range []string{policyNone, ps.modes[0]} {
			w, err := o.runPolicyPass(ctx, l, n, ps, fmt.Sprintf("%s warm-up %d", ps.name, i+1), fmt.Sprintf("warmup%d", i+1), mode)
			if err != nil {
				return fmt.Errorf("warm-up pass %d (%s): %w", i+1, mode, err)
			}
			warmup = append(warmup, rate(w.msgs, w.elapsed))
		}
		for i, mode := range order {
			label := fmt.Sprintf("%s %d/%d %s", ps.name, i+1, len(order), mode)
			p, err := o.runPolicyPass(ctx, l, n, ps, label, fmt.Sprintf("%d_%s", i+1, mode), mode)
			if err != nil {
				return fmt.Errorf("pass %d/%d (%s): %w", i+1, len(order), mode, err)
			}
			passes = append(passes, p)
		}
		return nil
	})
	if skipped != "" && err == nil {
		return []Result{{Scenario: name, Target: l.Name(), Skipped: skipped}}
	}
	out := o.policyResults(ps, l.Name(), order, passes, note, err)
	for i := range out {
		if len(warmup) > 0 {
			out[i].extra("warmup_msgs_per_sec", warmup)
		}
	}
	return out
}

// runPolicyPass measures one pass: a fresh topic (named after tag) and
// channel with the policy of mode (or none), checked in /stats, then the
// MPUB publish or the drain of a backlog, then checked again (nothing
// expired, refused, dropped or dead-lettered); the topic is deleted
// afterwards. label names the pass in progress lines.
func (o Options) runPolicyPass(ctx context.Context, l Launcher, n *Node, ps policyScenario, label, tag, mode string) (policyPass, error) {
	p := policyPass{mode: mode}
	topic := fmt.Sprintf("bench_%s_%s", strings.ReplaceAll(ps.name, "-", "_"), tag)
	const channel = "ch"
	maxDepth := ps.msgs * policyDepthFactor
	// Deleted whatever happens, so that every pass starts on an empty node
	// (and the memory of the last one is free).
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = deletePolicyTopics(cctx, n.HTTPAddr, topic)
	}()
	if err := createPolicyTopic(ctx, n.HTTPAddr, topic, channel, ps.durable, mode, maxDepth); err != nil {
		return p, err
	}
	shown, err := checkPolicyShown(ctx, n.HTTPAddr, topic, channel, mode, maxDepth)
	if err != nil {
		return p, err
	}
	p.shown = shown
	wantDepth := int64(0)
	if ps.consume {
		r := Result{Scenario: label}
		err := o.drainBacklog(ctx, l, n, &r, topic, channel, ps.msgs, false)
		p.msgs, p.elapsed = r.Messages, time.Duration(r.Seconds*float64(time.Second))
		p.redelivered, _ = r.Extra["redelivered"].(int64)
		p.timeouts, _ = r.Extra["timeouts"].(int64)
		if err != nil {
			return p, err
		}
	} else {
		var sent atomic.Int64
		stop := o.progressFor(label+"@"+l.Name(), ps.msgs, counterFunc(&sent))
		res, err := Publish(ctx, PublishSpec{Addr: n.TCPAddr, Topic: topic, Conns: o.Conns, Batch: o.Batch,
			BodySize: o.BodySize, Messages: ps.msgs, Sent: &sent})
		stop()
		p.msgs, p.elapsed = res.Messages, res.Elapsed
		if err != nil {
			return p, err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := WaitChannelDepth(wctx, n.HTTPAddr, topic, channel, ps.msgs); err != nil {
			return p, err
		}
		wantDepth = ps.msgs
	}
	return p, checkPolicyIdle(ctx, n.HTTPAddr, topic, channel, wantDepth)
}

// createPolicyTopic creates topic and channel with the policy of mode
// (none: without one) through the parameters of /topic/create and
// /channel/create; the channel's dead-letter topic is the default.
func createPolicyTopic(ctx context.Context, httpAddr, topic, channel string, durable bool, mode string, maxDepth int64) error {
	tq := url.Values{"topic": {topic}}
	cq := url.Values{"topic": {topic}, "channel": {channel}}
	if durable {
		tq.Set("durable", "true")
	}
	if mode != policyNone {
		tq.Set("ttl", policyTTL.String())
		tq.Set("max_depth", strconv.FormatInt(maxDepth, 10))
		tq.Set("overflow", mode)
		cq.Set("max_attempts", strconv.Itoa(policyMaxAttempts))
		cq.Set("ttl", policyTTL.String())
	}
	if err := httpPost(ctx, httpAddr, "/topic/create", tq); err != nil {
		return err
	}
	return httpPost(ctx, httpAddr, "/channel/create", cq)
}

// deletePolicyTopics deletes a pass's topic and its dead-letter topic,
// which exists only if something was dead-lettered.
func deletePolicyTopics(ctx context.Context, httpAddr, topic string) error {
	_, _, _ = httpPostStatus(ctx, httpAddr, "/topic/delete", url.Values{"topic": {topic + ".dlq"}})
	return DeleteTopic(ctx, httpAddr, topic)
}

// probePolicies asks the node whether it has message policies: it sets a
// TTL on a probe topic with /topic/config and looks for the policy keys
// in /stats. It returns why the scenario is skipped ("" when the node has
// them): /topic/config answered 400, 404 or 405 (NSQ 1.3.0 has no such
// endpoint), or /stats shows no policy key.
func probePolicies(ctx context.Context, httpAddr string) (string, error) {
	const probe = "bench_policy_probe"
	if err := httpPost(ctx, httpAddr, "/topic/create", url.Values{"topic": {probe}}); err != nil {
		return "", err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = DeleteTopic(cctx, httpAddr, probe)
	}()
	status, body, err := httpPostStatus(ctx, httpAddr, "/topic/config", url.Values{"topic": {probe}, "ttl": {policyTTL.String()}})
	if err != nil {
		return "", err
	}
	switch status {
	case http.StatusOK:
	case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Sprintf("this nsqd has no message policies (POST /topic/config answered %d %s)", status, body), nil
	default:
		return "", fmt.Errorf("POST /topic/config: %d %s", status, body)
	}
	ts, err := GetTopicStats(ctx, httpAddr, probe)
	if err != nil {
		return "", err
	}
	if ts.TopicPolicyStats == nil {
		return "this nsqd has no message policies (/topic/config answered 200 but /stats shows no policy keys)", nil
	}
	return "", nil
}

// findChannel returns channel's entry in ts, or nil.
func (ts *TopicStats) findChannel(channel string) *ChannelStats {
	for i := range ts.Channels {
		if ts.Channels[i].Name == channel {
			return &ts.Channels[i]
		}
	}
	return nil
}

// checkPolicyShown checks that /stats shows exactly the policy of mode on
// topic and channel (none: no policy key at all, so that a node default
// such as --max-attempts does not turn the baseline into a policy run),
// and returns it as one line for the report.
func checkPolicyShown(ctx context.Context, httpAddr, topic, channel, mode string, maxDepth int64) (string, error) {
	ts, err := GetTopicStats(ctx, httpAddr, topic)
	if err != nil {
		return "", err
	}
	cs := ts.findChannel(channel)
	if cs == nil {
		return "", fmt.Errorf("channel %s/%s not in /stats", topic, channel)
	}
	tp, cp := ts.TopicPolicyStats, cs.ChannelPolicyStats
	if mode == policyNone {
		if tp != nil || cp != nil {
			return "", fmt.Errorf("%s/%s was created without a policy but /stats shows one (topic %+v, channel %+v; a node default such as --max-attempts?)", topic, channel, tp, cp)
		}
		return "", nil
	}
	var bad []string
	ttlIs := func(what, v string) {
		if d, err := time.ParseDuration(v); err != nil || d != policyTTL {
			bad = append(bad, fmt.Sprintf("%s ttl %q, want %s", what, v, policyTTL))
		}
	}
	if tp == nil {
		bad = append(bad, "topic: no policy keys")
	} else {
		ttlIs("topic", tp.TTL)
		if tp.MaxDepth != maxDepth {
			bad = append(bad, fmt.Sprintf("topic max_depth %d, want %d", tp.MaxDepth, maxDepth))
		}
		if tp.Overflow != mode {
			bad = append(bad, fmt.Sprintf("topic overflow %q, want %q", tp.Overflow, mode))
		}
	}
	if cp == nil {
		bad = append(bad, "channel: no policy keys")
	} else {
		ttlIs("channel", cp.TTL)
		if cp.MaxAttempts != policyMaxAttempts {
			bad = append(bad, fmt.Sprintf("channel max_attempts %d, want %d", cp.MaxAttempts, policyMaxAttempts))
		}
		if cp.DeadLetterTopic != topic+".dlq" {
			bad = append(bad, fmt.Sprintf("channel dead_letter_topic %q, want %q", cp.DeadLetterTopic, topic+".dlq"))
		}
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("/stats does not show the policy set on %s/%s: %s", topic, channel, strings.Join(bad, "; "))
	}
	return fmt.Sprintf("topic ttl=%s max_depth=%d overflow=%s; channel max_attempts=%d dead_letter_topic=%s ttl=%s",
		tp.TTL, tp.MaxDepth, tp.Overflow, cp.MaxAttempts, cp.DeadLetterTopic, cp.TTL), nil
}

// checkPolicyIdle checks after a pass that the channel holds exactly
// wantDepth messages and that the policy did nothing: no message expired,
// was refused, dropped or dead-lettered.
func checkPolicyIdle(ctx context.Context, httpAddr, topic, channel string, wantDepth int64) error {
	ts, err := GetTopicStats(ctx, httpAddr, topic)
	if err != nil {
		return err
	}
	cs := ts.findChannel(channel)
	if cs == nil {
		return fmt.Errorf("channel %s/%s not in /stats", topic, channel)
	}
	if cs.Depth != wantDepth {
		return fmt.Errorf("channel %s/%s depth %d after the pass, want %d", topic, channel, cs.Depth, wantDepth)
	}
	if tp := ts.TopicPolicyStats; tp != nil && tp.ExpiredCount+tp.DroppedCount+tp.RejectedCount != 0 {
		return fmt.Errorf("topic %s: the policy acted (expired %d, dropped %d, rejected %d), want none", topic, tp.ExpiredCount, tp.DroppedCount, tp.RejectedCount)
	}
	if cp := cs.ChannelPolicyStats; cp != nil && cp.ExpiredCount+cp.DeadLetteredCount != 0 {
		return fmt.Errorf("channel %s/%s: the policy acted (expired %d, dead-lettered %d), want none", topic, channel, cp.ExpiredCount, cp.DeadLetteredCount)
	}
	return nil
}

// policyResults makes a result per overflow mode of ps from its passes:
// messages and time summed over the mode's passes, beside the same for
// the passes without a policy.
func (o Options) policyResults(ps policyScenario, target string, order []string, passes []policyPass, note string, runErr error) []Result {
	type sum struct {
		msgs int64
		el   time.Duration
	}
	sums := map[string]*sum{}
	rates := map[string][]float64{} // per pass, by mode
	shown := map[string]string{}
	passRates := make([]int64, 0, len(passes))
	var redelivered, timeouts int64
	for _, p := range passes {
		s := sums[p.mode]
		if s == nil {
			s = &sum{}
			sums[p.mode] = s
		}
		s.msgs += p.msgs
		s.el += p.elapsed
		if shown[p.mode] == "" {
			shown[p.mode] = p.shown
		}
		passRates = append(passRates, rate(p.msgs, p.elapsed))
		if p.elapsed > 0 {
			rates[p.mode] = append(rates[p.mode], float64(p.msgs)/p.elapsed.Seconds())
		}
		redelivered += p.redelivered
		timeouts += p.timeouts
	}
	load := fmt.Sprintf("MPUB %d x %d B on %d conns into a topic with one channel and no consumer", o.Batch, o.BodySize, o.Conns)
	if ps.consume {
		load = fmt.Sprintf("drain of a backlog (published untimed) by %d consumers RDY %d, FIN each", o.Conns, o.RDY)
	}
	storage := fmt.Sprintf("--mem-queue-size=%d", o.LargeMemQueue)
	if ps.durable {
		storage = "durable topics"
	}
	none := sums[policyNone]
	out := make([]Result, 0, len(ps.modes))
	for _, m := range ps.modes {
		r := Result{Scenario: ps.resultName(m), Target: target}
		r.Config = fmt.Sprintf("%d msgs per pass, %s; %s; passes %s on one node, each on a fresh topic deleted after it; "+
			"policy: topic ttl=%s max_depth=%d overflow=%s, channel max_attempts=%d (dead letters to <topic>.dlq) ttl=%s; "+
			"msgs/s over this policy's passes, none_msgs_per_sec over the passes without",
			ps.msgs, load, storage, strings.Join(order, ","), policyTTL, ps.msgs*policyDepthFactor, m, policyMaxAttempts, policyTTL)
		if note != "" {
			r.Config += "; " + note
		}
		if s := sums[m]; s != nil {
			r.setRate(s.msgs, s.el, o.BodySize)
			if none != nil && none.el > 0 && none.msgs > 0 && s.el > 0 {
				noneRate := float64(none.msgs) / none.el.Seconds()
				r.extra("none_msgs_per_sec", rate(none.msgs, none.el))
				r.extra("ratio_vs_none", roundTo(float64(s.msgs)/s.el.Seconds()/noneRate, 3))
			}
			// Less sensitive to a pass slowed down by another process.
			if mp, mn := medianOf(rates[m]), medianOf(rates[policyNone]); mp > 0 && mn > 0 {
				r.extra("median_msgs_per_sec", round(mp))
				r.extra("none_median_msgs_per_sec", round(mn))
				r.extra("median_ratio_vs_none", roundTo(mp/mn, 3))
			}
		}
		if len(passes) > 0 {
			r.extra("pass_order", strings.Join(order[:len(passes)], ","))
			r.extra("pass_msgs_per_sec", passRates)
		}
		if shown[m] != "" {
			r.extra("policy_stats", shown[m])
		}
		if ps.consume {
			r.extra("redelivered", redelivered)
			r.extra("timeouts", timeouts)
		}
		if runErr != nil {
			r.Error = runErr.Error()
		}
		out = append(out, r)
	}
	return out
}

// medianOf returns the median of v (the mean of the middle two for an even
// count), 0 for none.
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PolicyChecks evaluates the goal for message policies on results
// of one run: for every policy result, the ratio of its median pass rate
// with every policy to the median pass rate without (median_ratio_vs_none,
// same node) >= 0.9, followed by the ratio over all passes (ratio_vs_none,
// messages ÷ time; no goal). The goal is on the medians because one pass
// slowed down by another process moves a sum of passes by tens of percent
// on this shared machine, and a median hardly. Failed and skipped results
// are left out.
func PolicyChecks(results []Result) []Check {
	var out []Check
	for _, r := range results {
		if !strings.HasPrefix(r.Scenario, ScenarioPolicy+"-") || r.Error != "" || r.Skipped != "" || r.Messages == 0 {
			continue
		}
		if m, ok := r.Extra["median_ratio_vs_none"].(float64); ok {
			met := m >= goalPolicyRatio
			out = append(out, Check{Name: r.Scenario + " / no policy, pass medians", Target: r.Target, Value: m,
				Goal: ">= " + strconv.FormatFloat(goalPolicyRatio, 'f', -1, 64), Met: &met})
		}
		if v, ok := r.Extra["ratio_vs_none"].(float64); ok {
			out = append(out, Check{Name: r.Scenario + " / no policy, all passes", Target: r.Target, Value: v})
		}
	}
	return out
}
