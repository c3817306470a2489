package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Defaults of HostConfig.
const (
	DefaultTickInterval  = 100 * time.Millisecond
	DefaultElectionTicks = 10 // an election timeout of 1 s at the default tick
	DefaultHeartbeatTick = 1
	// DefaultMaxSizePerMsg bounds the entries of one append message.
	DefaultMaxSizePerMsg = 1 << 20
	// DefaultMaxInflightMsgs bounds the append messages in flight per peer.
	DefaultMaxInflightMsgs = 256
	// DefaultMaxUncommittedBytes makes a leader refuse proposals (the
	// producer gets an error) instead of queueing without bound when its
	// followers cannot keep up.
	DefaultMaxUncommittedBytes = 64 << 20
)

// Errors of Propose.
var (
	ErrNoGroup   = errors.New("no such replicated group on this node")
	ErrNoLeader  = errors.New("the group has no leader this node can reach")
	ErrStopped   = errors.New("replica host stopped")
	ErrGroupDown = errors.New("the group stopped after a storage failure")
	// ErrLeaderChanged fails a proposal made under a leader the group has
	// since lost: it may or may not be committed, and a retry may commit
	// it twice (at-least-once, never a loss).
	ErrLeaderChanged = errors.New("the group's leader changed before the proposal was committed")
)

// GroupStorage is the durable Raft log and hard state of one group. The
// host's append goroutine calls Save for every group with writes queued,
// then Sync on each, then sends the messages that depend on them: nothing
// is sent that depends on an unsynced write. The raft.Storage methods are
// called meanwhile from other goroutines.
type GroupStorage interface {
	raft.Storage
	// Save writes hard state (unless empty), entries (replacing every
	// entry at or after ents[0]'s index) and a snapshot (unless empty)
	// without syncing. The raft.Storage methods see them at once.
	Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error
	// Sync makes everything saved so far durable.
	Sync() error
	// SetConfState durably records the membership in force once the
	// entries up to the applied index are applied; InitialState returns
	// it after a restart (raft does not apply a conf change again when
	// restarted with Applied past it).
	SetConfState(index uint64, cs *raftpb.ConfState) error
	// CreateSnapshot records, durably, a snapshot of the machine at index
	// i with membership cs; Compact then drops the entries up to i.
	CreateSnapshot(i uint64, cs *raftpb.ConfState, data []byte) (*raftpb.Snapshot, error)
	Compact(i uint64) error
}

// Command is one committed proposal, as the state machine sees it.
type Command struct {
	Index uint64 // the Raft index: the same on every replica
	Data  []byte // what was proposed
}

// StateMachine is what a group's committed log is applied to. Every
// replica applies the same commands in the same order. Its methods are
// called from the host's apply goroutine, one group at a time, only with
// entries already synced in the group's storage on this node.
type StateMachine interface {
	// Apply applies cmds (possibly none) and records that everything up to
	// and including last has been applied; after a restart the group is
	// added again with Applied set to what the machine recorded, and the
	// commands after it are applied again.
	Apply(last uint64, cmds []Command) error
	// Restore replaces the machine's state with a snapshot's data.
	Restore(snap *raftpb.Snapshot) error
}

// GroupConfig describes a group to add to a host.
type GroupConfig struct {
	Name    string
	Storage GroupStorage
	Machine StateMachine
	// Bootstrap is the initial membership of a new group (every member
	// must be given the same list); empty when the storage already holds
	// the group.
	Bootstrap []uint64
	// Applied is the last index the state machine applied before a
	// restart.
	Applied uint64
	// OnLeader, if set, is called from the host's loop when the group's
	// leader changes (0: none known). It must not block.
	OnLeader func(leader uint64)
	// Amnesiac says this node was a member of the group and has lost its
	// state (its disk was replaced or wiped; it is back under the same
	// ID). Such a node forgot its log and the votes it gave: granting a
	// vote now could elect a leader that lacks entries this node had
	// acknowledged, losing committed (acknowledged) messages, or give a
	// second vote in a term. It grants no vote until its log holds
	// everything the group had committed when a leader first reached it
	// (see group.amnesiac); it still follows, rejects and catches up.
	//
	// The group's leader still counts the entries the node held before
	// (Raft assumes a member never loses what it acknowledged): its
	// heartbeats would commit past the end of the node's empty log (Raft
	// panics on that; the node takes from heartbeats no commit beyond
	// its own while amnesiac), and it never sends those entries again.
	// OnAmnesia is called once, with the leader, when a leader first
	// reaches the node: the leader must forget what it counted (take
	// the node out of the group and in again, see Cluster).
	Amnesiac  bool
	OnAmnesia func(leader uint64)
}

// HostConfig configures a Host.
type HostConfig struct {
	ID        uint64 // this node's ID (see NodeID)
	Transport Transport
	Logger    *slog.Logger
	// Tick is the Raft tick; elections time out after ElectionTicks
	// ticks, leaders heartbeat every HeartbeatTicks.
	Tick           time.Duration
	ElectionTicks  int
	HeartbeatTicks int
}

// Host drives every Raft group of one node with raft's AsyncStorageWrites.
// A group's Ready is taken by whichever goroutine stepped it (a proposer,
// the transport's receiver, the append goroutine) or, after a tick, by the
// loop; its messages to peers go out at once. The append goroutine saves
// the writes of every group that has some (one Save each, then one Sync
// each) and then sends the messages that depended on them; the apply
// goroutine applies committed entries. No goroutine waits on a disk it
// does not write. One ticker ticks every group.
//
// Lock order: Host.mu before group.mu; group.sendMu, group.applyMu and
// group.storeMu before group.mu. Host.mu is never held while sending.
type Host struct {
	cfg    HostConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	mu     sync.Mutex
	groups map[string]*group
	dirty  map[*group]struct{}

	// appends and applies carry raft's storage messages (AsyncStorageWrites)
	// from the loop to the append and apply goroutines, in order.
	appends jobQueue
	applies jobQueue

	proposalSeq atomic.Uint64
	readSeq     atomic.Uint64

	// Quiescence (see quiesce.go): this host's epoch, and when each peer's
	// beacon was last received and with which epoch.
	epoch     uint64
	peersMu   sync.Mutex
	peerSeen  map[uint64]time.Time
	peerEpoch map[uint64]uint64
}

