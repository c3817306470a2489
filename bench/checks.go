package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Check is one of the durable-topic goals of the issue evaluated on the
// results of one run, or (without a goal) a comparison printed beside them.
type Check struct {
	// Name says what is measured or compared, e.g.
	// "durable-mpub / disk-mpub@nsqd-v1.3.0".
	Name string `json:"name"`
	// Target is the node whose durable figure is checked.
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	// Goal is ">= x" or "<= x"; empty for a figure given for comparison.
	Goal string `json:"goal,omitempty"`
	// Met is whether Value meets Goal (absent without a goal).
	Met *bool `json:"met,omitempty"`

	// Rows of issue 12's tables (Issue12Checks) also carry:
	// Reference, the daemon Target is compared with;
	Reference string `json:"reference,omitempty"`
	// Ratio, Target's figure ÷ Reference's in this run (Value when the goal
	// is a ratio);
	Ratio float64 `json:"ratio,omitempty"`
	// Today, the ratio when it was filed;
	Today float64 `json:"today,omitempty"`
	// Detail, the figures behind Value, and Note, what to know to read it.
	Detail string `json:"detail,omitempty"`
	Note   string `json:"note,omitempty"`
}

// String renders c as one line of the run's summary.
func (c Check) String() string {
	v := strconv.FormatFloat(c.Value, 'f', -1, 64)
	if c.Value >= 1000 {
		v = strconv.FormatFloat(c.Value, 'f', 0, 64)
	}
	s := fmt.Sprintf("%-44s %-13s %10s", c.Name, c.Target, v)
	if c.Goal != "" {
		verdict := "MISSED"
		if c.Met != nil && *c.Met {
			verdict = "met"
		}
		s += fmt.Sprintf("  goal %-10s %s", c.Goal, verdict)
	}
	return strings.TrimRight(s, " ")
}

// The goals for durable topics.
const (
	goalMPUBVsOwnDisk     = 0.5       // durable MPUB >= 50 % of the same nsqd's --mem-queue-size=0 MPUB
	goalMPUBVsRefDisk     = 1.0       // durable MPUB >= the reference's --mem-queue-size=0 MPUB
	goalPUB64             = 50_000    // msgs/s, 64 connections, one PUB per round trip
	goalPUB1OverFsync     = 2.0       // p50 of one connection's PUB <= 2 x p50 of one fdatasync
	goalConsume           = 1_000_000 // msgs/s draining a durable backlog
	goalReplay            = 1_000_000 // msgs/s replaying retained messages
	diskMPUBScenario      = ScenarioDisk + "-mpub"
	diskSync1MPUBScenario = ScenarioDiskSync1 + "-mpub"
)

// DurableChecks evaluates the durable-topic goals on results of one
// run: for every target that ran the durable scenarios, durable-mpub against
// the same target's disk-mpub and against every other target's disk-mpub
// and disk-sync1-mpub, and the absolute goals of durable-pub64, -pub1,
// -consume and -replay. Failed and skipped results are left out.
func DurableChecks(results []Result) []Check {
	type key struct{ scenario, target string }
	ok := map[key]Result{}
	var targets []string
	for _, r := range results {
		if r.Error != "" || r.Skipped != "" || r.Messages == 0 {
			continue
		}
		ok[key{r.Scenario, r.Target}] = r
		if !slices.Contains(targets, r.Target) {
			targets = append(targets, r.Target)
		}
	}
	var out []Check
	add := func(name, target string, value float64, op string, limit float64) {
		c := Check{Name: name, Target: target, Value: value}
		if op != "" {
			met := value >= limit
			if op == "<=" {
				met = value <= limit
			}
			c.Goal, c.Met = op+" "+strconv.FormatFloat(limit, 'f', -1, 64), &met
		}
		out = append(out, c)
	}
	for _, t := range targets {
		if d, found := ok[key{ScenarioDurableMPUB, t}]; found {
			add("durable-mpub msgs/s", t, d.MsgsPerSec, "", 0)
			for _, u := range targets {
				if disk, found := ok[key{diskMPUBScenario, u}]; found {
					goal := goalMPUBVsRefDisk
					if u == t {
						goal = goalMPUBVsOwnDisk
					}
					add("durable-mpub / disk-mpub@"+u, t, roundTo(d.MsgsPerSec/disk.MsgsPerSec, 3), ">=", goal)
				}
				if s1, found := ok[key{diskSync1MPUBScenario, u}]; found {
					add("durable-mpub / disk-sync1-mpub@"+u, t, roundTo(d.MsgsPerSec/s1.MsgsPerSec, 1), "", 0)
				}
			}
		}
		if d, found := ok[key{ScenarioDurablePUB64, t}]; found {
			add("durable-pub64 msgs/s", t, d.MsgsPerSec, ">=", goalPUB64)
		}
		if d, found := ok[key{ScenarioDurablePUB1, t}]; found {
			if v, isNum := d.Extra["pub_p50_over_fsync_p50"].(float64); isNum {
				add("durable-pub1 PUB p50 / fsync p50", t, v, "<=", goalPUB1OverFsync)
			}
		}
		if d, found := ok[key{ScenarioDurableConsume, t}]; found {
			add("durable-consume msgs/s", t, d.MsgsPerSec, ">=", goalConsume)
		}
		if d, found := ok[key{ScenarioDurableReplay, t}]; found {
			add("durable-replay msgs/s", t, d.MsgsPerSec, ">=", goalReplay)
		}
	}
	return out
}
