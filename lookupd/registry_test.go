package lookupd

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

func peer(id, bcast string, httpPort int) PeerInfo {
	return PeerInfo{ID: id, RemoteAddress: id, Hostname: "host-" + id, BroadcastAddress: bcast,
		TCPPort: httpPort - 1, HTTPPort: httpPort, Version: "1.3.0"}
}

func newTestRegistry() *Registry {
	return NewRegistry(RegistryConfig{InactiveTimeout: 300 * time.Second, TombstoneLifetime: 45 * time.Second})
}

func ids(ps []PeerInfo) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// nodeTopics returns, per node ID, "topic=tombstoned" pairs sorted.
func nodeTopics(nodes []Node) map[string][]string {
	out := map[string][]string{}
	for _, n := range nodes {
		if len(n.Topics) != len(n.Tombstones) {
			panic("tombstones not parallel to topics")
		}
		l := []string{}
		for i, t := range n.Topics {
			l = append(l, fmt.Sprintf("%s=%v", t, n.Tombstones[i]))
		}
		slices.Sort(l)
		out[n.ID] = l
	}
	return out
}

// op is one step of a registry scenario.
type op func(r *Registry)

func identify(id string) op {
	return func(r *Registry) { r.AddPeer(peer(id, "h-"+id, 4151), t0) }
}
func reg(id, t, c string) op   { return func(r *Registry) { r.Register(id, t, c) } }
func unreg(id, t, c string) op { return func(r *Registry) { r.Unregister(id, t, c) } }
func drop(id string) op        { return func(r *Registry) { r.RemovePeer(id) } }

func TestRegistryScenarios(t *testing.T) {
	type lookup struct {
		channels  []string
		producers []string
		found     bool
	}
	cases := []struct {
		name     string
		ops      []op
		topics   []string
		channels map[string][]string // topic -> Channels()
		lookups  map[string]lookup
	}{
		{
			name:     "register channel registers topic",
			ops:      []op{identify("a:1"), reg("a:1", "t", "c")},
			topics:   []string{"t"},
			channels: map[string][]string{"t": {"c"}, "nope": {}},
			lookups:  map[string]lookup{"t": {[]string{"c"}, []string{"a:1"}, true}, "nope": {nil, nil, false}},
		},
		{
			name:   "register is idempotent",
			ops:    []op{identify("a:1"), reg("a:1", "t", ""), reg("a:1", "t", ""), reg("a:1", "t", "c"), reg("a:1", "t", "c")},
			topics: []string{"t"},
			lookups: map[string]lookup{
				"t": {[]string{"c"}, []string{"a:1"}, true},
			},
		},
		{
			name:    "register before identify is refused",
			ops:     []op{reg("a:1", "t", "c")},
			topics:  []string{},
			lookups: map[string]lookup{"t": {nil, nil, false}},
		},
		{
			name:     "unregister channel keeps topic and empty channel registration",
			ops:      []op{identify("a:1"), reg("a:1", "t", "c"), unreg("a:1", "t", "c")},
			topics:   []string{"t"},
			channels: map[string][]string{"t": {"c"}},
			lookups:  map[string]lookup{"t": {[]string{"c"}, []string{"a:1"}, true}},
		},
		{
			name:     "ephemeral channel stays while another producer has it",
			ops:      []op{identify("a:1"), identify("b:1"), reg("a:1", "t", "c#ephemeral"), reg("b:1", "t", "c#ephemeral"), unreg("a:1", "t", "c#ephemeral")},
			channels: map[string][]string{"t": {"c#ephemeral"}},
			topics:   []string{"t"},
		},
		{
			name:     "unregister last producer of ephemeral channel removes it",
			ops:      []op{identify("a:1"), reg("a:1", "t", "c#ephemeral"), unreg("a:1", "t", "c#ephemeral")},
			channels: map[string][]string{"t": {}},
			topics:   []string{"t"},
		},
		{
			name:     "unregister of an empty ephemeral channel by a non-producer removes it (reference behaviour)",
			ops:      []op{identify("a:1"), identify("b:1"), reg("a:1", "t", "c#ephemeral"), unreg("a:1", "t", "c#ephemeral"), reg("b:1", "t", ""), func(r *Registry) { r.CreateChannel("t", "d#ephemeral") }, unreg("b:1", "t", "d#ephemeral")},
			channels: map[string][]string{"t": {}},
		},
		{
			name:   "unregister of an empty ephemeral topic by a non-producer removes it (reference behaviour)",
			ops:    []op{identify("b:1"), func(r *Registry) { r.CreateTopic("z#ephemeral"); r.CreateTopic("keep") }, unreg("b:1", "z#ephemeral", ""), unreg("b:1", "keep", "")},
			topics: []string{"keep"},
		},
		{
			name:     "unregister topic removes peer from its channels, keeps registrations",
			ops:      []op{identify("a:1"), reg("a:1", "t", "c"), reg("a:1", "t", "d"), unreg("a:1", "t", "")},
			topics:   []string{"t"},
			channels: map[string][]string{"t": {"c", "d"}},
			lookups:  map[string]lookup{"t": {[]string{"c", "d"}, []string{}, true}},
		},
		{
			name:     "unregister ephemeral topic removes topic registration only",
			ops:      []op{identify("a:1"), reg("a:1", "e#ephemeral", "x"), unreg("a:1", "e#ephemeral", "")},
			topics:   []string{},
			channels: map[string][]string{"e#ephemeral": {"x"}},
			lookups:  map[string]lookup{"e#ephemeral": {nil, nil, false}},
		},
		{
			name:    "ephemeral topic stays while another producer has it",
			ops:     []op{identify("a:1"), identify("b:1"), reg("a:1", "e#ephemeral", ""), reg("b:1", "e#ephemeral", ""), unreg("a:1", "e#ephemeral", "")},
			topics:  []string{"e#ephemeral"},
			lookups: map[string]lookup{"e#ephemeral": {[]string{}, []string{"b:1"}, true}},
		},
		{
			name:     "disconnect removes producer everywhere, keeps registrations (ephemeral too)",
			ops:      []op{identify("a:1"), identify("b:1"), reg("a:1", "t", "c"), reg("b:1", "t", ""), reg("a:1", "e#ephemeral", "x#ephemeral"), drop("a:1")},
			topics:   []string{"e#ephemeral", "t"},
			channels: map[string][]string{"t": {"c"}, "e#ephemeral": {"x#ephemeral"}},
			lookups: map[string]lookup{
				"t":           {[]string{"c"}, []string{"b:1"}, true},
				"e#ephemeral": {[]string{"x#ephemeral"}, []string{}, true},
			},
		},
		{
			name: "http create and delete",
			ops: []op{func(r *Registry) {
				r.CreateTopic("a")
				r.CreateChannel("b", "c")
				r.CreateChannel("d", "e")
				r.DeleteTopic("d")
			}},
			topics:   []string{"a", "b"},
			channels: map[string][]string{"a": {}, "b": {"c"}, "d": {}},
			lookups:  map[string]lookup{"a": {[]string{}, []string{}, true}, "d": {nil, nil, false}},
		},
		{
			name: "delete topic drops producers; re-register brings it back",
			ops: []op{identify("a:1"), reg("a:1", "t", "c"), func(r *Registry) { r.DeleteTopic("t") },
				reg("a:1", "t", "")},
			topics:   []string{"t"},
			channels: map[string][]string{"t": {}},
			lookups:  map[string]lookup{"t": {[]string{}, []string{"a:1"}, true}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRegistry()
			for _, o := range tc.ops {
				o(r)
			}
			if tc.topics != nil {
				if got := r.Topics(); !reflect.DeepEqual(got, tc.topics) {
					t.Errorf("Topics() = %q, want %q", got, tc.topics)
				}
			}
			for topic, want := range tc.channels {
				if got := r.Channels(topic); !reflect.DeepEqual(got, want) {
					t.Errorf("Channels(%q) = %q, want %q", topic, got, want)
				}
			}
			for topic, want := range tc.lookups {
				chans, prods, found := r.Lookup(topic, t0)
				got := lookup{chans, nil, found}
				if prods != nil {
					got.producers = ids(prods)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("Lookup(%q) = %+v, want %+v", topic, got, want)
				}
			}
		})
	}
}