// group is one Raft group on this node. mu guards rn and the fields after
// it; the loop is the only caller of Ready and Advance.
type group struct {
	name    string
	storage GroupStorage
	// savedHS is the hard state last saved; the append goroutine alone
	// uses it (see runAppends: a write that only moves the commit index
	// is not synced).
	savedHS *raftpb.HardState
	machine StateMachine
	onLead  func(uint64)

	// applyMu is held while the machine applies, storeMu while the
	// storage saves and syncs: RemoveGroup takes both so that once it
	// returns neither is called again.
	applyMu sync.Mutex
	storeMu sync.Mutex
	// sendMu is held while a Ready is taken and handed on, so that the
	// Readies of a group reach the queues and the transport in order
	// whichever goroutine takes them. Before mu.
	sendMu sync.Mutex

	mu      sync.Mutex
	rn      *raft.RawNode
	lead    uint64
	applied uint64
	failed  error
	pending map[uint64]pendingProposal // our proposals by sequence, until applied
	reads   map[string]chan uint64     // our read index requests by context, until answered
	// appliedCh, made by a WaitApplied that has to wait (nil while none
	// does), is closed when applied advances or the group stops.
	appliedCh chan struct{}
	removed   bool
	confSt    *raftpb.ConfState
	confIdx   uint64 // index of the last conf change applied
	leadSeen  atomic.Uint64

	// amnesiac is set while the node withholds its votes (see
	// GroupConfig.Amnesiac); catchUpTo is the commit index of the first
	// append or snapshot a leader sent (valid once heardLeader), guarded by
	// mu: the votes are given again once this node's commit reaches it.
	amnesiac    atomic.Bool
	heardLeader bool
	catchUpTo   uint64
	onAmnesia   func(leader uint64)
	askedAt     time.Time // when onAmnesia was last called; mu

	// On the leader, members being taken out and in again (Readmit): the
	// removal is proposed, and its application proposes the addition;
	// readmitted says when each came back in. Both guarded by mu.
	readmitting map[uint64]raftpb.ConfChangeType // how each is taken in again
	readmitted  map[uint64]time.Time
	readd       []readdition // taken out, to be taken in again once Raft has applied the removal

	// quiet: the group is not ticked (see quiesce.go); idleTicks counts
	// the leader's idle ticks before it goes quiet. Both guarded by mu.
	quiet     bool
	idleTicks int
	// peers are the group's members other than this node (membersLocked),
	// kept with confSt; guarded by mu.
	peers []uint64
}

// pendingProposal waits for its entry to be applied; lead is the leader
// it was proposed under.
type pendingProposal struct {
	done chan error
	lead uint64
	// committed: answered as soon as the entry is committed (handed to
	// the apply goroutine), not once applied (ProposeCommitted).
	committed bool
}

// NewHost returns a host; Start runs it.
func NewHost(cfg HostConfig) *Host {
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTickInterval
	}
	if cfg.ElectionTicks <= 0 {
		cfg.ElectionTicks = DefaultElectionTicks
	}
	if cfg.HeartbeatTicks <= 0 {
		cfg.HeartbeatTicks = DefaultHeartbeatTick
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Host{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "replica", "node", fmt.Sprintf("%x", cfg.ID)),
		ctx:     ctx,
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
		groups:  make(map[string]*group),
		dirty:   make(map[*group]struct{}),
		appends: newJobQueue(),
		applies: newJobQueue(),

		epoch:     uint64(time.Now().UnixNano()),
		peerSeen:  make(map[uint64]time.Time),
		peerEpoch: make(map[uint64]uint64),
	}
}

// ID returns the node's ID.
func (h *Host) ID() uint64 { return h.cfg.ID }

// Start starts the host's loop and its append and apply goroutines.
// Close stops them.
func (h *Host) Start() {
	h.wg.Add(3)
	go func() {
		defer h.wg.Done()
		h.run()
	}()
	go func() {
		defer h.wg.Done()
		h.runAppends()
	}()
	go func() {
		defer h.wg.Done()
		h.runApplies()
	}()
}

// Close stops the loop and fails every pending proposal with ErrStopped.
// It does not close the groups' storage: their owners do.
func (h *Host) Close() {
	h.cancel()
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.groups {
		g.mu.Lock()
		g.failPendingLocked(ErrStopped)
		g.mu.Unlock()
	}
}

// AddGroup starts running a group on this node.
func (h *Host) AddGroup(gc GroupConfig) error {
	if gc.Name == "" || gc.Storage == nil || gc.Machine == nil {
		return errors.New("replica: a group needs a name, a storage and a state machine")
	}
	rc := &raft.Config{
		ID:                        h.cfg.ID,
		ElectionTick:              h.cfg.ElectionTicks,
		HeartbeatTick:             h.cfg.HeartbeatTicks,
		Storage:                   gc.Storage,
		Applied:                   gc.Applied,
		MaxSizePerMsg:             DefaultMaxSizePerMsg,
		MaxInflightMsgs:           DefaultMaxInflightMsgs,
		MaxUncommittedEntriesSize: DefaultMaxUncommittedBytes,
		AsyncStorageWrites:        true,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    raftLogger{h.log.With("group", gc.Name)},
	}
	if snap, err := gc.Storage.Snapshot(); err == nil && snap.GetMetadata().GetIndex() > gc.Applied {
		// The machine stopped before it took the snapshot its log was
		// compacted to (a crash between the two): it takes it now.
		if err := gc.Machine.Restore(snap); err != nil {
			return fmt.Errorf("replica: restore group %q from its snapshot: %w", gc.Name, err)
		}
		rc.Applied = snap.GetMetadata().GetIndex()
		gc.Applied = rc.Applied
	}
	if hs, _, err := gc.Storage.InitialState(); err == nil && rc.Applied > hs.GetCommit() {
		// The machine applied entries whose commit index was not yet
		// synced in the hard state when the node stopped: the apply and
		// append goroutines work the same Ready side by side. Those
		// entries were committed (raft hands out only committed entries
		// it holds on disk), but raft refuses an applied index past the
		// commit it loads; it is told the stored commit, hands the
		// entries out again once it learns they are committed, and apply
		// skips those the machine has (g.applied).
		rc.Applied = hs.GetCommit()
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		return fmt.Errorf("replica: start group %q: %w", gc.Name, err)
	}
	if len(gc.Bootstrap) > 0 {
		last, err := gc.Storage.LastIndex()
		if err != nil {
			return fmt.Errorf("replica: group %q: %w", gc.Name, err)
		}
		if last == 0 {
			peers := make([]raft.Peer, len(gc.Bootstrap))
			for i, id := range gc.Bootstrap {
				peers[i] = raft.Peer{ID: id}
			}
			if err := rn.Bootstrap(peers); err != nil {
				return fmt.Errorf("replica: bootstrap group %q: %w", gc.Name, err)
			}
		}
	}
	hs, cs, err := gc.Storage.InitialState()
	if err != nil {
		return fmt.Errorf("replica: group %q: %w", gc.Name, err)
	}
	g := &group{
		name:    gc.Name,
		storage: gc.Storage,
		savedHS: hs,
		machine: gc.Machine,
		onLead:  gc.OnLeader,
		rn:      rn,
		applied: gc.Applied,
		pending: make(map[uint64]pendingProposal),
		reads:   make(map[string]chan uint64),
	}
	if gc.Amnesiac {
		g.amnesiac.Store(true)
		g.onAmnesia = gc.OnAmnesia
		h.log.Warn("this node lost its state of the group: it gives no vote until it has caught up", "group", gc.Name)
	}
	if cs != nil {
		g.confSt = proto.CloneOf(cs)
		g.peers = h.membersLocked(g)
	}
	h.mu.Lock()
	if _, ok := h.groups[gc.Name]; ok {
		h.mu.Unlock()
		return fmt.Errorf("replica: group %q already runs on this node", gc.Name)
	}
	h.groups[gc.Name] = g
	h.dirty[g] = struct{}{}
	h.mu.Unlock()
	h.signal()
	return nil
}

