// Sluice admin UI: replicated topics (issue 11). Loaded before app.js, which calls
// SluiceReplica with its helpers and uses what it returns to render the topics list, the
// topic, channel and node pages.
//
// A replicated topic (and each node's entry of it) carries replicas, leader and
// replica_lag; the keys are absent on other topics. In an aggregate leader is null when the
// replicas disagree on it, "" while there is none; leader_node is the leader's node page.
// Per node, role is "leader" or "follower" and address the node's name among replicas.
// Every string comes from the cluster: it goes through h.esc (or h.link) before markup.
window.SluiceReplica = function (h) {
  "use strict";

  function is(t) { return !!t && t.replicas !== undefined; }
  function leaderText(t) { return t.leader === null ? "differs by node" : t.leader ? String(t.leader) : "none (election under way)"; }
  // leaderCell is the leader, linked to its node page when the admin knows it (markup).
  function leaderCell(t) {
    if (t.leader && t.leader_node) return h.link(h.nodePath(t.leader_node), t.leader);
    return t.leader ? h.esc(t.leader) : '<span class="muted">' + h.esc(leaderText(t)) + "</span>";
  }
  function badge(t) { return is(t) ? h.badge("replicated ×" + t.replicas, "replicated") : ""; }
  function roleBadge(n) { return n && n.role ? h.badge(n.role, n.role === "leader" ? "leader" : "follower") : ""; }
  // lagOf is a replica's lag as the leader reports it ("–" when no leader reports).
  function lagOf(t, addr) {
    var lag = t.replica_lag || {};
    return Object.prototype.hasOwnProperty.call(lag, addr) ? h.fmtInt(lag[addr]) : "–";
  }
  // followerLags lists the replicas other than the leader with their lag (plain text).
  function followerLags(t) {
    return Object.keys(t.replica_lag || {}).sort().filter(function (a) { return a !== t.leader; }).map(function (a) {
      return a + " = " + h.fmtInt(t.replica_lag[a]);
    }).join(", ");
  }

  return {
    is: is,
    badge: badge,
    roleBadge: roleBadge,
    // listCell: the topics list's Replication cell.
    listCell: function (t) {
      if (!is(t)) return '<span class="muted">–</span>';
      var lags = followerLags(t);
      return "leader " + leaderCell(t) + (lags ? '<br><span class="muted">lag ' + h.esc(lags) + "</span>" : "");
    },
    // section: the topic page's Replication figures; nodes are the nodes reporting the topic.
    section: function (t, nodes) {
      if (!is(t)) return "";
      var named = {};
      nodes.forEach(function (n) { if (n.address) named[n.address] = true; });
      var silent = Object.keys(t.replica_lag || {}).sort().filter(function (a) { return !named[a]; });
      return "<h2>Replication</h2>" + '<div class="figures">' + h.figure("replicas", "Replicas", h.fmtInt(t.replicas)) +
        h.figure("leader", "Leader", leaderCell(t)) +
        h.figure("replicas_reporting", "Reporting", h.esc(nodes.length + " of " + t.replicas)) + "</div>" +
        (silent.length ? '<p class="legend-note" data-k="silent_replicas">Not reporting: ' +
          h.esc(silent.map(function (a) { return a + " (lag " + lagOf(t, a) + ")"; }).join(", ")) + ".</p>" : "") +
        '<p class="legend-note">Only the leader delivers. Every replica holds the whole topic, so the figures are the ' +
        "leader's, counted once; clients add up over every replica (a consumer of a follower waits there). " +
        "Lag: log entries a replica is behind the leader.</p>";
    },
    // nodeHeaders and nodeCells: the Replica (the node's name among replicas) and Lag columns
    // of a topic's nodes table; the role is a badge beside the node's name (roleBadge).
    nodeHeaders: function (t) { return is(t) ? [h.th("Replica"), h.th("Lag", true)] : []; },
    nodeCells: function (t, n) {
      if (!is(t)) return "";
      if (!n.role) return h.td("address", '<span class="muted">not replicated</span>') + h.td("replica_lag", "–", true);
      return h.td("address", h.esc(n.address)) + h.td("replica_lag", lagOf(t, n.address), true);
    },
    // channelNote: the channel page's note when its topic is replicated.
    channelNote: function (c) {
      if (!c || !c.nodes || !c.nodes.some(function (n) { return !!n.role; })) return "";
      return '<p class="legend-note" data-k="replica_note">Replicated topic: only the leader delivers; the figures are its ' +
        "channel's, and followers' channels stand by.</p>";
    }
  };
};