func TestRegistryInactiveFilter(t *testing.T) {
	r := newTestRegistry()
	r.AddPeer(peer("a:1", "ha", 4151), t0)
	r.AddPeer(peer("b:1", "hb", 4151), t0)
	r.Register("a:1", "t", "")
	r.Register("b:1", "t", "")

	r.Touch("b:1", t0.Add(200*time.Second))
	r.Touch("zz:1", t0.Add(200*time.Second)) // unknown: ignored

	at := t0.Add(300*time.Second - 1)
	if _, p, _ := r.Lookup("t", at); !reflect.DeepEqual(ids(p), []string{"a:1", "b:1"}) {
		t.Fatalf("just before timeout: producers %q", ids(p))
	}
	at = t0.Add(300 * time.Second)
	if _, p, _ := r.Lookup("t", at); !reflect.DeepEqual(ids(p), []string{"b:1"}) {
		t.Fatalf("at timeout: producers %q, want [b:1]", ids(p))
	}
	if n := nodeTopics(r.Nodes(at)); !reflect.DeepEqual(n, map[string][]string{"b:1": {"t=false"}}) {
		t.Fatalf("nodes at timeout: %v", n)
	}
	// Hidden, not removed: a PING brings it back.
	r.Touch("a:1", at)
	if _, p, _ := r.Lookup("t", at); len(p) != 2 {
		t.Fatalf("after PING: producers %q, want 2", ids(p))
	}
	// Topics/channels never filter.
	if got := r.Topics(); !reflect.DeepEqual(got, []string{"t"}) {
		t.Fatalf("Topics = %q", got)
	}
}