// RemoveGroup stops running a group on this node and fails its pending
// proposals. Its storage is left to its owner.
func (h *Host) RemoveGroup(name string) {
	h.mu.Lock()
	g := h.groups[name]
	delete(h.groups, name)
	if g != nil {
		delete(h.dirty, g)
	}
	h.mu.Unlock()
	if g != nil {
		g.mu.Lock()
		g.removed = true
		g.failPendingLocked(ErrNoGroup)
		g.wakeAppliedLocked()
		g.mu.Unlock()
		g.applyMu.Lock() // an apply in progress ends first
		g.applyMu.Unlock()
		g.storeMu.Lock() // so does a save or sync
		g.storeMu.Unlock()
	}
}

func (h *Host) group(name string) *group {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.groups[name]
}

func (h *Host) markDirty(g *group) {
	h.mu.Lock()
	if !g.removed {
		h.dirty[g] = struct{}{}
	}
	h.mu.Unlock()
	h.signal()
}

func (h *Host) signal() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Receive steps messages from peers into their groups. Messages for a group
// this node does not run are dropped.
func (h *Host) Receive(msgs []Envelope) {
	var touched []*group
	for i := range msgs {
		if msgs[i].Group == beaconGroup && msgs[i].Msg != nil {
			h.noteBeacon(msgs[i].Msg)
			continue
		}
		g := h.group(msgs[i].Group)
		if g == nil || msgs[i].Msg == nil || isQuiesceAnswer(msgs[i].Msg) {
			continue
		}
		var amnesiaLeader uint64
		g.mu.Lock()
		if g.failed == nil {
			if g.amnesiac.Load() {
				amnesiaLeader = g.noteLeaderLocked(msgs[i].Msg)
			}
			// Step refuses messages addressed elsewhere, local message
			// types and the like; none of that is worth more than a drop.
			_ = g.rn.Step(msgs[i].Msg)
			steppedLocked(g, msgs[i].Msg)
		}
		g.mu.Unlock()
		if amnesiaLeader != 0 && g.onAmnesia != nil {
			g.onAmnesia(amnesiaLeader)
		}
		if !slices.Contains(touched, g) {
			touched = append(touched, g)
		}
	}
	for _, g := range touched {
		h.handleReady(g)
	}
}

// proposal header: the proposing node and its sequence number, so the
// proposer recognises its own entries when they are applied, whichever
// leader committed them.
const proposalHeader = 16

// Propose submits data to a group and returns once it is committed (on a
// majority of the group's disks) and applied on this node, or with an
// error: ErrNoLeader when no leader is known, ctx's error when it ends
// first. A proposal that failed or timed out may still be committed later
// (its outcome is unknown to the caller), so a caller that retries can
// produce a duplicate, never a loss. A follower forwards the proposal to
// the leader.
func (h *Host) Propose(ctx context.Context, name string, data []byte) error {
	return h.propose(ctx, name, data, false)
}

// ProposeCommitted is Propose answered as soon as the entry is committed:
// on a majority of the group's disks, and about to be applied here (the
// apply goroutine has it), without waiting for this node's state machine.
// For a write whose caller needs it durable, not yet visible here: a
// replicated publish's acknowledgement.
func (h *Host) ProposeCommitted(ctx context.Context, name string, data []byte) error {
	return h.propose(ctx, name, data, true)
}

func (h *Host) propose(ctx context.Context, name string, data []byte, committed bool) error {
	g := h.group(name)
	if g == nil {
		return ErrNoGroup
	}
	seq := h.proposalSeq.Add(1)
	buf := make([]byte, proposalHeader+len(data))
	binary.BigEndian.PutUint64(buf, h.cfg.ID)
	binary.BigEndian.PutUint64(buf[8:], seq)
	copy(buf[proposalHeader:], data)
	done := make(chan error, 1)
	g.mu.Lock()
	if g.failed != nil {
		g.mu.Unlock()
		return fmt.Errorf("%w: %v", ErrGroupDown, g.failed)
	}
	if g.removed {
		g.mu.Unlock()
		return ErrNoGroup
	}
	g.wakeLocked()
	g.pending[seq] = pendingProposal{done: done, lead: g.rn.BasicStatus().Lead, committed: committed}
	err := g.rn.Propose(buf)
	if err != nil {
		delete(g.pending, seq)
	}
	g.mu.Unlock()
	if err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			return ErrNoLeader
		}
		return fmt.Errorf("replica: propose to %q: %w", name, err)
	}
	h.handleReady(g)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		g.mu.Lock()
		delete(g.pending, seq)
		g.mu.Unlock()
		return ctx.Err()
	case <-h.ctx.Done():
		return ErrStopped
	}
}

