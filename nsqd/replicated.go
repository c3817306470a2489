package nsqd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/replica"
	"github.com/sluicemq/sluice/store"
)

// A replicated topic (replicas=N) is a durable topic whose log is fed by
// its Raft group instead of by its publishers: a publish is proposed to
// the group and answered once committed (on a majority of the replicas'
// disks); every replica applies the committed publishes to its own durable
// log in the same order, so message IDs are the same everywhere. Only the
// leader delivers: the channels of a follower stand by (they accept SUB and
// RDY and send nothing). The leader hands its channels' cursors to the
// group every cursorInterval, so a new leader does not deliver again what
// was finished before the change, beyond what was in flight.

// cursorInterval is how often a leader replicates its channels' progress.
const cursorInterval = 200 * time.Millisecond

// publishTimeout bounds how long a publish to a replicated topic waits for
// its commit before the producer gets E_PUB_FAILED.
const publishTimeout = 8 * time.Second

// replTopic is the replicated side of a durable topic. It is the state
// machine of the topic's group.
type replTopic struct {
	t        *Topic
	replicas int

	leader  atomic.Uint64 // node ID of the group's leader; 0 when none
	leading atomic.Bool

	// Apply appends committed publishes to the topic log, which does not
	// sync its commits (store.Log.DeferSyncs: the Raft log, synced on a
	// majority, is the durable copy), and leaves the newest applied mark
	// and its round in pend for markLoop, which waits for the round to be
	// written and advances the applied mark on disk only after syncing
	// the log, so a restart applies again everything the topic log may
	// have lost. markWake wakes markLoop for the first mark after a sync
	// (not for every batch applied: a wake-up per batch cost each replica
	// CPU on the commit path's cores); marksDone stops it.
	pendMu    sync.Mutex
	pend      pendingMark // newest applied, not yet recorded (mark.Index 0: none); round nil: none to wait for
	markWake  chan struct{}
	marksDone chan struct{}
	marksWG   sync.WaitGroup
	nextEnd   uint64 // the topic log's end once every applied publish is written; host loop only
	memIndex  atomic.Uint64

	mu          sync.Mutex        // guards the fields below
	applied     appliedMark       // synced
	skip        uint64            // messages of entries applied again that the log already has
	lastCompact uint64            // index of the last snapshot taken here
	sentCursors map[string]string // channel -> the cursor state last proposed

	// the ranges a restore skipped, still to copy from the other
	// replicas (replicated_history.go)
	histMu      sync.Mutex
	history     []historyRange
	historyDue  atomic.Bool
	historyWake chan struct{}
	// gated: a range left to copy holds messages not yet finished, so the
	// channels do not deliver even while this node leads
	gated     atomic.Bool
	standbyMu sync.Mutex // serializes updateStandby
	// historyPeer is the replica that last answered a history read (its
	// own copy is complete: it delivers everything); handedOff is when
	// this node last asked the group to make it leader (unix ns)
	historyPeer atomic.Uint64
	handedOff   atomic.Int64
	// handingOver: a planned change of leader (/topic/step-down) is
	// under way; the channels stop delivering meanwhile
	handingOver atomic.Bool
	// cursorMu serializes proposeCursors: a later state is never
	// committed before an earlier one
	cursorMu sync.Mutex

	stop chan struct{}
	// dirty wakes the cursor loop: a channel's cursor changed
	dirty chan struct{}
	wg    sync.WaitGroup
}

type pendingMark struct {
	round *store.Round // nil when the batch appended nothing
	mark  appliedMark
}

// appliedMark is applied.json in the topic's folder: the last Raft index
// applied and the log's end once it was (both synced when written).
type appliedMark struct {
	Index uint64 `json:"index"`
	End   uint64 `json:"end"`
}

func appliedPath(dir string) string { return filepath.Join(dir, "applied.json") }

