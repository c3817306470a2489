// Package nsqd is Sluice's queue daemon as a library: topics and channels,
// the memory and disk queues, in-flight and deferred bookkeeping, the V2 TCP
// protocol, the HTTP API, lookupd registration and statistics.
//
//	opts := nsqd.NewOptions()
//	opts.DataPath = dir
//	n, err := nsqd.New(opts)
//	err = n.Start()  // listening and serving
//	defer n.Exit()   // flushes every queue to disk
package nsqd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicemq/sluice/internal/config"
	"github.com/sluicemq/sluice/internal/diskq"
	"github.com/sluicemq/sluice/internal/lookupclient"
	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/replica"
	"github.com/sluicemq/sluice/store"
)

// Version is the version nsqd reports everywhere.
const Version = config.Version

// NSQD is one queue daemon.
//
// Lock order: NSQD.mu, then Topic.mu, then Channel.mu.
type NSQD struct {
	opts       *Options
	logger     *slog.Logger
	tlsConfig  *tls.Config
	replTLS    *replicaTLS // mutual TLS of "  R1" connections; nil: in the clear
	httpClient *http.Client
	ids        *idSource
	startTime  time.Time

	mu     sync.RWMutex // guards topics
	topics map[string]*Topic

	clientsMu  sync.Mutex
	clients    map[uint64]*client
	clientSeq  atomic.Uint64
	connTimers *connTimers // heartbeats and read timeouts of every connection
	idle       *idlePoller // idle connections without a goroutine; nil where unsupported

	// replicaHandler serves "  R1" peer connections; nil (the default)
	// answers them E_BAD_PROTOCOL like any unknown magic. See replica.go.
	replicaHandler atomic.Pointer[func(net.Conn)]
	replicaConns   map[net.Conn]struct{} // being served by replicaHandler; guarded by clientsMu

	healthErr atomic.Pointer[string]

	committer   *store.Committer // group commit of durable topics; set by Start
	deadLetters *deadLetters     // dead-letter registry; set by Start

	deferralsMu       sync.Mutex               // guards the two maps below
	restoredDeferrals map[string]diskDeferrals // from deferred.dat, until their queue opens
	closingDeferrals  map[string]diskDeferrals // of queues closed at exit

	diskQueues map[string]bool // queues with go-diskqueue files at start; read-only after Start
	diskSyncer *diskq.Syncer   // --sync-timeout of every disk queue

	// watched are the channels scanLoop visits: those with messages in
	// flight or deferred, or a TTL to sweep. An idle channel costs the scan
	// nothing.
	watchMu sync.Mutex
	watched map[*Channel]struct{}

	persistMu sync.Mutex // serializes nsqd.dat writes
	meta      metaWrites

	tcpListener   net.Listener
	httpListener  net.Listener
	httpsListener net.Listener
	httpServers   []*http.Server
	dirLock       *os.File

	lookup *lookupclient.Client

	// Replication (replicated.go, replicated_node.go): set by Start when
	// nsqd has nsqlookupd addresses; nil otherwise.
	cluster       atomic.Pointer[replica.Cluster]
	replTransport *replica.TCPTransport
	replMux       *replica.RequestMux
	discovery     *replica.Discovery
	nodeID        uint64
	fwdMu         sync.Mutex        // guards forwarders
	forwarders    map[string]*Topic // stand-ins of topics replicated elsewhere

	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup // scanner, lookup, statsd, HTTP servers
	connWG     sync.WaitGroup // client connections (one goroutine each)
	acceptDone chan struct{}  // closed when the TCP accept loop has returned
	started    atomic.Bool
	exiting    atomic.Bool
	exitOnce   sync.Once
}

// New validates opts and prepares a daemon; Start makes it listen.
func New(opts *Options) (*NSQD, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("invalid options: %w", err)
	}
	n := &NSQD{
		opts:      opts,
		logger:    opts.logger(),
		ids:       newIDSource(time.Now()),
		startTime: time.Now(),
		topics:    make(map[string]*Topic),
		clients:   make(map[uint64]*client),

		replicaConns: make(map[net.Conn]struct{}),
	}
	n.connTimers = newConnTimers(time.Now())
	n.diskSyncer = diskq.NewSyncer(opts.SyncTimeout)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if opts.TLSCert != "" {
		cfg, err := buildTLSConfig(opts)
		if err != nil {
			return nil, err
		}
		n.tlsConfig = cfg
		if n.replTLS, err = buildReplicaTLS(opts); err != nil {
			return nil, err
		}
	}
	n.httpClient = newHTTPClient(opts)
	if opts.DataPath != "" {
		if st, err := os.Stat(opts.DataPath); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--data-path %q is not a directory", opts.DataPath)
		}
	}
	n.meta.init()
	return n, nil
}