// ReadIndex returns a linearizable read index of a group: an index at
// least as high as that of every entry committed before the call, once
// the group's leader has confirmed with a majority of the group that it
// still leads (Raft's ReadIndex, ReadOnlySafe; a follower's request goes
// to the leader and the answer comes back). A state machine that has
// applied up to the index (see WaitApplied) reflects every write
// committed before the call. Raft drops a request made while no leader is
// known, or lost with a leader or a message: it is made again every
// election timeout until ctx ends, so without a leader or a quorum it
// fails with ctx's error.
func (h *Host) ReadIndex(ctx context.Context, name string) (uint64, error) {
	g := h.group(name)
	if g == nil {
		return 0, ErrNoGroup
	}
	rctx := make([]byte, 16)
	binary.BigEndian.PutUint64(rctx, h.cfg.ID)
	binary.BigEndian.PutUint64(rctx[8:], h.readSeq.Add(1))
	key := string(rctx)
	done := make(chan uint64, 1)
	defer func() {
		g.mu.Lock()
		delete(g.reads, key)
		g.mu.Unlock()
	}()
	again := time.NewTicker(h.cfg.Tick * time.Duration(h.cfg.ElectionTicks))
	defer again.Stop()
	for {
		g.mu.Lock()
		switch {
		case g.failed != nil:
			err := g.failed
			g.mu.Unlock()
			return 0, fmt.Errorf("%w: %v", ErrGroupDown, err)
		case g.removed:
			g.mu.Unlock()
			return 0, ErrNoGroup
		}
		g.reads[key] = done
		g.wakeLocked()
		g.rn.ReadIndex(rctx)
		g.mu.Unlock()
		h.handleReady(g)
		select {
		case idx := <-done:
			return idx, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-h.ctx.Done():
			return 0, ErrStopped
		case <-again.C:
		}
	}
}

// WaitApplied returns once this node has applied a group's log up to
// index (its state machine reflects every entry up to it), or with ctx's
// error, or an error when the group stops here.
func (h *Host) WaitApplied(ctx context.Context, name string, index uint64) error {
	g := h.group(name)
	if g == nil {
		return ErrNoGroup
	}
	for {
		g.mu.Lock()
		applied, failed, removed := g.applied, g.failed, g.removed
		if g.appliedCh == nil {
			g.appliedCh = make(chan struct{})
		}
		wake := g.appliedCh
		g.mu.Unlock()
		switch {
		case failed != nil:
			return fmt.Errorf("%w: %v", ErrGroupDown, failed)
		case removed:
			return ErrNoGroup
		case applied >= index:
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-h.ctx.Done():
			return ErrStopped
		}
	}
}

// ProposeConfChange submits a membership change to a group (through the
// leader) without waiting for it.
func (h *Host) ProposeConfChange(name string, cc raftpb.ConfChangeI) error {
	g := h.group(name)
	if g == nil {
		return ErrNoGroup
	}
	g.mu.Lock()
	g.wakeLocked()
	err := g.rn.ProposeConfChange(cc)
	g.mu.Unlock()
	if errors.Is(err, raft.ErrProposalDropped) {
		return ErrNoLeader
	}
	h.markDirty(g)
	return err
}

// Campaign makes this node start an election in the group at once.
func (h *Host) Campaign(name string) error {
	g := h.group(name)
	if g == nil {
		return ErrNoGroup
	}
	g.mu.Lock()
	g.wakeLocked()
	err := g.rn.Campaign()
	g.mu.Unlock()
	h.markDirty(g)
	return err
}

// TransferLeader asks the group to hand its leadership to member to: on
// the leader, raft brings to's log up to date and then tells it to
// campaign at once; on a follower, raft forwards the request to the
// leader. Proposals to the leader are refused while the transfer runs
// (at most an election timeout, after which raft gives it up). A
// transfer to the current leader does nothing; one to a learner or a
// non-member is refused.
func (h *Host) TransferLeader(name string, to uint64) error {
	g := h.group(name)
	if g == nil {
		return ErrNoGroup
	}
	g.mu.Lock()
	g.wakeLocked()
	if g.failed != nil {
		err := g.failed
		g.mu.Unlock()
		return fmt.Errorf("replica: group %q: %w", name, err)
	}
	if !slices.Contains(g.confSt.GetVoters(), to) {
		g.mu.Unlock()
		return fmt.Errorf("replica: %x is not a voting member of %q", to, name)
	}
	g.rn.TransferLeader(to)
	g.mu.Unlock()
	h.markDirty(g)
	return nil
}

// Compact snapshots a group's machine at index (data is the machine's
// state there, which Restore takes on a replica that receives the
// snapshot) and drops the log entries up to it. index must be applied and
// durable in the machine. A membership change applied after index makes
// it wait for a later index (the snapshot would carry the wrong members).
// It reports whether it compacted.
func (h *Host) Compact(name string, index uint64, data []byte) (bool, error) {
	g := h.group(name)
	if g == nil {
		return false, ErrNoGroup
	}
	g.mu.Lock()
	if g.failed != nil || g.removed || g.confIdx > index || index > g.applied || g.confSt == nil {
		g.mu.Unlock()
		return false, nil
	}
	cs := proto.CloneOf(g.confSt)
	g.mu.Unlock()
	first, err := g.storage.FirstIndex()
	if err != nil || index < first {
		return false, err
	}
	if _, err := g.storage.CreateSnapshot(index, cs, data); err != nil {
		if errors.Is(err, raft.ErrSnapOutOfDate) {
			return false, nil
		}
		return false, fmt.Errorf("replica: snapshot group %q at %d: %w", name, index, err)
	}
	if err := g.storage.Compact(index); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return false, fmt.Errorf("replica: compact group %q at %d: %w", name, index, err)
	}
	return true, nil
}

// GroupStatus is what a node knows of one group.
type GroupStatus struct {
	Leader  uint64
	Term    uint64
	Commit  uint64
	Applied uint64
	IsLead  bool
	// Voters and Learners are the current membership.
	Voters   []uint64
	Learners []uint64
	// Lag, on the leader only, is how many entries each member's log is
	// behind the leader's (the leader at 0).
	Lag map[uint64]uint64
	// Amnesiac: this node lost its state of the group and has not caught
	// up yet (see GroupConfig.Amnesiac).
	Amnesiac bool
	// Silent, on the leader only, lists the members it has not heard
	// from lately (Raft's check-quorum activity).
	Silent []uint64
}

