package replica

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/store"
)

// Defaults of ClusterConfig.
const (
	DefaultReplicaTimeout = 5 * time.Minute
	DefaultDutyInterval   = time.Second
	// MetaVoters is how many nodes vote in the meta group; every other
	// node that takes part holds the placement as a learner.
	MetaVoters = 3
	// reservationTTL bounds how long a meta bootstrap reservation holds a
	// node that never hears the bootstrap.
	reservationTTL = 30 * time.Second
	requestTimeout = 3 * time.Second
	// publishAttemptTimeout bounds one attempt of a publish.
	publishAttemptTimeout = 3 * time.Second
)

// TopicHost is the node's side of its replicated topics (nsqd): the
// cluster tells it which replicas it holds and who leads them.
type TopicHost interface {
	// OpenTopic opens this node's replica of topic: the state machine its
	// group applies to, and the last index that machine applied.
	OpenTopic(topic string, a Assignment) (StateMachine, uint64, error)
	// CloseTopic closes the replica; deleted says its data goes too (the
	// topic was deleted or moved off this node).
	CloseTopic(topic string, deleted bool)
	// LeaderChanged says who leads topic's group now (0: nobody known).
	// It is called from the host's loop and must not block.
	LeaderChanged(topic string, leader uint64)
}

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	Self     uint64
	SelfAddr string // broadcast_address:tcp_port
	// Dir holds the meta group and the topics' Raft logs.
	Dir         string
	FS          store.FS
	OpenStorage func(dir string) (GroupStorage, error)
	Transport   Transport
	Requester   Requester
	// Peers returns the live nodes as discovered (through nsqlookupd); it
	// may include this node.
	Peers func() map[uint64]string
	// Refresh, if set, makes Peers current before the meta group is
	// formed (a stale view could form it with too few nodes); it reports
	// whether the view is fresh.
	Refresh func(ctx context.Context) bool
	Topics  TopicHost
	Logger  *slog.Logger

	Tick           time.Duration
	ElectionTicks  int
	ReplicaTimeout time.Duration
	DutyInterval   time.Duration
	// Fresh says this node's replication state was created at this start:
	// its first start, or its disk was lost. A fresh node that the
	// cluster still counts as a member of the meta group or of topics'
	// groups (its disk was lost) rejoins them as amnesiac (see
	// GroupConfig.Amnesiac): it votes only once it has caught up, and
	// the groups' leaders readmit it.
	Fresh bool
}

// Cluster is a node's part in replication: the meta group (placement),
// the groups of the replicated topics this node holds, and the requests
// between nodes. Nothing runs until a replicated topic is asked for (or a
// peer invites this node), so a node that never uses replication costs
// nothing.
type Cluster struct {
	cfg  ClusterConfig
	log  *slog.Logger
	host *Host

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	metaMu sync.Mutex // serialises forming and joining the meta group
	resMu  sync.Mutex // guards the reservation file

	mu          sync.Mutex // guards the fields below
	meta        *metaMachine
	metaStorage GroupStorage
	metaLog     string // joinedFile.Log of the running meta group
	topics      map[string]*localTopic
	lastSeen    map[uint64]time.Time
	invited     map[uint64]time.Time
	// amnesiac: the topics this fresh node was a member of when it first
	// knew the placement (nil until then; see ClusterConfig.Fresh).
	amnesiac   map[string]bool
	memberSeek time.Time // when a fresh node last looked for a meta group it belongs to

	// settled: this node knows the placement as far as it concerns it
	// (see Settled); closed once.
	settled    chan struct{}
	settleOnce sync.Once
	seekStart  time.Time     // the first seek; guarded by mu
	metaSeen   bool          // a node answered that it runs a meta group; guarded by mu
	silentSeen bool          // no seek has ended yet, or the last had a live node that did not answer in time; guarded by mu
	seek       chan struct{} // asks run to look for a meta group counting this node
}

type localTopic struct {
	topic   string
	group   string
	created uint64
	storage GroupStorage
}

// NewCluster returns a cluster; Start runs it.
func NewCluster(cfg ClusterConfig) *Cluster {
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.DutyInterval <= 0 {
		cfg.DutyInterval = DefaultDutyInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "replica"),
		ctx:      ctx,
		cancel:   cancel,
		kick:     make(chan struct{}, 1),
		topics:   make(map[string]*localTopic),
		lastSeen: make(map[uint64]time.Time),
		invited:  make(map[uint64]time.Time),
	}
	c.settled = make(chan struct{})
	c.seek = make(chan struct{}, 1)
	// Until a seek has heard every live node, one may be a silent meta
	// member (an invitation being handled can hold the seek back for a
	// whole requestTimeout while a frozen node is asked first).
	c.silentSeen = true
	if !cfg.Fresh {
		c.settle()
	}
	c.host = NewHost(HostConfig{ID: cfg.Self, Transport: cfg.Transport, Logger: cfg.Logger,
		Tick: cfg.Tick, ElectionTicks: cfg.ElectionTicks})
	return c
}

// Host returns the cluster's Raft host: the Receiver of its transport.
func (c *Cluster) Host() *Host { return c.host }

func (c *Cluster) metaDir() string { return filepath.Join(c.cfg.Dir, "meta") }

// Start restores the meta group and the topics' groups this node had, and
// starts the host and the cluster's duties.
func (c *Cluster) Start() error {
	if err := c.cfg.FS.MkdirAll(c.metaDir()); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	c.host.Start()
	if err := c.restoreMeta(); err != nil {
		return err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run()
	}()
	return nil
}

// Close stops the duties and the host and closes every group's storage.
// The topics' state machines are closed by their owner.
func (c *Cluster) Close() {
	c.cancel()
	c.wg.Wait()
	c.host.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, lt := range c.topics {
		closeStorage(lt.storage)
	}
	clear(c.topics)
	if c.metaStorage != nil {
		closeStorage(c.metaStorage)
		c.metaStorage = nil
	}
}

