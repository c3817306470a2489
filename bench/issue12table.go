package bench

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// issue12Row is one row of issue 12's first table: a figure of one
// scenario, compared between Sluice and the reference daemon (NSQ 1.3.0).
type issue12Row struct {
	name     string // the issue's words
	scenario string // result scenario; one ending in "-" matches a prefix (fanout-N)
	key      string // Result.Extra key of the figure; "" = msgs_per_sec
	unit     string // unit of the figure, for the detail
	// vsSink, when set, makes the row Sluice's figure ÷ this raw sink's
	// (same run) instead of Sluice ÷ reference.
	vsSink string
	// today is the issue's Sluice ÷ NSQ ratio when it was filed, todayNote
	// what the issue says beside it.
	today     float64
	todayNote string
	// op and goal: the target (no goal when op is ""). With absolute, the
	// goal applies to Sluice's figure, judged only at minCount messages
	// (connections) or more; otherwise to the ratio.
	op       string
	goal     float64
	absolute bool
	minCount int64
	// alsoRate adds the msgs/s ratio to the detail of a figure that is not
	// a rate.
	alsoRate bool
}

// issue12Table1 is the first table of issue 12, in its order, with the
// ratios "today" as the issue states them.
var issue12Table1 = []issue12Row{
	{name: "MPUB, 4 connections, batches of 200", scenario: ScenarioMPUB, unit: "msgs/s", today: 2.98, op: ">=", goal: 3},
	{name: "one PUB per round trip, 4 connections", scenario: ScenarioPUB, unit: "msgs/s", today: 0.83,
		todayNote: "94 µs vs 78 µs per round trip, same daemon CPU", op: ">=", goal: 1.3},
	{name: "one PUB per round trip ÷ raw-TCP server answering the same PUBs", scenario: ScenarioPUB, unit: "msgs/s",
		vsSink: ScenarioSinkPUB, op: ">=", goal: 0.9},
	{name: "drain a 2.5M backlog, 4 consumers, RDY 2500, FIN each", scenario: ScenarioConsume, unit: "msgs/s", today: 1.8,
		todayNote: "the issue says 1.6–2.0; 1.8 is its middle", op: ">=", goal: 3},
	{name: "drain ÷ raw-TCP server pushing frames honouring RDY", scenario: ScenarioConsume, unit: "msgs/s", vsSink: ScenarioSinkConsume},
	{name: "sustained publish + consume, backlog bounded", scenario: ScenarioSustained, unit: "msgs/s", today: 1.92, op: ">=", goal: 2.5},
	{name: "--mem-queue-size=0, sustained publish + consume", scenario: ScenarioDiskSustained, unit: "msgs/s", today: 2.02, op: ">=", goal: 3},
	{name: "--mem-queue-size=0, unthrottled", scenario: ScenarioDiskMax, unit: "msgs/s", today: 1.03, op: ">=", goal: 2},
	{name: "drain 1M from disk", scenario: ScenarioDisk + "-consume", unit: "msgs/s", today: 2.93, op: ">=", goal: 3},
	{name: "10 channels fan-out, delivered", scenario: ScenarioFanout + "-", unit: "deliveries/s", today: 3.08, op: ">=", goal: 3},
	{name: "go-nsq client, publish + consume: daemon CPU per delivered message", scenario: ScenarioGoNSQPubSub, key: "cpu_us_per_msg",
		unit: "µs/msg", today: 0.99, todayNote: "0.99 is msgs/s (the client is the limit); daemon CPU 0.74 vs 0.83 cores, about 0.90x per message",
		op: "<=", goal: 0.6, alsoRate: true},
	{name: "nsqlookupd /lookup, 8 keep-alive clients: daemon CPU per request", scenario: ScenarioLookup, key: "cpu_us_per_req",
		unit: "µs/req", today: 1.00, todayNote: "1.00 is requests/s (the client is the limit)", op: "<=", goal: 0.5, alsoRate: true},
	{name: "memory per idle consumer connection, 18,000 connections", scenario: ScenarioIdle, key: "rss_per_conn_bytes",
		unit: "B/conn", today: 0.29, todayNote: "7.86 KB vs 27.1 KB", op: "<=", goal: goalIdleConnBytes, absolute: true, minCount: idleConnsGoalCount},
}

// issue12Row2 is one row of issue 12's second table: an absolute figure of
// Sluice with its target, NSQ's beside it.
type issue12Row2 struct {
	name, scenario, key, unit string
	today                     string // Sluice and NSQ as the issue states them
	goal                      float64
	goalText                  string
	minCount                  int64 // judged at this many channels or more
	note                      string
}

