package replica

import (
	"bytes"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Quiescence. A group's leader heartbeats every member every tick, and
// every member ticks its election clock: for a node holding thousands of
// idle replicated topics that is most of its idle CPU (messages, wake-ups,
// syscalls), though nothing happens. A topic group (the meta group never
// does) whose leader has nothing in flight goes quiet instead, as
// CockroachDB's ranges do:
//
//   - The leader of a group with every member caught up and heard from,
//     everything applied and no proposal pending, for quiesceAfterTicks
//     ticks, sends each member a last heartbeat marked quiesceCtx and
//     stops ticking the group.
//   - A follower that steps such a heartbeat from its leader stops
//     ticking the group too.
//   - Anything else stepped in the group (a proposal, an append, a vote,
//     a heartbeat not so marked) and any local proposal, campaign or
//     membership change wakes it: it ticks again.
//
// A quiet follower no longer counts the time since its leader's last
// heartbeat, so it must learn of its leader's death some other way: each
// host sends every peer that shares a group with it one beacon per tick
// (beaconGroup; not one message per group) carrying the host's epoch, the
// time it started. A quiet group wakes when a member has not been heard
// from within the election timeout (killed, frozen, cut off) or its epoch
// changed (restarted: it lost what it knew of the group's leader), and
// raft's own election timeout then elects a new leader if one is needed:
// a failover of an idle group takes about one election timeout more.
// Liveness is all quiescence touches: a quiet group steps and persists
// every message it gets, and Raft's safety does not depend on ticks.

const (
	// quiesceAfterTicks is how many ticks a leader's group must have been
	// idle before it goes quiet.
	quiesceAfterTicks = 10
	// beaconGroup carries the hosts' beacons: Msg.From is the sender,
	// Msg.Index its epoch.
	beaconGroup = "#beacon"
)

// quiesceCtx marks the heartbeat with which a leader quiets a group.
var quiesceCtx = []byte("\x00quiesce")

// isQuiesceAnswer reports whether m is a follower's answer to a quiesce
// heartbeat (raft echoes a heartbeat's context). It is dropped unstepped:
// raft would take its context for a read index's.
func isQuiesceAnswer(m *raftpb.Message) bool {
	return m.GetType() == raftpb.MessageType_MsgHeartbeatResp && bytes.Equal(m.GetContext(), quiesceCtx)
}

func isQuiesceMsg(m *raftpb.Message) bool {
	t := m.GetType()
	return (t == raftpb.MessageType_MsgHeartbeat || t == raftpb.MessageType_MsgHeartbeatResp) &&
		bytes.Equal(m.GetContext(), quiesceCtx)
}

// wakeLocked makes g tick again. g.mu held.
func (g *group) wakeLocked() {
	g.quiet = false
	g.idleTicks = 0
}

// Quiet reports whether the group is quiet on this node (see quiesce.go).
func (h *Host) Quiet(name string) bool {
	g := h.group(name)
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.quiet
}

// membersLocked returns g's members other than this node. g.mu held.
func (h *Host) membersLocked(g *group) []uint64 {
	var out []uint64
	for _, ids := range [][]uint64{g.confSt.GetVoters(), g.confSt.GetLearners(), g.confSt.GetVotersOutgoing()} {
		for _, id := range ids {
			if id != h.cfg.ID && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

// heardFrom reports whether every node of ids sent a beacon within the
// election timeout.
func (h *Host) heardFrom(ids []uint64, now time.Time) bool {
	timeout := time.Duration(h.cfg.ElectionTicks) * h.cfg.Tick
	h.peersMu.Lock()
	defer h.peersMu.Unlock()
	for _, id := range ids {
		seen, ok := h.peerSeen[id]
		if !ok || now.Sub(seen) > timeout {
			return false
		}
	}
	return true
}

// silentPeers returns a function reporting whether a node was not heard
// from within the election timeout (as heardFrom), for the peers known
// now: one look at the beacons per tick, not one per group.
func (h *Host) silentPeers(now time.Time) func(id uint64) bool {
	timeout := time.Duration(h.cfg.ElectionTicks) * h.cfg.Tick
	heard := make(map[uint64]bool)
	h.peersMu.Lock()
	for id, seen := range h.peerSeen {
		if now.Sub(seen) <= timeout {
			heard[id] = true
		}
	}
	h.peersMu.Unlock()
	return func(id uint64) bool { return !heard[id] }
}

// noteBeacon records a peer's beacon; a changed epoch (the peer
// restarted) wakes every quiet group it is a member of.
func (h *Host) noteBeacon(m *raftpb.Message) {
	from, epoch := m.GetFrom(), m.GetIndex()
	if from == 0 || from == h.cfg.ID {
		return
	}
	h.peersMu.Lock()
	old := h.peerEpoch[from]
	h.peerSeen[from] = time.Now()
	h.peerEpoch[from] = epoch
	h.peersMu.Unlock()
	if old == 0 || old == epoch {
		return
	}
	for _, g := range h.groupList() {
		g.mu.Lock()
		if g.quiet && slices.Contains(g.peers, from) {
			g.wakeLocked()
		}
		g.mu.Unlock()
	}
}

func (h *Host) groupList() []*group {
	h.mu.Lock()
	defer h.mu.Unlock()
	gs := make([]*group, 0, len(h.groups))
	for _, g := range h.groups {
		gs = append(gs, g)
	}
	return gs
}

// sendBeacons sends this host's beacon to every node of peers.
func (h *Host) sendBeacons(peers []uint64) {
	for _, to := range peers {
		h.cfg.Transport.Send(to, []Envelope{{Group: beaconGroup,
			Msg: &raftpb.Message{From: &h.cfg.ID, To: &to, Index: &h.epoch}}})
	}
}

// quiesceIfIdle quiets g when this node leads it and it has been idle for
// quiesceAfterTicks ticks: it sends every member the marked heartbeat.
// Called from the loop after a tick; sendMu orders the heartbeat after
// the Readies already handed on.
func (h *Host) quiesceIfIdle(g *group, now time.Time) {
	if g.name == MetaGroup {
		return
	}
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	g.mu.Lock()
	members := g.peers
	if g.quiet || !h.idleLocked(g) || !h.heardFrom(members, now) {
		if !g.quiet {
			g.idleTicks = 0
		}
		g.mu.Unlock()
		return
	}
	if g.idleTicks++; g.idleTicks < quiesceAfterTicks {
		g.mu.Unlock()
		return
	}
	st := g.rn.Status()
	var byPeer map[uint64][]Envelope
	for _, id := range members {
		commit := min(st.Progress[id].Match, st.HardState.GetCommit())
		m := &raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum(), To: new(id), From: new(h.cfg.ID),
			Term: new(st.HardState.GetTerm()), Commit: new(commit), Context: quiesceCtx}
		byPeer = addMessage(byPeer, g, m)
	}
	g.quiet = true
	g.mu.Unlock()
	h.send(byPeer)
}

// idleLocked reports whether g, led by this node, has nothing in flight:
// no Ready, no proposal of this node pending, no membership change being
// made, everything committed applied, and every member's log matching the
// leader's. g.mu held.
func (h *Host) idleLocked(g *group) bool {
	if g.failed != nil || g.removed || g.amnesiac.Load() || len(g.pending) > 0 ||
		len(g.readd) > 0 || len(g.readmitting) > 0 || g.rn.HasReady() {
		return false
	}
	st := g.rn.Status()
	commit := st.HardState.GetCommit()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != 0 || g.applied != commit {
		return false
	}
	last, err := g.storage.LastIndex()
	if err != nil || last != commit {
		return false
	}
	for _, pr := range st.Progress {
		if pr.Match != last || pr.Next != last+1 {
			return false
		}
	}
	return true
}

// steppedLocked notes a message m from a peer just stepped in g: a
// quiesce heartbeat quiets a follower of its sender; a heartbeat's answer
// (the leader's idle chatter) changes nothing; anything else wakes the
// group. g.mu held.
func steppedLocked(g *group, m *raftpb.Message) {
	if !isQuiesceMsg(m) {
		if m.GetType() != raftpb.MessageType_MsgHeartbeatResp {
			g.wakeLocked()
		}
		return
	}
	if m.GetType() == raftpb.MessageType_MsgHeartbeat {
		st := g.rn.BasicStatus()
		if st.RaftState == raft.StateFollower && st.Lead == m.GetFrom() && !g.amnesiac.Load() {
			g.quiet = true
			g.idleTicks = 0
		}
	}
}
