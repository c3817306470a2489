// Sluice admin UI: a small single-page app over the admin's /api (no framework).
// Each page has a skeleton built once per navigation and a refresh() that updates figures,
// tables and charts in place every few seconds. Charts are drawn with uPlot.
(function () {
  "use strict";

  // Every string shown comes from the cluster (client_id, hostname, user_agent, node
  // addresses...) and is untrusted: it is inserted with textContent, or passed through esc()
  // before it becomes markup; URLs are built from BASE and encodeURIComponent only.
  var BASE = document.body.getAttribute("data-base") || "/";
  if (BASE.charAt(0) !== "/") BASE = "/";
  if (BASE.charAt(BASE.length - 1) !== "/") BASE += "/";
  var app = document.getElementById("app");
  var settings = { is_admin: false, sample_interval_ms: 5000, lookup_mode: true };
  var current = null;      // the page being shown: {refresh, destroy}
  var timer = null;
  var generation = 0;      // bumps on navigation so late answers of the old page are dropped
  var charts = [];         // uPlot instances of the current page

  // ---------- helpers ----------
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmtInt(n) { return n == null || isNaN(Number(n)) ? "–" : Number(n).toLocaleString("en-US"); }
  function fmtRate(r) { return r == null || isNaN(Number(r)) ? "–" : Number(r).toFixed(1); }
  function list(a) { return Array.isArray(a) ? a : []; }
  function fmtDur(sec) {
    if (sec == null || sec < 0) return "–";
    sec = Math.floor(sec);
    var d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }
  function fmtNs(ns) {
    if (ns == null) return "–";
    if (ns >= 1e9) return (ns / 1e9).toFixed(2) + " s";
    if (ns >= 1e6) return (ns / 1e6).toFixed(2) + " ms";
    if (ns >= 1e3) return (ns / 1e3).toFixed(1) + " µs";
    return Math.round(ns) + " ns";
  }
  function fmtTS(ts) { return ts ? new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–"; }
  function lastNum(arr) {
    for (var i = (arr || []).length - 1; i >= 0; i--) if (arr[i] != null) return arr[i];
    return null;
  }
  function link(path, text) { return '<a href="' + esc(BASE + path) + '" data-nav>' + esc(text) + "</a>"; }
  function topicPath(t) { return "topics/" + encodeURIComponent(t); }
  function channelPath(t, c) { return topicPath(t) + "/" + encodeURIComponent(c); }
  function nodePath(n) { return "nodes/" + encodeURIComponent(n); }
  // figure and td take markup: callers pass esc()'d text or the output of the fmt* helpers.
  function figure(key, label, value) {
    return '<div class="figure"><div class="label">' + esc(label) + '</div><div class="value" data-k="' + key + '">' + value + "</div></div>";
  }
  function td(key, value, num) { return '<td data-k="' + key + '"' + (num ? ' class="num"' : "") + ">" + value + "</td>"; }
  function th(label, num) { return "<th" + (num ? ' class="num"' : "") + ">" + esc(label) + "</th>"; }
  function table(headers, rows, empty) {
    if (!rows.length) return '<p class="muted">' + esc(empty || "None.") + "</p>";
    return '<div class="table-wrap"><table><thead><tr>' + headers.join("") + "</tr></thead><tbody>" + rows.join("") + "</tbody></table></div>";
  }
  // safeHref tells whether an untrusted URL may become a link: absolute http(s) only, so a
  // javascript:, data: or relative URL never does.
  function safeHref(u) { return typeof u === "string" && /^https?:\/\/[^\s]+$/i.test(u); }
  // authCell shows a connection's auth identity, linked to its identity URL when that is safe.
  function authCell(k) {
    if (!k.authed) return "no";
    var id = esc(k.auth_identity || "yes");
    if (!safeHref(k.auth_identity_url)) return id;
    return '<a href="' + esc(k.auth_identity_url) + '" target="_blank" rel="noopener noreferrer">' + id + "</a>";
  }
  // retentionLimits lists what keeps a durable topic's finished messages on one node (nsqd
  // keeps a finished segment while either limit does): "1h0m0s or newest 1,024 bytes", or ""
  // when finished segments are removed at once. Plain text: esc() it for markup.
  function retentionLimits(t) {
    var parts = [];
    if (t.retention_time && t.retention_time !== "0s") parts.push(t.retention_time);
    if (t.retention_bytes) parts.push("newest " + fmtInt(t.retention_bytes) + " bytes");
    return parts.join(" or ");
  }
  // retentionText is the topic page's retention badge. The aggregate carries no retention keys
  // when the durable nodes disagree; the nodes table then shows each node's.
  function retentionText(t) {
    if (t.retention_time == null && t.retention_bytes == null) return "retention differs by node";
    var limits = retentionLimits(t);
    return limits ? "keeps finished messages " + limits : "finished messages removed at once";
  }
  function badge(text, cls) { return '<span class="badge ' + (cls || "") + '">' + esc(text) + "</span>"; }
  // Replicated topics: see replica.js.
  var R = window.SluiceReplica({ esc: esc, badge: badge, fmtInt: fmtInt, link: link, nodePath: nodePath, figure: figure, td: td, th: th });
  function e2eTable(e2e) {
    var ps = list(e2e && e2e.percentiles);
    if (!ps.length) return '<p class="muted">No end-to-end latency percentiles (nsqd --e2e-processing-latency-percentile not set).</p>';
    return table([th("Quantile"), th("Latency", true)], ps.map(function (p) {
      var q = Number(p.quantile);
      return '<tr data-quantile="' + esc(q) + '">' + td("quantile", esc("p" + (q * 100).toFixed(q * 100 % 1 ? 1 : 0))) + td("value", esc(fmtNs(p.value)), true) + "</tr>";
    })) + '<p class="legend-note">over ' + fmtInt(e2e.count) + " messages</p>";
  }

  function api(method, path, body) {
    var init = { method: method, headers: { Accept: "application/json" } };
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    return fetch(BASE + path, init).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { message: text }; }
        if (!resp.ok) {
          var err = new Error((data && data.message) || ("HTTP " + resp.status));
          err.status = resp.status;
          throw err;
        }
        return data;
      });
    });
  }
  function get(path) { return api("GET", path); }

  function showWarning(messages) {
    var el = document.getElementById("warning");
    var text = messages.filter(function (m) { return m; }).filter(function (m, i, a) { return a.indexOf(m) === i; }).join("\n");
    el.textContent = text;
    el.hidden = !text;
  }
  var flashTimer = null;
  function flash(text, isError) {
    var el = document.getElementById("flash");
    el.textContent = text;
    el.className = "flash" + (isError ? " error" : "");
    el.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () { el.hidden = true; }, 6000);
  }

  // confirmAction shows the confirmation dialog and resolves to true on Confirm.
  function confirmAction(text) {
    return new Promise(function (resolve) {
      var modal = document.getElementById("modal");
      document.getElementById("modal-text").textContent = text;
      modal.hidden = false;
      function done(ok) {
        modal.hidden = true;
        document.getElementById("modal-ok").onclick = null;
        document.getElementById("modal-cancel").onclick = null;
        resolve(ok);
      }
      document.getElementById("modal-ok").onclick = function () { done(true); };
      document.getElementById("modal-cancel").onclick = function () { done(false); };
    });
  }

  // ---------- charts ----------
  function chartWidth(el) { return Math.max(200, (el.clientWidth || el.parentNode.clientWidth || 600)); }
  // historyChart draws in/out rates (left axis) and depth (right axis) for a series.
  function historyChart(el, title) {
    var opts = {
      title: title, width: chartWidth(el), height: 220,
      scales: { x: { time: true }, rate: {}, depth: {} },
      series: [{},
        { label: "in msg/s", scale: "rate", stroke: "#2e7d32", width: 2, value: function (u, v) { return fmtRate(v); } },
        { label: "out msg/s", scale: "rate", stroke: "#1f6feb", width: 2, value: function (u, v) { return fmtRate(v); } },
        { label: "depth", scale: "depth", stroke: "#ef6c00", width: 1.5, dash: [6, 4], value: function (u, v) { return v == null ? "–" : fmtInt(v); } }],
      axes: [{}, { scale: "rate", label: "msg/s", size: 60 }, { scale: "depth", side: 1, label: "depth", grid: { show: false }, size: 60 }]
    };
    var u = new uPlot(opts, [[], [], [], []], el);
    charts.push(u);
    return u;
  }
  function setHistory(u, h) { u.setData([h.t || [], h["in"] || [], h.out || [], h.depth || []]); }
  function sparkline(el, values) {
    var xs = values.map(function (_, i) { return i; });
    var u = new uPlot({ width: 120, height: 30, legend: { show: false }, cursor: { show: false }, select: { show: false },
      scales: { x: { time: false } }, axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: "#2e7d32", width: 1.5, fill: "rgba(46,125,50,.12)" }] }, [xs, values], el);
    charts.push(u);
  }
  function destroyCharts(filter) {
    charts = charts.filter(function (u) {
      if (filter && !filter(u)) return true;
      u.destroy();
      return false;
    });
  }
  window.addEventListener("resize", function () {
    charts.forEach(function (u) {
      if (u.root.parentNode && u.root.parentNode.classList.contains("chart")) u.setSize({ width: chartWidth(u.root.parentNode), height: 220 });
    });
  });

  // ---------- actions ----------
  function actionButtons(list) {
    if (!settings.is_admin) return "";
    return '<div class="actions">' + list.map(function (b) {
      return '<button type="button" data-act="' + b.act + '"' + (b.danger ? ' class="danger"' : "") +
        (b.attrs || "") + ">" + esc(b.label) + "</button>";
    }).join("") + "</div>";
  }
  // runAction asks, then sends; done (default: refresh the page) follows success, failed(err)
  // a refusal, after the flash.
  function runAction(question, method, path, body, done, failed) {
    confirmAction(question).then(function (ok) {
      if (!ok) return;
      api(method, path, body).then(function (resp) {
        flash(resp && resp.message ? resp.message : "Done: " + question.replace(/\?$/, ""), !!(resp && resp.message));
        if (done) done(); else refreshNow();
      }).catch(function (err) {
        flash("Failed: " + err.message, true);
        if (failed) failed(err);
      });
    });
  }

  // ---------- message policies ----------
  // A topic or channel that sets a policy carries its keys (absent otherwise, as in NSQ); in
  // an aggregate a setting is null when the nodes differ on it, and the nodes table shows
  // each node's. The *Text helpers return plain text: esc() it for markup.
  var DIFFERS = "differs by node";
  function hasTopicPolicy(t) { return !!t && t.rejected_count !== undefined; }
  function hasChannelPolicy(c) { return !!c && c.dead_lettered_count !== undefined; }
  function ttlText(v) { return v === null ? DIFFERS : v ? String(v) : "none"; }
  function maxDepthText(depth, overflow) {
    if (depth === null) return DIFFERS;
    if (!depth) return "unbounded";
    return fmtInt(depth) + ", then " + (overflow === null ? "overflow " + DIFFERS : overflow === "drop_oldest" ? "drop oldest" : String(overflow || "reject"));
  }
  function maxAttemptsText(v) { return v === null ? DIFFERS : v ? fmtInt(v) : "unlimited"; }
  // dlqCell links a dead-letter topic to its page (markup).
  function dlqCell(v) {
    if (v === null) return esc(DIFFERS);
    return v ? link(topicPath(v), v) : '<span class="muted">none</span>';
  }
  // fmtTime shows an RFC 3339 time from a node as "2024-05-01 12:00:00Z", anything else as it
  // came (plain text; Date.parse alone would make a date of almost any string).
  function fmtTime(s) {
    s = String(s == null ? "–" : s);
    var ms = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) ? Date.parse(s) : NaN;
    return isNaN(ms) ? s : new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  // fmtNsTime shows a message timestamp (ns since the epoch) as a UTC time (plain text).
  function fmtNsTime(ns) {
    var d = new Date(Number(ns) / 1e6);
    return ns && !isNaN(d.getTime()) ? d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
  }
  function plural(n, word) { return fmtInt(n) + " " + word + (n === 1 ? "" : "s"); }

  // policyEditor keeps an admin's form for a topic's or channel's settings in el. Each field is
  // filled with the current value (blank when the nodes differ or nothing is set); submit
  // sends only the fields changed, a blank one as its field's clear value. The form is
  // rebuilt when the settings change, unless someone is editing it, and after a save.
  // fields: [{key, label, hint, clear, options}] (options: a select's values).
  function policyEditor(el, id, fields, describe, send) {
    var shown = null, initial = {}, rebuild = false;
    function input(f) { return document.getElementById(id + "-" + f.key); }
    function dirty() { return fields.some(function (f) { var i = input(f); return i && i.value !== initial[f.key]; }); }
    function filled(f, v) {
      if (v === null) return "";
      if (f.options) return v ? String(v) : f.options[0];
      return v === undefined || v === 0 ? "" : String(v);
    }
    function update(values) {
      if (!settings.is_admin) return;
      var key = JSON.stringify(fields.map(function (f) { return values[f.key]; }));
      var form = document.getElementById(id);
      if (form && !rebuild && (key === shown || form.contains(document.activeElement) || dirty())) return;
      var open = !!(form && form.parentNode.open) || rebuild;
      rebuild = false;
      shown = key;
      initial = {};
      el.innerHTML = '<details class="policy-edit"' + (open ? " open" : "") + "><summary>Edit message policy</summary>" +
        '<form id="' + id + '" class="inline">' + fields.map(function (f) {
          var v = values[f.key];
          initial[f.key] = filled(f, v);
          var control;
          if (f.options) {
            control = '<select id="' + id + "-" + f.key + '">' + (v === null ? '<option value="" selected>(' + esc(DIFFERS) + ")</option>" : "") +
              f.options.map(function (o) { return "<option" + (initial[f.key] === o ? " selected" : "") + ">" + esc(o) + "</option>"; }).join("") + "</select>";
          } else {
            control = '<input type="text" id="' + id + "-" + f.key + '" value="' + esc(initial[f.key]) + '" placeholder="' +
              esc(v === null ? DIFFERS : f.hint) + '">';
          }
          return '<label class="field"><span>' + esc(f.label) + "</span>" + control + "</label>";
        }).join("") + '<button type="submit" data-act="save-policy">Save</button>' +
        '<p class="form-error" role="alert" hidden></p></form></details>';
      document.getElementById(id).onsubmit = function (ev) {
        ev.preventDefault();
        var body = { action: "config" }, changed = [];
        fields.forEach(function (f) {
          var v = input(f).value.trim();
          if (v === initial[f.key] || (f.options && v === "")) return;
          body[f.key] = v === "" ? f.clear : v;
          changed.push(f.key + "=" + (body[f.key] === "" ? '""' : body[f.key]));
        });
        if (!changed.length) { flash("Nothing changed."); return; }
        var err = el.querySelector(".form-error");
        err.hidden = true;
        send("Set " + changed.join(", ") + " on " + describe + "?", body, function () { rebuild = true; refreshNow(); },
          function (e) { err.textContent = e.message; err.hidden = false; });
      };
    }
    return update;
  }

  // ---------- pages ----------
  var pages = {};

  pages.topics = function () {
    app.innerHTML = "<h1>Topics</h1>" +
      '<div id="cluster-figures" class="figures"></div>' +
      '<div id="chart-main" class="chart"></div>' +
      '<p class="legend-note">Cluster: messages in and out per second, and messages waiting (depth), sampled every ' +
      esc(Number(settings.sample_interval_ms) / 1000) + " s.</p>" +
      '<div id="topics-table"></div>';
    var chart = historyChart(document.getElementById("chart-main"), "Cluster");
    return function refresh() {
      return Promise.all([get("api/overview"), get("api/history")]).then(function (r) {
        var o = r[0], h = r[1];
        setHistory(chart, h);
        document.getElementById("cluster-figures").innerHTML =
          figure("node_count", "Nodes", fmtInt(o.node_count)) + figure("depth", "Depth", fmtInt(o.depth)) +
          figure("in_flight_count", "In flight", fmtInt(o.in_flight_count)) +
          figure("rate_in", "In msg/s", fmtRate(lastNum(h["in"]))) + figure("rate_out", "Out msg/s", fmtRate(lastNum(h.out)));
        destroyCharts(function (u) { return u !== chart; });
        var replicated = list(o.topics).some(R.is);
        var rows = list(o.topics).map(function (t) {
          return '<tr data-topic="' + esc(t.topic_name) + '">' +
            td("topic_name", link(topicPath(t.topic_name), t.topic_name) + (t.paused ? badge("paused", "paused") : "") +
              (t.durable ? badge("durable", "durable") : "") + R.badge(t)) +
            td("depth", fmtInt(t.depth), true) + td("channel_depth", fmtInt(t.channel_depth), true) +
            td("in_flight_count", fmtInt(t.in_flight_count), true) + td("message_count", fmtInt(t.message_count), true) +
            td("rate_in", fmtRate(t.rate_in), true) + '<td><div class="spark"></div></td>' +
            td("channels", list(t.channels).map(function (c) { return link(channelPath(t.topic_name, c), c); }).join(", ") || '<span class="muted">none</span>') +
            (replicated ? td("replication", R.listCell(t)) : "") + "</tr>";
        });
        var el = document.getElementById("topics-table");
        el.innerHTML = table([th("Topic"), th("Depth", true), th("Channel depth", true), th("In flight", true), th("Messages", true),
          th("In msg/s", true), th("Rate"), th("Channels")].concat(replicated ? [th("Replication")] : []), rows, "No topics.");
        var sparks = el.querySelectorAll(".spark");
        list(o.topics).forEach(function (t, i) { sparkline(sparks[i], list(t.sparkline)); });
        return [o.message, h.message];
      });
    };
  };

  pages.topic = function (topic) {
    var hp = "api/history?topic=" + encodeURIComponent(topic);
    app.innerHTML = "<h1>Topic " + esc(topic) + ' <span id="paused"></span></h1>' +
      '<div id="topic-actions"></div><div id="figures" class="figures"></div><div id="replication"></div>' +
      '<div id="policy"></div><div id="policy-edit"></div>' +
      '<div id="chart-main" class="chart"></div>' +
      '<p class="legend-note">In: published to the topic; out: finished on its channels; depth: topic and channel queues.</p>' +
      '<h2>Nodes</h2><div id="nodes-table"></div><h2>Channels</h2><div id="channels-table"></div>' +
      '<h2>End-to-end latency</h2><div id="e2e"></div>';
    var chart = historyChart(document.getElementById("chart-main"), "Topic " + topic);
    var paused = null, replicated = null;
    var editPolicy = policyEditor(document.getElementById("policy-edit"), "topic-policy", [
      { key: "ttl", label: "TTL", hint: "e.g. 10m (blank: none)", clear: "0" },
      { key: "max_depth", label: "Max depth", hint: "messages (blank: unbounded)", clear: "0" },
      { key: "overflow", label: "At max depth", options: ["reject", "drop_oldest"] }],
      "topic " + topic, function (question, body, done, failed) { runAction(question, "POST", "api/" + topicPath(topic), body, done, failed); });
    app.onclick = function (ev) {
      var b = ev.target.closest("button[data-act]");
      if (!b) return;
      var act = b.getAttribute("data-act"), path = "api/" + topicPath(topic);
      if (act === "pause-topic") runAction("Pause topic " + topic + "?", "POST", path, { action: "pause" });
      if (act === "unpause-topic") runAction("Unpause topic " + topic + "?", "POST", path, { action: "unpause" });
      if (act === "empty-topic") runAction("Empty topic " + topic + "? Its queued messages are deleted.", "POST", path, { action: "empty" });
      if (act === "step-down") runAction("Hand the leadership of topic " + topic + " to another replica? Its consumers' progress goes with it.", "POST", path, { action: "step-down" });
      if (act === "delete-topic") runAction("Delete topic " + topic + " and all its channels?", "DELETE", path, undefined,
        function () { navigate(BASE); });
      if (act === "tombstone") {
        var node = b.getAttribute("data-node");
        runAction("Tombstone " + node + " for topic " + topic + " (delete the topic on that node)?", "DELETE", "api/" + nodePath(node), { topic: topic });
      }
    };
    return function refresh() {
      return Promise.all([get("api/" + topicPath(topic)), get(hp)]).then(function (r) {
        var t = r[0], h = r[1];
        setHistory(chart, h);
        document.getElementById("paused").innerHTML = (t.paused ? badge("paused", "paused") : "") +
          (t.durable ? badge("durable", "durable") + badge(retentionText(t), "retention") : "") + R.badge(t);
        if (paused !== t.paused || replicated !== R.is(t)) {
          paused = t.paused;
          replicated = R.is(t);
          document.getElementById("topic-actions").innerHTML = actionButtons([
            t.paused ? { act: "unpause-topic", label: "Unpause" } : { act: "pause-topic", label: "Pause" }]
            .concat(replicated ? [{ act: "step-down", label: "Step down leader" }] : [],
              [{ act: "empty-topic", label: "Empty", danger: true }, { act: "delete-topic", label: "Delete", danger: true }]));
        }
        document.getElementById("figures").innerHTML =
          figure("depth", "Depth", fmtInt(t.depth)) + figure("memory_depth", "Memory", fmtInt(t.memory_depth)) +
          figure("backend_depth", "Disk", fmtInt(t.backend_depth)) + figure("message_count", "Messages", fmtInt(t.message_count)) +
          figure("in_flight_count", "In flight", fmtInt(t.in_flight_count)) + figure("channel_count", "Channels", fmtInt(list(t.channels).length)) +
          figure("rate_in", "In msg/s", fmtRate(lastNum(h["in"]))) + figure("rate_out", "Out msg/s", fmtRate(lastNum(h.out)));
        document.getElementById("replication").innerHTML = R.section(t, list(t.nodes));
        var pol = hasTopicPolicy(t);
        document.getElementById("policy").innerHTML = pol ? "<h2>Message policy</h2>" + '<div class="figures">' +
          figure("ttl", "TTL", esc(ttlText(t.ttl))) + figure("max_depth", "Max depth", esc(maxDepthText(t.max_depth, t.overflow))) +
          figure("expired_count", "Expired", fmtInt(t.expired_count)) + figure("dropped_count", "Dropped", fmtInt(t.dropped_count)) +
          figure("rejected_count", "Rejected", fmtInt(t.rejected_count)) + "</div>" : "";
        editPolicy(t);
        // A durable topic gets a Retention column: each node's own setting (nodes may differ, or
        // not all be durable).
        document.getElementById("nodes-table").innerHTML = table(
          [th("Node"), th("Hostname"), th("Depth", true), th("Memory", true), th("Disk", true), th("Messages", true), th("Channels", true)]
            .concat(R.nodeHeaders(t), t.durable ? [th("Retention")] : [],
              pol ? [th("TTL"), th("Max depth"), th("Expired", true), th("Dropped", true), th("Rejected", true)] : [], [th("")]),
          list(t.nodes).map(function (n) {
            return '<tr data-node="' + esc(n.node) + '"' + (n.role ? ' data-role="' + esc(n.role) + '"' : "") + ">" +
              td("node", link(nodePath(n.node), n.node) + (n.paused ? badge("paused", "paused") : "") + R.roleBadge(n)) +
              td("hostname", esc(n.hostname)) + td("depth", fmtInt(n.depth), true) + td("memory_depth", fmtInt(n.memory_depth), true) +
              td("backend_depth", fmtInt(n.backend_depth), true) + td("message_count", fmtInt(n.message_count), true) +
              td("channel_count", fmtInt(list(n.channels).length), true) + R.nodeCells(t, n) +
              (t.durable ? td("retention", n.durable ? esc(retentionLimits(n) || "none") : '<span class="muted">not durable</span>') : "") +
              (pol ? (hasTopicPolicy(n) ? td("ttl", esc(ttlText(n.ttl))) + td("max_depth", esc(maxDepthText(n.max_depth, n.overflow))) +
                td("expired_count", fmtInt(n.expired_count), true) + td("dropped_count", fmtInt(n.dropped_count), true) +
                td("rejected_count", fmtInt(n.rejected_count), true)
                : td("ttl", '<span class="muted">no policy</span>') + td("max_depth", "") + td("expired_count", "–", true) +
                td("dropped_count", "–", true) + td("rejected_count", "–", true)) : "") +
              // A replica cannot be tombstoned: nsqd deletes a replicated topic on every replica.
              "<td>" + (settings.is_admin && settings.lookup_mode && !n.role ? '<button type="button" class="small danger" data-act="tombstone" data-node="' + esc(n.node) + '">Tombstone</button>' : "") + "</td></tr>";
          }), "No node carries this topic.");
        // Channels with a policy add what it did: dead-lettered and expired messages.
        var chPol = list(t.channels).some(hasChannelPolicy);
        document.getElementById("channels-table").innerHTML = table(
          [th("Channel"), th("Depth", true), th("In flight", true), th("Deferred", true), th("Requeued", true), th("Timed out", true), th("Messages", true), th("Clients", true)]
            .concat(chPol ? [th("Dead-lettered", true), th("Expired", true)] : []),
          list(t.channels).map(function (c) {
            var p = hasChannelPolicy(c);
            return '<tr data-channel="' + esc(c.channel_name) + '">' + td("channel_name", link(channelPath(topic, c.channel_name), c.channel_name) + (c.paused ? badge("paused", "paused") : "")) +
              td("depth", fmtInt(c.depth), true) + td("in_flight_count", fmtInt(c.in_flight_count), true) + td("deferred_count", fmtInt(c.deferred_count), true) +
              td("requeue_count", fmtInt(c.requeue_count), true) + td("timeout_count", fmtInt(c.timeout_count), true) +
              td("message_count", fmtInt(c.message_count), true) + td("client_count", fmtInt(c.client_count), true) +
              (chPol ? td("dead_lettered_count", p ? fmtInt(c.dead_lettered_count) : "–", true) + td("expired_count", p ? fmtInt(c.expired_count) : "–", true) : "") + "</tr>";
          }), "No channels.");
        document.getElementById("e2e").innerHTML = e2eTable(t.e2e_processing_latency);
        return [t.message, h.message];
      });
    };
  };

  pages.channel = function (topic, channel) {
    var hp = "api/history?topic=" + encodeURIComponent(topic) + "&channel=" + encodeURIComponent(channel);
    app.innerHTML = "<h1>" + link(topicPath(topic), topic) + " / " + esc(channel) + ' <span id="paused"></span></h1>' +
      '<div id="channel-actions"></div><div id="figures" class="figures"></div><div id="replica-note"></div>' +
      '<div id="policy"></div><div id="policy-edit"></div>' +
      '<div id="chart-main" class="chart"></div>' +
      '<p class="legend-note">In: copied into the channel; out: finished (or emptied); depth: waiting in the channel.</p>' +
      '<div id="dead-letters-section" hidden><h2>Dead letters</h2><div id="redrive-actions"></div>' +
      '<p id="redrive-result" class="muted" role="status" hidden></p><div id="dead-letters"></div></div>' +
      '<h2>End-to-end latency</h2><div id="e2e"></div>' +
      '<h2>Nodes</h2><div id="nodes-table"></div><h2>Clients</h2><div id="clients-table"></div>';
    var chart = historyChart(document.getElementById("chart-main"), "Channel " + topic + "/" + channel);
    var paused = null, redrivable = null, deadLetterCount = 0;
    var editPolicy = policyEditor(document.getElementById("policy-edit"), "channel-policy", [
      { key: "max_attempts", label: "Max attempts", hint: "blank: unlimited", clear: "0" },
      { key: "dead_letter_topic", label: "Dead-letter topic", hint: "blank: " + topic + ".dlq", clear: "" },
      { key: "ttl", label: "TTL", hint: "e.g. 1h (blank: none)", clear: "0" }],
      "channel " + topic + "/" + channel, function (question, body, done, failed) {
        runAction(question, "POST", "api/" + channelPath(topic, channel), body, done, failed);
      });
    // redrive moves the channel's dead letters back into it on every node and says how many.
    function redrive(name, path) {
      confirmAction("Redrive " + plural(deadLetterCount, "dead letter") + " of channel " + name +
        "? They are moved from the dead-letter topic back into the channel on every node.").then(function (ok) {
        if (!ok) return;
        api("POST", path, { action: "redrive" }).then(function (resp) {
          var text = "Redrive moved " + plural(Number(resp.moved) || 0, "dead letter") + " back into " + name + ".";
          flash(resp.message ? text + " " + resp.message : text, !!resp.message);
          var el = document.getElementById("redrive-result");
          el.textContent = text;
          el.hidden = false;
          refreshNow();
        }).catch(function (err) { flash("Redrive failed: " + err.message, true); });
      });
    }
    app.onclick = function (ev) {
      var b = ev.target.closest("button[data-act]");
      if (!b) return;
      var act = b.getAttribute("data-act"), path = "api/" + channelPath(topic, channel), name = topic + "/" + channel;
      if (act === "redrive") redrive(name, path);
      if (act === "pause-channel") runAction("Pause channel " + name + "?", "POST", path, { action: "pause" });
      if (act === "unpause-channel") runAction("Unpause channel " + name + "?", "POST", path, { action: "unpause" });
      if (act === "empty-channel") runAction("Empty channel " + name + "? Its queued messages are deleted.", "POST", path, { action: "empty" });
      if (act === "delete-channel") runAction("Delete channel " + name + "?", "DELETE", path, undefined,
        function () { navigate(BASE + topicPath(topic)); });
    };
    return function refresh() {
      // A node without dead letters (NSQ, say) answers none; a failure here leaves the rest of
      // the page alone.
      var dlp = get("api/" + channelPath(topic, channel) + "/dead_letters").catch(function (err) {
        return { count: 0, dead_letters: [], nodes: [], message: "dead letters: " + err.message };
      });
      return Promise.all([get("api/" + channelPath(topic, channel)), get(hp), dlp]).then(function (r) {
        var c = r[0], h = r[1], dl = r[2];
        setHistory(chart, h);
        document.getElementById("paused").innerHTML = c.paused ? badge("paused", "paused") : "";
        if (paused !== c.paused) {
          paused = c.paused;
          document.getElementById("channel-actions").innerHTML = actionButtons([
            c.paused ? { act: "unpause-channel", label: "Unpause" } : { act: "pause-channel", label: "Pause" },
            { act: "empty-channel", label: "Empty", danger: true }, { act: "delete-channel", label: "Delete", danger: true }]);
        }
        document.getElementById("figures").innerHTML =
          figure("depth", "Depth", fmtInt(c.depth)) + figure("memory_depth", "Memory", fmtInt(c.memory_depth)) +
          figure("backend_depth", "Disk", fmtInt(c.backend_depth)) + figure("in_flight_count", "In flight", fmtInt(c.in_flight_count)) +
          figure("deferred_count", "Deferred", fmtInt(c.deferred_count)) + figure("requeue_count", "Requeued", fmtInt(c.requeue_count)) +
          figure("timeout_count", "Timed out", fmtInt(c.timeout_count)) + figure("message_count", "Messages", fmtInt(c.message_count)) +
          figure("client_count", "Clients", fmtInt(c.client_count)) +
          figure("rate_in", "In msg/s", fmtRate(lastNum(h["in"]))) + figure("rate_out", "Out msg/s", fmtRate(lastNum(h.out)));
        document.getElementById("replica-note").innerHTML = R.channelNote(c);
        var pol = hasChannelPolicy(c);
        document.getElementById("policy").innerHTML = pol ? "<h2>Message policy</h2>" + '<div class="figures">' +
          figure("max_attempts", "Max attempts", esc(maxAttemptsText(c.max_attempts))) +
          figure("dead_letter_topic", "Dead-letter topic", dlqCell(c.dead_letter_topic)) + figure("ttl", "TTL", esc(ttlText(c.ttl))) +
          figure("dead_lettered_count", "Dead-lettered", fmtInt(c.dead_lettered_count)) + figure("expired_count", "Expired", fmtInt(c.expired_count)) +
          '</div><p class="legend-note">What the channel enforces: where it sets nothing itself, the node\'s --max-attempts and the topic\'s TTL apply.</p>' : "";
        editPolicy(c);
        // Dead letters: shown where a policy is set or some are left from one.
        deadLetterCount = Number(dl.count) || 0;
        var rows = list(dl.dead_letters), perNode = {};
        list(dl.nodes).forEach(function (n) { perNode[n.node] = n.count; });
        var showDL = pol || deadLetterCount > 0;
        document.getElementById("dead-letters-section").hidden = !showDL;
        if (redrivable !== (deadLetterCount > 0)) {
          redrivable = deadLetterCount > 0;
          document.getElementById("redrive-actions").innerHTML = redrivable ? actionButtons([{ act: "redrive", label: "Redrive" }]) : "";
        }
        var notes = [];
        if (deadLetterCount > rows.length) notes.push("Showing the newest " + fmtInt(rows.length) + " of " + plural(deadLetterCount, "dead letter") + ".");
        list(dl.nodes).forEach(function (n) {
          if (n.read < n.count) notes.push("Node " + n.node + " holds " + fmtInt(n.count) + "; only its oldest " + fmtInt(n.read) +
            " were read (nsqd lists the oldest first), so its newer ones are not listed.");
        });
        document.getElementById("dead-letters").innerHTML = '<div class="figures">' + figure("dead_letter_count", "Dead letters", fmtInt(deadLetterCount)) + "</div>" +
          notes.map(function (t) { return '<p class="legend-note">' + esc(t) + "</p>"; }).join("") +
          table([th("Dead-lettered"), th("Node"), th("Reason"), th("Attempts", true), th("ID"), th("Original ID"), th("Published"), th("Body", true), th("Dead-letter topic")],
            rows.map(function (d) {
              return '<tr data-id="' + esc(d.id) + '">' + td("time", esc(fmtTime(d.time))) + td("node", esc(d.node)) + td("reason", esc(d.reason)) +
                td("attempts", fmtInt(d.attempts), true) + td("id", esc(d.id)) + td("original_id", esc(d.original_id)) +
                td("timestamp", esc(fmtNsTime(d.timestamp))) + td("body_size", esc(fmtInt(d.body_size) + " B"), true) +
                td("dead_letter_topic", dlqCell(d.dead_letter_topic)) + "</tr>";
            }), "No dead letters.");
        document.getElementById("e2e").innerHTML = e2eTable(c.e2e_processing_latency);
        document.getElementById("nodes-table").innerHTML = table(
          [th("Node"), th("Depth", true), th("In flight", true), th("Deferred", true), th("Requeued", true), th("Timed out", true), th("Messages", true), th("Clients", true)]
            .concat(pol ? [th("Max attempts"), th("Dead-letter topic"), th("TTL"), th("Dead-lettered", true), th("Expired", true)] : [],
              showDL ? [th("Dead letters", true)] : []),
          list(c.nodes).map(function (n) {
            var p = hasChannelPolicy(n);
            return '<tr data-node="' + esc(n.node) + '"' + (n.role ? ' data-role="' + esc(n.role) + '"' : "") + ">" +
              td("node", link(nodePath(n.node), n.node) + (n.paused ? badge("paused", "paused") : "") + R.roleBadge(n)) +
              td("depth", fmtInt(n.depth), true) + td("in_flight_count", fmtInt(n.in_flight_count), true) + td("deferred_count", fmtInt(n.deferred_count), true) +
              td("requeue_count", fmtInt(n.requeue_count), true) + td("timeout_count", fmtInt(n.timeout_count), true) +
              td("message_count", fmtInt(n.message_count), true) + td("client_count", fmtInt(n.client_count), true) +
              (pol ? (p ? td("max_attempts", esc(maxAttemptsText(n.max_attempts))) + td("dead_letter_topic", dlqCell(n.dead_letter_topic)) +
                td("ttl", esc(ttlText(n.ttl))) + td("dead_lettered_count", fmtInt(n.dead_lettered_count), true) + td("expired_count", fmtInt(n.expired_count), true)
                : td("max_attempts", '<span class="muted">no policy</span>') + td("dead_letter_topic", "") + td("ttl", "") +
                td("dead_lettered_count", "–", true) + td("expired_count", "–", true)) : "") +
              (showDL ? td("dead_letters", fmtInt(perNode[n.node] || 0), true) : "") + "</tr>";
          }), "No node carries this channel.");
        var now = Date.now() / 1000;
        document.getElementById("clients-table").innerHTML = table(
          [th("Node"), th("Address"), th("Client ID"), th("Hostname"), th("User agent"), th("Version"), th("Auth"), th("TLS"), th("Snappy"), th("Deflate"),
            th("RDY", true), th("In flight", true), th("Finished", true), th("Requeued", true), th("Messages", true), th("Connected since")],
          list(c.clients).map(function (k) {
            return '<tr data-client="' + esc(k.remote_address) + '">' + td("node", esc(k.node)) + td("remote_address", esc(k.remote_address)) +
              td("client_id", esc(k.client_id)) + td("hostname", esc(k.hostname)) + td("user_agent", esc(k.user_agent)) + td("version", esc(k.version)) + td("auth", authCell(k)) +
              td("tls", k.tls ? esc("yes " + k.tls_version) : "no") + td("snappy", k.snappy ? "yes" : "no") + td("deflate", k.deflate ? "yes" : "no") +
              td("ready_count", fmtInt(k.ready_count), true) + td("in_flight_count", fmtInt(k.in_flight_count), true) +
              td("finish_count", fmtInt(k.finish_count), true) + td("requeue_count", fmtInt(k.requeue_count), true) +
              td("message_count", fmtInt(k.message_count), true) +
              td("connect_ts", esc(fmtTS(k.connect_ts)) + ' <span class="muted">(' + fmtDur(now - k.connect_ts) + ")</span>") + "</tr>";
          }), "No clients connected.");
        return [c.message, h.message, dl.message];
      });
    };
  };

  pages.nodes = function () {
    app.innerHTML = '<h1>Nodes</h1><div id="nodes-table"></div>';
    return function refresh() {
      return get("api/nodes").then(function (r) {
        var now = Date.now() / 1000;
        document.getElementById("nodes-table").innerHTML = table(
          [th("Node"), th("Hostname"), th("Broadcast address"), th("TCP", true), th("Version"), th("Uptime"), th("Topics", true), th("Channels", true),
            th("Connections", true), th("Status")],
          list(r.nodes).map(function (n) {
            var addr = n.node || (n.broadcast_address ? n.broadcast_address + ":" + n.http_port : n.remote_address);
            return '<tr data-node="' + esc(addr) + '">' + td("node", n.reachable ? link(nodePath(addr), addr) : esc(addr)) + td("hostname", esc(n.hostname)) +
              td("broadcast_address", esc(n.broadcast_address)) + td("tcp_port", esc(n.tcp_port || ""), true) +
              td("version", esc(n.version) + (n.out_of_date ? badge("out of date", "bad") : "")) +
              td("uptime", n.reachable ? fmtDur(now - n.start_time) : "–") +
              td("topic_count", n.reachable ? fmtInt(n.topic_count) : "–", true) + td("channel_count", n.reachable ? fmtInt(n.channel_count) : "–", true) +
              td("connections", n.reachable ? fmtInt(n.connections) : "–", true) +
              td("status", n.reachable ? badge(n.health || "OK", n.health === "OK" ? "ok" : "bad") : badge("unreachable", "bad") + ' <span class="muted">' + esc(n.error || "") + "</span>") +
              "</tr>";
          }), "No nodes.");
        return [r.message];
      });
    };
  };

  pages.node = function (node) {
    app.innerHTML = "<h1>Node " + esc(node) + '</h1><div id="figures" class="figures"></div>' +
      '<h2>Topics and channels</h2><div id="topics-table"></div><h2>Publishers</h2><div id="publishers-table"></div>';
    return function refresh() {
      return get("api/" + nodePath(node)).then(function (n) {
        var now = Date.now() / 1000;
        document.getElementById("figures").innerHTML =
          figure("hostname", "Hostname", esc(n.hostname)) + figure("version", "Version", esc(n.version)) +
          figure("health", "Health", esc(n.health || "–")) + figure("uptime", "Uptime", n.start_time ? fmtDur(now - n.start_time) : "–") +
          figure("topic_count", "Topics", fmtInt(list(n.topics).length)) +
          figure("total_messages", "Messages", fmtInt(n.total_messages)) + figure("total_clients", "Clients", fmtInt(n.total_clients));
        var rows = [];
        list(n.topics).forEach(function (t) {
          rows.push('<tr data-topic="' + esc(t.topic_name) + '">' + td("topic_name", link(topicPath(t.topic_name), t.topic_name) +
            (t.paused ? badge("paused", "paused") : "") + (t.durable ? badge("durable", "durable") : "") + R.badge(t) + R.roleBadge(t)) +
            "<td></td>" + td("depth", fmtInt(t.depth), true) + td("in_flight_count", fmtInt(t.in_flight_count), true) +
            td("message_count", fmtInt(t.message_count), true) + td("client_count", fmtInt(t.client_count), true) + "</tr>");
          list(t.channels).forEach(function (c) {
            rows.push('<tr data-topic="' + esc(t.topic_name) + '" data-channel="' + esc(c.channel_name) + '"><td></td>' +
              td("channel_name", link(channelPath(t.topic_name, c.channel_name), c.channel_name) + (c.paused ? badge("paused", "paused") : "") + R.roleBadge(c)) +
              td("depth", fmtInt(c.depth), true) + td("in_flight_count", fmtInt(c.in_flight_count), true) +
              td("message_count", fmtInt(c.message_count), true) + td("client_count", fmtInt(c.client_count), true) + "</tr>");
          });
        });
        document.getElementById("topics-table").innerHTML = table([th("Topic"), th("Channel"), th("Depth", true), th("In flight", true),
          th("Messages", true), th("Clients", true)], rows, "No topics on this node.");
        document.getElementById("publishers-table").innerHTML = table([th("Address"), th("Client ID"), th("Hostname"), th("User agent"), th("Auth"), th("Published"), th("Connected since")],
          list(n.publishers).map(function (p) {
            return '<tr data-client="' + esc(p.remote_address) + '">' + td("remote_address", esc(p.remote_address)) + td("client_id", esc(p.client_id)) +
              td("hostname", esc(p.hostname)) + td("user_agent", esc(p.user_agent)) + td("auth", authCell(p)) +
              td("pub_counts", esc(list(p.pub_counts).map(function (c) { return c.topic + "=" + c.count; }).join(", "))) +
              td("connect_ts", esc(fmtTS(p.connect_ts))) + "</tr>";
          }), "No publishers connected.");
        return [n.message];
      });
    };
  };

  pages.lookup = function () {
    app.innerHTML = '<h1>Lookup</h1><div id="lookupds" class="muted"></div>' +
      (settings.is_admin ? '<h2>Create</h2><form id="create-form" class="inline">' +
        '<input type="text" id="create-topic" placeholder="topic" aria-label="topic" required>' +
        '<input type="text" id="create-channel" placeholder="channel (optional)" aria-label="channel">' +
        '<label><input type="checkbox" id="create-durable"> durable</label>' +
        '<label class="replicas">replicas <input type="text" id="create-replicas" inputmode="numeric" placeholder="1–7, optional"></label>' +
        '<button type="submit" data-act="create">Create</button>' +
        '<details class="policy-edit wide"><summary>Message policy (optional)</summary><div class="inline">' +
        '<label class="field"><span>Topic TTL</span><input type="text" id="create-ttl" placeholder="e.g. 10m"></label>' +
        '<label class="field"><span>Max depth</span><input type="text" id="create-max-depth" placeholder="messages"></label>' +
        '<label class="field"><span>At max depth</span><select id="create-overflow"><option value="">(default: reject)</option>' +
        "<option>reject</option><option>drop_oldest</option></select></label>" +
        '<label class="field"><span>Channel max attempts</span><input type="text" id="create-max-attempts" placeholder="e.g. 5"></label>' +
        '<label class="field"><span>Dead-letter topic</span><input type="text" id="create-dead-letter-topic" placeholder="default: &lt;topic&gt;.dlq"></label>' +
        '<label class="field"><span>Channel TTL</span><input type="text" id="create-channel-ttl" placeholder="e.g. 1h"></label>' +
        "</div></details></form>" : "") +
      '<h2>Registrations</h2><div id="lookup-table"></div>';
    var form = document.getElementById("create-form");
    if (form) form.onsubmit = function (ev) {
      ev.preventDefault();
      var t = document.getElementById("create-topic").value.trim(), c = document.getElementById("create-channel").value.trim();
      var durable = document.getElementById("create-durable").checked;
      var replicas = document.getElementById("create-replicas").value.trim();
      if (!t) return;
      var req = c ? { topic: t, channel: c } : { topic: t };
      if (durable) req.durable = true;
      // Replicated (always durable): the admin asks one nsqd, which places the topic on that many
      // nodes; the admin checks the value.
      if (replicas) req.replicas = /^\d+$/.test(replicas) ? Number(replicas) : replicas;
      // Optional settings: only those filled in are sent (nsqd checks them).
      var settingsGiven = [];
      [["ttl", "create-ttl"], ["max_depth", "create-max-depth"], ["overflow", "create-overflow"], ["max_attempts", "create-max-attempts"],
        ["dead_letter_topic", "create-dead-letter-topic"], ["channel_ttl", "create-channel-ttl"]].forEach(function (f) {
        var v = document.getElementById(f[1]).value.trim();
        if (v) { req[f[0]] = v; settingsGiven.push(f[0] + "=" + v); }
      });
      runAction("Create " + (durable && !replicas ? "durable " : "") + "topic " + t + (replicas ? " replicated on " + replicas + " nodes" : "") +
        (c ? " and channel " + c : "") +
        (settingsGiven.length ? " with " + settingsGiven.join(", ") : "") + "?", "POST", "api/topics", req);
    };
    return function refresh() {
      return get("api/lookup").then(function (r) {
        document.getElementById("lookupds").textContent = settings.lookup_mode ?
          "nsqlookupd: " + list(r.lookupds).join(", ") : "Direct mode (--nsqd-http-address): no nsqlookupd configured.";
        document.getElementById("lookup-table").innerHTML = table([th("Topic"), th("Channels"), th("Producers")],
          list(r.topics).map(function (t) {
            return '<tr data-topic="' + esc(t.topic) + '">' + td("topic", link(topicPath(t.topic), t.topic)) +
              td("channels", esc(list(t.channels).join(", ")) || '<span class="muted">none</span>') +
              td("producers", list(t.producers).length ? list(t.producers).map(function (p) { return link(nodePath(p), p); }).join(", ") : '<span class="muted">none (inactive)</span>') + "</tr>";
          }), "No registrations.");
        return [r.message];
      });
    };
  };

  pages.counter = function () {
    app.innerHTML = '<h1>Messages processed</h1><div class="counter" data-k="total">–</div>' +
      '<div id="figures" class="figures"></div><p class="legend-note">Sum of every channel\'s message count on every node, live.</p>';
    var last = null;
    return function refresh() {
      return get("api/counter").then(function (r) {
        var now = Date.now(), rate = null;
        if (last && now > last.t) rate = Math.max(0, (r.total - last.total) * 1000 / (now - last.t));
        last = { t: now, total: r.total };
        app.querySelector(".counter").textContent = fmtInt(r.total);
        document.getElementById("figures").innerHTML = figure("rate", "msg/s (since last refresh)", fmtRate(rate)) +
          figure("channels", "Channels", fmtInt(Object.keys(r.stats || {}).length));
        return [r.message];
      });
    };
  };

  // ---------- routing ----------
  function route() {
    var path = location.pathname, encBase = encodeURI(BASE);
    if (path.indexOf(encBase) === 0) path = path.slice(encBase.length);
    else if (path.indexOf(BASE) === 0) path = path.slice(BASE.length);
    var parts;
    try {
      parts = path.split("/").filter(function (p) { return p; }).map(decodeURIComponent);
    } catch (e) { // malformed %-escape in the address bar
      return notFound();
    }
    if (!parts.length) return { section: "topics", make: pages.topics, period: 1 };
    if (parts[0] === "topics") {
      if (parts.length === 1) return { section: "topics", make: pages.topics };
      if (parts.length === 2) return { section: "topics", make: function () { return pages.topic(parts[1]); } };
      return { section: "topics", make: function () { return pages.channel(parts[1], parts[2]); } };
    }
    if (parts[0] === "nodes") {
      if (parts.length === 1) return { section: "nodes", make: pages.nodes };
      return { section: "nodes", make: function () { return pages.node(parts[1]); } };
    }
    if (parts[0] === "counter") return { section: "counter", make: pages.counter, fast: true };
    if (parts[0] === "lookup") return { section: "lookup", make: pages.lookup };
    return notFound();
  }
  function notFound() {
    return { section: "", make: function () { app.innerHTML = "<h1>Not found</h1>"; return function () { return Promise.resolve([]); }; } };
  }

  // refreshNow updates the current page; while an update is still under way (a slow or
  // unreachable cluster) the next tick is skipped instead of piling up requests.
  var refreshing = -1;     // generation whose refresh is under way
  function refreshNow() {
    if (!current || refreshing === generation) return;
    var gen = generation;
    refreshing = gen;
    function settle() { if (refreshing === gen) refreshing = -1; }
    current().then(function (messages) {
      settle();
      if (gen !== generation) return;
      showWarning(messages || []);
      document.body.setAttribute("data-loaded", String(Date.now()));
    }).catch(function (err) {
      settle();
      if (gen !== generation) return;
      showWarning([err.message]);
      document.body.setAttribute("data-loaded", String(Date.now()));
    });
  }

  function render() {
    generation++;
    clearInterval(timer);
    destroyCharts();
    app.onclick = null;
    document.body.removeAttribute("data-loaded");
    var r = route();
    document.querySelectorAll("nav a").forEach(function (a) {
      a.classList.toggle("active", a.getAttribute("data-section") === r.section);
    });
    current = r.make();
    refreshNow();
    var every = r.fast ? 1000 : Math.min(Math.max(settings.sample_interval_ms, 1000), 10000);
    timer = setInterval(refreshNow, every);
  }

  function navigate(href) {
    history.pushState(null, "", href);
    render();
  }

  document.addEventListener("click", function (ev) {
    var a = ev.target.closest("a[data-nav]");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    navigate(a.getAttribute("href"));
  });
  window.addEventListener("popstate", render);

  get("api/settings").then(function (s) {
    settings = s;
    document.getElementById("who").textContent = (s.user ? s.user + " · " : "") + (s.is_admin ? "admin" : "read-only") + " · v" + s.version;
  }).catch(function (err) {
    showWarning(["settings: " + err.message]);
  }).then(render);
})();
