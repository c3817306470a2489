package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/store"
)

// Forming the meta group. The first replicated topic asked for in a
// cluster forms it: a node that finds no peer in a meta group picks the
// (up to) MetaVoters lowest node IDs among the live nodes, itself
// included, and runs a two-phase bootstrap: every chosen node first
// reserves (durably, refusing when it already is in a meta group or holds
// another reservation), and only when all have reserved are they told to
// start. Two nodes forming at once with the same view choose the same
// nodes and one of them is refused; two meta groups could only form from
// disjoint sets of the lowest IDs, which takes views of the live nodes
// that differ in every one of them. Every other node joins as a learner
// (it holds the placement but does not vote), invited by the meta leader
// or joining when it needs the placement; the leader promotes learners
// while fewer than MetaVoters vote.

type metaInfo struct {
	Joined   bool     `json:"joined"`
	Voters   []uint64 `json:"voters,omitempty"`
	Learners []uint64 `json:"learners,omitempty"`
	Applied  uint64   `json:"applied,omitempty"` // the placement's index on that node
}

type reservation struct {
	Members []uint64  `json:"members"`
	Until   time.Time `json:"until"`
}

type joinRequest struct {
	Node uint64 `json:"node"`
	Addr string `json:"addr"`
}

// ErrMetaForming says the meta group could not be formed or joined now;
// the caller may try again.
var ErrMetaForming = errors.New("the cluster's meta group is not formed yet")

// ensureMeta makes this node take part in the meta group, forming it when
// no live peer is in one. Node first, when not 0, is asked first: the node
// that invited this one runs the group, and asking a frozen node before it
// would hold the join back for a whole requestTimeout.
func (c *Cluster) ensureMeta(ctx context.Context, first uint64) error {
	if c.metaMachine() != nil {
		return nil
	}
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	if c.metaMachine() != nil {
		return nil
	}
	if c.cfg.Refresh != nil && !c.cfg.Refresh(ctx) {
		return fmt.Errorf("%w: no nsqlookupd answered: the live nodes are unknown", ErrMetaForming)
	}
	peers := c.liveNodes()
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	asked := ids
	if i := slices.Index(ids, first); i > 0 {
		asked = slices.Concat([]uint64{first}, ids[:i], ids[i+1:])
	}
	for _, id := range asked {
		if id == c.cfg.Self {
			continue
		}
		info, err := c.askMetaInfo(ctx, id)
		if err != nil {
			continue
		}
		if info.Joined && len(info.Voters) > 0 {
			c.noteMetaSeen()
			if c.cfg.Fresh && counts(info, c.cfg.Self) {
				// A member that lost its disk (invited by the meta
				// leader, which it is silent to).
				if err := c.rejoinAsMember(); err != nil {
					return err
				}
				return c.waitMetaLeader(ctx)
			}
			return c.joinMeta(ctx, info.Voters)
		}
	}
	chosen := ids[:min(MetaVoters, len(ids))]
	if !slices.Contains(chosen, c.cfg.Self) {
		// The lowest node forms it; then this node joins.
		rctx, cancel := context.WithTimeout(ctx, 2*requestTimeout)
		_, err := c.cfg.Requester.Request(rctx, chosen[0], "meta.form", nil)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: node %s could not form it: %v", ErrMetaForming, c.Addr(chosen[0]), err)
		}
		info, err := c.askMetaInfo(ctx, chosen[0])
		if err != nil || !info.Joined {
			return fmt.Errorf("%w: node %s did not form it", ErrMetaForming, c.Addr(chosen[0]))
		}
		return c.joinMeta(ctx, info.Voters)
	}
	body := mustJSON(chosen)
	for _, id := range chosen {
		var err error
		if id == c.cfg.Self {
			err = c.reserve(chosen)
		} else {
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			_, err = c.cfg.Requester.Request(rctx, id, "meta.reserve", body)
			cancel()
		}
		if err != nil {
			return fmt.Errorf("%w: reserving %s: %v", ErrMetaForming, c.Addr(id), err)
		}
	}
	for _, id := range chosen {
		if id == c.cfg.Self {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := c.cfg.Requester.Request(rctx, id, "meta.bootstrap", body)
		cancel()
		if err != nil {
			// A member that missed its start has its reservation and
			// starts when it asks again; the others form a majority.
			c.log.Warn("start the meta group on a node", "node", c.Addr(id), "err", err)
		}
	}
	if err := c.startMeta(chosen, ""); err != nil {
		return err
	}
	c.log.Info("formed the meta group", "voters", len(chosen))
	return c.waitMetaLeader(ctx)
}