func buildTLSConfig(o *Options) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %q / key %q: %w", o.TLSCert, o.TLSKey, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: o.TLSMinVersion}
	switch o.TLSClientAuthPolicy {
	case "require":
		cfg.ClientAuth = tls.RequireAnyClientCert
	case "require-verify":
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if o.TLSRootCAFile != "" {
		pem, err := os.ReadFile(o.TLSRootCAFile)
		if err != nil {
			return nil, fmt.Errorf("read --tls-root-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-root-ca-file %q holds no certificate", o.TLSRootCAFile)
		}
		cfg.ClientCAs = pool
	}
	return cfg, nil
}

func newHTTPClient(o *Options) *http.Client {
	dialer := &net.Dialer{Timeout: o.HTTPClientConnectTimeout}
	tr := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	tlsCfg := &tls.Config{MinVersion: o.TLSMinVersion}
	if o.TLSRootCAFile != "" {
		if pem, err := os.ReadFile(o.TLSRootCAFile); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tlsCfg.RootCAs = pool
		}
	}
	tr.TLSClientConfig = tlsCfg
	return &http.Client{Transport: tr, Timeout: o.HTTPClientRequestTimeout}
}

// listen opens a TCP listener, or a Unix socket when addr is a path.
func listen(addr string) (net.Listener, error) {
	if isUnixPath(addr) {
		os.Remove(addr)
		return net.Listen("unix", addr)
	}
	return net.Listen("tcp", addr)
}

func isUnixPath(addr string) bool {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return false
	}
	return strings.Contains(addr, "/")
}

// hasDiskQueue reports whether queue had go-diskqueue files at start.
func (n *NSQD) hasDiskQueue(queue string) bool { return n.diskQueues[queue] }

// Start locks the data directory, opens the listeners, loads the metadata
// and starts serving.
func (n *NSQD) Start() error {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("nsqd already started")
	}
	o := n.opts
	dir, err := os.Open(dataPathOf(o))
	if err != nil {
		return fmt.Errorf("open --data-path: %w", err)
	}
	if err := syscall.Flock(int(dir.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		dir.Close()
		n.started.Store(false)
		return fmt.Errorf("--data-path=%s in use (possibly by another instance of nsqd): %w", dataPathOf(o), err)
	}
	n.dirLock = dir
	fail := func(err error) error {
		n.closeListeners()
		n.dirLock.Close()
		n.started.Store(false)
		return err
	}
	if n.tcpListener, err = listen(o.TCPAddress); err != nil {
		return fail(fmt.Errorf("listen on --tcp-address %s: %w", o.TCPAddress, err))
	}
	if o.HTTPAddress != "" {
		if n.httpListener, err = listen(o.HTTPAddress); err != nil {
			return fail(fmt.Errorf("listen on --http-address %s: %w", o.HTTPAddress, err))
		}
	}
	if n.tlsConfig != nil && o.HTTPSAddress != "" {
		if n.httpsListener, err = listen(o.HTTPSAddress); err != nil {
			return fail(fmt.Errorf("listen on --https-address %s: %w", o.HTTPSAddress, err))
		}
	}
	if n.deadLetters, err = openDeadLetters(n.deadLettersPath(), n.logger); err != nil {
		return fail(err)
	}
	if err := n.loadDeferrals(); err != nil {
		return fail(err)
	}
	if n.diskQueues, err = diskQueueNames(dataPathOf(o)); err != nil {
		return fail(err)
	}
	n.committer = store.NewCommitter(0)
	closeTopics := func() {
		for _, t := range n.topicList() {
			t.close(false)
		}
		n.committer.Close()
		n.deadLetters.close()
	}
	if err := n.loadDurableTopics(); err != nil {
		closeTopics()
		return fail(err)
	}
	if err := n.loadMetadata(); err != nil {
		closeTopics()
		return fail(err)
	}
	if err := n.persistMetadata(); err != nil {
		closeTopics()
		return fail(err)
	}

	n.meta.running = true
	go n.metadataWriter()
	n.acceptDone = make(chan struct{})
	if p, err := newIdlePoller(o.TLSRequired == TLSNotRequired); err != nil {
		n.logger.Info("idle connections keep a goroutine each", "reason", err)
	} else {
		n.idle = p
		go p.run() // stopped by exit once every connection has ended
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.connTimers.run(n.ctx)
	}()
	n.startLookup()
	// Replication starts before the listeners serve: a replicated topic
	// loaded from disk takes publishes as soon as clients are served.
	if err := n.startReplication(); err != nil {
		n.logger.Error("replication is off on this node", "err", err)
	}
	go n.serveTCP(n.tcpListener)
	n.startHTTP()
	n.wg.Add(1)
	go n.scanLoop()
	n.startStatsd()
	attrs := []any{"version", Version, "tcp", n.tcpListener.Addr().String()}
	if a := n.HTTPAddr(); a != nil {
		attrs = append(attrs, "http", a.String())
	}
	if a := n.HTTPSAddr(); a != nil {
		attrs = append(attrs, "https", a.String())
	}
	n.logger.Info("nsqd started", append(attrs, "data_path", dataPathOf(o))...)
	return nil
}

