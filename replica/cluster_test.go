package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemq/sluice/store"
	"go.etcd.io/raft/v3/raftpb"
)

// reqNet carries requests between in-process clusters over memNet's links.
type reqNet struct {
	net      *memNet
	mu       sync.Mutex
	handlers map[uint64]RequestHandler
	// frozen nodes (SIGSTOP) neither answer nor ask: a request to or from
	// one waits until its context ends, as over a connection that stays
	// open to a stopped process
	frozen map[uint64]bool
}

type memRequester struct {
	rn   *reqNet
	from uint64
}

func (r memRequester) Request(ctx context.Context, to uint64, kind string, body []byte) ([]byte, error) {
	r.rn.mu.Lock()
	frozen := r.rn.frozen[to] || r.rn.frozen[r.from]
	r.rn.mu.Unlock()
	if frozen {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	r.rn.net.mu.Lock()
	_, up := r.rn.net.nodes[to]
	cut := r.rn.net.cut[[2]uint64{r.from, to}]
	r.rn.net.mu.Unlock()
	r.rn.mu.Lock()
	h := r.rn.handlers[to]
	r.rn.mu.Unlock()
	if !up || cut || h == nil {
		return nil, fmt.Errorf("node %d unreachable", to)
	}
	type answer struct {
		b   []byte
		err error
	}
	done := make(chan answer, 1)
	go func() {
		b, err := h.HandleRequest(ctx, r.from, kind, append([]byte(nil), body...))
		if err != nil {
			err = &RemoteError{Msg: err.Error()}
		}
		done <- answer{b, err}
	}()
	select {
	case a := <-done:
		return a.b, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fakeTopics is a TopicHost whose topics are model machines.
type fakeTopics struct {
	mu       sync.Mutex
	machines map[string]*modelMachine
	closed   map[string]bool
	leaders  map[string]uint64
}

func newFakeTopics() *fakeTopics {
	return &fakeTopics{machines: make(map[string]*modelMachine), closed: make(map[string]bool), leaders: make(map[string]uint64)}
}

func (f *fakeTopics) OpenTopic(topic string, a Assignment) (StateMachine, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.machines[topic]
	if m == nil {
		m = &modelMachine{}
		f.machines[topic] = m
	}
	delete(f.closed, topic)
	applied, _ := m.snapshot()
	return m, applied, nil
}

func (f *fakeTopics) CloseTopic(topic string, deleted bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed[topic] = true
	if deleted {
		delete(f.machines, topic)
	}
}

func (f *fakeTopics) LeaderChanged(topic string, leader uint64) {
	f.mu.Lock()
	f.leaders[topic] = leader
	f.mu.Unlock()
}

func (f *fakeTopics) machine(topic string) *modelMachine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.machines[topic]
}

type clusterNode struct {
	id      uint64
	fs      *store.MemFS
	topics  *fakeTopics
	cluster *Cluster
	mn      *memNode
	stores  map[string]*memStorage // by dir, survive restarts
	fresh   bool                   // ClusterConfig.Fresh at the next start
	// beforeOpen, when set, runs as the node opens a group's storage
	// (outside tc.mu): a test holds a start there.
	beforeOpen func(dir string)
}

type testCl struct {
	t     *testing.T
	net   *memNet
	rn    *reqNet
	nodes map[uint64]*clusterNode
	// hidden nodes are left out of every node's view of the live nodes,
	// as nsqlookupd drops a node whose connection ended
	hidden map[uint64]bool
	mu     sync.Mutex
	// electionTicks is every node's ClusterConfig.ElectionTicks (20 ms
	// ticks; 10 unless set by newTestClElecting)
	electionTicks int
}

func newTestCl(t *testing.T, n int) *testCl { return newTestClElecting(t, n, 10) }

// newTestClElecting is newTestCl with an election timeout of
// electionTicks ticks of 20 ms.
func newTestClElecting(t *testing.T, n, electionTicks int) *testCl {
	t.Helper()
	net := newMemNet(1)
	tc := &testCl{t: t, net: net, rn: &reqNet{net: net, handlers: make(map[uint64]RequestHandler), frozen: make(map[uint64]bool)},
		nodes: make(map[uint64]*clusterNode), hidden: make(map[uint64]bool), electionTicks: electionTicks}
	for i := 1; i <= n; i++ {
		cn := &clusterNode{id: uint64(i * 100), fs: store.NewMemFS(), topics: newFakeTopics(), stores: make(map[string]*memStorage)}
		tc.nodes[cn.id] = cn
	}
	for _, cn := range tc.nodes {
		tc.start(cn)
	}
	t.Cleanup(func() {
		for _, cn := range tc.nodes {
			tc.stop(cn)
		}
	})
	return tc
}

func (tc *testCl) peers() map[uint64]string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	out := make(map[uint64]string)
	for id := range tc.nodes {
		if !tc.hidden[id] {
			out[id] = fmt.Sprintf("127.0.0.1:%d", id)
		}
	}
	return out
}

// hide takes node id out of (or back into) what every node's discovery
// lists as live, as nsqlookupd does with a node gone or back.
func (tc *testCl) hide(id uint64, hidden bool) {
	tc.mu.Lock()
	tc.hidden[id] = hidden
	tc.mu.Unlock()
}

// returnsAndLearns starts node id again, visible to discovery, and waits
// until the meta group counts it again (seen from node 100) and it holds
// topic's assignment a, made while it was away.
func (tc *testCl) returnsAndLearns(id uint64, topic string, a Assignment) {
	tc.t.Helper()
	tc.hide(id, false)
	tc.start(tc.nodes[id])
	waitUntil(tc.t, "the returning node is a member again", 20*time.Second, func() bool {
		st := tc.metaStatus(100)
		return slices.Contains(st.Voters, id) || slices.Contains(st.Learners, id)
	})
	waitUntil(tc.t, "the returning node learns the topic created while it was away", 20*time.Second, func() bool {
		got, ok := tc.nodes[id].cluster.Assignment(topic)
		return ok && slices.Equal(got.Members, a.Members)
	})
}

// metaStatus is node id's view of the meta group (empty while the node is
// stopped or runs none).
func (tc *testCl) metaStatus(id uint64) GroupStatus {
	cl := tc.nodes[id].cluster
	if cl == nil {
		return GroupStatus{}
	}
	st, _ := cl.host.Status(MetaGroup)
	return st
}

func (tc *testCl) start(cn *clusterNode) {
	tc.t.Helper()
	if err := tc.startErr(cn); err != nil {
		tc.t.Fatal(err)
	}
}

// startErr is start returning Start's error (from any goroutine).
func (tc *testCl) startErr(cn *clusterNode) error {
	open := func(dir string) (GroupStorage, error) {
		if cn.beforeOpen != nil {
			cn.beforeOpen(dir)
		}
		tc.mu.Lock()
		defer tc.mu.Unlock()
		s := cn.stores[dir]
		if s == nil {
			s = newMemStorage()
			cn.stores[dir] = s
		}
		return s, nil
	}
	cl := NewCluster(ClusterConfig{
		Self: cn.id, SelfAddr: fmt.Sprintf("127.0.0.1:%d", cn.id), Dir: "/data/replicated", FS: cn.fs,
		OpenStorage: open, Transport: memTransport{net: tc.net, from: cn.id},
		Requester: memRequester{rn: tc.rn, from: cn.id}, Peers: tc.peers, Topics: cn.topics,
		Logger: quietLogger(), Tick: 20 * time.Millisecond, ElectionTicks: tc.electionTicks,
		ReplicaTimeout: time.Second, DutyInterval: 100 * time.Millisecond, Fresh: cn.fresh,
	})
	mn := &memNode{id: cn.id, net: tc.net, inbox: make(chan []Envelope, 1024), done: make(chan struct{}), host: cl.Host()}
	mn.serve(cl.Host())
	tc.net.mu.Lock()
	tc.net.nodes[cn.id] = mn
	tc.net.mu.Unlock()
	tc.rn.mu.Lock()
	tc.rn.handlers[cn.id] = cl
	tc.rn.mu.Unlock()
	if err := cl.Start(); err != nil {
		return err
	}
	cn.cluster, cn.mn = cl, mn
	return nil
}

func (tc *testCl) stop(cn *clusterNode) {
	if cn.cluster == nil {
		return
	}
	tc.net.mu.Lock()
	delete(tc.net.nodes, cn.id)
	tc.net.mu.Unlock()
	tc.rn.mu.Lock()
	delete(tc.rn.handlers, cn.id)
	tc.rn.mu.Unlock()
	close(cn.mn.done)
	cn.mn.wg.Wait()
	cn.cluster.Close()
	cn.cluster = nil
}

// wipe stops cn and gives it an empty disk: its next start is a fresh
// one (ClusterConfig.Fresh), as after a lost data path.
func (tc *testCl) wipe(cn *clusterNode) {
	tc.stop(cn)
	tc.mu.Lock()
	cn.fs, cn.topics, cn.stores, cn.fresh = store.NewMemFS(), newFakeTopics(), make(map[string]*memStorage), true
	tc.mu.Unlock()
}

// freeze stops node id answering anything (on), as SIGSTOP does, or lets
// it go on (off).
func (tc *testCl) freeze(id uint64, on bool) {
	tc.rn.mu.Lock()
	tc.rn.frozen[id] = on
	tc.rn.mu.Unlock()
	tc.net.mu.Lock()
	defer tc.net.mu.Unlock()
	for other := range tc.nodes { // running or not
		if other != id {
			tc.net.cut[[2]uint64{id, other}] = on
			tc.net.cut[[2]uint64{other, id}] = on
		}
	}
}

func waitUntil(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			if os.Getenv("SLUICE_REPLICA_LOG") != "" {
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			}
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func applied(m *modelMachine) []string {
	if m == nil {
		return nil
	}
	_, cmds := m.snapshot()
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = string(c.Data)
	}
	return out
}

func TestReplicatedTopicFormsMetaGroupAndReplicatesPublishesFromAnyNode(t *testing.T) {
	tc := newTestCl(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	creator := tc.nodes[200]
	a, err := creator.cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Members) != 3 || !a.Has(200) {
		t.Fatalf("assignment %+v: want 3 members including the creator", a)
	}
	// Creating again with the same replicas is idempotent; with others
	// it is refused.
	if b, err := tc.nodes[100].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3}); err != nil || !slices.Equal(b.Members, a.Members) {
		t.Fatalf("create again: %+v %v", b, err)
	}
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 2}); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("create with other replicas: %v", err)
	}
	var want []string
	for id, cn := range tc.nodes {
		for i := 0; i < 5; i++ {
			msg := fmt.Sprintf("from-%d-%d", id, i)
			if err := cn.cluster.Publish(ctx, "orders", []byte(msg)); err != nil {
				t.Fatalf("publish on node %d (member %v): %v", id, a.Has(id), err)
			}
			want = append(want, msg)
		}
	}
	slices.Sort(want)
	for _, m := range a.Members {
		cn := tc.nodes[m]
		waitUntil(t, fmt.Sprintf("node %d applies all", m), 10*time.Second, func() bool {
			return len(applied(cn.topics.machine("orders"))) == len(want)
		})
		got := applied(cn.topics.machine("orders"))
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("node %d applied %v, want %v", m, got, want)
		}
	}
	for id, cn := range tc.nodes {
		if !a.Has(id) && cn.topics.machine("orders") != nil {
			t.Fatalf("node %d holds no replica but opened the topic", id)
		}
	}
	// Every node, member or not, learnt the placement.
	for id, cn := range tc.nodes {
		waitUntil(t, fmt.Sprintf("node %d knows the placement", id), 10*time.Second, func() bool {
			got, ok := cn.cluster.Assignment("orders")
			return ok && slices.Equal(got.Members, a.Members)
		})
	}
}

