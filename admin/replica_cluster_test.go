package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/nsqd"
)

// replicaCluster is nsqlookupd and nsqds that replicate (the nsqds find each other through
// nsqlookupd, as in internal/replicatest), seen by the admin through recording proxies: the
// admin reaches nsqlookupd through a proxy that lists every nsqd at its own proxy's HTTP
// port, so the test knows every call the admin made to every nsqd. The nsqds' TCP
// addresses (their names among replicas) are the real ones.
type replicaCluster struct {
	*testCluster
	lookupdProxy string      // host:port the admin uses as nsqlookupd
	proxies      []*nsqdSpy  // per nsqd, in NSQDs' order
	byHTTP       map[int]int // real nsqd HTTP port -> proxy HTTP port
}

// nsqdSpy forwards to one nsqd and records the calls.
type nsqdSpy struct {
	addr string // the proxy's host:port: the node's address in the admin
	mu   sync.Mutex
	seen []string // "POST /topic/create?..."
}

func (s *nsqdSpy) calls(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.seen {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// startReplicaCluster starts nsqlookupd, n nsqds and the proxies.
func startReplicaCluster(t *testing.T, n int) *replicaCluster {
	t.Helper()
	c := startClusterWith(t, n, func(_ int, o *nsqd.Options) { o.LookupdPingInterval = time.Second })
	rc := &replicaCluster{testCluster: c, byHTTP: map[int]int{}}
	for _, node := range c.NSQDs {
		spy := &nsqdSpy{}
		target, _ := url.Parse("http://" + node.HTTP)
		rp := httputil.NewSingleHostReverseProxy(target)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			spy.mu.Lock()
			spy.seen = append(spy.seen, r.Method+" "+r.URL.RequestURI())
			spy.mu.Unlock()
			rp.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		spy.addr = srv.Listener.Addr().String()
		rc.proxies = append(rc.proxies, spy)
		rc.byHTTP[port(t, node.HTTP)] = port(t, spy.addr)
	}
	target, _ := url.Parse("http://" + c.LookupdHTTP)
	lp := httputil.NewSingleHostReverseProxy(target)
	lp.ModifyResponse = rc.rewriteProducers
	srv := httptest.NewServer(lp)
	t.Cleanup(srv.Close)
	rc.lookupdProxy = srv.Listener.Addr().String()
	return rc
}

// rewriteProducers points the producers of nsqlookupd's /nodes and /lookup answers at the
// proxies.
func (rc *replicaCluster) rewriteProducers(resp *http.Response) error {
	if p := resp.Request.URL.Path; (p != "/nodes" && p != "/lookup") || resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err == nil {
		producers, _ := doc["producers"].([]any)
		for _, p := range producers {
			if m, ok := p.(map[string]any); ok {
				if hp, ok := m["http_port"].(float64); ok && rc.byHTTP[int(hp)] != 0 {
					m["http_port"] = rc.byHTTP[int(hp)]
				}
			}
		}
		body, _ = json.Marshal(doc)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// startAdmin starts an admin that reaches the cluster through the proxies.
func (rc *replicaCluster) startAdmin(t *testing.T) *Admin {
	t.Helper()
	return startAdmin(t, rc.testCluster, func(o *Options) { o.NSQLookupdHTTPAddresses = []string{rc.lookupdProxy} })
}

// createCalls returns every POST /topic/create the admin sent, over all nsqds.
func (rc *replicaCluster) createCalls() []string {
	var out []string
	for _, s := range rc.proxies {
		for _, c := range s.calls("POST /topic/create") {
			out = append(out, s.addr+" "+c)
		}
	}
	return out
}

// replicaStats is a replicated topic's keys in an nsqd's /stats.
type replicaStats struct {
	Replicas   *int              `json:"replicas"`
	Leader     *string           `json:"leader"`
	ReplicaLag map[string]uint64 `json:"replica_lag"`
}

// nodeReplica returns topic's replica keys on nsqd i (nil when it does not list the topic
// or lists it unreplicated).
func (rc *replicaCluster) nodeReplica(t *testing.T, i int, topic string) *replicaStats {
	t.Helper()
	var st struct {
		Topics []struct {
			TopicName string `json:"topic_name"`
			replicaStats
		} `json:"topics"`
	}
	if getJSONErr("http://"+rc.NSQDs[i].HTTP+"/stats?format=json&topic="+url.QueryEscape(topic), &st) != nil {
		return nil
	}
	for _, tp := range st.Topics {
		if tp.TopicName == topic && tp.Replicas != nil {
			return &tp.replicaStats
		}
	}
	return nil
}

// agreedLeader returns the leader's index in NSQDs when n nsqds list topic with replicas=n
// and agree on its leader, else -1.
func (rc *replicaCluster) agreedLeader(t *testing.T, topic string, n int) int {
	var agreed string
	count := 0
	for i := range rc.NSQDs {
		r := rc.nodeReplica(t, i, topic)
		if r == nil {
			continue
		}
		count++
		if *r.Replicas != n || *r.Leader == "" || (agreed != "" && *r.Leader != agreed) {
			return -1
		}
		agreed = *r.Leader
	}
	for i, node := range rc.NSQDs {
		if node.TCP == agreed && count == n {
			return i
		}
	}
	return -1
}

// waitReplicated waits until n nsqds list topic with replicas=n and agree on its leader,
// and returns the leader's index in NSQDs.
func (rc *replicaCluster) waitReplicated(t *testing.T, topic string, n int) int {
	t.Helper()
	leader := -1
	waitFor(t, 20*time.Second, topic+" replicated on "+strconv.Itoa(n)+" nodes with one leader", func() bool {
		leader = rc.agreedLeader(t, topic, n)
		return leader >= 0
	})
	return leader
}

// waitNewLeader waits until the n replicas of topic agree on a leader other than old (an
// index in NSQDs) and returns it.
func (rc *replicaCluster) waitNewLeader(t *testing.T, topic string, n, old int) int {
	t.Helper()
	leader := -1
	waitFor(t, 20*time.Second, topic+"'s replicas agreeing on a new leader", func() bool {
		leader = rc.agreedLeader(t, topic, n)
		return leader >= 0 && leader != old
	})
	return leader
}

func port(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