func closeStorage(s GroupStorage) {
	if cl, ok := s.(io.Closer); ok {
		cl.Close()
	}
}

// restoreMeta runs the meta group again when this node took part in it
// before the restart. It holds metaMu like every other start of the group:
// a meta.rejoin or meta.invite that arrives while the group is restored
// (the host already serves requests) waits, then finds the group running,
// instead of starting a second one.
func (c *Cluster) restoreMeta() error {
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	b, err := readFile(c.cfg.FS, filepath.Join(c.metaDir(), "joined.json"))
	if errors.Is(err, errNoFile) {
		return nil
	}
	if err != nil {
		return err
	}
	var j joinedFile
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("replica: decode joined.json: %w", err)
	}
	return c.startMeta(j.Initial, j.Log)
}

// joinedFile marks that this node takes part in the meta group; Initial
// is the bootstrap membership when this node was one of the first voters.
type joinedFile struct {
	Initial []uint64 `json:"initial,omitempty"`
	// Log names the directory under meta/ holding the meta group's Raft
	// log and placement ("" for meta/ itself): a node that rejoins after
	// it was removed starts in a new one (see rejoinMeta).
	Log string `json:"log,omitempty"`
}

// startMeta runs the meta group on this node (bootstrapped with initial
// when its log is empty and initial is set; else it waits for the leader).
// metaMu held.
func (c *Cluster) startMeta(initial []uint64, logDir string) error {
	c.mu.Lock()
	running := c.meta != nil
	c.mu.Unlock()
	if running {
		return nil
	}
	dir := c.metaDir()
	if logDir != "" {
		dir = filepath.Join(dir, logDir)
		if err := c.cfg.FS.MkdirAll(dir); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if err := store.WriteFileAtomic(c.cfg.FS, filepath.Join(c.metaDir(), "joined.json"), mustJSON(joinedFile{Initial: initial, Log: logDir})); err != nil {
		return fmt.Errorf("replica: mark meta membership: %w", err)
	}
	mm, err := openMetaMachine(c.cfg.FS, filepath.Join(dir, "state.json"), c.log, c.reconcileSoon)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	st, err := c.cfg.OpenStorage(filepath.Join(dir, "raft"))
	if err != nil {
		return fmt.Errorf("replica: open meta log: %w", err)
	}
	gc := GroupConfig{Name: MetaGroup, Storage: st, Machine: mm, Bootstrap: initial, Applied: mm.appliedIndex()}
	if c.cfg.Fresh && len(initial) == 0 && mm.appliedIndex() == 0 {
		// Joining: as a new node (a learner: it votes in nothing), or as
		// a member that lost its disk.
		gc.Amnesiac, gc.OnAmnesia = true, c.readmitSoon(MetaGroup)
	}
	last, lastErr := st.LastIndex()
	if err := c.host.AddGroup(gc); err != nil {
		closeStorage(st)
		return err
	}
	c.mu.Lock()
	c.meta, c.metaStorage, c.metaLog = mm, st, logDir
	c.mu.Unlock()
	if lastErr == nil && last == 0 && len(initial) > 0 && firstCandidate(MetaGroup, initial) == c.cfg.Self {
		c.standSoon(MetaGroup) // the group is being formed: see standSoon
	}
	c.reconcileSoon()
	return nil
}

func (c *Cluster) metaMachine() *metaMachine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta
}

func (c *Cluster) reconcileSoon() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Cluster) run() {
	t := time.NewTicker(c.cfg.DutyInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.duties()
		case <-c.kick:
		case <-c.seek:
			if c.metaMachine() == nil {
				c.seekMembership(time.Now())
			}
		}
		c.reconcile()
	}
}

// reconcile opens the groups of the topics placed on this node and closes
// those no longer placed here.
func (c *Cluster) reconcile() {
	mm := c.metaMachine()
	if mm == nil {
		return
	}
	if c.cfg.Fresh && !c.noteAmnesia(mm) {
		return // the meta group is still catching up: its placement is not current
	}
	p := mm.view()
	c.mu.Lock()
	var closing []*localTopic
	for topic, lt := range c.topics {
		a, ok := p.Topics[topic]
		if !ok || !a.Has(c.cfg.Self) || a.Created != lt.created {
			closing = append(closing, lt)
			delete(c.topics, topic)
		}
	}
	var opening []string
	for topic, a := range p.Topics {
		if _, ok := c.topics[topic]; !ok && a.Has(c.cfg.Self) {
			opening = append(opening, topic)
		}
	}
	c.mu.Unlock()
	for _, lt := range closing {
		c.host.RemoveGroup(lt.group)
		closeStorage(lt.storage)
		c.cfg.Topics.CloseTopic(lt.topic, true)
		if err := c.cfg.FS.RemoveAll(c.groupDir(lt.group)); err != nil {
			c.log.Warn("remove a replica's log", "topic", lt.topic, "err", err)
		}
	}
	slices.Sort(opening)
	for _, topic := range opening {
		if err := c.openTopic(topic, *p.Topics[topic]); err != nil {
			c.log.Error("open replicated topic", "topic", topic, "err", err)
		}
	}
	c.settle() // the placement is known and this node's topics are open
}

// settleWithin bounds how long a fresh node waits to learn whether the
// cluster counts it a member when every live node answered without
// telling (nsqlookupd silent, or nodes without replication);
// settleWithinSilent when a live node does not answer at all (down but
// still registered, or busy: a meta member slow to answer must not be
// taken for none, measured under load at over 3 s). seekEvery spaces its
// questions, seekTimeout bounds each.
const (
	settleWithin       = 3 * time.Second
	settleWithinSilent = 15 * time.Second
	seekEvery          = time.Second
	seekTimeout        = time.Second
)

