package nsqd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/replica"
	"github.com/sluicemq/sluice/store"
)

// replicationDirName is the folder of the meta group and the topics' Raft
// logs inside --data-path.
const replicationDirName = "replicated"

// maxReplicas bounds replicas=.
const maxReplicas = 7

// selfAddr is this node's broadcast_address:tcp_port: its identity among
// the nodes, as registered with nsqlookupd.
func (n *NSQD) selfAddr() string {
	return net.JoinHostPort(n.opts.BroadcastAddress, strconv.Itoa(n.broadcastTCPPort()))
}

// startReplication prepares this node's part in replicated topics. It
// needs nsqlookupd (nodes find each other there); without it replication
// is off and a node stays exactly NSQ's. Nothing is sent to other nodes
// until a replicated topic is asked for or a peer invites this node.
func (n *NSQD) startReplication() error {
	if len(n.opts.NSQLookupdTCPAddresses) == 0 {
		return nil
	}
	self := n.selfAddr()
	n.nodeID = replica.NodeID(self)
	logger := n.logger.With("component", "replica")
	fresh, err := n.checkReplicaIdentity(self)
	if err != nil {
		return err
	}
	mux := replica.NewRequestMux(nil, n.nodeID)
	refresh := make(chan struct{}, 1)
	var secure func(context.Context, net.Conn, string) (net.Conn, error)
	if n.replTLS != nil {
		secure = n.secureReplicaConn
	} else if n.tlsConfig != nil {
		logger.Warn("replication connections between nodes are not encrypted or authenticated: give --tls-root-ca-file (the CA that signed every node's certificate) to secure them")
	}
	tr := replica.NewTCPTransport(replica.TCPConfig{Self: n.nodeID, Receiver: mux, Logger: logger, Secure: secure,
		OnUnknownPeer: func(uint64) {
			select {
			case refresh <- struct{}{}:
			default:
			}
		}})
	mux.SetTransport(tr)
	disc := replica.NewDiscovery(replica.DiscoveryConfig{
		Lookupds:   n.LookupdHTTPAddresses,
		OnChange:   tr.SetPeers,
		HTTPClient: n.httpClient,
		Logger:     logger,
	})
	cl := replica.NewCluster(replica.ClusterConfig{
		Self:     n.nodeID,
		SelfAddr: self,
		Dir:      filepath.Join(dataPathOf(n.opts), replicationDirName),
		FS:       store.OSFS{},
		OpenStorage: func(dir string) (replica.GroupStorage, error) {
			return replica.OpenStorage(store.OSFS{}, dir, replica.StorageOptions{Logger: logger})
		},
		Transport:      tr,
		Requester:      mux,
		Peers:          disc.Live,
		Refresh:        disc.Refresh,
		Topics:         replicaTopics{n},
		Logger:         logger,
		ReplicaTimeout: n.opts.ReplicaTimeout,
		Fresh:          fresh,
	})
	mux.SetHandler(cl)
	mux.SetNext(cl.Host())
	n.SetReplicaHandler(tr.ServeConn)
	n.replTransport, n.replMux, n.discovery = tr, mux, disc
	n.cluster.Store(cl)
	if err := cl.Start(); err != nil {
		n.cluster.Store(nil)
		n.SetReplicaHandler(nil)
		cl.Close()
		mux.Close()
		tr.Close()
		return fmt.Errorf("start replication: %w", err)
	}
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		disc.Run(n.ctx)
	}()
	go func() {
		// A node not listed yet (it just registered) is looked up at
		// once, at most every 200 ms, rather than at the next poll.
		defer n.wg.Done()
		for {
			select {
			case <-n.ctx.Done():
				return
			case <-refresh:
			}
			disc.Refresh(n.ctx)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return nil
}

// stopReplication stops the cluster before the topics close.
func (n *NSQD) stopReplication() {
	cl := n.cluster.Load()
	if cl == nil {
		return
	}
	n.SetReplicaHandler(nil)
	cl.Close()
	n.replMux.Close()
	n.replTransport.Close()
}

// replicaTopics is the node's replica.TopicHost.
type replicaTopics struct{ n *NSQD }

// OpenTopic opens (creating when needed) this node's replica of topic.
func (rt replicaTopics) OpenTopic(topic string, a replica.Assignment) (replica.StateMachine, uint64, error) {
	n := rt.n
	if t, ok := n.ExistingTopic(topic); ok {
		if t.repl == nil {
			return nil, 0, fmt.Errorf("topic %s exists on this node and is not replicated", topic)
		}
		return t.repl, t.repl.appliedIndex(), nil
	}
	cfg := topicConfig{durable: true, retention: n.nodeRetention(), replicas: a.Replicas}
	if a.RetentionTime != "" {
		if d, err := time.ParseDuration(a.RetentionTime); err == nil {
			cfg.retention.Time = d
		}
	}
	if a.RetentionBytes > 0 {
		cfg.retention.Bytes = a.RetentionBytes
	}
	n.dropForwarder(topic)
	t, err := n.getTopicWith(topic, &cfg)
	if err != nil {
		return nil, 0, err
	}
	if t.repl == nil {
		return nil, 0, fmt.Errorf("topic %s was created on this node meanwhile, not replicated", topic)
	}
	return t.repl, t.repl.appliedIndex(), nil
}

// CloseTopic removes this node's replica of topic.
func (rt replicaTopics) CloseTopic(topic string, deleted bool) {
	n := rt.n
	t, ok := n.ExistingTopic(topic)
	if !ok || t.repl == nil {
		return
	}
	if deleted {
		if err := n.DeleteTopic(topic); err != nil {
			n.logger.Warn("delete a replica moved off this node", "topic", topic, "err", err)
		}
	}
}

// LeaderChanged makes the topic's channels deliver only while this node
// leads its group.
func (rt replicaTopics) LeaderChanged(topic string, leader uint64) {
	if t, ok := rt.n.ExistingTopic(topic); ok && t.repl != nil {
		t.repl.setLeader(leader, rt.n.nodeID)
	}
}

// PrepareHandover implements replica.Handover.
func (rt replicaTopics) PrepareHandover(ctx context.Context, topic string) error {
	t, ok := rt.n.ExistingTopic(topic)
	if !ok || t.repl == nil {
		return fmt.Errorf("topic %s has no replica here", topic)
	}
	return t.repl.prepareHandover(ctx)
}

// HandoverDone implements replica.Handover.
func (rt replicaTopics) HandoverDone(topic string) {
	if t, ok := rt.n.ExistingTopic(topic); ok && t.repl != nil {
		t.repl.handoverDone()
	}
}

// replicatedElsewhere reports whether topic is replicated on other nodes
// only: publishes here are forwarded to them.
func (n *NSQD) replicatedElsewhere(topic string) bool {
	if n.cluster.Load() == nil {
		return false
	}
	a, ok := n.cluster.Load().Assignment(topic)
	return ok && !a.Has(n.nodeID)
}

// forwarder returns the stand-in topic through which publishes to a topic
// replicated elsewhere are forwarded.
func (n *NSQD) forwarder(name string) *Topic {
	n.fwdMu.Lock()
	defer n.fwdMu.Unlock()
	if t, ok := n.forwarders[name]; ok {
		return t
	}
	if n.forwarders == nil {
		n.forwarders = make(map[string]*Topic)
	}
	t := &Topic{name: name, nsqd: n, fwd: true, logger: n.logger.With("topic", name),
		channels: make(map[string]*Channel), wake: make(chan struct{}, 1), exitCh: make(chan struct{})}
	n.forwarders[name] = t
	return t
}

func (n *NSQD) dropForwarder(name string) {
	n.fwdMu.Lock()
	delete(n.forwarders, name)
	n.fwdMu.Unlock()
}

// forwardPublish hands a publish to a topic replicated elsewhere to its
// replicas and waits for the commit.
func (n *NSQD) forwardPublish(name string, ents []qentry) error {
	cl := n.cluster.Load()
	if cl == nil {
		return &replicationError{topic: name, err: errReplicationOff}
	}
	sents := storeEntries(ents, nil)
	ctx, cancel := context.WithTimeout(n.ctx, publishTimeout)
	defer cancel()
	if err := cl.Publish(ctx, name, encodePublish(sents)); err != nil {
		return &replicationError{topic: name, err: err}
	}
	return nil
}

// errReplicationOff says this node runs no replication (no nsqlookupd, or
// it failed to start).
var errReplicationOff = errors.New("replication is off on this node")

// replicateChannel creates channel on every replica of t through its
// group; it returns once the channel exists on this node.
func (n *NSQD) replicateChannel(ctx context.Context, t *Topic, channel string, start channelStart) error {
	cl := n.cluster.Load()
	if cl == nil {
		return errReplicationOff
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	// Cluster.Publish commits any command of the topic's state machine,
	// retrying through elections.
	if err := cl.Publish(ctx, t.name, encodeChannelCmd(channel, start)); err != nil {
		return &replicationError{topic: t.name, err: err}
	}
	return nil
}

// errReplicatedElsewhere refuses SUB and channel actions on a node that
// holds no replica of the topic.
type errReplicatedElsewhere struct{ topic string }

func (e *errReplicatedElsewhere) Error() string {
	return fmt.Sprintf("topic %s is replicated on other nodes; consume from them (nsqlookupd lists them)", e.topic)
}

// createReplicated makes topic replicated on replicas nodes.
func (n *NSQD) createReplicated(ctx context.Context, topic string, replicas int, retention store.Retention) error {
	if n.cluster.Load() == nil {
		return errors.New("replication needs --lookupd-tcp-address: nodes find each other through nsqlookupd")
	}
	if t, ok := n.ExistingTopic(topic); ok && t.repl == nil {
		return fmt.Errorf("topic %s already exists on this node and is not replicated", topic)
	}
	a := replica.Assignment{Replicas: replicas, RetentionBytes: retention.Bytes}
	if retention.Time > 0 {
		a.RetentionTime = retention.Time.String()
	}
	got, err := n.cluster.Load().CreateTopic(ctx, topic, a)
	if err != nil {
		return err
	}
	if got.Has(n.nodeID) {
		// Answer once this node's replica is open.
		for {
			if t, ok := n.ExistingTopic(topic); ok && t.repl != nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("replica of %s not opened here: %w", topic, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// replicaStats returns the replication keys of a replicated topic's /stats.
func (n *NSQD) replicaStats(t *Topic) *protocol.TopicReplicaStats {
	if t.repl == nil || n.cluster.Load() == nil {
		return nil
	}
	rs := &protocol.TopicReplicaStats{Replicas: t.repl.replicas}
	st, ok := n.cluster.Load().TopicStatus(t.name)
	if !ok {
		return rs
	}
	if st.Leader != 0 {
		rs.Leader = n.cluster.Load().Addr(st.Leader)
	}
	if st.IsLead {
		rs.ReplicaLag = make(map[string]uint64, len(st.Lag))
		for id, lag := range st.Lag {
			rs.ReplicaLag[n.cluster.Load().Addr(id)] = lag
		}
	}
	return rs
}

// doReplicatedCreate is /topic/create with replicas=.
func (n *NSQD) doReplicatedCreate(ctx context.Context, name string, cfg *topicConfig, query url.Values, setPolicy bool) error {
	if n.cluster.Load() == nil {
		return errf(http.StatusBadRequest, "INVALID_ARG_REPLICAS: replication needs --lookupd-tcp-address (nodes find each other through nsqlookupd)")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.createReplicated(ctx, name, cfg.replicas, cfg.retention); err != nil {
		if errors.Is(err, replica.ErrTopicExists) {
			return errf(http.StatusConflict, "TOPIC_EXISTS: "+err.Error())
		}
		if errors.Is(err, replica.ErrNotEnoughNodes) {
			return errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
		}
		return errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
	}
	if setPolicy {
		if t, ok := n.ExistingTopic(name); ok && t.repl != nil {
			if err := t.repl.proposePolicy(ctx, "", query); err != nil {
				return errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
			}
		} else if _, ok := n.cluster.Load().Assignment(name); ok {
			// created on other nodes: one of them commits the policy
			if err := n.cluster.Load().Publish(ctx, name, encodePolicyCmd("", query)); err != nil {
				return errf(http.StatusServiceUnavailable, "REPLICATION_FAILED: "+err.Error())
			}
		}
	}
	return nil
}

// checkReplicaIdentity keeps the replication state of one identity: a
// node's identity is its broadcast_address:tcp_port, so when the data path
// was last used under another one, its Raft state (votes, logs) belongs to
// a node the cluster still knows under that address, and must not be
// reused under this one. It is set aside, and the node joins as a new one
// (the topics it held are replaced on other nodes after --replica-timeout).
// fresh reports that the state was created now: the node's first start, or
// its data path was lost (a replaced disk) or set aside; a fresh node that
// the cluster still counts as a member rejoins as amnesiac (see
// replica.ClusterConfig.Fresh).
func (n *NSQD) checkReplicaIdentity(self string) (fresh bool, err error) {
	dir := filepath.Join(dataPathOf(n.opts), replicationDirName)
	idPath := filepath.Join(dir, "node.id")
	old, err := os.ReadFile(idPath)
	switch {
	case err == nil && string(old) != self:
		aside := fmt.Sprintf("%s.%s.%d", dir, strings.NewReplacer(":", "_", "/", "_").Replace(string(old)), time.Now().Unix())
		n.logger.Warn("this data path held replicas under another address; set aside", "old", string(old), "new", self, "moved_to", aside)
		if err := os.Rename(dir, aside); err != nil {
			return false, fmt.Errorf("set aside the replication state of %s: %w", old, err)
		}
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("read %s: %w", idPath, err)
	case err == nil:
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	return true, store.WriteFileAtomic(store.OSFS{}, idPath, []byte(self))
}