func TestRegistryTombstones(t *testing.T) {
	r := newTestRegistry()
	r.AddPeer(peer("a:1", "ha", 4151), t0)
	r.AddPeer(peer("b:1", "hb", 4151), t0)
	r.AddPeer(peer("c:1", "ha", 5151), t0) // same host, other port
	for _, id := range []string{"a:1", "b:1", "c:1"} {
		r.Register(id, "t", "ch")
		r.Register(id, "u", "")
	}
	if n := r.Tombstone("t", "ha:4151", t0); n != 1 {
		t.Fatalf("Tombstone matched %d, want 1", n)
	}
	if n := r.Tombstone("t", "nope:1", t0); n != 0 {
		t.Fatalf("Tombstone of unknown node matched %d", n)
	}
	if n := r.Tombstone("nope", "ha:4151", t0); n != 0 {
		t.Fatalf("Tombstone of unknown topic matched %d", n)
	}
	at := t0.Add(10 * time.Second)
	if _, p, _ := r.Lookup("t", at); !reflect.DeepEqual(ids(p), []string{"b:1", "c:1"}) {
		t.Fatalf("tombstoned lookup: %q", ids(p))
	}
	if _, p, _ := r.Lookup("u", at); len(p) != 3 {
		t.Fatalf("other topic affected: %q", ids(p))
	}
	wantNodes := map[string][]string{
		"a:1": {"t=true", "u=false"},
		"b:1": {"t=false", "u=false"},
		"c:1": {"t=false", "u=false"},
	}
	if n := nodeTopics(r.Nodes(at)); !reflect.DeepEqual(n, wantNodes) {
		t.Fatalf("nodes: %v, want %v", n, wantNodes)
	}
	// Re-REGISTER keeps the tombstone.
	r.Register("a:1", "t", "")
	if _, p, _ := r.Lookup("t", at); len(p) != 2 {
		t.Fatalf("re-register cleared tombstone: %q", ids(p))
	}
	// Lifetime over: it reappears.
	at = t0.Add(45 * time.Second)
	if _, p, _ := r.Lookup("t", at); len(p) != 3 {
		t.Fatalf("after lifetime: %q, want 3", ids(p))
	}
	if n := nodeTopics(r.Nodes(at)); n["a:1"][0] != "t=false" {
		t.Fatalf("tombstone still reported after lifetime: %v", n)
	}
	// Debug shows the flag and time.
	d := r.Debug()
	var found bool
	for _, p := range d["topic:t:"] {
		if p.ID == "a:1" {
			found = p.Tombstoned && p.TombstonedAt.Equal(t0)
		}
	}
	if !found || len(d["client::"]) != 3 || len(d["channel:t:ch"]) != 3 {
		t.Fatalf("debug: %+v", d)
	}
	if _, ok := d["channel:u:"]; ok {
		t.Fatal("debug lists a channel that does not exist")
	}
}

func TestRegistryNodesAndDebugOmitEmpty(t *testing.T) {
	r := newTestRegistry()
	r.CreateTopic("t")
	r.CreateChannel("t", "c")
	if n := r.Nodes(t0); len(n) != 0 {
		t.Fatalf("nodes without peers: %+v", n)
	}
	if d := r.Debug(); len(d) != 0 {
		t.Fatalf("debug lists registrations without producers: %+v", d)
	}
	r.AddPeer(peer("a:1", "ha", 4151), t0)
	n := r.Nodes(t0)
	if len(n) != 1 || n[0].Topics == nil || n[0].Tombstones == nil || len(n[0].Topics) != 0 {
		t.Fatalf("identified peer without topics: %+v", n)
	}
	if !r.RemovePeer("a:1") || r.RemovePeer("a:1") {
		t.Fatal("RemovePeer should report true once")
	}
	if !r.DeleteChannel("t", "c") || r.DeleteChannel("t", "c") {
		t.Fatal("DeleteChannel should report true once")
	}
}

// TestRegistryScale checks the per-producer index: a disconnect and /nodes
// with 10,000 topics on 10 producers touch only what they must.
func TestRegistryScale(t *testing.T) {
	r := newTestRegistry()
	const producers, topics = 10, 10000
	for p := range producers {
		id := fmt.Sprintf("10.0.0.%d:4000", p)
		r.AddPeer(peer(id, id, 4151), t0)
		for i := range topics {
			r.Register(id, fmt.Sprintf("topic-%05d", i), "ch")
		}
	}
	if got := len(r.Topics()); got != topics {
		t.Fatalf("topics %d", got)
	}
	nodes := r.Nodes(t0)
	total := 0
	for _, n := range nodes {
		total += len(n.Topics)
	}
	if len(nodes) != producers || total != producers*topics {
		t.Fatalf("nodes %d, topic entries %d", len(nodes), total)
	}
	r.RemovePeer("10.0.0.3:4000")
	if _, p, _ := r.Lookup("topic-01234", t0); len(p) != producers-1 {
		t.Fatalf("after disconnect: %d producers", len(p))
	}
}