// TCPAddr is the address the TCP protocol listens on.
func (n *NSQD) TCPAddr() net.Addr { return n.tcpListener.Addr() }

// HTTPAddr is the HTTP API's address (nil when HTTP is disabled).
func (n *NSQD) HTTPAddr() net.Addr {
	if n.httpListener == nil {
		return nil
	}
	return n.httpListener.Addr()
}

// HTTPSAddr is the HTTPS API's address (nil without TLS).
func (n *NSQD) HTTPSAddr() net.Addr {
	if n.httpsListener == nil {
		return nil
	}
	return n.httpsListener.Addr()
}

func (n *NSQD) closeListeners() {
	for _, l := range []net.Listener{n.tcpListener, n.httpListener, n.httpsListener} {
		if l != nil {
			l.Close()
		}
	}
}

// Exit shuts down gracefully (§6.4): clients are disconnected, metadata
// written, every queue with its in-flight and deferred messages flushed to
// disk. It blocks until done and may be called more than once.
func (n *NSQD) Exit() {
	n.exitOnce.Do(n.exit)
}

func (n *NSQD) exit() {
	if !n.started.Load() {
		return
	}
	n.exiting.Store(true)
	n.tcpListener.Close()
	<-n.acceptDone
	n.clientsMu.Lock()
	for _, c := range n.clients {
		c.closeConn()
	}
	for conn := range n.replicaConns {
		conn.Close()
	}
	n.clientsMu.Unlock()
	// every connection has requeued its in-flight messages before the queues
	// are flushed to disk
	n.connWG.Wait()
	n.idle.stop()
	n.stopReplication() // before the topics its groups apply to close
	for _, s := range n.httpServers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
	if err := n.persistMetadata(); err != nil {
		n.logger.Error("failed to persist metadata", "err", err)
	}
	if n.meta.running {
		close(n.meta.stop)
		<-n.meta.done
	}
	n.mu.Lock()
	topics := make([]*Topic, 0, len(n.topics))
	for _, t := range n.topics {
		topics = append(topics, t)
	}
	n.mu.Unlock()
	for _, t := range topics {
		if err := t.close(false); err != nil && !errors.Is(err, errExiting) {
			n.logger.Error("failed to close topic", "topic", t.name, "err", err)
		}
	}
	n.committer.Close()
	n.deadLetters.close()
	if err := n.persistDeferrals(); err != nil {
		n.logger.Error("failed to persist deferred message deadlines", "err", err)
	}
	n.cancel()
	n.wg.Wait()
	n.dirLock.Close()
	n.logger.Info("nsqd exited")
}

func (n *NSQD) addClient(c *client) bool {
	n.clientsMu.Lock()
	defer n.clientsMu.Unlock()
	if n.exiting.Load() {
		return false
	}
	n.clients[c.id] = c
	return true
}

func (n *NSQD) removeClient(c *client) {
	n.clientsMu.Lock()
	delete(n.clients, c.id)
	n.clientsMu.Unlock()
}