// newReplTopic makes t replicated. Its channels stand by until this node
// leads the group.
func newReplTopic(t *Topic, replicas int) (*replTopic, error) {
	r := &replTopic{t: t, replicas: replicas, stop: make(chan struct{}), sentCursors: make(map[string]string)}
	b, err := os.ReadFile(appliedPath(t.dur.dir))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &r.applied); err != nil {
			return nil, fmt.Errorf("read %s: %w", appliedPath(t.dur.dir), err)
		}
	case errors.Is(err, os.ErrNotExist):
		r.applied.End = t.dur.log.Start()
	default:
		return nil, fmt.Errorf("read applied mark: %w", err)
	}
	if end := t.dur.log.End(); end > r.applied.End {
		// Entries after the mark were applied before a crash: applying
		// them again must not append their messages twice.
		r.skip = end - r.applied.End
	}
	r.nextEnd = t.dur.log.End()
	r.memIndex.Store(r.applied.Index)
	r.historyWake = make(chan struct{}, 1)
	if err := r.loadHistory(); err != nil {
		return nil, err
	}
	t.dur.log.DeferSyncs()
	r.markWake = make(chan struct{}, 1)
	r.marksDone = make(chan struct{})
	r.dirty = make(chan struct{}, 1)
	return r, nil
}

func (r *replTopic) start() {
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.cursorLoop()
	}()
	go func() {
		defer r.wg.Done()
		r.historyLoop()
	}()
	if r.historyDue.Load() {
		r.wakeHistory()
	}
	r.marksWG.Add(1)
	go func() {
		defer r.marksWG.Done()
		r.markLoop()
	}()
}

// markInterval is how often a replicated topic's log is synced and its
// applied mark advanced: the Raft log is the durable copy of what was
// applied since, applied again after a crash.
const markInterval = time.Second

// markLoop advances the applied mark as the topic log's rounds are written:
// markInterval after the first batch applied since the last sync (and when
// the topic closes) it waits for the newest batch's round, which rounds
// complete in order after all those before, syncs the log, and records
// that batch's mark.
func (r *replTopic) markLoop() {
	// The timer runs only while an applied mark waits for its sync: an
	// idle topic's loop does not wake.
	timer := time.NewTimer(markInterval)
	timer.Stop()
	defer timer.Stop()
	record := func() {
		r.pendMu.Lock()
		pm := r.pend
		r.pend = pendingMark{}
		r.pendMu.Unlock()
		if pm.mark.Index == 0 {
			return
		}
		if pm.round != nil {
			if err := pm.round.Wait(r.t.dur.log); err != nil {
				// The mark stays where it is: a restart applies these
				// entries again from the Raft log.
				r.t.nsqd.setHealth(err)
				r.t.logger.Error("write a replicated publish to the topic log", "err", err)
				return
			}
		}
		r.syncMark(pm.mark) // marks only grow: Apply notes one only past the last
	}
	for {
		select {
		case <-r.marksDone:
			record()
			return
		case <-r.markWake:
			timer.Reset(markInterval)
		case <-timer.C:
			record()
		}
	}
}

// noteApplied leaves the mark of a batch just applied, and its round (nil
// when it appended nothing), for markLoop.
func (r *replTopic) noteApplied(round *store.Round, mark appliedMark) {
	r.pendMu.Lock()
	first := r.pend.mark.Index == 0
	if round != nil {
		r.pend.round = round // rounds complete in order: the newest covers the others
	}
	r.pend.mark = mark
	r.pendMu.Unlock()
	if first {
		select {
		case r.markWake <- struct{}{}:
		default:
		}
	}
}

