package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Producer is an nsqd node as the admin lists it (§11.4 GET /api/nodes).
type Producer struct {
	RemoteAddresses  []string        `json:"remote_addresses"`
	RemoteAddress    string          `json:"remote_address"`
	Hostname         string          `json:"hostname"`
	BroadcastAddress string          `json:"broadcast_address"`
	TCPPort          int             `json:"tcp_port"`
	HTTPPort         int             `json:"http_port"`
	Version          string          `json:"version"`
	Topics           []ProducerTopic `json:"topics"`
	OutOfDate        bool            `json:"out_of_date"`

	// addr overrides broadcast_address:http_port (direct mode: the configured address).
	addr string
}

// ProducerTopic is one topic a node registered, and whether the node is tombstoned for it.
type ProducerTopic struct {
	Topic      string `json:"topic"`
	Tombstoned bool   `json:"tombstoned"`
}

// HTTPAddr is the node's identity in the admin: the address its HTTP API is reached at.
func (p *Producer) HTTPAddr() string {
	if p.addr != "" {
		return p.addr
	}
	return nodeAddr(p.BroadcastAddress, p.HTTPPort)
}

// nodeError is a failure to reach one upstream daemon.
type nodeError struct {
	Kind string // "nsqd" or "nsqlookupd"
	Addr string
	Err  error
}

func (e *nodeError) Error() string { return fmt.Sprintf("%s %s: %v", e.Kind, e.Addr, e.Err) }
func (e *nodeError) Unwrap() error { return e.Err }

// warningText renders upstream failures as the API's "message" ("" when none).
func warningText(errs []error) string {
	if len(errs) == 0 {
		return ""
	}
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return "WARNING: unreachable: " + strings.Join(parts, "; ")
}

// cluster gathers the view of the cluster from nsqlookupd (cluster mode) or from a fixed
// list of nsqd nodes (direct mode), over HTTP only.
type cluster struct {
	up *upstream

	mu       sync.RWMutex // guards lookupds
	lookupds []string
	nsqds    []string // fixed at start
}

func (c *cluster) lookupdAddrs() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]string(nil), c.lookupds...)
}

func (c *cluster) setLookupdAddrs(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookupds = append([]string(nil), addrs...)
}

func (c *cluster) lookupMode() bool { return len(c.nsqds) == 0 }

// maxFanOut bounds how many upstream calls one fan-out makes at once, so a cluster (or a
// lookupd full of bogus registrations) with thousands of nodes does not open thousands of
// connections per page view.
const maxFanOut = 64

// fanOut runs fn for every address, at most maxFanOut at a time, and collects the errors
// as nodeErrors.
func fanOut(addrs []string, kind string, fn func(addr string) error) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(addrs))
	sem := make(chan struct{}, maxFanOut)
	for i, a := range addrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(a); err != nil {
				errs[i] = &nodeError{Kind: kind, Addr: a, Err: err}
			}
		}()
	}
	wg.Wait()
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}

// nodes lists every nsqd, de-duplicated by broadcast_address:tcp_port and sorted, with
// out_of_date set on nodes older than the newest version seen.
func (c *cluster) nodes(ctx context.Context) ([]*Producer, []error) {
	var (
		mu   sync.Mutex
		all  []*Producer
		errs []error
	)
	if c.lookupMode() {
		errs = fanOut(c.lookupdAddrs(), "nsqlookupd", func(addr string) error {
			var resp struct {
				Producers []struct {
					Producer
					Tombstones []bool   `json:"tombstones"`
					TopicNames []string `json:"topics"`
				} `json:"producers"`
			}
			if err := c.up.do(ctx, http.MethodGet, addr, "/nodes", &resp); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, rp := range resp.Producers {
				p := rp.Producer
				p.Topics = nil
				for i, t := range rp.TopicNames {
					p.Topics = append(p.Topics, ProducerTopic{Topic: t, Tombstoned: i < len(rp.Tombstones) && rp.Tombstones[i]})
				}
				all = append(all, &p)
			}
			return nil
		})
	} else {
		errs = fanOut(c.nsqds, "nsqd", func(addr string) error {
			var info struct {
				Version          string `json:"version"`
				BroadcastAddress string `json:"broadcast_address"`
				Hostname         string `json:"hostname"`
				HTTPPort         int    `json:"http_port"`
				TCPPort          int    `json:"tcp_port"`
			}
			if err := c.up.do(ctx, http.MethodGet, addr, "/info", &info); err != nil {
				return err
			}
			p := &Producer{RemoteAddress: addr, Hostname: info.Hostname, BroadcastAddress: info.BroadcastAddress,
				TCPPort: info.TCPPort, HTTPPort: info.HTTPPort, Version: info.Version, addr: addr}
			var st nodeStats
			if err := c.up.do(ctx, http.MethodGet, addr, "/stats?format=json&include_clients=false&include_mem=false", &st); err == nil {
				for _, t := range st.Topics {
					p.Topics = append(p.Topics, ProducerTopic{Topic: t.TopicName})
				}
			}
			mu.Lock()
			all = append(all, p)
			mu.Unlock()
			return nil
		})
	}
	return mergeProducers(all), errs
}