func (c *Cluster) askMetaInfo(ctx context.Context, id uint64) (metaInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	b, err := c.cfg.Requester.Request(rctx, id, "meta.info", nil)
	if err != nil {
		return metaInfo{}, err
	}
	var info metaInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return metaInfo{}, fmt.Errorf("decode meta info: %w", err)
	}
	return info, nil
}

// joinMeta starts this node's meta group empty and asks a voter to add it
// as a learner, then waits until it holds the placement.
func (c *Cluster) joinMeta(ctx context.Context, voters []uint64) error {
	return c.joinMetaIn(ctx, voters, "")
}

// joinMetaIn is joinMeta with the meta log kept in logDir.
func (c *Cluster) joinMetaIn(ctx context.Context, voters []uint64, logDir string) error {
	if err := c.startMeta(nil, logDir); err != nil {
		return err
	}
	body := mustJSON(joinRequest{Node: c.cfg.Self, Addr: c.cfg.SelfAddr})
	var err error
	for _, v := range voters {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err = c.cfg.Requester.Request(rctx, v, "meta.join", body)
		cancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%w: join: %v", ErrMetaForming, err)
	}
	return c.waitMetaLeader(ctx)
}

// waitMetaLeader waits until this node's meta group knows a leader.
func (c *Cluster) waitMetaLeader(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for c.host.Leader(MetaGroup) == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no meta leader within 10s", ErrMetaForming)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (c *Cluster) reservePath() string { return filepath.Join(c.metaDir(), "reserve.json") }

// reserve holds this node for the meta group of members, durably.
func (c *Cluster) reserve(members []uint64) error {
	c.resMu.Lock()
	defer c.resMu.Unlock()
	if c.metaMachine() != nil {
		return errors.New("already in a meta group")
	}
	if b, err := readFile(c.cfg.FS, c.reservePath()); err == nil {
		var r reservation
		if json.Unmarshal(b, &r) == nil && time.Now().Before(r.Until) && !slices.Equal(r.Members, members) {
			return fmt.Errorf("reserved for another meta group until %s", r.Until.Format(time.RFC3339))
		}
	}
	r := reservation{Members: members, Until: time.Now().Add(reservationTTL)}
	if err := store.WriteFileAtomic(c.cfg.FS, c.reservePath(), mustJSON(r)); err != nil {
		return fmt.Errorf("write reservation: %w", err)
	}
	return nil
}

// HandleRequest implements RequestHandler: the requests nodes send each
// other about placement and publishes.
func (c *Cluster) HandleRequest(ctx context.Context, from uint64, kind string, body []byte) ([]byte, error) {
	switch kind {
	case "meta.info":
		info := metaInfo{}
		if st, ok := c.host.Status(MetaGroup); ok {
			info = metaInfo{Joined: true, Voters: st.Voters, Learners: st.Learners}
			if mm := c.metaMachine(); mm != nil {
				info.Applied = mm.appliedIndex()
			}
		}
		return mustJSON(info), nil
	case "meta.reserve":
		var members []uint64
		if err := json.Unmarshal(body, &members); err != nil || !slices.Contains(members, c.cfg.Self) {
			return nil, errors.New("bad reservation")
		}
		return nil, c.reserve(members)
	case "meta.bootstrap":
		var members []uint64
		if err := json.Unmarshal(body, &members); err != nil {
			return nil, errors.New("bad bootstrap")
		}
		c.resMu.Lock()
		b, err := readFile(c.cfg.FS, c.reservePath())
		c.resMu.Unlock()
		var r reservation
		if err != nil || json.Unmarshal(b, &r) != nil || !slices.Equal(r.Members, members) {
			return nil, errors.New("no reservation for this meta group")
		}
		// (metaMu like every start of the group; waited for with the
		// request's deadline: the node forming the group may hold its own
		// while it asks this one)
		if err := c.lockMeta(ctx); err != nil {
			return nil, err
		}
		defer c.metaMu.Unlock()
		return nil, c.startMeta(members, "")
	case "meta.form":
		return nil, c.ensureMeta(ctx, 0)
	case "meta.invite":
		ran := c.metaMachine() != nil
		if err := c.ensureMeta(ctx, from); err != nil {
			return nil, err
		}
		return mustJSON(inviteAnswer{Ran: ran, HearsLeader: c.host.Leader(MetaGroup) != 0}), nil
	case "replica.readmit":
		err := c.host.Readmit(string(body), from)
		if errors.Is(err, ErrNoGroup) || errors.Is(err, ErrNotLeader) {
			return nil, fmt.Errorf("%w: %s", err, body)
		}
		return nil, err
	case "meta.rejoin":
		var voters []uint64
		if err := json.Unmarshal(body, &voters); err != nil || len(voters) == 0 {
			return nil, errors.New("bad rejoin request")
		}
		return nil, c.rejoinMeta(ctx, voters)
	case "meta.join":
		var j joinRequest
		if err := json.Unmarshal(body, &j); err != nil || j.Node == 0 {
			return nil, errors.New("bad join request")
		}
		st, ok := c.host.Status(MetaGroup)
		if !ok {
			return nil, ErrMetaForming
		}
		if !slices.Contains(st.Voters, j.Node) && !slices.Contains(st.Learners, j.Node) {
			cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddLearnerNode.Enum(), NodeId: &j.Node}
			if err := c.host.ProposeConfChange(MetaGroup, cc); err != nil {
				return nil, err
			}
		}
		return nil, c.host.Propose(ctx, MetaGroup, EncodeNodeCmd(j.Node, j.Addr))
	case "publish":
		topic, data, ok := cutString16(body)
		if !ok {
			return nil, errors.New("bad publish request")
		}
		lt := c.local(topic)
		if lt == nil {
			return nil, fmt.Errorf("%w: %q has no replica on %s", ErrUnknownTopic, topic, c.cfg.SelfAddr)
		}
		return nil, c.host.ProposeCommitted(ctx, lt.group, data)
	case historyKind:
		return c.serveHistory(body)
	case transferKind:
		return c.serveTransfer(ctx, body)
	default:
		return nil, fmt.Errorf("unknown request %q", kind)
	}
}