// syncMark syncs the topic log and records m as the applied mark, if m is
// past it.
func (r *replTopic) syncMark(m appliedMark) {
	r.mu.Lock()
	behind := m.Index > r.applied.Index
	r.mu.Unlock()
	if !behind {
		return
	}
	if err := r.t.dur.log.Sync(); err != nil {
		r.t.nsqd.setHealth(err)
		r.t.logger.Error("sync a replicated topic's log", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Index > r.applied.Index {
		r.applied = m
		r.writeMarkLocked()
	}
}

// appliedIndex is the last index applied (in memory): where the group
// resumes when it is added again while the topic stays open.
func (r *replTopic) appliedIndex() uint64 { return r.memIndex.Load() }

func (r *replTopic) close() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	r.wg.Wait()
	close(r.marksDone) // the group no longer applies: its host stopped first
	r.marksWG.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeMarkLocked()
}

func (r *replTopic) writeMarkLocked() {
	data, _ := json.Marshal(r.applied)
	if err := store.WriteFileAtomic(store.OSFS{}, appliedPath(r.t.dur.dir), data); err != nil {
		r.t.logger.Error("write the applied mark of a replicated topic", "err", err)
		return
	}
}

// Apply implements replica.StateMachine.
func (r *replTopic) Apply(last uint64, cmds []replica.Command) error {
	t := r.t
	var round *store.Round
	for _, cmd := range cmds {
		if len(cmd.Data) == 0 {
			continue
		}
		switch cmd.Data[0] {
		case cmdPublish:
			ents, err := decodePublish(cmd.Data)
			if err != nil {
				// Every replica refuses it alike: nothing is appended.
				t.logger.Error("replicated publish refused", "index", cmd.Index, "err", err)
				continue
			}
			r.mu.Lock()
			ents, r.skip = skipMessages(ents, r.skip)
			r.mu.Unlock()
			if len(ents) == 0 {
				continue
			}
			for i := range ents {
				r.nextEnd += uint64(ents[i].Messages())
				t.messageCount.Add(uint64(ents[i].Messages()))
				t.messageBytes.Add(uint64(len(ents[i].Body) + len(ents[i].Packed) - 4*int(ents[i].Count)))
			}
			rd, err := t.nsqd.committer.Append(t.dur.log, ents)
			if err != nil {
				return fmt.Errorf("append replicated publish: %w", err)
			}
			round = rd // rounds complete in order: the last covers the others
		case cmdChannel:
			name, start, err := decodeChannelCmd(cmd.Data)
			if err != nil {
				t.logger.Error("replicated channel refused", "index", cmd.Index, "err", err)
				continue
			}
			r.applyChannel(name, start)
		case cmdCursors:
			if r.leading.Load() {
				continue // the leader is where they come from
			}
			states, err := decodeCursors(cmd.Data)
			if err != nil {
				t.logger.Error("replicated cursors refused", "index", cmd.Index, "err", err)
				continue
			}
			r.applyCursors(states)
		case cmdPolicy:
			r.applyPolicy(cmd)
		case cmdDeleteChannel:
			name := string(cmd.Data[1:])
			if ch, ok := t.existingChannel(name); ok {
				t.nsqd.removeChannel(t, ch)
			}
		}
	}
	if last > r.memIndex.Load() {
		r.memIndex.Store(last)
		r.noteApplied(round, appliedMark{Index: last, End: r.nextEnd})
	}
	return nil
}

// topicSnapshot is a replicated topic's state at a Raft index, the data
// of the group's snapshots: where the topic log ends there and every
// channel's cursor. A replica that takes the snapshot skips its log to
// End and copies the messages below from the other replicas afterwards:
// the unfinished ones (above a cursor's floor) before it may deliver, and
// the retained history a replay reads.
type topicSnapshot struct {
	Index   uint64            `json:"index"`
	End     uint64            `json:"end"`
	Cursors map[string][]byte `json:"cursors"` // journal state records
	// Topic is the topic cursor (where a first channel starts) of a topic
	// without channels; nil in snapshots taken before it was kept.
	Topic []byte `json:"topic,omitempty"`
}

// Restore implements replica.StateMachine: the replica takes a snapshot
// its log was behind (it is new, or was gone while the others compacted).
func (r *replTopic) Restore(snap *raftpb.Snapshot) error {
	var ts topicSnapshot
	if err := json.Unmarshal(snap.GetData(), &ts); err != nil {
		return fmt.Errorf("decode the snapshot of replicated topic %s: %w", r.t.name, err)
	}
	t := r.t
	if end := t.dur.log.End(); end < ts.End {
		// The messages skipped are copied from the other replicas after:
		// the retained history, and the messages not yet finished (a
		// snapshot does not wait for the channels), without which this
		// replica must not deliver.
		unfinished, err := ts.unfinishedBelowEnd()
		if err != nil {
			return fmt.Errorf("snapshot of %s: %w", t.name, err)
		}
		if err := r.noteSkipped(end, ts.End, unfinished); err != nil {
			return fmt.Errorf("restore replicated topic %s: %w", t.name, err)
		}
		if err := t.dur.log.SkipTo(ts.End); err != nil {
			return fmt.Errorf("skip replicated topic %s to %d: %w", t.name, ts.End, err)
		}
	}
	for name, rec := range ts.Cursors {
		_, cur, err := store.DecodeCursorState(rec)
		if err != nil {
			return fmt.Errorf("snapshot of %s: cursor of %s: %w", t.name, name, err)
		}
		ch, ok := t.existingChannel(name)
		if !ok {
			if ch, _, err = t.getChannelFrom(name, channelStart{}); err != nil {
				return fmt.Errorf("snapshot of %s: channel %s: %w", t.name, name, err)
			}
			r.setStandbyOf(ch)
			t.nsqd.notifyRegister(t.name, name)
			t.nsqd.persistMetadataOrLog()
		}
		ch.takeCursor(cur)
	}
	if ts.Topic != nil {
		_, cur, err := store.DecodeCursorState(ts.Topic)
		if err != nil {
			return fmt.Errorf("snapshot of %s: topic cursor: %w", t.name, err)
		}
		t.mu.Lock()
		t.dur.topicCursor = cur
		t.mu.Unlock()
		if err := t.dur.journal.SetState(store.TopicCursor, cur.Clone(), false); err != nil {
			return fmt.Errorf("snapshot of %s: journal the topic cursor: %w", t.name, err)
		}
	}
	r.updateStandby()
	if err := t.dur.log.Sync(); err != nil { // the mark below covers its end
		return fmt.Errorf("sync replicated topic %s: %w", t.name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skip = 0
	r.nextEnd = max(ts.End, t.dur.log.End())
	r.memIndex.Store(ts.Index)
	r.applied = appliedMark{Index: ts.Index, End: r.nextEnd}
	r.writeMarkLocked()
	if r.historyDue.Load() {
		r.wakeHistory()
	}
	t.logger.Info("replicated topic restored from a snapshot", "index", ts.Index, "end", ts.End, "channels", len(ts.Cursors))
	return nil
}

// compactEvery is how many Raft entries a replica lets accumulate before it
// snapshots its topic and drops them; a node option can change it.
const compactEvery = 50000

// maybeCompact drops the Raft log below the newest synced mark, once
// enough entries piled up, keeping a snapshot of the channels' cursors.
func (r *replTopic) maybeCompact() {
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return
	}
	every := uint64(r.t.nsqd.opts.ReplicaCompactEntries)
	if every == 0 {
		every = compactEvery
	}
	r.mu.Lock()
	mark := r.applied
	last := r.lastCompact
	r.mu.Unlock()
	if mark.Index < last+every {
		return
	}
	t := r.t
	t.mu.RLock()
	chans := t.chanList
	t.mu.RUnlock()
	// Messages below the mark may be unfinished: a replica restored from
	// this snapshot copies them from the others before it delivers.
	ts := topicSnapshot{Index: mark.Index, End: mark.End, Cursors: make(map[string][]byte)}
	if len(chans) == 0 {
		t.mu.RLock()
		tc := t.dur.topicCursor.Clone()
		t.mu.RUnlock()
		ts.Topic = store.EncodeCursorState(nil, store.TopicCursor, tc)
	}
	for _, ch := range chans {
		if ch.ephemeral || ch.dlog == nil {
			continue
		}
		ch.mu.Lock()
		cur := ch.dlog.cursor.Clone()
		ch.mu.Unlock()
		ts.Cursors[ch.name] = store.EncodeCursorState(nil, ch.name, cur)
	}
	data, _ := json.Marshal(ts)
	done, err := cl.CompactTopic(t.name, mark.Index, data)
	if err != nil {
		t.logger.Warn("compact a replicated topic's Raft log", "err", err)
		return
	}
	if done {
		r.mu.Lock()
		r.lastCompact = mark.Index
		r.mu.Unlock()
		t.logger.Debug("compacted the Raft log of a replicated topic", "index", mark.Index)
	}
}

// applyChannel creates a channel the group agreed on.
func (r *replTopic) applyChannel(name string, start channelStart) {
	t := r.t
	ch, created, err := t.getChannelFrom(name, start)
	if err != nil {
		t.logger.Error("create a replicated channel", "channel", name, "err", err)
		return
	}
	if created {
		r.setStandbyOf(ch)
		t.nsqd.notifyRegister(t.name, name)
		t.nsqd.persistMetadataOrLog()
	}
}

// applyPolicy sets a topic or channel policy the group agreed on. It was
// validated where it was proposed; a value this replica refuses (the same
// on every replica) is logged and changes nothing.
func (r *replTopic) applyPolicy(cmd replica.Command) {
	t := r.t
	channel, q, err := decodePolicyCmd(cmd.Data)
	if err != nil {
		t.logger.Error("replicated policy refused", "index", cmd.Index, "err", err)
		return
	}
	if channel == "" {
		p, err := parseTopicPolicy(q, t.topicPolicyOf())
		if err == nil {
			err = t.nsqd.applyTopicPolicy(t, p)
		}
		if err != nil {
			t.logger.Error("replicated topic policy refused", "index", cmd.Index, "err", err)
		}
		return
	}
	ch, ok := t.existingChannel(channel)
	if !ok {
		t.logger.Warn("replicated policy for a channel this replica does not have", "channel", channel)
		return
	}
	p, err := parseChannelPolicy(q, ch.channelPolicyOf(), t.name)
	if err == nil {
		err = t.nsqd.applyChannelPolicy(t, ch, p)
	}
	if err != nil {
		t.logger.Error("replicated channel policy refused", "index", cmd.Index, "channel", channel, "err", err)
	}
}

// proposePolicy commits a policy change through the group (every replica
// applies it, this one included) and waits for it.
func (r *replTopic) proposePolicy(ctx context.Context, channel string, q url.Values) error {
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return &replicationError{topic: r.t.name, err: errReplicationOff}
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := cl.Publish(ctx, r.t.name, encodePolicyCmd(channel, q)); err != nil {
		return &replicationError{topic: r.t.name, err: err}
	}
	return nil
}

// applyCursors takes the leader's progress of each channel. A channel
// this replica does not have is skipped: channels come and go only through
// their own commands, so a cursor committed after a channel's deletion
// does not bring it back.
func (r *replTopic) applyCursors(states map[string]*store.Cursor) {
	for name, cur := range states {
		if ch, ok := r.t.existingChannel(name); ok {
			ch.takeCursor(cur)
		}
	}
	r.gateForFloors()
}

// cursorLoop proposes the channels' cursors while this node leads. It
// wakes when a cursor changed (store.Cursor.SetNotify: each scan hooks
// every channel's cursor to cursorChanged) and then waits cursorInterval,
// so that a burst of FINs is one proposal; and every cursorSweep all the
// same (a channel created since the last scan is hooked then), or every
// compactEvery on a follower, whose loop only compacts. An idle topic's
// loop wakes that seldom.
func (r *replTopic) cursorLoop() {
	timer := time.NewTimer(cursorSweep)
	defer timer.Stop()
	var lastCompact time.Time
	for {
		select {
		case <-r.stop:
			return
		case <-r.dirty:
			select { // gather what changes meanwhile
			case <-r.stop:
				return
			case <-time.After(cursorInterval):
			}
		case <-timer.C:
		}
		if time.Since(lastCompact) >= compactInterval {
			lastCompact = time.Now()
			r.maybeCompact()
		}
		next := compactInterval
		if r.leading.Load() {
			next = cursorSweep
			if !r.proposeCursors() {
				r.cursorChanged() // try again after cursorInterval
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// cursorSweep and compactInterval space a replicated topic's cursor loop
// when no cursor changes (see cursorLoop); a replica looks whether to
// compact every compactInterval.
const (
	cursorSweep     = 2 * time.Second
	compactInterval = 5 * time.Second
)

// cursorChanged wakes the cursor loop (see cursorLoop). It never blocks.
func (r *replTopic) cursorChanged() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// proposeCursors proposes the cursors of the channels whose progress
// changed since last proposed, and hooks every cursor to cursorChanged. It
// reports false when a proposal failed.
func (r *replTopic) proposeCursors() bool {
	r.cursorMu.Lock()
	defer r.cursorMu.Unlock()
	changed := make(map[string]*store.Cursor)
	enc := make(map[string]string)
	for _, ch := range r.t.channelList() {
		if ch.ephemeral || ch.dlog == nil {
			continue
		}
		ch.mu.Lock()
		ch.dlog.cursor.SetNotify(r.cursorChanged)
		cur := ch.dlog.cursor.Clone()
		ch.mu.Unlock()
		s := string(store.EncodeCursorState(nil, ch.name, cur))
		r.mu.Lock()
		same := r.sentCursors[ch.name] == s
		r.mu.Unlock()
		if !same {
			changed[ch.name] = cur
			enc[ch.name] = s
		}
	}
	if len(changed) == 0 {
		return true
	}
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := cl.Propose(ctx, r.t.name, encodeCursors(changed))
	cancel()
	if err != nil {
		r.t.logger.Debug("replicate channel progress", "err", err)
		return false
	}
	r.mu.Lock()
	for k, v := range enc {
		r.sentCursors[k] = v
	}
	r.mu.Unlock()
	return true
}

// announce proposes a channel's creation or deletion to the group, so
// every replica has the channels any of them has. It retries for a while
// in the background (a group without a leader, a proposal lost with one).
func (r *replTopic) announce(cmd []byte) {
	r.cursorChanged() // a new channel's cursor is hooked at the next scan
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return
	}
	select {
	case <-r.stop:
		return
	default:
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := r.stopContext()
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, 30*time.Second)
		defer cancelT()
		if err := cl.Publish(ctx, r.t.name, cmd); err != nil {
			r.t.logger.Warn("replicate a channel change", "err", err)
		}
	}()
}

// setLeader records the group's leader; the channels deliver only while
// this node leads.
func (r *replTopic) setLeader(leader, self uint64) {
	r.leader.Store(leader)
	leading := leader == self && leader != 0
	if r.leading.Swap(leading) == leading {
		return
	}
	r.t.logger.Info("replicated topic leadership", "leading", leading)
	r.mu.Lock()
	clear(r.sentCursors)
	r.mu.Unlock()
	r.updateStandby()
	if leading {
		r.cursorChanged() // hook the cursors and send them now
		r.handOffIfGated()
	}
}

// handoverDrain bounds how long a leader handing its leadership on waits
// for its consumers to finish the messages in flight.
const handoverDrain = 2 * time.Second

// prepareHandover readies a planned change of leader: the channels stop
// delivering, the messages in flight get up to handoverDrain to be
// finished, then every channel's progress is committed to the group, so
// the next leader delivers again only what was still in flight.
func (r *replTopic) prepareHandover(ctx context.Context) error {
	r.handingOver.Store(true)
	r.updateStandby()
	for deadline := time.Now().Add(handoverDrain); r.anyInFlight() && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !r.proposeCursors() {
		return errors.New("the channels' progress could not be committed")
	}
	return nil
}

// anyInFlight reports whether a channel has messages in flight.
func (r *replTopic) anyInFlight() bool {
	for _, ch := range r.t.channelList() {
		ch.mu.Lock()
		n := ch.inFlight.len()
		ch.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// handoverDone ends a planned change of leader: the channels deliver again
// if this node still leads.
func (r *replTopic) handoverDone() {
	r.handingOver.Store(false)
	r.updateStandby()
}

// handOffEvery spaces a gated leader's requests to hand its leadership
// on: raft gives a transfer up after an election timeout.
const handOffEvery = 5 * time.Second

// handOffIfGated asks the group to make another replica the leader while
// this node leads but its channels cannot deliver (gated: it is copying
// unfinished messages a restore skipped). A replica that answered one of
// its history reads holds every message, so its channels deliver at once
// instead of after the copy. It does not wait for the change.
func (r *replTopic) handOffIfGated() {
	peer := r.historyPeer.Load()
	if peer == 0 || !r.leading.Load() || !r.gated.Load() {
		return
	}
	now, last := time.Now().UnixNano(), r.handedOff.Load()
	if now-last < int64(handOffEvery) || !r.handedOff.CompareAndSwap(last, now) {
		return
	}
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return
	}
	if err := cl.HandOff(r.t.name, peer); err != nil {
		r.t.logger.Warn("hand the leadership of a gated replica to a complete one", "to", cl.Addr(peer), "err", err)
		return
	}
	r.t.logger.Info("this replica leads but is still copying unfinished messages: handing the leadership to a replica that holds them", "to", cl.Addr(peer))
}

// stopContext returns a context canceled when the topic stops (or cancel
// is called).
func (r *replTopic) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-r.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// delivering reports whether the topic's channels deliver here: this node
// leads the group, holds every message not yet finished (a replica
// restored from a snapshot may still be copying some) and is not handing
// its leadership on.
func (r *replTopic) delivering() bool {
	return r.leading.Load() && !r.gated.Load() && !r.handingOver.Load()
}

// setStandbyOf sets a new channel's standby as updateStandby would.
func (r *replTopic) setStandbyOf(ch *Channel) {
	r.standbyMu.Lock()
	defer r.standbyMu.Unlock()
	ch.setStandby(!r.delivering())
}

// updateStandby makes the channels deliver exactly while delivering. It
// runs on the host's apply goroutine (leader changes, restores) and on the
// history copy's (the gate lifted); standbyMu makes the last call's view
// of both the one that stays.
func (r *replTopic) updateStandby() {
	r.standbyMu.Lock()
	defer r.standbyMu.Unlock()
	on := !r.delivering()
	for _, ch := range r.t.channelList() {
		ch.setStandby(on)
	}
}

// publish proposes ents to the group and waits for the commit.
func (r *replTopic) publish(ents []store.Entry) error {
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return &replicationError{topic: r.t.name, err: errReplicationOff}
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := cl.Publish(ctx, r.t.name, encodePublish(ents)); err != nil {
		return &replicationError{topic: r.t.name, err: err}
	}
	return nil
}

// errRejoining refuses to create a topic on a node whose replication state
// is new (its first start, or a lost disk) until it knows from the cluster
// whether it holds the topic's replica: a plain topic created meanwhile
// would shadow the replica it is about to get back.
var errRejoining = errors.New("this node is rejoining the cluster (new replication state) and does not know yet whether the topic is replicated here")

// errReplicaOpening refuses a publish to a topic placed on this node whose
// replica has not opened in time.
var errReplicaOpening = errors.New("this node holds a replica of the topic, not open yet")

// errMetaUnconfirmed refuses to create a topic this node's copy of the
// placement does not know when the meta group cannot confirm in time that
// it is not replicated (a node on a minority side of a partition, a meta
// group electing a leader).
var errMetaUnconfirmed = errors.New("cannot confirm with the cluster's meta group that the topic is not replicated")

// replicationError is a publish the replicated topic's group did not
// commit, or one refused because this node cannot tell yet whether the
// topic is replicated (errRejoining, errReplicaOpening,
// errMetaUnconfirmed): all are retryable, and answered E_PUB_FAILED (TCP) or 503 PUB_FAILED (HTTP).
type replicationError struct {
	topic string
	err   error
}

func (e *replicationError) Error() string {
	if errors.Is(e.err, errRejoining) || errors.Is(e.err, errReplicaOpening) || errors.Is(e.err, errMetaUnconfirmed) {
		return fmt.Sprintf("topic %s: not created yet: %v; retry", e.topic, e.err)
	}
	cause := e.err.Error()
	switch {
	case errors.Is(e.err, context.DeadlineExceeded):
		cause = "no majority of its replicas answered in time"
	case errors.Is(e.err, replica.ErrNoLeader):
		cause = "it has no leader this node can reach"
	}
	return fmt.Sprintf("replicated topic %s: not committed: %s", e.topic, cause)
}

func (e *replicationError) Unwrap() error { return e.err }