func (c *Cluster) settle() { c.settleOnce.Do(func() { close(c.settled) }) }

// Settled waits, until ctx ends, for a fresh node (ClusterConfig.Fresh)
// to know whether the cluster counts it a member of topics' groups and, if
// so, to have opened them: before that, a publish to a topic it does not
// hold would create a plain local topic under a replicated topic's name
// (the node lost its disk and does not know the topic yet). It reports
// whether the node has settled; a node that is not fresh has.
func (c *Cluster) Settled(ctx context.Context) bool {
	select {
	case <-c.settled:
		return true
	default:
	}
	select { // look now (nothing is sent before replication is used)
	case c.seek <- struct{}{}:
	default:
	}
	c.mu.Lock()
	if c.seekStart.IsZero() {
		c.seekStart = time.Now()
	}
	giveUp := time.NewTimer(time.Until(c.seekStart.Add(settleWithin)))
	c.mu.Unlock()
	defer giveUp.Stop()
	for {
		select {
		case <-c.settled:
			return true
		case <-ctx.Done():
			return false
		case <-giveUp.C:
			// On time, whatever the cluster's loop is doing (asking).
			if !c.settleIfNoMeta(time.Now()) {
				c.mu.Lock()
				giveUp.Reset(max(time.Until(c.seekStart.Add(settleWithinSilent)), seekEvery))
				c.mu.Unlock()
			}
		}
	}
}

// settleIfNoMeta settles a fresh node that has looked for its meta group
// while no node answered that it runs one (see seekMembership): for
// settleWithin when every live node answered, for settleWithinSilent when
// one did not; it reports whether it did.
func (c *Cluster) settleIfNoMeta(now time.Time) bool {
	c.mu.Lock()
	waited := now.Sub(c.seekStart)
	giveUp := !c.seekStart.IsZero() && !c.metaSeen && c.meta == nil &&
		(waited >= settleWithinSilent || (waited >= settleWithin && !c.silentSeen))
	c.mu.Unlock()
	if !giveUp {
		return false
	}
	select {
	case <-c.settled:
		return true
	default:
	}
	c.log.Info("no node answered that it runs a meta group: going on as a node that holds no replica")
	c.settle()
	return true
}

// noteAmnesia decides, on a fresh node, which topics' groups it rejoins as
// amnesiac: those the placement counts it a member of when its meta group
// has first caught up. It reports false while the meta group has not.
func (c *Cluster) noteAmnesia(mm *metaMachine) bool {
	c.mu.Lock()
	decided := c.amnesiac != nil
	c.mu.Unlock()
	if decided {
		return true
	}
	// Caught up, and the placement applied as far as committed then.
	if st, ok := c.host.Status(MetaGroup); !ok || st.Amnesiac || mm.appliedIndex() < st.Commit {
		return false
	}
	p := mm.view()
	lost := make(map[string]bool)
	for topic, a := range p.Topics {
		if a.Has(c.cfg.Self) {
			lost[topic] = true
		}
	}
	if len(lost) > 0 {
		c.log.Warn("this node lost its replicas (a new data path): it rejoins their groups and catches up", "topics", len(lost))
	}
	c.mu.Lock()
	c.amnesiac = lost
	c.mu.Unlock()
	return true
}

// readmitSoon returns an amnesiac group's OnAmnesia: it asks the leader,
// in the background, to readmit this node.
func (c *Cluster) readmitSoon(group string) func(leader uint64) {
	return func(leader uint64) {
		if leader == 0 || leader == c.cfg.Self {
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
			defer cancel()
			if _, err := c.cfg.Requester.Request(ctx, leader, "replica.readmit", []byte(group)); err != nil {
				c.log.Debug("ask to be readmitted", "group", group, "err", err)
			}
		}()
	}
}

// seekMembership: a fresh node that the cluster still counts in its meta
// group (its disk was lost) is not invited (it is a member); it looks for
// that group by itself, asking every live node at most every seekEvery,
// while a publish waits on Settled.
//
// It settles as a node that holds nothing when the live nodes answered
// and none counts it a member, or when some node in a meta group answered
// and does not count it (membership changes only through that group). It
// settles without such an answer only when no node ever answered that it
// runs a meta group: after settleWithin when every live node answered (a
// cluster without replication, NSQ nodes with a Sluice among them, or
// nsqlookupd down must not keep it waiting), after settleWithinSilent
// when a live node stayed silent (it may be a meta member too busy to
// answer: taken for none, the node would create a plain topic under the
// name of a replica it holds). Once a meta group is known to exist, the
// node settles only on an answer.
//
// memberSeekIdle reports whether no seek was asked for (Settled) or the
// node has settled.
func (c *Cluster) memberSeekIdle() bool {
	select {
	case <-c.settled:
		return true
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.memberSeek.IsZero()
}

func (c *Cluster) seekMembership(now time.Time) {
	c.mu.Lock()
	if c.seekStart.IsZero() {
		c.seekStart = now
	}
	c.mu.Unlock()
	if c.settleIfNoMeta(now) {
		return
	}
	c.mu.Lock()
	recent := now.Sub(c.memberSeek) < seekEvery
	if !recent {
		c.memberSeek = now
	}
	c.mu.Unlock()
	if recent {
		return
	}
	refreshed := c.cfg.Refresh == nil || c.cfg.Refresh(c.ctx)
	// Every live node at once, briefly: a publish may be waiting.
	type answer struct {
		info metaInfo
		err  error
	}
	var ids []uint64
	for id := range c.liveNodes() {
		if id != c.cfg.Self {
			ids = append(ids, id)
		}
	}
	if !refreshed && len(ids) == 0 {
		// nsqlookupd did not answer and no node is known: nobody to wait
		// for (settleWithin), unless a node did answer before.
		c.mu.Lock()
		c.silentSeen = false
		c.mu.Unlock()
		return
	}
	answers := make([]answer, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(c.ctx, seekTimeout)
			defer cancel()
			answers[i].info, answers[i].err = c.askMetaInfo(ctx, id)
		}()
	}
	wg.Wait()
	silent, notCounted := 0, 0
	defer func() {
		c.mu.Lock()
		c.silentSeen = silent > 0
		c.mu.Unlock()
	}()
	for _, a := range answers {
		if a.err == nil && a.info.Joined {
			c.noteMetaSeen()
		}
		switch {
		case errors.Is(a.err, context.DeadlineExceeded):
			silent++ // it may still answer: ask again
		case a.err != nil || !a.info.Joined:
			// not in a meta group, or refuses the replication protocol
			// (an NSQ node registered with the same nsqlookupd)
		case counts(a.info, c.cfg.Self):
			if !c.metaMu.TryLock() {
				return // being formed or joined (an invitation): asked again later
			}
			defer c.metaMu.Unlock()
			if err := c.rejoinAsMember(); err != nil {
				c.log.Warn("rejoin the meta group", "err", err)
			}
			return // settled once caught up and its topics are open (reconcile)
		default:
			notCounted++
		}
	}
	if silent == 0 || notCounted > 0 {
		select {
		case <-c.settled:
		default:
			c.log.Info("no meta group counts this node: going on as a node that holds no replica",
				"asked", len(ids), "not_counted", notCounted)
		}
		c.settle() // no meta group counts this node: it holds nothing
	}
}