// rejoinMeta is how a node removed from the meta group comes back: a voter
// gone longer than the replica timeout is replaced (metaLeaderDuties), and
// when it returns its own Raft state still has it vote in a configuration
// the others left behind, so it never hears from a leader and never learns
// the placement. The meta leader, seeing it live but no member, asks it to
// rejoin: it drops its meta group and joins again as a learner with a new,
// empty log (a learner does not vote, so an empty log is safe; the leader
// catches it up and may promote it later).
//
// A node that hears from a meta leader is a member and refuses: wiping a
// voter's log would break Raft's safety. Only a node without a leader
// (removed, or cut off) can be asked, and only by a leader that has
// applied a configuration without it.
func (c *Cluster) rejoinMeta(ctx context.Context, voters []uint64) error {
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	if c.metaMachine() != nil && c.host.Leader(MetaGroup) != 0 {
		return errors.New("replica: refusing to rejoin the meta group: this node hears from its leader")
	}
	c.mu.Lock()
	mm, st, old := c.meta, c.metaStorage, c.metaLog
	c.meta, c.metaStorage, c.metaLog = nil, nil, ""
	c.mu.Unlock()
	if mm != nil {
		c.host.RemoveGroup(MetaGroup)
		closeStorage(st)
	}
	logDir := fmt.Sprintf("rejoined-%d", time.Now().UnixNano())
	c.log.Info("rejoining the meta group as a learner: it went on without this node", "log", logDir)
	if err := c.joinMetaIn(ctx, voters, logDir); err != nil {
		return err
	}
	// joined.json now names the new log: the old one can go
	if old == "" {
		if err := c.cfg.FS.RemoveAll(filepath.Join(c.metaDir(), "raft")); err != nil {
			c.log.Warn("remove the old meta log", "err", err)
		}
		if err := c.cfg.FS.Remove(filepath.Join(c.metaDir(), "state.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("remove the old placement", "err", err)
		}
	} else if err := c.cfg.FS.RemoveAll(filepath.Join(c.metaDir(), old)); err != nil {
		c.log.Warn("remove the old meta log", "err", err)
	}
	return nil
}

// inviteAnswer is a node's answer to meta.invite: whether it already ran a
// meta group, and whether that group hears from a leader. An older node
// answers nothing, which reads as a node that joined.
type inviteAnswer struct {
	Ran         bool `json:"ran,omitempty"`
	HearsLeader bool `json:"hears_leader,omitempty"`
}

// lockMeta takes metaMu, or gives up when ctx ends.
func (c *Cluster) lockMeta(ctx context.Context) error {
	for !c.metaMu.TryLock() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: this node is busy joining or forming it", ErrMetaForming)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