var issue12Table2 = []issue12Row2{
	{name: "idle daemon CPU", scenario: ScenarioIdleChannels, key: "idle_cpu_percent", unit: "% of a core",
		today: "33 % vs 26 %", goal: goalIdleCPUPercent, goalText: "<= 5 %", minCount: idleChannelsGoalCount},
	{name: "RSS per idle channel", scenario: ScenarioIdleChannels, key: "rss_per_channel_bytes", unit: "B",
		today: "1,046 MB (10.5 KB per channel) vs 7,487 MB", goal: goalIdleBytesPerChan, goalText: "<= 2 KiB per idle channel", minCount: idleChannelsGoalCount},
	{name: "start until /ping answers", scenario: ScenarioIdleChannels, key: "start_seconds", unit: "s",
		today: "4.1 s vs 28.0 s", goal: goalIdleStartSeconds, goalText: "<= 2 s", minCount: idleChannelsGoalCount},
	{name: "/stats?format=json, first", scenario: ScenarioIdleChannels, key: "stats_seconds_cold", unit: "s",
		today: "3.2 s vs 2.6 s", goal: goalIdleStatsSeconds, goalText: "<= 0.5 s", minCount: idleChannelsGoalCount},
	{name: "/stats?format=json, median of the next 3", scenario: ScenarioIdleChannels, key: "stats_seconds_warm", unit: "s",
		today: "3.2 s vs 2.6 s", goal: goalIdleStatsSeconds, goalText: "<= 0.5 s", minCount: idleChannelsGoalCount},
	{name: "creating topics x channels over HTTP, one client: seconds per 100,000 channels", scenario: ScenarioCreateChannels,
		key: "projected_100k_seconds", unit: "s", today: "40 s vs 42 s for 1,000 x 10", goal: goalCreate100kSeconds,
		goalText: "100,000 creations <= 30 s", minCount: createGoalCount,
		note: "projected linearly from the run's rate (a daemon that slows as channels accumulate does worse at 100,000)"},
}

const (
	goalCreate100kSeconds = 30.0
	// createGoalCount: create-channels is judged from 1,000 x 10 (the
	// issue's size) up.
	createGoalCount = 10_000
)

// issue12Index finds results of one run by scenario and target (several
// with --rounds).
type issue12Index struct {
	ok         map[[2]string]resultSet
	sluice     []string // targets named sluice...
	references []string // the other daemons
}

func newIssue12Index(results []Result) issue12Index {
	ix := issue12Index{ok: map[[2]string]resultSet{}}
	for _, r := range results {
		if r.Error != "" || r.Skipped != "" || r.Messages == 0 {
			continue
		}
		sc := r.Scenario
		if strings.HasPrefix(sc, ScenarioFanout+"-") {
			sc = ScenarioFanout + "-"
		}
		k := [2]string{sc, r.Target}
		ix.ok[k] = append(ix.ok[k], r)
		if r.Target == "raw-sink" {
			continue
		}
		list := &ix.references
		if strings.HasPrefix(r.Target, "sluice") {
			list = &ix.sluice
		}
		if !slices.Contains(*list, r.Target) {
			*list = append(*list, r.Target)
		}
	}
	return ix
}

// resultSet is the results of one scenario on one target, one per round.
type resultSet []Result

// figure returns the median over the rounds of a figure: msgs/s for key "",
// else Result.Extra[key].
func (rs resultSet) figure(key string) (float64, bool) {
	var v []float64
	for _, r := range rs {
		if key == "" {
			if r.MsgsPerSec > 0 {
				v = append(v, r.MsgsPerSec)
			}
		} else if x, ok := asFloat(r.Extra[key]); ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	return medianOf(v), true
}

// rate is figure("") or 0.
func (rs resultSet) rate() float64 {
	v, _ := rs.figure("")
	return v
}

// messages is the smallest count of the rounds (what a goal judged at a
// size is judged on).
func (rs resultSet) messages() int64 {
	m := rs[0].Messages
	for _, r := range rs[1:] {
		m = min(m, r.Messages)
	}
	return m
}

// seconds is the median duration of the rounds.
func (rs resultSet) seconds() float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.Seconds
	}
	return medianOf(v)
}

// roundsNote says how many rounds the figures of a row are medians of.
func roundsNote(sets ...resultSet) string {
	n := 0
	for _, s := range sets {
		n = max(n, len(s))
	}
	if n < 2 {
		return ""
	}
	return fmt.Sprintf(" (medians of %d rounds)", n)
}