// mergeProducers de-duplicates producers by broadcast_address:tcp_port, merges their topics
// and remote addresses, marks out-of-date versions and sorts by HTTP address.
func mergeProducers(in []*Producer) []*Producer {
	byKey := map[string]*Producer{}
	var out []*Producer
	for _, p := range in {
		key := nodeAddr(p.BroadcastAddress, p.TCPPort)
		if p.addr != "" {
			key = p.addr
		}
		m, ok := byKey[key]
		if !ok {
			cp := *p
			cp.RemoteAddresses = []string{p.RemoteAddress}
			cp.Topics = nil
			m = &cp
			byKey[key] = m
			out = append(out, m)
		} else if !contains(m.RemoteAddresses, p.RemoteAddress) {
			m.RemoteAddresses = append(m.RemoteAddresses, p.RemoteAddress)
		}
		for _, t := range p.Topics {
			found := false
			for i := range m.Topics {
				if m.Topics[i].Topic == t.Topic {
					m.Topics[i].Tombstoned = m.Topics[i].Tombstoned || t.Tombstoned
					found = true
				}
			}
			if !found {
				m.Topics = append(m.Topics, t)
			}
		}
	}
	var newest semver
	for _, p := range out {
		if v := parseSemver(p.Version); newest.less(v) {
			newest = v
		}
		sort.Slice(p.Topics, func(i, j int) bool { return p.Topics[i].Topic < p.Topics[j].Topic })
		if p.Topics == nil {
			p.Topics = []ProducerTopic{}
		}
		sort.Strings(p.RemoteAddresses)
	}
	for _, p := range out {
		p.OutOfDate = parseSemver(p.Version).less(newest)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HTTPAddr() < out[j].HTTPAddr() })
	return out
}

// topicProducers lists the nodes that carry topic (lookupd: /lookup; direct: every node whose
// stats show the topic).
func (c *cluster) topicProducers(ctx context.Context, topic string) ([]*Producer, []error) {
	if !c.lookupMode() {
		nodes, errs := c.nodes(ctx)
		var out []*Producer
		for _, n := range nodes {
			for _, t := range n.Topics {
				if t.Topic == topic {
					out = append(out, n)
				}
			}
		}
		return out, errs
	}
	var (
		mu  sync.Mutex
		all []*Producer
	)
	errs := fanOut(c.lookupdAddrs(), "nsqlookupd", func(addr string) error {
		var resp struct {
			Producers []*Producer `json:"producers"`
		}
		err := c.up.do(ctx, http.MethodGet, addr, "/lookup?topic="+url.QueryEscape(topic), &resp)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		mu.Lock()
		all = append(all, resp.Producers...)
		mu.Unlock()
		return nil
	})
	return mergeProducers(all), errs
}