// setHealth records the result of the latest disk write (§6.5).
func (n *NSQD) setHealth(err error) {
	if err == nil {
		if n.healthErr.Load() != nil {
			n.healthErr.Store(nil)
		}
		return
	}
	s := err.Error()
	n.healthErr.Store(&s)
}

// Health is "OK" or "NOK - <error>".
func (n *NSQD) Health() string {
	if e := n.healthErr.Load(); e != nil {
		return "NOK - " + *e
	}
	return "OK"
}

// newMessages builds messages for bodies with fresh IDs, allocated in one
// slab per batch.
func (n *NSQD) newMessages(bodies [][]byte, deferBy time.Duration, dst []*Message) []*Message {
	now := time.Now().UnixNano()
	first := n.ids.reserve(len(bodies))
	slab := make([]Message, len(bodies))
	for i, b := range bodies {
		m := &slab[i]
		m.ID = protocol.NewMessageID(first + uint64(i))
		m.Body = b
		m.Timestamp = now
		m.deferBy = deferBy
		m.heapIndex = -1
		dst = append(dst, m)
	}
	return dst
}

// newBatch wraps a validated MPUB body (after its count) with fresh IDs.
func (n *NSQD) newBatch(data []byte, count int) *msgBatch {
	return &msgBatch{data: data, count: count, firstID: n.ids.reserve(count), ts: time.Now().UnixNano()}
}

// GetTopic returns the named topic, creating it (and, at run time, the
// channels lookupd knows for it) when it does not exist.
func (n *NSQD) GetTopic(name string) (*Topic, error) {
	if cl := n.cluster.Load(); cl != nil {
		if _, local := n.ExistingTopic(name); !local {
			switch t, err := n.beforeNewTopic(cl, name); {
			case err != nil:
				return nil, err
			case t != nil:
				return t, nil
			}
		}
	}
	return n.getTopicWith(name, nil)
}

// settleWait bounds how long a publish to a topic this node does not have
// waits for it to learn whether the topic is replicated (a node with a
// fresh replication state, see replica.Cluster.Settled) or for its
// replica to open.
const settleWait = 4 * time.Second