// Issue12Checks evaluates both tables of issue 12 on the results of one
// run. The first: for every Sluice target (named "sluice...") and every
// other daemon that ran the same scenario, Sluice ÷ that daemon, beside
// the issue's ratio "today" and its target (rows compared with a raw sink
// use the sink of the same run; the idle-connection row's target is
// Sluice's absolute figure, judged at 18,000 connections or more). The
// second: Sluice's absolute figures of idle-channels and create-channels
// with their targets, judged at the issue's sizes, the other daemons' in the
// detail. Rows whose scenarios did not run (or failed) are left out.
func Issue12Checks(results []Result) (table1, table2 []Check) {
	ix := newIssue12Index(results)
	for _, row := range issue12Table1 {
		for _, s := range ix.sluice {
			sr, ok := ix.ok[[2]string{row.scenario, s}]
			if !ok {
				continue
			}
			sv, ok := sr.figure(row.key)
			if !ok {
				continue
			}
			if row.vsSink != "" {
				sink, ok := ix.ok[[2]string{row.vsSink, "raw-sink"}]
				if !ok || sink.rate() <= 0 {
					continue
				}
				c := Check{Name: row.name, Target: s, Reference: "raw-sink " + row.vsSink, Value: roundTo(sv/sink.rate(), 3)}
				c.Ratio = c.Value
				c.Detail = fmt.Sprintf("%s %s; %s %s", s, fmtFigure(sv, row.unit), row.vsSink, fmtFigure(sink.rate(), row.unit))
				for _, ref := range ix.references {
					if rr, ok := ix.ok[[2]string{row.scenario, ref}]; ok {
						c.Detail += fmt.Sprintf("; %s %s (%.3f of the sink)", ref, fmtFigure(rr.rate(), row.unit), rr.rate()/sink.rate())
					}
				}
				c.Detail += roundsNote(sr, sink)
				judge(&c, row.op, row.goal)
				table1 = append(table1, c)
				continue
			}
			refs := 0
			for _, ref := range ix.references {
				rr, ok := ix.ok[[2]string{row.scenario, ref}]
				if !ok {
					continue
				}
				rv, ok := rr.figure(row.key)
				if !ok || rv <= 0 {
					continue
				}
				refs++
				c := Check{Name: row.name, Target: s, Reference: ref, Ratio: roundTo(sv/rv, 3), Today: row.today, Note: row.todayNote}
				c.Detail = fmt.Sprintf("%s %s; %s %s", s, fmtFigure(sv, row.unit), ref, fmtFigure(rv, row.unit))
				if row.key == "" {
					sc, ok1 := sr.figure("cpu_us_per_msg")
					rc, ok2 := rr.figure("cpu_us_per_msg")
					if ok1 && ok2 && rc > 0 {
						c.Detail += fmt.Sprintf("; daemon CPU %s vs %s µs/msg (%.3fx)", fmtFigure(sc, ""), fmtFigure(rc, ""), sc/rc)
					}
				}
				if row.alsoRate && rr.rate() > 0 {
					unit := "msgs/s"
					if row.scenario == ScenarioLookup {
						unit = "req/s"
					}
					c.Detail += fmt.Sprintf("; %s %s vs %s (%.3fx)", unit, fmtFigure(sr.rate(), ""), fmtFigure(rr.rate(), ""), sr.rate()/rr.rate())
				}
				c.Detail += roundsNote(sr, rr)
				c.Value = c.Ratio
				if row.absolute {
					c.Value = sv
				}
				judgeRow(&c, row, sr.messages())
				table1 = append(table1, c)
			}
			if refs == 0 && row.absolute {
				c := Check{Name: row.name, Target: s, Value: sv, Today: row.today, Note: row.todayNote,
					Detail: fmt.Sprintf("%s %s; no reference daemon in this run", s, fmtFigure(sv, row.unit))}
				judgeRow(&c, row, sr.messages())
				table1 = append(table1, c)
			}
		}
	}
	for _, row := range issue12Table2 {
		for _, s := range ix.sluice {
			sr, ok := ix.ok[[2]string{row.scenario, s}]
			if !ok {
				continue
			}
			sv, ok := sr.figure(row.key)
			if !ok {
				continue
			}
			c := Check{Name: row.name, Target: s, Value: sv, Note: strings.TrimPrefix(row.note+"; today "+row.today, "; ")}
			c.Detail = fmt.Sprintf("%s %s", s, fmtFigure(sv, row.unit))
			if row.scenario == ScenarioCreateChannels {
				c.Detail += fmt.Sprintf(" (%d channels in %.2f s)", sr.messages(), sr.seconds())
			}
			for _, ref := range ix.references {
				if rr, ok := ix.ok[[2]string{row.scenario, ref}]; ok {
					if rv, ok := rr.figure(row.key); ok {
						c.Detail += fmt.Sprintf("; %s %s", ref, fmtFigure(rv, row.unit))
						if row.scenario == ScenarioCreateChannels {
							c.Detail += fmt.Sprintf(" (%d channels in %.2f s)", rr.messages(), rr.seconds())
						}
						if c.Reference == "" && rv > 0 {
							c.Reference, c.Ratio = ref, roundTo(sv/rv, 3)
						}
					}
				}
			}
			c.Detail += roundsNote(sr)
			if sr.messages() >= row.minCount {
				met := sv <= row.goal
				c.Goal, c.Met = "<= "+strconv.FormatFloat(row.goal, 'f', -1, 64), &met
			} else {
				c.Note = strings.TrimPrefix(fmt.Sprintf("%s; not judged: %d < %d", c.Note, sr.messages(), row.minCount), "; ")
			}
			table2 = append(table2, c)
		}
	}
	return table1, table2
}

