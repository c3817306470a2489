// Package admin is Sluice's nsqadmin: an operators' web UI and JSON API over a cluster of
// nsqd nodes, found through nsqlookupd (cluster mode) or listed directly (direct mode).
// It talks to the daemons over HTTP only, so it works against Sluice and against NSQ alike.
//
// Besides nsqadmin's pages and /api/... endpoints (protocol.md §11.4), it samples every
// node's /stats on an interval and keeps a bounded in-memory History, from which the UI
// plots message rates and depth over time without Graphite.
//
//	opts := admin.NewOptions()
//	opts.HTTPAddress = "127.0.0.1:0"
//	opts.NSQLookupdHTTPAddresses = []string{"127.0.0.1:4161"}
//	a, err := admin.New(opts)
//	if err != nil { ... }
//	if err := a.Start(); err != nil { ... }
//	defer a.Exit()
//	fmt.Println("UI at http://" + a.HTTPAddr().String())
//
// Beyond nsqadmin's API, Sluice adds a few read-only endpoints the UI is built on, usable by
// scripts too: GET /api/settings (version, user, whether the user may act), /api/overview
// (every topic with depth, in flight, messages, latest rate and a sparkline), /api/history
// (?topic=T&channel=C&points=N: the plotted series, see History) and /api/lookup (every
// nsqlookupd registration with its channels and producers). Nodes that vanish from nsqlookupd
// without answering any more are remembered for one history window and named in every
// answer's "message" warning.
//
// Message policies (Sluice's nsqd): the topic and channel answers carry the policy keys of
// nsqd's /stats (ttl, max_depth, overflow and their counters on a topic; max_attempts,
// dead_letter_topic, ttl and theirs on a channel) only where a node sets a policy, per node
// and aggregated (counters summed, a setting null when the nodes differ; see TopicPolicy).
// They are changed with POST /api/topics/:topic {"action":"config","ttl":"10m",
// "max_depth":1000,"overflow":"reject"} and POST /api/topics/:topic/:channel
// {"action":"config","max_attempts":5,"dead_letter_topic":"t-dead","ttl":"1h"}, sent to every
// node carrying the topic (a value nsqd refuses comes back as nsqd's 400, e.g. "INVALID_TTL:
// ..."), and given at creation in POST /api/topics ("channel_ttl" for the channel's TTL).
// GET /api/topics/:topic/:channel/dead_letters?limit=N lists the channel's dead letters on
// every node, newest first, with the total count; POST /api/topics/:topic/:channel
// {"action":"redrive"} moves them back into the channel on every node and answers
// {"moved":N}.
//
// Replicated topics (Sluice's nsqd): the topic answers (and /api/overview's rows) carry
// replicas, leader (null in an aggregate when the replicas disagree), leader_node (the
// leader's node in the admin) and replica_lag (the leader's report), and each node's entry
// its address (broadcast_address:tcp_port) and role ("leader" or "follower"); channels
// carry their node's role. Only the leader delivers, so a replicated topic's figures are
// its leader's, counted once (connections add up over every replica), and so are the
// sampled rates; see TopicReplica. Topics that are not replicated have none of these keys.
// POST /api/topics {"topic":"T","replicas":3} (an integer from 1 to 7, else 400
// INVALID_ARG_REPLICAS) sends POST /topic/create?topic=T&replicas=3 to one nsqd, which
// places the topic on 3 nodes; its refusal (503 REPLICATION_FAILED, 409 TOPIC_EXISTS)
// comes back in nsqd's words. A channel given is created on one replica.
// POST /api/topics/:topic {"action":"step-down"} sends POST /topic/step-down?topic=T to
// one replica (the next when one fails): the leader hands its leadership to another
// replica with its consumers' progress (the topic page's "Step down leader"); a topic that
// is not replicated is 400 NOT_REPLICATED in nsqd's words.
//
// Security: the mutating calls (POST and DELETE under /api) accept a body only when it is
// declared Content-Type: application/json (415 otherwise; a DELETE without a body needs no
// Content-Type) and refuse requests the browser marks Sec-Fetch-Site: cross-site (403), so a
// cross-site form or simple request cannot trigger them; scripts must send the header, e.g.
// curl -H 'Content-Type: application/json' -d '{"action":"pause"}' .../api/topics/T.
// Every answer carries a Content-Security-Policy that allows only the UI's own scripts and
// forbids framing; the UI inserts cluster-supplied strings as text only. /config's CIDR rule
// looks at the connection's address, never at X-Forwarded-For.
//
// The UI is plain JS and CSS embedded with go:embed; the only third-party asset is uPlot,
// vendored from the npm package pinned in ui/package.json by `make ui` (see ui.mk).
package admin