// topics lists every topic name, sorted.
func (c *cluster) topics(ctx context.Context) ([]string, []error) {
	set := map[string]bool{}
	var mu sync.Mutex
	var errs []error
	if c.lookupMode() {
		errs = fanOut(c.lookupdAddrs(), "nsqlookupd", func(addr string) error {
			var resp struct {
				Topics []string `json:"topics"`
			}
			if err := c.up.do(ctx, http.MethodGet, addr, "/topics", &resp); err != nil {
				return err
			}
			mu.Lock()
			for _, t := range resp.Topics {
				set[t] = true
			}
			mu.Unlock()
			return nil
		})
	} else {
		nodes, nerrs := c.nodes(ctx)
		errs = nerrs
		for _, n := range nodes {
			for _, t := range n.Topics {
				set[t.Topic] = true
			}
		}
	}
	return sortedKeys(set), errs
}

// lookupdChannels lists the channels registered for topic in every lookupd.
func (c *cluster) lookupdChannels(ctx context.Context, topic string) ([]string, []error) {
	set := map[string]bool{}
	var mu sync.Mutex
	errs := fanOut(c.lookupdAddrs(), "nsqlookupd", func(addr string) error {
		var resp struct {
			Channels []string `json:"channels"`
		}
		if err := c.up.do(ctx, http.MethodGet, addr, "/channels?topic="+url.QueryEscape(topic), &resp); err != nil {
			return err
		}
		mu.Lock()
		for _, ch := range resp.Channels {
			set[ch] = true
		}
		mu.Unlock()
		return nil
	})
	return sortedKeys(set), errs
}

// stats fetches /stats?format=json from every node concurrently, optionally filtered.
func (c *cluster) stats(ctx context.Context, nodes []*Producer, topic, channel string, includeClients bool) ([]*nodeResult, []error) {
	q := url.Values{"format": {"json"}, "include_mem": {"false"}}
	if topic != "" {
		q.Set("topic", topic)
	}
	if channel != "" {
		q.Set("channel", channel)
	}
	q.Set("include_clients", strconv.FormatBool(includeClients))
	path := "/stats?" + q.Encode()
	results := make([]*nodeResult, len(nodes))
	addrs := make([]string, len(nodes))
	index := map[string]int{}
	for i, n := range nodes {
		addrs[i] = n.HTTPAddr()
		index[addrs[i]] = i
	}
	errs := fanOut(addrs, "nsqd", func(addr string) error {
		var st nodeStats
		if err := c.up.do(ctx, http.MethodGet, addr, path, &st); err != nil {
			return err
		}
		i := index[addr]
		results[i] = &nodeResult{Node: addr, Addr: nodeAddr(nodes[i].BroadcastAddress, nodes[i].TCPPort),
			Hostname: nodes[i].Hostname, Stats: &st, At: time.Now()}
		return nil
	})
	var out []*nodeResult
	for _, r := range results {
		if r != nil {
			out = append(out, r)
		}
	}
	return out, errs
}

// lookupdPost sends an action to every lookupd.
func (c *cluster) lookupdPost(ctx context.Context, path string, params url.Values) []error {
	return fanOut(c.lookupdAddrs(), "nsqlookupd", func(addr string) error {
		return c.up.post(ctx, addr, path, params)
	})
}

// nsqdPost sends an action to every given node.
func (c *cluster) nsqdPost(ctx context.Context, nodes []*Producer, path string, params url.Values) []error {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.HTTPAddr()
	}
	return fanOut(addrs, "nsqd", func(addr string) error {
		return c.up.post(ctx, addr, path, params)
	})
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// semver is a parsed MAJOR.MINOR.PATCH[-pre]; unparsable versions are 0.0.0 (§0.2).
type semver struct {
	major, minor, patch int
	pre                 string
}

func parseSemver(s string) semver {
	s = strings.TrimPrefix(s, "v")
	core, pre, _ := strings.Cut(s, "-")
	core, _, _ = strings.Cut(core, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return semver{}
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return semver{}
		}
		n[i] = v
	}
	return semver{n[0], n[1], n[2], pre}
}

func (a semver) less(b semver) bool {
	if a.major != b.major {
		return a.major < b.major
	}
	if a.minor != b.minor {
		return a.minor < b.minor
	}
	if a.patch != b.patch {
		return a.patch < b.patch
	}
	// A pre-release sorts before its release.
	if a.pre == "" || b.pre == "" {
		return a.pre != "" && b.pre == ""
	}
	return a.pre < b.pre
}