// judge sets c's goal and verdict on c.Value.
func judge(c *Check, op string, goal float64) {
	if op == "" {
		return
	}
	met := c.Value >= goal
	if op == "<=" {
		met = c.Value <= goal
	}
	c.Goal, c.Met = op+" "+strconv.FormatFloat(goal, 'f', -1, 64), &met
}

// judgeRow judges c by row's goal; an absolute goal only at the row's
// count or more.
func judgeRow(c *Check, row issue12Row, count int64) {
	if row.absolute && count < row.minCount {
		c.Note = strings.TrimPrefix(fmt.Sprintf("%s; not judged: %d < %d", c.Note, count, row.minCount), "; ")
		return
	}
	judge(c, row.op, row.goal)
}

// fmtFigure renders v with its unit: 1.23 M, 456 k, 78.9.
func fmtFigure(v float64, unit string) string {
	var s string
	switch {
	case strings.HasPrefix(unit, "B") && v >= 1000 && v < 1e9:
		s = groupThousands(int64(v + 0.5)) // bytes: 28,264 B/conn
	case v >= 1e6:
		s = strconv.FormatFloat(v/1e6, 'f', 2, 64) + " M"
	case v >= 1e4:
		s = strconv.FormatFloat(v/1e3, 'f', 1, 64) + " k"
	case v >= 100:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	default:
		s = strconv.FormatFloat(v, 'f', -1, 64)
		if len(s) > 6 {
			s = strconv.FormatFloat(v, 'f', 3, 64)
		}
	}
	if unit == "" {
		return strings.TrimSpace(s)
	}
	return s + " " + unit
}

func verdict(c Check) string {
	switch {
	case c.Met == nil:
		return ""
	case *c.Met:
		return "met"
	}
	return "MISSED"
}

// printIssue12Tables writes both tables as Markdown lines behind "# ",
// every row of the issue's, "not in this run" where a scenario did not run.
func printIssue12Tables(w io.Writer, table1, table2 []Check) {
	p := func(format string, a ...any) { fmt.Fprintf(w, "# "+format+"\n", a...) }
	p("issue 12, first table: Sluice ÷ NSQ 1.3.0 (or the other daemon) in this run, beside the issue's ratio today:")
	p("| scenario | today | this run | figures | target | |")
	p("|---|---:|---:|---|---|---|")
	for _, row := range issue12Table1 {
		today := "—"
		if row.today > 0 {
			today = strconv.FormatFloat(row.today, 'f', 2, 64) + "x"
			if row.todayNote != "" {
				today += " (" + row.todayNote + ")"
			}
		}
		target := "—"
		switch {
		case row.op != "" && row.absolute:
			target = fmt.Sprintf("%s %s %s (Sluice, at %d or more)", row.op, fmtFigure(row.goal, ""), row.unit, row.minCount)
		case row.op != "":
			target = fmt.Sprintf("%s %sx", row.op, strconv.FormatFloat(row.goal, 'f', -1, 64))
		}
		printed := false
		for _, c := range table1 {
			if c.Name != row.name {
				continue
			}
			printed = true
			run := strconv.FormatFloat(c.Ratio, 'f', 3, 64) + "x"
			if c.Ratio == 0 {
				run = "—"
			}
			v := verdict(c)
			if v == "" && c.Note != "" && strings.Contains(c.Note, "not judged") {
				v = "not judged (size)"
			}
			p("| %s | %s | %s | %s | %s | %s |", row.name, today, run, c.Detail, target, v)
		}
		if !printed {
			p("| %s | %s | not in this run | | %s | |", row.name, today, target)
		}
	}
	p("issue 12, second table: Sluice's figures and NSQ's (or the other daemon's) in this run:")
	p("| figure | today (Sluice vs NSQ) | this run | target | |")
	p("|---|---|---|---|---|")
	for _, row := range issue12Table2 {
		printed := false
		for _, c := range table2 {
			if c.Name != row.name {
				continue
			}
			printed = true
			v := verdict(c)
			if v == "" {
				v = "not judged (size)"
			}
			p("| %s | %s | %s | %s | %s |", row.name, row.today, c.Detail, row.goalText, v)
		}
		if !printed {
			p("| %s | %s | not in this run | %s | |", row.name, row.today, row.goalText)
		}
	}
}

// groupThousands renders v with commas between groups of three digits.
func groupThousands(v int64) string {
	s := strconv.FormatInt(v, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