// beforeNewTopic is asked, on a node that takes part in replication,
// before it creates a plain topic it does not have: a topic replicated
// here must not be shadowed by a plain one of the same name (its replica
// could then never open here), nor a topic replicated elsewhere. It
// returns the topic to use instead (a replica opened meanwhile, or the
// forwarder to the replicas elsewhere), an error when it is too early to
// tell (retryable: nothing was created), or neither: create it.
func (n *NSQD) beforeNewTopic(cl *replica.Cluster, name string) (*Topic, error) {
	ctx, cancel := context.WithTimeout(n.ctx, settleWait)
	defer cancel()
	// A node back on a lost disk first learns which replicated topics it
	// holds, and opens them.
	if !cl.Settled(ctx) {
		return nil, &replicationError{topic: name, err: errRejoining}
	}
	a, ok := cl.Assignment(name)
	if !ok && !protocol.IsEphemeral(name) {
		// This node's copy of the placement may lag (it was cut off,
		// frozen, or restarted and has not caught up): confirm with the
		// meta group, once per topic new here, that the name is not
		// placed. A minority side cannot: refused, to be retried.
		var err error
		if a, ok, err = cl.CurrentAssignment(ctx, name); err != nil {
			cause := "no answer in time"
			if !errors.Is(err, context.DeadlineExceeded) {
				cause = err.Error()
			}
			return nil, &replicationError{topic: name, err: fmt.Errorf("%w (%s)", errMetaUnconfirmed, cause)}
		}
	}
	switch {
	case !ok:
		return nil, nil
	case !a.Has(n.nodeID):
		return n.forwarder(name), nil
	}
	// Placed here: wait for the replica to open (reconcile).
	for {
		if t, ok := n.ExistingTopic(name); ok {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return nil, &replicationError{topic: name, err: errReplicaOpening}
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// getTopicWith is GetTopic where cfg, when not nil, says how a new topic is
// created (otherwise defaultTopicConfig does).
func (n *NSQD) getTopicWith(name string, cfg *topicConfig) (*Topic, error) {
	n.mu.RLock()
	t, ok := n.topics[name]
	n.mu.RUnlock()
	if ok {
		if t.isExiting() {
			return nil, errExiting // being deleted
		}
		return t, nil
	}
	if n.exiting.Load() {
		return nil, errExiting
	}
	n.mu.Lock()
	if t, ok = n.topics[name]; ok {
		n.mu.Unlock()
		if t.isExiting() {
			return nil, errExiting
		}
		return t, nil
	}
	c := n.defaultTopicConfig(name)
	if cfg != nil && !protocol.IsEphemeral(name) {
		c = *cfg
	}
	t, err := newTopic(name, n, c)
	if err != nil {
		n.mu.Unlock()
		n.logger.Error("failed to create topic", "topic", name, "err", err)
		n.setHealth(err)
		return nil, &durableWriteError{err} // only a durable topic's files can fail to open
	}
	n.topics[name] = t
	n.mu.Unlock()
	n.logger.Info("new topic", "topic", name, "durable", t.isDurable())
	n.precreateChannels(t)
	n.notifyRegister(name, "")
	if !t.ephemeral {
		n.persistMetadataOrLog()
	}
	return t, nil
}

// precreateChannels creates the channels lookupd knows for a new topic, so
// messages published here reach channels that exist elsewhere (§5.2).
func (n *NSQD) precreateChannels(t *Topic) {
	if n.lookup == nil || len(n.lookup.HTTPAddresses()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.HTTPClientRequestTimeout)
	defer cancel()
	chans, err := n.lookup.Channels(ctx, t.name)
	if err != nil {
		n.logger.Warn("failed to query lookupd for channels", "topic", t.name, "err", err)
	}
	for _, name := range chans {
		if protocol.IsEphemeral(name) || !protocol.IsValidChannelName(name) {
			continue
		}
		if _, created, err := t.getChannel(name); err == nil && created {
			n.notifyRegister(t.name, name)
		}
	}
}

// ExistingTopic returns the named topic if it exists.
func (n *NSQD) ExistingTopic(name string) (*Topic, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	t, ok := n.topics[name]
	return t, ok
}

var errTopicNotFound = errors.New("topic not found")
var errChannelNotFound = errors.New("channel not found")

// DeleteTopic deletes a topic with its channels and disk files (§5.9).
// The topic stays in the map, refusing publishes with errExiting, until its
// files are gone, so a racing publish can neither succeed on the dying topic
// nor create a new one on top of its files.
func (n *NSQD) DeleteTopic(name string) error {
	t, ok := n.ExistingTopic(name)
	if !ok {
		return errTopicNotFound
	}
	if !t.markExiting(false) {
		return nil // already being deleted
	}
	n.finishTopicDelete(t)
	return nil
}

// finishTopicDelete deletes a topic already marked exiting.
func (n *NSQD) finishTopicDelete(t *Topic) {
	for _, ch := range t.channelList() {
		n.notifyUnregister(t.name, ch.name)
	}
	n.notifyUnregister(t.name, "")
	if err := t.shutdown(true); err != nil {
		n.logger.Error("failed to delete topic", "topic", t.name, "err", err)
	}
	n.mu.Lock()
	if cur, ok := n.topics[t.name]; ok && cur == t {
		delete(n.topics, t.name)
	}
	n.mu.Unlock()
	if t.deadLetterTarget.Load() {
		n.deadLetters.forgetTarget(t.name)
	}
	if !t.ephemeral {
		n.persistMetadataOrLog()
	}
	n.logger.Info("deleted topic", "topic", t.name)
}

// GetChannel returns the named channel of t, creating it if needed.
func (n *NSQD) GetChannel(t *Topic, name string) (*Channel, error) {
	return n.getChannelFrom(t, name, channelStart{})
}

// getChannelFrom is GetChannel where a new channel of a durable topic starts
// at start.
func (n *NSQD) getChannelFrom(t *Topic, name string, start channelStart) (*Channel, error) {
	ch, created, err := t.getChannelFrom(name, start)
	if err != nil {
		return nil, err
	}
	if created {
		n.notifyRegister(t.name, name)
		if !ch.ephemeral {
			n.persistMetadataOrLog()
			if t.repl != nil {
				t.repl.announce(encodeChannelCmd(name, start))
			}
		}
	}
	return ch, nil
}

// DeleteChannel deletes a channel of t (§5.9).
func (n *NSQD) DeleteChannel(t *Topic, name string) error {
	ch, ok := t.existingChannel(name)
	if !ok {
		return errChannelNotFound
	}
	n.removeChannel(t, ch)
	if t.repl != nil && !ch.ephemeral {
		t.repl.announce(append([]byte{cmdDeleteChannel}, name...))
	}
	return nil
}

// removeChannel deletes ch: it is marked exiting (refusing new consumers),
// its consumers are disconnected and its files removed, and only then is it
// detached from the topic.
func (n *NSQD) removeChannel(t *Topic, ch *Channel) {
	if !ch.markExiting(false) {
		return
	}
	n.finishChannelDelete(t, ch)
}

func (n *NSQD) finishChannelDelete(t *Topic, ch *Channel) {
	n.notifyUnregister(t.name, ch.name)
	if err := ch.shutdown(true); err != nil {
		n.logger.Error("failed to delete channel", "topic", t.name, "channel", ch.name, "err", err)
	}
	t.removeChannel(ch)
	if !ch.ephemeral {
		n.persistMetadataOrLog()
	}
	n.logger.Info("deleted channel", "topic", t.name, "channel", ch.name)
	if t.ephemeral && t.markExiting(true) {
		n.finishTopicDelete(t)
	}
}

// deleteEphemeralChannel removes an ephemeral channel whose last consumer
// left, unless a consumer arrived meanwhile.
func (n *NSQD) deleteEphemeralChannel(ch *Channel) {
	t, ok := n.ExistingTopic(ch.topicName)
	if !ok || n.exiting.Load() {
		return
	}
	if ch.markExiting(true) {
		n.finishChannelDelete(t, ch)
	}
}

// subscribe attaches c to topic/channel, creating them as needed.
func (n *NSQD) subscribe(c *client, topicName, channelName string) (*Channel, error) {
	t, err := n.GetTopic(topicName)
	if err != nil {
		return nil, err
	}
	if t.fwd {
		return nil, &errReplicatedElsewhere{topic: topicName}
	}
	ch, err := n.GetChannel(t, channelName)
	if err != nil {
		return nil, err
	}
	if err := ch.addClient(c, n.opts.MaxChannelConsumers); err != nil {
		return nil, err
	}
	return ch, nil
}

// topicList returns the topics sorted by name.
func (n *NSQD) topicList() []*Topic {
	n.mu.RLock()
	list := make([]*Topic, 0, len(n.topics))
	for _, t := range n.topics {
		list = append(list, t)
	}
	n.mu.RUnlock()
	sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
	return list
}

// watch adds ch to the channels scanLoop visits.
func (n *NSQD) watch(ch *Channel) {
	n.watchMu.Lock()
	if n.watched == nil {
		n.watched = map[*Channel]struct{}{}
	}
	n.watched[ch] = struct{}{}
	n.watchMu.Unlock()
}

func (n *NSQD) unwatch(ch *Channel) {
	n.watchMu.Lock()
	delete(n.watched, ch)
	n.watchMu.Unlock()
}

// scanLoop fires in-flight timeouts and releases deferred messages of the
// watched channels (each keeps both ordered by deadline, so a pass costs
// O(watched channels) plus the work actually due), and once a second
// sweeps expired messages and lets durable topics drop finished segments.
func (n *NSQD) scanLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.opts.QueueScanInterval)
	defer tick.Stop()
	var lastRetain time.Time
	var chans []*Channel
	var topics []*Topic
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		retain := now.Sub(lastRetain) >= time.Second
		if retain {
			lastRetain = now
		}
		n.watchMu.Lock()
		for ch := range n.watched {
			chans = append(chans, ch)
		}
		n.watchMu.Unlock()
		for _, ch := range chans {
			ch.processDeadlines(now.UnixNano())
			if retain {
				ch.sweepExpired(now.UnixNano())
			}
			ch.unwatchIfIdle()
		}
		clear(chans)
		chans = chans[:0]
		if !retain {
			continue
		}
		n.mu.RLock()
		for _, t := range n.topics {
			if t.dur != nil || t.policy.Load() != nil {
				topics = append(topics, t)
			}
		}
		n.mu.RUnlock()
		for _, t := range topics {
			t.sweepExpired(now.UnixNano())
			if t.dur != nil && !t.isExiting() {
				t.retain(now)
			}
		}
		clear(topics)
		topics = topics[:0]
	}
}