// Status returns the group's status, or false when this node does not run
// it.
func (h *Host) Status(name string) (GroupStatus, bool) {
	g := h.group(name)
	if g == nil {
		return GroupStatus{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.rn.Status()
	gs := GroupStatus{
		Leader:   st.Lead,
		Term:     st.HardState.GetTerm(),
		Commit:   st.HardState.GetCommit(),
		Applied:  g.applied,
		IsLead:   st.RaftState == raft.StateLeader,
		Voters:   append([]uint64(nil), g.confSt.GetVoters()...),
		Learners: append([]uint64(nil), g.confSt.GetLearners()...),
		Amnesiac: g.amnesiac.Load(),
	}
	if gs.IsLead {
		last, _ := g.storage.LastIndex()
		if li := st.Progress[h.cfg.ID].Match; li > last {
			last = li
		}
		gs.Lag = make(map[uint64]uint64, len(st.Progress))
		for id, pr := range st.Progress {
			if id != h.cfg.ID && !pr.RecentActive {
				gs.Silent = append(gs.Silent, id)
			}
			if id == h.cfg.ID || pr.Match >= last {
				gs.Lag[id] = 0
			} else {
				gs.Lag[id] = last - pr.Match
			}
		}
	}
	return gs, true
}

// Leading returns, when this node leads the group, its voters; ok is
// false when it does not lead it or does not run it. Cheaper than Status:
// no copy of the members' progress.
func (h *Host) Leading(name string) (voters []uint64, ok bool) {
	g := h.group(name)
	if g == nil {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.rn.BasicStatus().RaftState != raft.StateLeader {
		return nil, false
	}
	return append([]uint64(nil), g.confSt.GetVoters()...), true
}

// Leader returns the leader the group last reported (0: none), without
// locking the group.
func (h *Host) Leader(name string) uint64 {
	g := h.group(name)
	if g == nil {
		return 0
	}
	return g.leadSeen.Load()
}

func (h *Host) run() {
	t := time.NewTicker(h.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
			h.tickAll()
		case <-h.wake:
		}
		h.processReady()
	}
}

// tickAll ticks every group that is not quiet (a quiet one wakes when one
// of its members has gone silent), marks them dirty, sends this host's
// beacon to every peer it shares a group with, and quiets the groups this
// node leads that have been idle long enough (see quiesce.go).
func (h *Host) tickAll() {
	now := time.Now()
	gs := h.groupList()
	silent := h.silentPeers(now)
	var peers []uint64
	ticked := gs[:0:0]
	for _, g := range gs {
		g.mu.Lock()
		members := g.peers
		for _, id := range members {
			if !slices.Contains(peers, id) {
				peers = append(peers, id)
			}
		}
		if g.quiet && slices.ContainsFunc(members, silent) {
			g.wakeLocked() // a member died, froze or was cut off: count again
		}
		if g.failed == nil && !g.quiet {
			g.rn.Tick()
			ticked = append(ticked, g)
		}
		g.mu.Unlock()
	}
	h.sendBeacons(peers)
	h.mu.Lock()
	for _, g := range ticked {
		h.dirty[g] = struct{}{}
	}
	h.mu.Unlock()
	h.processReady()
	for _, g := range ticked {
		h.quiesceIfIdle(g, now)
	}
}

// processReady takes the Ready of every dirty group until none has work
// (see handleReady).
// Groups run with raft's AsyncStorageWrites: a Ready's messages to peers
// go out at once, and its writes (MsgStorageAppend: entries, hard state,
// snapshot) and committed entries (MsgStorageApply) go to the append and
// apply goroutines, so the loop never waits on a disk or on the state
// machine. Messages that depend on a write (a follower's acknowledgement,
// a vote, the leader's count of its own copy) are that write's responses,
// delivered by the append goroutine once it is synced.
func (h *Host) processReady() {
	for {
		h.mu.Lock()
		if len(h.dirty) == 0 {
			h.mu.Unlock()
			return
		}
		gs := make([]*group, 0, len(h.dirty))
		for g := range h.dirty {
			gs = append(gs, g)
		}
		clear(h.dirty)
		h.mu.Unlock()
		for _, g := range gs {
			h.handleReady(g)
		}
	}
}

// handleReady takes g's Ready, if it has one, and hands its parts on: the
// messages to peers to the transport, writes to the append goroutine,
// committed entries to the apply goroutine. The loop calls it for groups
// marked dirty; Receive, Propose and the append goroutine call it at once
// after stepping a group, which saves the commit path a wake-up of the
// loop at each of its steps. sendMu keeps a group's Readies in order.
func (h *Host) handleReady(g *group) {
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	g.mu.Lock()
	if len(g.readd) > 0 && g.failed == nil && !g.removed {
		h.readdLocked(g)
	}
	if g.failed != nil || g.removed || !g.rn.HasReady() {
		g.mu.Unlock()
		return
	}
	rd := g.rn.Ready()
	more := g.rn.HasReady()
	waiting := len(g.pending) > 0 // proposals of this node: see answerCommitted
	for _, rs := range rd.ReadStates {
		if ch, ok := g.reads[string(rs.RequestCtx)]; ok {
			delete(g.reads, string(rs.RequestCtx))
			select { // a request made again may be answered twice: one will do
			case ch <- rs.Index:
			default:
			}
		}
	}
	if g.amnesiac.Load() && g.heardLeader && g.rn.BasicStatus().HardState.GetCommit() >= g.catchUpTo {
		g.amnesiac.Store(false)
		h.log.Info("this node has caught up with the group: it votes again", "group", g.name, "commit", g.catchUpTo)
	}
	g.mu.Unlock()
	if rd.SoftState != nil {
		// Ordered with the applies: the proposals committed before the
		// change are answered first.
		h.applies.push(storageJob{g: g, lead: rd.SoftState.Lead, leadChange: true})
	}
	var byPeer map[uint64][]Envelope
	for _, m := range rd.Messages {
		switch m.GetTo() {
		case raft.LocalAppendThread:
			h.appends.push(storageJob{g: g, m: m})
		case raft.LocalApplyThread:
			if waiting {
				h.answerCommitted(g, m.GetEntries())
			}
			h.applies.push(storageJob{g: g, m: m})
		default:
			byPeer = addMessage(byPeer, g, m)
		}
	}
	h.send(byPeer)
	if more {
		h.markDirty(g)
	}
}

// answerCommitted answers this node's ProposeCommitted proposals among
// ents, committed entries on their way to the apply goroutine.
func (h *Host) answerCommitted(g *group, ents []*raftpb.Entry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range ents {
		d := e.GetData()
		if e.GetType() != raftpb.EntryNormal || len(d) < proposalHeader || binary.BigEndian.Uint64(d) != h.cfg.ID {
			continue
		}
		seq := binary.BigEndian.Uint64(d[8:])
		if p, ok := g.pending[seq]; ok && p.committed {
			p.done <- nil
			delete(g.pending, seq)
		}
	}
}

// addMessage adds m, a message of g to a peer, to byPeer.
func addMessage(byPeer map[uint64][]Envelope, g *group, m *raftpb.Message) map[uint64][]Envelope {
	if byPeer == nil {
		byPeer = make(map[uint64][]Envelope)
	}
	to := m.GetTo()
	if m.GetType() == raftpb.MessageType_MsgSnap {
		m = g.snapshotFor(m)
	}
	if withheldVote(g, m) {
		return byPeer
	}
	byPeer[to] = append(byPeer[to], Envelope{Group: g.name, Msg: m})
	return byPeer
}

// withheldVote reports whether m is a vote (or pre-vote) this node grants
// while it is amnesiac: it is not sent, so it counts for no candidate. (Its
// vote is recorded in its own state all the same; a refusal is sent as
// usual.)
func withheldVote(g *group, m *raftpb.Message) bool {
	t := m.GetType()
	return (t == raftpb.MessageType_MsgVoteResp || t == raftpb.MessageType_MsgPreVoteResp) &&
		!m.GetReject() && g.amnesiac.Load()
}

// noteLeaderLocked looks at a message an amnesiac node receives. A
// heartbeat's commit is cut to the node's own: the leader still counts the
// entries the node had before it lost them. The first message of a leader
// records how far the group had committed (the commit of a heartbeat or an
// append, or a snapshot's index): what the node must hold before it votes
// again; it returns that leader, once, else 0. mu held.
func (g *group) noteLeaderLocked(m *raftpb.Message) (leader uint64) {
	switch m.GetType() {
	case raftpb.MessageType_MsgHeartbeat:
		// Capped at what the leader counts this node to hold (nothing,
		// once readmitted): no catch-up target, and cut to the node's own.
		if own := g.rn.BasicStatus().HardState.GetCommit(); m.GetCommit() > own {
			m.Commit = proto.Uint64(own)
		}
	case raftpb.MessageType_MsgApp:
		if !g.heardLeader {
			g.heardLeader, g.catchUpTo = true, m.GetCommit()
		}
	case raftpb.MessageType_MsgSnap:
		if !g.heardLeader {
			g.heardLeader, g.catchUpTo = true, max(m.GetCommit(), m.GetSnapshot().GetMetadata().GetIndex())
		}
	default:
		return 0
	}
	// Asked again while the node has not caught up: a request can be
	// lost, or the leader change.
	if now := time.Now(); now.Sub(g.askedAt) >= amnesiaAskEvery {
		g.askedAt = now
		return m.GetFrom()
	}
	return 0
}

// amnesiaAskEvery spaces an amnesiac node's requests to be readmitted.
const amnesiaAskEvery = 2 * time.Second

// readmitQuiet is how long after readmitting a member the leader ignores
// its requests to be readmitted again: it is catching up meanwhile.
const readmitQuiet = 10 * time.Second

// readdLocked proposes taking back in the first member Readmit took out,
// once Raft counts the removal applied (it refuses a membership change
// while another is pending); a node that no longer leads leaves it to the
// next leader (Cluster's duties add a placement's missing members). mu
// held.
func (h *Host) readdLocked(g *group) {
	st := g.rn.BasicStatus()
	if st.RaftState != raft.StateLeader {
		g.readd = nil
		return
	}
	if st.Applied < g.confIdx {
		h.markDirty(g) // look again
		return
	}
	r := g.readd[0]
	g.readd = g.readd[1:]
	id := r.id
	g.readmitted[id] = time.Now()
	cc := &raftpb.ConfChange{Type: r.as.Enum(), NodeId: proto.Uint64(id)}
	if err := g.rn.ProposeConfChange(cc); err != nil {
		h.log.Warn("take a member back in", "group", g.name, "member", id, "err", err)
	}
}

// readdition is a member Readmit took out, and how it comes back in: as
// a voter or as a learner, what it was.
type readdition struct {
	id uint64
	as raftpb.ConfChangeType
}

// ErrNotLeader refuses what only the group's leader does.
var ErrNotLeader = errors.New("this node does not lead the group")

// Readmit takes member id, which has lost its state (see
// GroupConfig.Amnesiac), out of the group and in again, so that this
// leader forgets what it counted id to hold and sends it everything
// again. Only the leader does it; a request for a member readmitted in
// the last readmitQuiet, or being readmitted, is ignored.
func (h *Host) Readmit(name string, id uint64) error {
	g := h.group(name)
	if g == nil {
		return ErrNoGroup
	}
	g.mu.Lock()
	g.wakeLocked()
	st := g.rn.BasicStatus()
	if st.RaftState != raft.StateLeader {
		g.mu.Unlock()
		return ErrNotLeader
	}
	// A learner (a meta group's node beyond its voters) is taken back in
	// as a learner: its leader too counts what it held.
	as := raftpb.ConfChangeAddNode
	if slices.Contains(g.confSt.GetLearners(), id) {
		as = raftpb.ConfChangeAddLearnerNode
	}
	_, being := g.readmitting[id]
	if id == h.cfg.ID || being || time.Since(g.readmitted[id]) < readmitQuiet || g.confSt == nil ||
		!slices.Contains(g.confSt.GetVoters(), id) && as != raftpb.ConfChangeAddLearnerNode {
		g.mu.Unlock()
		return nil
	}
	if g.readmitting == nil {
		g.readmitting = make(map[uint64]raftpb.ConfChangeType)
		g.readmitted = make(map[uint64]time.Time)
	}
	g.readmitting[id] = as
	cc := &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(id)}
	err := g.rn.ProposeConfChange(cc)
	if err != nil {
		delete(g.readmitting, id)
	}
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("replica: take %d out of %q: %w", id, name, err)
	}
	h.log.Warn("a member lost its state: taking it out of the group and in again", "group", name, "member", id)
	h.markDirty(g)
	return nil
}