func TestLostReplicaIsReplacedAndTheNewOneHoldsEveryMessage(t *testing.T) {
	tc := newTestCl(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := tc.nodes[100].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	var spare uint64
	for id := range tc.nodes {
		if !a.Has(id) {
			spare = id
		}
	}
	for i := 0; i < 20; i++ {
		if err := tc.nodes[100].cluster.Publish(ctx, "orders", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Lose a member other than the creator for good.
	var lost uint64
	for _, m := range a.Members {
		if m != 100 {
			lost = m
			break
		}
	}
	tc.stop(tc.nodes[lost])
	tc.hide(lost, true)
	for i := 20; i < 30; i++ {
		if err := tc.nodes[100].cluster.Publish(ctx, "orders", []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatalf("publish with one replica lost: %v", err)
		}
	}
	waitUntil(t, "the lost replica is replaced in the placement", 15*time.Second, func() bool {
		got, _ := tc.nodes[100].cluster.Assignment("orders")
		return got.Has(spare) && !got.Has(lost)
	})
	waitUntil(t, "the new replica holds every message", 15*time.Second, func() bool {
		return len(applied(tc.nodes[spare].topics.machine("orders"))) == 30
	})
	waitUntil(t, "the group's voters are the new members", 15*time.Second, func() bool {
		st, ok := tc.nodes[spare].cluster.TopicStatus("orders")
		return ok && len(st.Voters) == 3 && !slices.Contains(st.Voters, lost) && slices.Contains(st.Voters, spare)
	})
}

func TestMetaFormationSurvivesRestartOfEveryNode(t *testing.T) {
	tc := newTestCl(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tc.nodes[300].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if err := tc.nodes[300].cluster.Publish(ctx, "orders", []byte("before")); err != nil {
		t.Fatal(err)
	}
	for _, cn := range tc.nodes {
		tc.stop(cn)
	}
	for _, cn := range tc.nodes {
		tc.start(cn)
	}
	for _, cn := range tc.nodes {
		if _, ok := cn.cluster.Assignment("orders"); !ok {
			t.Fatalf("node %d lost the placement across a restart", cn.id)
		}
	}
	if err := tc.nodes[100].cluster.Publish(ctx, "orders", []byte("after")); err != nil {
		t.Fatalf("publish after restarting every node: %v", err)
	}
	for _, cn := range tc.nodes {
		waitUntil(t, fmt.Sprintf("node %d applies both", cn.id), 10*time.Second, func() bool {
			return slices.Equal(applied(cn.topics.machine("orders")), []string{"before", "after"})
		})
	}
}

// A meta voter restarting restores its meta group while the host already
// answers requests: an invitation that arrives meanwhile (the meta leader
// sends them to every live node it does not hear from) waits for the
// restore and finds the group running, instead of starting a second one
// that makes the restore fail.
func TestInvitationDuringRestartDoesNotStartASecondMetaGroup(t *testing.T) {
	tc := newTestCl(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "orders", Assignment{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	cn := tc.nodes[300]
	tc.stop(cn)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cn.beforeOpen = func(dir string) {
		if strings.Contains(dir, "meta") {
			once.Do(func() { close(held) })
			<-release
		}
	}
	started := make(chan error, 1)
	go func() { started <- tc.startErr(cn) }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the restart never opened its meta log")
	}
	tc.rn.mu.Lock()
	h := tc.rn.handlers[300]
	tc.rn.mu.Unlock()
	invited := make(chan error, 1)
	go func() {
		_, err := h.HandleRequest(ctx, 100, "meta.invite", nil)
		invited <- err
	}()
	// Give the invitation time to run ahead of the restore, as it did
	// before the restore held the meta lock.
	select {
	case err := <-invited:
		invited <- err
	case <-time.After(time.Second):
	}
	close(release)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if err := <-invited; err != nil {
		t.Fatalf("invitation during the restart: %v", err)
	}
	if cn.cluster == nil {
		t.Fatal("the restart failed")
	}
	waitUntil(t, "the restarted node follows the meta leader", 10*time.Second, func() bool {
		return cn.cluster.host.Leader(MetaGroup) != 0
	})
	if _, ok := cn.cluster.Assignment("orders"); !ok {
		t.Fatal("the restarted node lost the placement")
	}
}

// Losing two of the meta group's three voters for good, one after the
// other, leaves placement working: the first lost voter is replaced by a
// learner before the second goes.
func TestLostMetaVoterIsReplacedByALearner(t *testing.T) {
	tc := newTestCl(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "first", Assignment{Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	metaVoters := func() []uint64 {
		st, ok := tc.nodes[100].cluster.host.Status(MetaGroup)
		if !ok {
			return nil
		}
		return slices.Sorted(slices.Values(st.Voters))
	}
	waitUntil(t, "the meta group's voters are the three lowest nodes", 15*time.Second, func() bool {
		return slices.Equal(metaVoters(), []uint64{100, 200, 300})
	})
	lose := func(id uint64) {
		tc.stop(tc.nodes[id])
		tc.hide(id, true)
	}
	lose(300)
	waitUntil(t, "the learner takes the lost voter's place", 20*time.Second, func() bool {
		return slices.Equal(metaVoters(), []uint64{100, 200, 400})
	})
	lose(200)
	// two of the three voters are live: the meta group still agrees (a
	// create made while it elects a new leader is refused and made again,
	// as an operator would)
	var a Assignment
	var err error
	waitUntil(t, "a topic created with two meta voters lost one after the other", 20*time.Second, func() bool {
		a, err = tc.nodes[100].cluster.CreateTopic(ctx, "second", Assignment{Replicas: 2})
		return err == nil
	})
	if !a.Has(100) || !a.Has(400) {
		t.Fatalf("assignment %+v: want the two live nodes", a)
	}
	if err := tc.nodes[400].cluster.Publish(ctx, "second", []byte("after")); err != nil {
		t.Fatal(err)
	}
}

// A meta voter replaced while it was gone comes back as a learner: its
// own Raft state still had it vote in a configuration the others left,
// so without rejoining it would never learn the placement again.
func TestReplacedMetaVoterThatReturnsRejoinsAndLearnsThePlacement(t *testing.T) {
	tc := newTestCl(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "first", Assignment{Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the meta group's voters are the three lowest nodes", 15*time.Second, func() bool {
		return slices.Equal(slices.Sorted(slices.Values(tc.metaStatus(100).Voters)), []uint64{100, 200, 300})
	})
	tc.stop(tc.nodes[300])
	tc.hide(300, true)
	a := tc.learnerReplaces300AndSecondIsCreated(ctx)
	// it comes back, with the log it had
	tc.returnsAndLearns(300, "second", a)
	// and its meta group follows the leader
	waitUntil(t, "the returning node hears from the meta leader", 10*time.Second, func() bool {
		return tc.nodes[300].cluster.host.Leader(MetaGroup) != 0
	})
}

// learnerReplaces300AndSecondIsCreated waits until learner 400 has taken
// lost voter 300's place in the meta group, then creates topic "second"
// while 300 is away and returns its assignment.
func (tc *testCl) learnerReplaces300AndSecondIsCreated(ctx context.Context) Assignment {
	t := tc.t
	t.Helper()
	waitUntil(t, "the learner takes the lost voter's place", 20*time.Second, func() bool {
		return slices.Equal(slices.Sorted(slices.Values(tc.metaStatus(100).Voters)), []uint64{100, 200, 400})
	})
	var a Assignment
	waitUntil(t, "a topic created while the old voter is away", 20*time.Second, func() bool {
		var err error
		a, err = tc.nodes[100].cluster.CreateTopic(ctx, "second", Assignment{Replicas: 2})
		return err == nil
	})
	return a
}

// A meta voter lost before it registered in the placement (right after
// the group formed) is replaced like any other; when it comes back, its
// meta group hears from no leader, and the leader's invitation finds it
// there and has it rejoin, although the placement never listed it.
func TestMetaVoterLostBeforeItRegisteredRejoinsWhenItReturns(t *testing.T) {
	tc := newTestCl(t, 4)
	// Node 300's forwarded proposals to the meta group are lost, so its
	// registration never commits.
	tc.net.mu.Lock()
	tc.net.filter = func(from, to uint64, e Envelope) bool {
		return from == 300 && e.Group == MetaGroup && e.Msg.GetType() == raftpb.MessageType_MsgProp
	}
	tc.net.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tc.nodes[100].cluster.CreateTopic(ctx, "first", Assignment{Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the meta group's voters are the three lowest nodes and 400 learns", 15*time.Second, func() bool {
		st := tc.metaStatus(100)
		return slices.Equal(slices.Sorted(slices.Values(st.Voters)), []uint64{100, 200, 300}) && slices.Contains(st.Learners, 400)
	})
	if st := tc.metaStatus(100); st.Leader == 300 {
		t.Fatalf("the meta leader is 300, whose proposals need no network: the test cannot keep it unregistered")
	}
	if _, ok := tc.nodes[100].cluster.metaMachine().view().Nodes[300]; ok {
		t.Fatal("300 registered although its proposals were dropped")
	}
	tc.stop(tc.nodes[300])
	tc.hide(300, true)
	// No node has seen 300 alive: as for a meta leader elected after 300
	// went (or whose duties did not run while 300 was up), which knows it
	// neither from its liveness nor from the placement.
	for _, id := range []uint64{100, 200, 400} {
		cl := tc.nodes[id].cluster
		cl.mu.Lock()
		delete(cl.lastSeen, 300)
		cl.mu.Unlock()
	}
	a := tc.learnerReplaces300AndSecondIsCreated(ctx)
	tc.net.mu.Lock()
	tc.net.filter = nil
	tc.net.mu.Unlock()
	tc.returnsAndLearns(300, "second", a)
}

// A new group (the meta group as it is formed, a topic's as it is
// created) does not wait for an election timeout before its first leader:
// one member, picked by the group's name, stands at once. Here the
// timeout is 10 to 20 s, so without it no group would have a leader
// within the test's time; topics created through one node get their
// leaders on the members their names pick, not all on that node.
func TestNewGroupsElectTheirFirstLeaderWithoutWaitingForAnElectionTimeout(t *testing.T) {
	tc := newTestClElecting(t, 3, 500)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	leaders := make(map[uint64]int)
	for i := range 6 {
		topic := fmt.Sprintf("orders-%d", i)
		a, err := tc.nodes[100].cluster.CreateTopic(ctx, topic, Assignment{Replicas: 3})
		if err != nil {
			t.Fatalf("create %s: %v", topic, err)
		}
		st, ok := tc.nodes[100].cluster.TopicStatus(topic)
		if !ok || st.Leader == 0 {
			t.Fatalf("create %s returned with no leader (status %+v, %v)", topic, st, ok)
		}
		if want := firstCandidate(topic, a.Members); st.Leader != want {
			t.Fatalf("%s: leader %d, want %d, the member its name picks among %v", topic, st.Leader, want, a.Members)
		}
		leaders[st.Leader]++
	}
	if len(leaders) < 2 {
		t.Fatalf("6 topics created through node 100 are all led by one node: %v", leaders)
	}
	if st, ok := tc.nodes[100].cluster.host.Status(MetaGroup); !ok || st.Leader == 0 {
		t.Fatalf("meta group without a leader: %+v", st)
	}
}