// noteMetaSeen records that a node answered that it runs a meta group:
// from then on a fresh node settles only on an answer (seekMembership),
// never because the wait ran out.
func (c *Cluster) noteMetaSeen() {
	c.mu.Lock()
	c.metaSeen = true
	c.mu.Unlock()
}

// counts reports whether a meta group's membership includes node.
func counts(info metaInfo, node uint64) bool {
	return slices.Contains(info.Voters, node) || slices.Contains(info.Learners, node)
}

// rejoinAsMember runs the meta group on a fresh node that the cluster
// still counts in it (its disk was lost): empty, and amnesiac (see
// startMeta). It asks nobody to add it: it is a member, and the leader's
// next message reaches it; its leader readmits it and sends it the log.
// metaMu held.
func (c *Cluster) rejoinAsMember() error {
	if c.metaMachine() != nil {
		return nil
	}
	c.log.Warn("the cluster counts this node in its meta group, which it has no state of: rejoining")
	return c.startMeta(nil, "")
}

func (c *Cluster) groupDir(group string) string { return filepath.Join(c.cfg.Dir, "groups", group) }

func (c *Cluster) openTopic(topic string, a Assignment) error {
	group := GroupName(topic, a.Created)
	st, err := c.cfg.OpenStorage(c.groupDir(group))
	if err != nil {
		return fmt.Errorf("open log of %s: %w", group, err)
	}
	sm, applied, err := c.cfg.Topics.OpenTopic(topic, a)
	if err != nil {
		closeStorage(st)
		return err
	}
	var boot []uint64
	if a.Generation == 0 {
		boot = a.Members
	}
	gc := GroupConfig{Name: group, Storage: st, Machine: sm, Bootstrap: boot, Applied: applied,
		OnLeader: func(l uint64) { c.cfg.Topics.LeaderChanged(topic, l) }}
	c.mu.Lock()
	lost := c.amnesiac[topic]
	c.mu.Unlock()
	last, err := st.LastIndex()
	if lost && err == nil && applied == 0 && last == 0 {
		gc.Amnesiac, gc.OnAmnesia = true, c.readmitSoon(group)
	}
	if err := c.host.AddGroup(gc); err != nil {
		closeStorage(st)
		c.cfg.Topics.CloseTopic(topic, false)
		return err
	}
	c.mu.Lock()
	c.topics[topic] = &localTopic{topic: topic, group: group, created: a.Created, storage: st}
	c.mu.Unlock()
	if err == nil && last == 0 && len(boot) > 0 && !gc.Amnesiac && firstCandidate(topic, boot) == c.cfg.Self {
		c.standSoon(group)
	}
	return nil
}

// firstCandidate is the member of a new group that stands for its first
// leader at once: one picked by the topic's name, so that topics created
// through one node spread their leaders over the nodes.
func firstCandidate(topic string, members []uint64) uint64 {
	h := fnv.New32a()
	h.Write([]byte(topic))
	return members[h.Sum32()%uint32(len(members))]
}