// storageJob is one storage message of a group for the append or apply
// goroutine; for the apply goroutine also a leader change (leadChange)
// or a snapshot synced by the append goroutine (restore).
type storageJob struct {
	g          *group
	m          *raftpb.Message
	restore    *raftpb.Snapshot
	lead       uint64
	leadChange bool
}

// jobQueue is an unbounded FIFO of storage jobs with one consumer. It
// needs no bound: raft bounds what it hands out (uncommitted bytes,
// committed bytes being applied).
type jobQueue struct {
	mu   sync.Mutex
	jobs []storageJob
	wake chan struct{}
}

func newJobQueue() jobQueue { return jobQueue{wake: make(chan struct{}, 1)} }

func (q *jobQueue) push(j storageJob) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns every queued job, oldest first, giving back spare (the
// previous batch, emptied) for reuse.
func (q *jobQueue) take(spare []storageJob) []storageJob {
	clear(spare)
	q.mu.Lock()
	jobs := q.jobs
	q.jobs = spare[:0]
	q.mu.Unlock()
	return jobs
}

// runAppends is the append goroutine: it saves every queued write of every
// group, syncs each group's storage once for all of them (groups in
// parallel), then delivers their responses: to this node's groups (the
// leader's count of its own copy, the end of a write) and to peers (a
// follower's acknowledgement, a vote). A snapshot saved goes to the apply
// goroutine before its responses are delivered.
func (h *Host) runAppends() {
	var jobs []storageJob
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.appends.wake:
		}
		jobs = h.appends.take(jobs)
		if len(jobs) == 0 {
			continue
		}
		// A group is synced when one of its writes must be durable before
		// its responses go out: entries, a snapshot, or a new term or vote
		// (raft.MustSync). A write that only moves the commit index is not
		// synced; the next sync takes it along. Raft's commit index is
		// volatile state: after a crash the group learns it again from the
		// leader (AddGroup copes with a machine applied past the stored
		// commit), and a response such a write carries (an
		// acknowledgement of entries already held) rests on entries
		// synced before: in an earlier round, or in this one, when the
		// group is synced for them.
		var saved []*group
		ok := make([]bool, len(jobs))
		for i, j := range jobs {
			g, m := j.g, j.m
			if g.failedNow() || g.isRemoved() {
				continue
			}
			var hs *raftpb.HardState
			if m.Term != nil {
				hs = &raftpb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
			}
			g.storeMu.Lock()
			err := error(nil)
			if !g.isRemoved() {
				err = g.storage.Save(hs, m.GetEntries(), m.GetSnapshot())
			}
			g.storeMu.Unlock()
			if err != nil {
				h.fail(g, fmt.Errorf("save: %w", err))
				continue
			}
			ok[i] = true
			mustSync := len(m.GetEntries()) > 0 || !raft.IsEmptySnap(m.GetSnapshot())
			if hs != nil {
				mustSync = mustSync || raft.MustSync(hs, g.savedHS, 0) // a new term or vote
				g.savedHS = hs
			}
			if mustSync && !slices.Contains(saved, g) {
				saved = append(saved, g)
			}
		}
		h.syncAll(saved)
		var byPeer map[uint64][]Envelope
		var stepped []*group
		for i, j := range jobs {
			g := j.g
			if !ok[i] || g.failedNow() || g.isRemoved() {
				continue
			}
			if snap := j.m.GetSnapshot(); snap != nil && !raft.IsEmptySnap(snap) {
				h.applies.push(storageJob{g: g, restore: snap})
			}
			for _, r := range j.m.GetResponses() {
				if r.GetTo() == h.cfg.ID {
					g.mu.Lock()
					if g.failed == nil {
						_ = g.rn.Step(r)
					}
					g.mu.Unlock()
					if !slices.Contains(stepped, g) {
						stepped = append(stepped, g)
					}
					continue
				}
				byPeer = addMessage(byPeer, g, r)
			}
		}
		h.send(byPeer)
		for _, g := range stepped {
			h.handleReady(g)
		}
	}
}

// syncAll syncs the storage of every group in gs: one sync per group, in
// parallel when there are several, so a round costs about one fsync
// however many groups it covers.
func (h *Host) syncAll(gs []*group) {
	syncOne := func(g *group) {
		g.storeMu.Lock()
		err := error(nil)
		if !g.isRemoved() {
			err = g.storage.Sync()
		}
		g.storeMu.Unlock()
		if err != nil {
			h.fail(g, fmt.Errorf("sync: %w", err))
		}
	}
	if len(gs) == 1 {
		syncOne(gs[0])
		return
	}
	var wg sync.WaitGroup
	for _, g := range gs {
		wg.Go(func() { syncOne(g) })
	}
	wg.Wait()
}

// runApplies is the apply goroutine: it applies each group's committed
// entries (raft hands out only entries already synced on this node) and
// snapshots, notes leader changes, and tells raft what was applied.
func (h *Host) runApplies() {
	var jobs []storageJob
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.applies.wake:
		}
		jobs = h.applies.take(jobs)
		for _, j := range jobs {
			switch {
			case j.leadChange:
				h.applyLeader(j.g, j.lead)
			case j.restore != nil:
				h.applySnapshot(j.g, j.restore)
			default:
				if !h.apply(j.g, j.m.GetEntries()) {
					continue
				}
				g := j.g
				g.mu.Lock()
				if g.failed == nil {
					for _, r := range j.m.GetResponses() {
						_ = g.rn.Step(r)
					}
				}
				g.mu.Unlock()
				h.markDirty(g)
			}
		}
	}
}

// fail stops a group whose storage failed: its log's state on disk is
// unknown, so it must not vote, acknowledge or apply anything more until
// the node restarts and recovers it.
func (h *Host) fail(g *group, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed == nil {
		g.failed = err
		h.log.Error("replicated group stopped after a storage failure", "group", g.name, "err", err)
		g.failPendingLocked(fmt.Errorf("%w: %v", ErrGroupDown, err))
		g.wakeAppliedLocked()
	}
}

// wakeAppliedLocked wakes every WaitApplied of g (none: nothing to do,
// nothing allocated). mu held.
func (g *group) wakeAppliedLocked() {
	if g.appliedCh != nil {
		close(g.appliedCh)
		g.appliedCh = nil
	}
}

func (g *group) failPendingLocked(err error) {
	for seq, p := range g.pending {
		p.done <- err
		delete(g.pending, seq)
	}
}

// send sends byPeer's messages, one batch per peer.
func (h *Host) send(byPeer map[uint64][]Envelope) {
	for to, msgs := range byPeer {
		h.cfg.Transport.Send(to, msgs)
		for _, e := range msgs {
			if e.Msg.GetType() == raftpb.MessageType_MsgSnap {
				// Reported as sent: if it was lost, the follower's next
				// answer shows it is still behind and raft sends again.
				if g := h.group(e.Group); g != nil {
					g.mu.Lock()
					g.rn.ReportSnapshot(to, raft.SnapshotFinish)
					g.mu.Unlock()
				}
			}
		}
	}
}