// standSoon makes this node campaign in a group it just bootstrapped.
// Left to itself, a new group elects its first leader only after a
// randomized election timeout (1-2 s at the default tick): the time a
// /topic/create?replicas= took. The other members open the group as they
// apply the placement, about when this one does; a campaign whose
// messages reach one before it has is tried again, every 50 ms for
// 400 ms, and then raft's own timeout elects. Pre-vote keeps a
// campaign that meets a leader from changing anything.
func (c *Cluster) standSoon(group string) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for range 8 {
			if st, ok := c.host.Status(group); !ok || st.Leader != 0 {
				return
			}
			if err := c.host.Campaign(group); err != nil {
				c.log.Debug("stand for leader of a new group", "group", group, "err", err)
				return
			}
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// Assignment returns where topic is replicated, when it is.
func (c *Cluster) Assignment(topic string) (Assignment, bool) {
	mm := c.metaMachine()
	if mm == nil {
		return Assignment{}, false
	}
	return mm.assignment(topic)
}

// ErrMetaUnconfirmed says this node could not confirm with the meta
// group (a read index: its leader and a majority) what the placement
// holds: on a minority side of a partition, or while the group elects a
// leader. The caller may try again.
var ErrMetaUnconfirmed = errors.New("the meta group could not confirm the placement")

// CurrentAssignment is Assignment as the meta group has committed it
// when the call is made, not as this node's copy last heard it: a node
// whose copy lags (cut off, frozen, just restarted) would otherwise take a
// topic the group has just placed for one it never heard of. The local
// copy answers a topic it knows (an assignment is only ever added or
// replaced); for one it does not, the node asks the meta group for a read
// index (one round trip to its leader, which confirms with a majority)
// and waits for its copy to apply up to it. A node that runs no meta
// group (none was formed, or this node is not a member) answers from
// what it has, as Assignment does. It fails with ErrMetaUnconfirmed when
// the meta group cannot answer before ctx ends.
func (c *Cluster) CurrentAssignment(ctx context.Context, topic string) (Assignment, bool, error) {
	mm := c.metaMachine()
	if mm == nil {
		return Assignment{}, false, nil
	}
	if a, ok := mm.assignment(topic); ok {
		return a, true, nil
	}
	idx, err := c.host.ReadIndex(ctx, MetaGroup)
	if err == nil {
		err = c.host.WaitApplied(ctx, MetaGroup, idx)
	}
	if err != nil {
		return Assignment{}, false, fmt.Errorf("%w: %w", ErrMetaUnconfirmed, err)
	}
	if c.metaMachine() != mm { // rejoined meanwhile: another log
		return Assignment{}, false, fmt.Errorf("%w: the node is rejoining the meta group", ErrMetaUnconfirmed)
	}
	a, ok := mm.assignment(topic)
	return a, ok, nil
}

// TopicStatus returns the status of this node's replica of topic.
func (c *Cluster) TopicStatus(topic string) (GroupStatus, bool) {
	lt := c.local(topic)
	if lt == nil {
		return GroupStatus{}, false
	}
	return c.host.Status(lt.group)
}

// Addr returns the address of a node as the placement knows it.
func (c *Cluster) Addr(node uint64) string {
	if node == c.cfg.Self {
		return c.cfg.SelfAddr
	}
	if mm := c.metaMachine(); mm != nil {
		mm.mu.Lock()
		defer mm.mu.Unlock()
		if n, ok := mm.p.Nodes[node]; ok {
			return n.Addr
		}
	}
	if a, ok := c.cfg.Peers()[node]; ok {
		return a
	}
	return ""
}

// CreateTopic makes topic replicated on replicas nodes (forming the meta
// group first if the cluster has none) and returns its assignment once the
// meta group committed it. Creating a topic that exists with the same
// replicas returns its assignment.
func (c *Cluster) CreateTopic(ctx context.Context, topic string, a Assignment) (Assignment, error) {
	if err := c.ensureMeta(ctx, 0); err != nil {
		return Assignment{}, err
	}
	mm := c.metaMachine()
	if old, ok := mm.assignment(topic); ok {
		if old.Replicas != a.Replicas {
			return old, fmt.Errorf("%w: %q has %d replicas", ErrTopicExists, topic, old.Replicas)
		}
		return old, nil
	}
	if err := c.registerSelf(ctx); err != nil {
		return Assignment{}, fmt.Errorf("replica: create %q: %w", topic, err)
	}
	st, _ := c.host.Status(MetaGroup)
	c.inviteLive(ctx, st)
	var members []uint64
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := mm.view()
		var live []uint64
		for id := range c.liveNodes() {
			if _, joined := p.Nodes[id]; joined {
				live = append(live, id)
			}
		}
		m, err := ChooseMembers(live, p.Load(), a.Replicas, c.cfg.Self)
		if err == nil {
			members = m
			break
		}
		if time.Now().After(deadline) {
			return Assignment{}, err
		}
		select {
		case <-ctx.Done():
			return Assignment{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	a.Members = members
	if err := c.host.Propose(ctx, MetaGroup, EncodeCreateCmd(topic, a)); err != nil {
		return Assignment{}, fmt.Errorf("replica: create %q: %w", topic, err)
	}
	got, ok := mm.assignment(topic)
	if !ok {
		return Assignment{}, fmt.Errorf("replica: create %q was not applied", topic)
	}
	c.waitPlacementKnown(ctx, mm.appliedIndex())
	if got.Replicas != a.Replicas {
		return got, fmt.Errorf("%w: %q has %d replicas", ErrTopicExists, topic, got.Replicas)
	}
	if got.Has(c.cfg.Self) {
		// Answer once the new group can take publishes here.
		c.reconcileSoon()
		for {
			if st, ok := c.TopicStatus(topic); ok && st.Leader != 0 {
				break
			}
			select {
			case <-ctx.Done():
				return got, nil
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return got, nil
}

// waitPlacementKnown waits (a few seconds at most) until every live node
// (invited into the meta group just before) has applied the placement up
// to index, so that a
// publish to any of them right after a creation finds the topic
// replicated rather than creating a plain topic of the same name.
func (c *Cluster) waitPlacementKnown(ctx context.Context, index uint64) {
	deadline := time.Now().Add(5 * time.Second)
	for id := range c.liveNodes() {
		if id == c.cfg.Self {
			continue
		}
		for time.Now().Before(deadline) {
			info, err := c.askMetaInfo(ctx, id)
			if err == nil && info.Applied >= index {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// registerSelf records this node's address in the placement, if it is not
// there yet.
func (c *Cluster) registerSelf(ctx context.Context) error {
	mm := c.metaMachine()
	if mm == nil {
		return ErrMetaForming
	}
	mm.mu.Lock()
	_, ok := mm.p.Nodes[c.cfg.Self]
	mm.mu.Unlock()
	if ok {
		return nil
	}
	return c.host.Propose(ctx, MetaGroup, EncodeNodeCmd(c.cfg.Self, c.cfg.SelfAddr))
}

// DeleteTopic removes a replicated topic from every node.
func (c *Cluster) DeleteTopic(ctx context.Context, topic string) error {
	if c.metaMachine() == nil {
		return ErrUnknownTopic
	}
	return c.host.Propose(ctx, MetaGroup, EncodeDeleteCmd(topic))
}

// Publish commits data (a publish command of the topic's state machine)
// through topic's group: directly when this node holds a replica (a
// follower forwards to the leader), else through a member. It returns
// once a majority of the replicas has it on disk. While the group has no
// leader (an election, a topic just created) it retries until ctx ends,
// and then returns the last error.
func (c *Cluster) Publish(ctx context.Context, topic string, data []byte) error {
	var body []byte
	for {
		// An attempt whose forward was lost on the way (a full peer
		// queue) is given up after a while and made again.
		actx, cancel := context.WithTimeout(ctx, publishAttemptTimeout)
		err := c.publishOnce(actx, topic, data, &body)
		cancel()
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrStopped) || errors.Is(err, ErrGroupDown) {
			return err
		}
		if _, known := c.Assignment(topic); !known && errors.Is(err, ErrUnknownTopic) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) publishOnce(ctx context.Context, topic string, data []byte, body *[]byte) error {
	lt := c.local(topic)
	if lt != nil {
		return c.host.ProposeCommitted(ctx, lt.group, data)
	}
	a, ok := c.Assignment(topic)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, topic)
	}
	if *body == nil {
		*body = append(appendString16(make([]byte, 0, 2+len(topic)+len(data)), topic), data...)
	}
	var err error
	for _, m := range a.Members {
		if _, err = c.cfg.Requester.Request(ctx, m, "publish", *body); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return fmt.Errorf("replica: forward to %q's replicas: %w", topic, err)
}

// Propose proposes data to the group of topic held on this node (channel
// state changes). It returns once applied here.
func (c *Cluster) Propose(ctx context.Context, topic string, data []byte) error {
	lt, err := c.replicaOf(topic)
	if err != nil {
		return err
	}
	return c.host.Propose(ctx, lt.group, data)
}

// replicaOf returns this node's replica of topic, or ErrUnknownTopic.
func (c *Cluster) replicaOf(topic string) (*localTopic, error) {
	lt := c.local(topic)
	if lt == nil {
		return nil, fmt.Errorf("%w: %q on this node", ErrUnknownTopic, topic)
	}
	return lt, nil
}

// local returns this node's replica of topic, nil when it holds none.
func (c *Cluster) local(topic string) *localTopic {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.topics[topic]
}

// ErrNotMember refuses a leadership transfer to a node that holds no
// replica of the topic.
var ErrNotMember = errors.New("the node holds no replica of the topic")

// Member returns the replica of topic at addr (broadcast_address:tcp_port,
// as /stats names leaders), when one is there.
func (c *Cluster) Member(topic, addr string) (uint64, bool) {
	a, ok := c.Assignment(topic)
	if !ok {
		return 0, false
	}
	for _, m := range a.Members {
		if c.Addr(m) == addr {
			return m, true
		}
	}
	return 0, false
}

// HandOff asks topic's group, once and without waiting, to make its
// replica to the leader (see Host.TransferLeader).
func (c *Cluster) HandOff(topic string, to uint64) error {
	lt, err := c.replicaOf(topic)
	if err != nil {
		return err
	}
	return c.host.TransferLeader(lt.group, to)
}

// Handover is implemented by a TopicHost with work to do on the leader
// around a planned change of leader (TransferLeader), such as handing
// the consumers' latest progress to the group so the next leader does
// not deliver again what was finished.
type Handover interface {
	// PrepareHandover runs on the leader before it hands its leadership
	// of topic on; an error cancels the transfer.
	PrepareHandover(ctx context.Context, topic string) error
	// HandoverDone runs after the transfer, whether or not another
	// replica took the leadership.
	HandoverDone(topic string)
}

// transferTimeout bounds a transfer the leader makes for a follower.
const transferTimeout = 10 * time.Second

// transferKind carries a TransferLeader asked on a follower to the
// leader, which prepares the handover and makes the transfer.
const transferKind = "topic.transfer"

// TransferLeader hands the leadership of topic's group to its replica to
// (with to 0 this node picks: when it leads, the other voter whose log is
// the least behind; when it follows, itself) and waits until a leader of
// a later term is known or ctx ends. It returns that leader: to, unless
// to handed the leadership on at once (a replica still copying the
// messages a restore skipped does) or another node won the election. A
// follower passes the request to the leader, which prepares the handover
// (see Handover) before the transfer. It fails with ErrUnknownTopic when
// this node holds no replica of topic, with ErrNotMember when to is not a
// voting replica, and with ErrNoLeader when the group has none.
func (c *Cluster) TransferLeader(ctx context.Context, topic string, to uint64) (uint64, error) {
	lt, err := c.replicaOf(topic)
	if err != nil {
		return 0, err
	}
	st, ok := c.host.Status(lt.group)
	if !ok {
		return 0, fmt.Errorf("%w: %q on this node", ErrUnknownTopic, topic)
	}
	if to == 0 {
		to = c.cfg.Self
		if st.IsLead {
			to = 0
			for _, v := range st.Voters {
				if v != c.cfg.Self && (to == 0 || st.Lag[v] < st.Lag[to]) {
					to = v
				}
			}
			if to == 0 {
				return 0, fmt.Errorf("%w: %q has no other voting replica", ErrNotMember, topic)
			}
		}
	}
	if !slices.Contains(st.Voters, to) {
		return 0, fmt.Errorf("%w: %s is not a voting replica of %q", ErrNotMember, c.Addr(to), topic)
	}
	if st.Leader == to {
		return to, nil
	}
	if !st.IsLead {
		if st.Leader == 0 {
			return 0, fmt.Errorf("replica: hand the leadership of %q to %s: %w", topic, c.Addr(to), ErrNoLeader)
		}
		body := binary.BigEndian.AppendUint64(appendString16(nil, topic), to)
		out, err := c.cfg.Requester.Request(ctx, st.Leader, transferKind, body)
		if err != nil {
			return 0, fmt.Errorf("replica: hand the leadership of %q to %s through its leader %s: %w", topic, c.Addr(to), c.Addr(st.Leader), err)
		}
		if len(out) != 8 {
			return 0, fmt.Errorf("replica: hand the leadership of %q: bad answer from %s", topic, c.Addr(st.Leader))
		}
		return binary.BigEndian.Uint64(out), nil
	}
	if ho, ok := c.cfg.Topics.(Handover); ok {
		if err := ho.PrepareHandover(ctx, topic); err != nil {
			ho.HandoverDone(topic)
			return 0, fmt.Errorf("replica: prepare handing the leadership of %q on: %w", topic, err)
		}
		defer ho.HandoverDone(topic)
	}
	term := st.Term
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var asked time.Time
	for {
		// Asked again now and then: raft gives a transfer up after an
		// election timeout.
		if time.Since(asked) >= time.Second {
			if err := c.host.TransferLeader(lt.group, to); err != nil {
				return 0, err
			}
			asked = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("replica: hand the leadership of %q to %s: %w", topic, c.Addr(to), ctx.Err())
		case <-t.C:
		}
		if st, ok := c.host.Status(lt.group); ok && st.Term > term && st.Leader != 0 {
			return st.Leader, nil
		}
	}
}

// serveTransfer answers a transferKind request: this node, the leader it
// was sent to, makes the transfer (a node that no longer leads passes it
// on to the leader it knows).
func (c *Cluster) serveTransfer(ctx context.Context, body []byte) ([]byte, error) {
	topic, rest, ok := cutString16(body)
	if !ok || len(rest) != 8 {
		return nil, errors.New("bad transfer request")
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	lead, err := c.TransferLeader(ctx, topic, binary.BigEndian.Uint64(rest))
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint64(nil, lead), nil
}

// CompactTopic snapshots this node's replica of topic at index with the
// machine's state data and drops its Raft log up to there (see
// Host.Compact). It reports whether it compacted.
func (c *Cluster) CompactTopic(topic string, index uint64, data []byte) (bool, error) {
	lt := c.local(topic)
	if lt == nil {
		return false, nil
	}
	return c.host.Compact(lt.group, index, data)
}

// liveNodes returns the nodes discovered now, this node included.
func (c *Cluster) liveNodes() map[uint64]string {
	live := make(map[uint64]string)
	for id, addr := range c.cfg.Peers() {
		live[id] = addr
	}
	live[c.cfg.Self] = c.cfg.SelfAddr
	return live
}

// inviteLive asks every live node that has not joined the meta group to
// join it (each at most every 10 s).
func (c *Cluster) inviteLive(ctx context.Context, st GroupStatus) {
	mm := c.metaMachine()
	if mm == nil {
		return
	}
	p := mm.view()
	now := time.Now()
	var wg sync.WaitGroup
	for id := range c.liveNodes() {
		if id == c.cfg.Self || slices.Contains(st.Learners, id) {
			continue
		}
		if slices.Contains(st.Voters, id) {
			// A voter silent to the leader while it is registered may
			// have lost its disk and not know it is a member: an
			// invitation makes it join (as amnesiac, see
			// ClusterConfig.Fresh); a node that runs the group ignores it.
			if !st.IsLead || !slices.Contains(st.Silent, id) {
				continue
			}
		}
		// A registered node that is no member was removed while it was
		// gone (a lost voter's replacement) and is back: it rejoins.
		// Only the leader's configuration is current enough to say so.
		kind, body := "meta.invite", []byte(nil)
		if _, ok := p.Nodes[id]; ok && !slices.Contains(st.Voters, id) {
			if !st.IsLead {
				continue
			}
			kind, body = "meta.rejoin", mustJSON(st.Voters)
		}
		c.mu.Lock()
		recent := now.Sub(c.invited[id]) < 10*time.Second
		if !recent {
			c.invited[id] = now
		}
		c.mu.Unlock()
		if recent {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			defer cancel()
			b, err := c.cfg.Requester.Request(rctx, id, kind, body)
			if err != nil {
				c.log.Debug("invite a node to the meta group", "node", fmt.Sprintf("%x", id), "request", kind, "err", err)
				return
			}
			// A node removed from the group before it ever registered
			// (a voter lost right after the group formed) runs a meta
			// group that hears from no leader: the invitation finds it
			// there, and it rejoins like a registered one.
			var ans inviteAnswer
			if kind != "meta.invite" || !st.IsLead || json.Unmarshal(b, &ans) != nil || !ans.Ran || ans.HearsLeader ||
				slices.Contains(st.Voters, id) {
				return
			}
			if _, err := c.cfg.Requester.Request(rctx, id, "meta.rejoin", mustJSON(st.Voters)); err != nil {
				c.log.Debug("ask a removed node to rejoin the meta group", "node", fmt.Sprintf("%x", id), "err", err)
			}
		}()
	}
	wg.Wait()
}

// duties runs about once a second: liveness, the meta leader's work, and
// the topic leaders' membership changes.
func (c *Cluster) duties() {
	now := time.Now()
	c.mu.Lock()
	for id := range c.liveNodes() {
		c.lastSeen[id] = now
	}
	c.mu.Unlock()
	mm := c.metaMachine()
	if mm == nil {
		if c.cfg.Fresh && !c.memberSeekIdle() {
			c.seekMembership(now) // asked for by Settled: go on until settled
		}
		return
	}
	p := mm.view()
	c.mu.Lock()
	for id := range p.Nodes {
		// A node this one never saw alive is timed from now: a meta leader
		// elected after a member died still replaces it.
		if _, ok := c.lastSeen[id]; !ok {
			c.lastSeen[id] = now
		}
	}
	c.mu.Unlock()
	if _, ok := p.Nodes[c.cfg.Self]; !ok {
		ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
		err := c.host.Propose(ctx, MetaGroup, EncodeNodeCmd(c.cfg.Self, c.cfg.SelfAddr))
		cancel()
		if err != nil {
			c.log.Debug("register in the meta group", "err", err)
		}
	}
	if st, ok := c.host.Status(MetaGroup); ok && st.IsLead {
		c.metaLeaderDuties(p, st, now)
	}
	c.topicLeaderDuties(p)
}

func (c *Cluster) metaLeaderDuties(p *Placement, st GroupStatus, now time.Time) {
	if len(p.Topics) > 0 {
		c.inviteLive(c.ctx, st)
	}
	// Bring the voters up to MetaVoters from the learners.
	if len(st.Voters) < MetaVoters && len(st.Learners) > 0 {
		l := slices.Min(st.Learners)
		cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: &l}
		if err := c.host.ProposeConfChange(MetaGroup, cc); err != nil {
			c.log.Debug("promote a meta learner", "err", err)
		}
	}
	// A member this leader never saw alive and that never registered (a
	// voter lost right after the group formed) is timed from now too.
	c.mu.Lock()
	for _, id := range slices.Concat(st.Voters, st.Learners) {
		if _, ok := c.lastSeen[id]; !ok {
			c.lastSeen[id] = now
		}
	}
	c.mu.Unlock()
	// A meta voter gone longer than the replica timeout leaves the group
	// when a live learner can take its place (the promotion above, in a
	// later round): otherwise losing two of the three voters for good,
	// one after the other, would stop every placement change.
	if v := c.lostMetaVoter(st, now); v != 0 {
		c.log.Info("replacing a lost meta voter", "lost", c.Addr(v))
		cc := &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: &v}
		if err := c.host.ProposeConfChange(MetaGroup, cc); err != nil {
			c.log.Debug("remove a lost meta voter", "err", err)
		}
		return
	}
	// Replace members gone longer than the replica timeout, one per round.
	c.mu.Lock()
	var live []uint64
	for id := range p.Nodes {
		if seen, ok := c.lastSeen[id]; ok && now.Sub(seen) < c.cfg.ReplicaTimeout {
			live = append(live, id)
		}
	}
	gone := func(id uint64) bool {
		seen, ok := c.lastSeen[id]
		return ok && now.Sub(seen) >= c.cfg.ReplicaTimeout
	}
	c.mu.Unlock()
	topics := make([]string, 0, len(p.Topics))
	for t := range p.Topics {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	load := p.Load()
	for _, topic := range topics {
		a := p.Topics[topic]
		for _, m := range a.Members {
			if !gone(m) {
				continue
			}
			r := ChooseReplacement(a, live, load)
			if r == 0 {
				break
			}
			c.log.Info("replacing a lost replica", "topic", topic, "lost", c.Addr(m), "new", c.Addr(r))
			ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
			err := c.host.Propose(ctx, MetaGroup, EncodeReplaceCmd(topic, m, r))
			cancel()
			if err != nil {
				c.log.Warn("replace a lost replica", "topic", topic, "err", err)
			}
			return
		}
	}
}

// lostMetaVoter returns a meta voter other than this node gone longer than
// the replica timeout, when the group has all its voters and a learner
// seen within the timeout can be promoted in its place; else 0.
func (c *Cluster) lostMetaVoter(st GroupStatus, now time.Time) uint64 {
	if len(st.Voters) < MetaVoters {
		return 0 // the promotion of a learner comes first
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	gone := func(id uint64) bool {
		seen, ok := c.lastSeen[id]
		return ok && now.Sub(seen) >= c.cfg.ReplicaTimeout
	}
	spare := false
	for _, l := range st.Learners {
		if _, seen := c.lastSeen[l]; seen && !gone(l) {
			spare = true
		}
	}
	if !spare {
		return 0
	}
	for _, v := range slices.Sorted(slices.Values(st.Voters)) {
		if v != c.cfg.Self && gone(v) {
			return v
		}
	}
	return 0
}

// topicLeaderDuties makes each topic group this node leads match its
// assignment: a member missing from the group is added, then a voter no
// longer a member removed, one change at a time.
func (c *Cluster) topicLeaderDuties(p *Placement) {
	c.mu.Lock()
	lts := make([]*localTopic, 0, len(c.topics))
	for _, lt := range c.topics {
		lts = append(lts, lt)
	}
	c.mu.Unlock()
	for _, lt := range lts {
		voters, leading := c.host.Leading(lt.group)
		if !leading {
			continue
		}
		a, ok := p.Topics[lt.topic]
		if !ok || a.Created != lt.created {
			continue
		}
		var cc *raftpb.ConfChange
		for _, m := range a.Members {
			if !slices.Contains(voters, m) {
				cc = &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: &m}
				break
			}
		}
		if cc == nil {
			for _, v := range voters {
				if !a.Has(v) {
					cc = &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: &v}
					break
				}
			}
		}
		if cc != nil {
			if err := c.host.ProposeConfChange(lt.group, cc); err != nil {
				c.log.Debug("change a topic group's membership", "topic", lt.topic, "err", err)
			}
		}
	}
}