// snapshotFor returns m, a snapshot for a member added after the
// snapshot was taken, with the group's current membership: the snapshot's
// own does not list that member, and raft would refuse it there. The
// state at the snapshot's index is the same; the conf changes after it
// are in the entries the member receives next, and applying them again is
// a no-op.
func (g *group) snapshotFor(m *raftpb.Message) *raftpb.Message {
	to := m.GetTo()
	cs := m.GetSnapshot().GetMetadata().GetConfState()
	if slices.Contains(cs.GetVoters(), to) || slices.Contains(cs.GetLearners(), to) {
		return m
	}
	g.mu.Lock()
	cur := proto.CloneOf(g.confSt)
	g.mu.Unlock()
	if cur == nil {
		return m
	}
	out := proto.CloneOf(m)
	out.GetSnapshot().GetMetadata().ConfState = cur
	return out
}

func (g *group) isRemoved() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.removed
}

func (g *group) failedNow() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed != nil
}

// applyLeader notes a change of g's leader: proposals made under another
// leader may have been lost with it, so they fail and their callers can
// retry.
func (h *Host) applyLeader(g *group, lead uint64) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if g.failedNow() || g.isRemoved() || lead == g.leadSeen.Swap(lead) {
		return
	}
	g.mu.Lock()
	for seq, p := range g.pending {
		if p.lead != lead {
			p.done <- ErrLeaderChanged
			delete(g.pending, seq)
		}
	}
	g.mu.Unlock()
	if g.onLead != nil {
		g.onLead(lead)
	}
}

// applySnapshot gives g's machine a snapshot its log was behind, once the
// snapshot is synced in g's storage.
func (h *Host) applySnapshot(g *group, snap *raftpb.Snapshot) {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if g.failedNow() || g.isRemoved() || snap.GetMetadata().GetIndex() <= g.applied {
		return
	}
	if err := g.machine.Restore(snap); err != nil {
		h.fail(g, fmt.Errorf("restore snapshot: %w", err))
		return
	}
	g.mu.Lock()
	g.applied = snap.GetMetadata().GetIndex()
	if cs := snap.GetMetadata().GetConfState(); cs != nil {
		g.confSt = proto.CloneOf(cs)
		g.peers = h.membersLocked(g)
	}
	g.wakeAppliedLocked()
	g.mu.Unlock()
}

// apply applies committed entries to g's machine and answers this node's
// proposals among them. It reports whether g is still running.
func (h *Host) apply(g *group, ents []*raftpb.Entry) bool {
	g.applyMu.Lock()
	defer g.applyMu.Unlock()
	if g.failedNow() || g.isRemoved() {
		return false
	}
	var cmds []Command
	var mine []uint64
	last := g.applied
	for _, e := range ents {
		idx := e.GetIndex()
		if idx <= last {
			continue
		}
		last = idx
		switch e.GetType() {
		case raftpb.EntryNormal:
			d := e.GetData()
			if len(d) < proposalHeader {
				continue // a new leader's empty entry
			}
			if binary.BigEndian.Uint64(d) == h.cfg.ID {
				mine = append(mine, binary.BigEndian.Uint64(d[8:]))
			}
			cmds = append(cmds, Command{Index: idx, Data: d[proposalHeader:]})
		case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
			// Apply what came before the change, then the change itself.
			if err := g.machine.Apply(idx-1, cmds); err != nil {
				h.fail(g, fmt.Errorf("apply: %w", err))
				return false
			}
			cmds = nil
			if err := h.applyConfChange(g, e); err != nil {
				h.fail(g, err)
				return false
			}
		}
	}
	if last == g.applied {
		return true
	}
	if err := g.machine.Apply(last, cmds); err != nil {
		h.fail(g, fmt.Errorf("apply: %w", err))
		return false
	}
	g.mu.Lock()
	g.applied = last
	g.wakeAppliedLocked()
	for _, seq := range mine {
		if p, ok := g.pending[seq]; ok {
			p.done <- nil
			delete(g.pending, seq)
		}
	}
	g.mu.Unlock()
	return true
}

func (h *Host) applyConfChange(g *group, e *raftpb.Entry) error {
	var cc raftpb.ConfChangeI
	if e.GetType() == raftpb.EntryConfChange {
		var c raftpb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = &c
	} else {
		var c raftpb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &c); err != nil {
			return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
		}
		cc = &c
	}
	g.mu.Lock()
	cs := g.rn.ApplyConfChange(cc)
	if cs != nil {
		g.confSt = proto.CloneOf(cs)
		g.peers = h.membersLocked(g)
	}
	g.confIdx = e.GetIndex()
	readd := false
	if c, ok := cc.(*raftpb.ConfChange); ok && c.GetType() == raftpb.ConfChangeRemoveNode {
		if as, being := g.readmitting[c.GetNodeId()]; being {
			// Raft takes the next membership change only once it counts
			// this one applied: handleReady proposes the addition then.
			delete(g.readmitting, c.GetNodeId())
			g.readd = append(g.readd, readdition{id: c.GetNodeId(), as: as})
			readd = true
		}
	}
	g.mu.Unlock()
	if readd {
		h.markDirty(g)
	}
	if cs != nil {
		if err := g.storage.SetConfState(e.GetIndex(), cs); err != nil {
			return fmt.Errorf("record membership at %d: %w", e.GetIndex(), err)
		}
	}
	return nil
}

// raftLogger sends the raft library's log to slog: its Info is chatty
// (every election step), so it goes to Debug.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)                   { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(format string, v ...any)   { r.l.Debug(fmt.Sprintf(format, v...)) }
func (r raftLogger) Info(v ...any)                    { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(format string, v ...any)    { r.l.Debug(fmt.Sprintf(format, v...)) }
func (r raftLogger) Warning(v ...any)                 { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(format string, v ...any) { r.l.Warn(fmt.Sprintf(format, v...)) }
func (r raftLogger) Error(v ...any)                   { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(format string, v ...any)   { r.l.Error(fmt.Sprintf(format, v...)) }
func (r raftLogger) Fatal(v ...any)                   { r.Panic(v...) }
func (r raftLogger) Fatalf(format string, v ...any)   { r.Panicf(format, v...) }
func (r raftLogger) Panic(v ...any)                   { s := fmt.Sprint(v...); r.l.Error(s); panic(s) }
func (r raftLogger) Panicf(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	r.l.Error(s)
	panic(s)
}
