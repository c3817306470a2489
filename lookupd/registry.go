package lookupd

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// PeerInfo describes one identified nsqd connection (a "producer" in NSQ's
// terms). ID is the connection's remote ip:port, which is also reported as
// RemoteAddress.
type PeerInfo struct {
	ID               string
	RemoteAddress    string
	Hostname         string
	BroadcastAddress string
	TCPPort          int
	HTTPPort         int
	Version          string
}

// HTTPAddress returns broadcast_address:http_port, the form operators and
// nsqadmin use to name a node (e.g. in /topic/tombstone?node=).
func (p *PeerInfo) HTTPAddress() string {
	return net.JoinHostPort(p.BroadcastAddress, strconv.Itoa(p.HTTPPort))
}

// Node is one entry of /nodes: a peer, the topics it registered and, for each
// topic at the same index, whether the peer is currently tombstoned for it.
type Node struct {
	PeerInfo
	Topics     []string
	Tombstones []bool
}

// DebugProducer is one producer of one registration as /debug shows it.
type DebugProducer struct {
	PeerInfo
	LastUpdate   time.Time
	Tombstoned   bool
	TombstonedAt time.Time
}

// RegistryConfig holds the time limits that filter registry reads.
type RegistryConfig struct {
	// InactiveTimeout hides producers whose last IDENTIFY/PING is older than
	// this from Lookup and Nodes (they stay registered).
	InactiveTimeout time.Duration
	// TombstoneLifetime is how long a tombstone hides a producer from Lookup.
	TombstoneLifetime time.Duration
}

// peerState is a registered peer plus the index of everything it registered,
// so that a disconnect or /nodes costs O(registrations of this peer), not
// O(all registrations).
type peerState struct {
	info       PeerInfo
	lastUpdate time.Time
	// topics is this peer's entry in every topic:<t> it produces, sorted
	// by topic so /nodes needs no sorting (inserts are a binary search and
	// a memmove).
	topics   []*producerEntry
	channels map[chanKey]struct{} // channel:<t>:<c> registrations holding this peer
}

type chanKey struct{ topic, channel string }

func (p *peerState) topicIndex(topic string) (int, bool) {
	return slices.BinarySearchFunc(p.topics, topic, func(e *producerEntry, t string) int {
		return strings.Compare(e.topic, t)
	})
}

func (p *peerState) addTopic(e *producerEntry) {
	if i, found := p.topicIndex(e.topic); !found {
		p.topics = slices.Insert(p.topics, i, e)
	}
}

func (p *peerState) removeTopic(topic string) {
	if i, found := p.topicIndex(topic); found {
		p.topics = slices.Delete(p.topics, i, i+1)
	}
}

// producerEntry is a peer's membership of one topic registration; it carries
// the per-(topic, peer) tombstone.
type producerEntry struct {
	peer         *peerState
	topic        string
	tombstoned   bool
	tombstonedAt time.Time
}

// Registry is nsqlookupd's registration database (protocol.md §7.4): which
// identified nsqd (peer) produces which topic and channel. It does no I/O and
// reads no clock: every time-dependent call takes now.
//
// Registrations outlive their producers: a topic or channel key stays until
// an explicit delete (or the ephemeral UNREGISTER rule) removes it.
//
// All fields are guarded by mu. Registry is safe for concurrent use.
type Registry struct {
	cfg RegistryConfig

	mu sync.RWMutex
	// peers is the "client" registration: every identified peer by ID.
	peers map[string]*peerState
	// topics holds topic:<t> registrations: topic -> peer ID -> entry.
	topics map[string]map[string]*producerEntry
	// channels holds channel:<t>:<c> registrations: topic -> channel -> peer
	// ID -> peer. A topic key here may exist without a topic registration
	// (ephemeral topic removed by UNREGISTER), like in the reference.
	channels map[string]map[string]map[string]*peerState

	// gen counts changes: every write under mu adds one, so an answer
	// built at one generation (see lookupAt) still holds while gen has
	// not moved. Read without mu by cached /lookup answers.
	gen atomic.Uint64
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg RegistryConfig) *Registry {
	return &Registry{
		cfg:      cfg,
		peers:    make(map[string]*peerState),
		topics:   make(map[string]map[string]*producerEntry),
		channels: make(map[string]map[string]map[string]*peerState),
	}
}

// Peer is the handle of one identified registration connection, returned
// by AddPeer. Its methods act only while the handle still owns its ID: once
// the connection was removed, or a newer connection from the same ip:port
// identified (address reuse after a reset, a NAT, a proxy), they do nothing
// and report false, so a closing or superseded connection can neither drop
// nor add registrations of the connection that replaced it.
type Peer struct {
	r  *Registry
	st *peerState
}

// ID returns the peer's remote ip:port.
func (h *Peer) ID() string { return h.st.info.ID }

// Register is Registry.Register for this connection; false if the handle
// no longer owns its ID.
func (h *Peer) Register(topic, channel string) bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if !h.r.ownsLocked(h.st) {
		return false
	}
	h.r.registerLocked(h.st, topic, channel)
	return true
}

// Unregister is Registry.Unregister for this connection; false if the
// handle no longer owns its ID.
func (h *Peer) Unregister(topic, channel string) bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if !h.r.ownsLocked(h.st) {
		return false
	}
	h.r.unregisterLocked(h.st, topic, channel)
	return true
}

// Touch sets the last update to now (PING); false if the handle no longer
// owns its ID.
func (h *Peer) Touch(now time.Time) bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if !h.r.ownsLocked(h.st) {
		return false
	}
	h.st.lastUpdate = now
	h.r.gen.Add(1) // an inactive producer is active again
	return true
}

// Remove removes this connection from every registration (connection
// closed). It reports false, and removes nothing, if the handle no longer
// owns its ID.
func (h *Peer) Remove() bool {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if !h.r.ownsLocked(h.st) {
		return false
	}
	h.r.removePeerLocked(h.st)
	return true
}

// AddPeer records a newly identified connection (the "client" registration)
// with its last update set to now, and returns its handle. If a peer with
// the same ID exists, it belonged to an earlier connection from the same
// ip:port, which cannot be alive any more: it is removed from every
// registration first (its registrations and tombstones are not inherited;
// the new connection re-registers what it has).
func (r *Registry) AddPeer(info PeerInfo, now time.Time) *Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen.Add(1)
	if old, ok := r.peers[info.ID]; ok {
		r.removePeerLocked(old)
	}
	st := &peerState{
		info:       info,
		lastUpdate: now,
		channels:   make(map[chanKey]struct{}),
	}
	r.peers[info.ID] = st
	return &Peer{r: r, st: st}
}

// Touch sets a peer's last update to now (PING). Unknown IDs are ignored.
func (r *Registry) Touch(id string, now time.Time) {
	r.mu.Lock()
	if p, ok := r.peers[id]; ok {
		p.lastUpdate = now
		r.gen.Add(1)
	}
	r.mu.Unlock()
}

// RemovePeer removes a peer from every registration, including the client
// registration (connection closed). Registrations left without producers
// stay, ephemeral or not. It reports whether the peer was known.
// Connections use Peer.Remove, which cannot remove a successor.
func (r *Registry) RemovePeer(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[id]
	if !ok {
		return false
	}
	r.removePeerLocked(p)
	return true
}

func (r *Registry) ownsLocked(p *peerState) bool {
	return r.peers[p.info.ID] == p
}

func (r *Registry) removePeerLocked(p *peerState) {
	r.gen.Add(1)
	id := p.info.ID
	for _, e := range p.topics {
		delete(r.topics[e.topic], id)
	}
	for k := range p.channels {
		delete(r.channels[k.topic][k.channel], id)
	}
	p.topics, p.channels = nil, make(map[chanKey]struct{})
	delete(r.peers, id)
}

// Register adds peer id as a producer of topic:<topic> and, when channel is
// not empty, of channel:<topic>:<channel>. It is idempotent: an existing
// entry, and its tombstone, is kept. It returns false if id is not a
// registered peer. Names are not validated here.
func (r *Registry) Register(id, topic, channel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[id]
	if !ok {
		return false
	}
	r.registerLocked(p, topic, channel)
	return true
}

func (r *Registry) registerLocked(p *peerState, topic, channel string) {
	r.gen.Add(1)
	id := p.info.ID
	if channel != "" {
		r.ensureChannelLocked(topic, channel)[id] = p
		p.channels[chanKey{topic, channel}] = struct{}{}
	}
	producers := r.ensureTopicLocked(topic)
	if _, ok := producers[id]; !ok {
		e := &producerEntry{peer: p, topic: topic}
		producers[id] = e
		p.addTopic(e)
	}
}

// Unregister removes peer id as §7.2 UNREGISTER describes. With a channel:
// from channel:<topic>:<channel> only, then deletes that registration if the
// channel is ephemeral and has no producers left. Without: from every
// channel:<topic>:* and from topic:<topic>, then deletes the topic
// registration if the topic is ephemeral and has no producers left. As in
// the reference, an empty ephemeral registration is deleted even when id was
// not one of its producers. It returns false if id is not a registered peer.
func (r *Registry) Unregister(id, topic, channel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.peers[id]
	if !ok {
		return false
	}
	r.unregisterLocked(p, topic, channel)
	return true
}

func (r *Registry) unregisterLocked(p *peerState, topic, channel string) {
	r.gen.Add(1)
	id := p.info.ID
	if channel != "" {
		producers, ok := r.channels[topic][channel]
		if !ok {
			return
		}
		delete(producers, id)
		delete(p.channels, chanKey{topic, channel})
		if len(producers) == 0 && protocol.IsEphemeral(channel) {
			r.deleteChannelLocked(topic, channel)
		}
		return
	}
	for ch, producers := range r.channels[topic] {
		delete(producers, id)
		delete(p.channels, chanKey{topic, ch})
	}
	producers, ok := r.topics[topic]
	if !ok {
		return
	}
	if _, ok := producers[id]; ok {
		delete(producers, id)
		p.removeTopic(topic)
	}
	if len(producers) == 0 && protocol.IsEphemeral(topic) {
		delete(r.topics, topic)
	}
}

// CreateTopic ensures the registration topic:<topic> exists.
func (r *Registry) CreateTopic(topic string) {
	r.mu.Lock()
	r.ensureTopicLocked(topic)
	r.mu.Unlock()
}

// CreateChannel ensures channel:<topic>:<channel> and topic:<topic> exist.
func (r *Registry) CreateChannel(topic, channel string) {
	r.mu.Lock()
	r.ensureChannelLocked(topic, channel)
	r.ensureTopicLocked(topic)
	r.mu.Unlock()
}

// DeleteTopic removes topic:<topic> and every channel:<topic>:* registration
// with all their producers. Deleting an unknown topic is a no-op.
func (r *Registry) DeleteTopic(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen.Add(1)
	for ch := range r.channels[topic] {
		r.deleteChannelLocked(topic, ch)
	}
	for _, e := range r.topics[topic] {
		e.peer.removeTopic(topic)
	}
	delete(r.topics, topic)
}

// DeleteChannel removes channel:<topic>:<channel> with its producers. It
// reports whether the registration existed.
func (r *Registry) DeleteChannel(topic, channel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.channels[topic][channel]; !ok {
		return false
	}
	r.deleteChannelLocked(topic, channel)
	return true
}

// Tombstone marks, at now, every producer of topic:<topic> whose
// broadcast_address:http_port equals node. It returns how many were marked.
func (r *Registry) Tombstone(topic, node string, now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen.Add(1)
	n := 0
	for _, e := range r.topics[topic] {
		if e.peer.info.HTTPAddress() == node ||
			e.peer.info.BroadcastAddress+":"+strconv.Itoa(e.peer.info.HTTPPort) == node {
			e.tombstoned = true
			e.tombstonedAt = now
			n++
		}
	}
	return n
}

// Lookup answers /lookup: whether topic:<topic> exists, the names of all
// channel:<topic>:* registrations (with or without producers, sorted), and
// the producers of the topic that are active and not tombstoned at now.
func (r *Registry) Lookup(topic string, now time.Time) (channels []string, producers []PeerInfo, found bool) {
	a := r.lookupAt(topic, now)
	return a.channels, a.producers, a.found
}

// lookupAnswer is Lookup's answer with how long it holds: while the
// registry's generation is gen and the clock is before until (zero: no
// limit), when the first active producer turns inactive or the first
// tombstone ends.
type lookupAnswer struct {
	channels  []string
	producers []PeerInfo
	found     bool
	gen       uint64
	until     time.Time
}

func (r *Registry) lookupAt(topic string, now time.Time) lookupAnswer {
	r.mu.RLock()
	a := lookupAnswer{gen: r.gen.Load()}
	reg, ok := r.topics[topic]
	if !ok {
		r.mu.RUnlock()
		return a
	}
	a.found = true
	a.channels = r.channelNamesLocked(topic)
	a.producers = make([]PeerInfo, 0, len(reg))
	limit := func(t time.Time) {
		if a.until.IsZero() || t.Before(a.until) {
			a.until = t
		}
	}
	for _, e := range reg {
		if r.tombstonedLocked(e, now) {
			limit(e.tombstonedAt.Add(r.cfg.TombstoneLifetime))
			continue
		}
		if !r.activeLocked(e.peer, now) {
			continue // only a PING (a new generation) makes it active again
		}
		if r.cfg.InactiveTimeout > 0 {
			limit(e.peer.lastUpdate.Add(r.cfg.InactiveTimeout))
		}
		a.producers = append(a.producers, e.peer.info)
	}
	r.mu.RUnlock()
	// Sorting (and everything after: encoding, the network write) happens
	// outside the lock.
	slices.Sort(a.channels)
	slices.SortFunc(a.producers, func(x, y PeerInfo) int { return strings.Compare(x.ID, y.ID) })
	return a
}

// Topics returns the names of every topic registration, sorted.
func (r *Registry) Topics() []string {
	r.mu.RLock()
	names := make([]string, 0, len(r.topics))
	for t := range r.topics {
		names = append(names, t)
	}
	r.mu.RUnlock()
	slices.Sort(names)
	return names
}

// Channels returns the names of every channel:<topic>:* registration, sorted
// (empty, not nil, for an unknown topic).
func (r *Registry) Channels(topic string) []string {
	r.mu.RLock()
	names := r.channelNamesLocked(topic)
	r.mu.RUnlock()
	slices.Sort(names)
	return names
}

// Nodes answers /nodes: every peer active at now, sorted by ID, with the
// topics it registered (sorted) and, index for index,
// whether it is tombstoned for that topic at now. Tombstoned peers are
// listed.
func (r *Registry) Nodes(now time.Time) []Node {
	r.mu.RLock()
	nodes := make([]Node, 0, len(r.peers))
	for _, p := range r.peers {
		if !r.activeLocked(p, now) {
			continue
		}
		n := Node{
			PeerInfo:   p.info,
			Topics:     make([]string, 0, len(p.topics)),
			Tombstones: make([]bool, 0, len(p.topics)),
		}
		for _, e := range p.topics {
			n.Topics = append(n.Topics, e.topic)
			n.Tombstones = append(n.Tombstones, r.tombstonedLocked(e, now))
		}
		nodes = append(nodes, n)
	}
	r.mu.RUnlock()
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	return nodes
}

// Debug returns every registration that has producers, keyed
// "<category>:<key>:<subkey>" ("client::", "topic:<t>:", "channel:<t>:<c>").
func (r *Registry) Debug() map[string][]DebugProducer {
	r.mu.RLock()
	out := make(map[string][]DebugProducer)
	dp := func(p *peerState, e *producerEntry) DebugProducer {
		d := DebugProducer{PeerInfo: p.info, LastUpdate: p.lastUpdate}
		if e != nil {
			d.Tombstoned, d.TombstonedAt = e.tombstoned, e.tombstonedAt
		}
		return d
	}
	for _, p := range r.peers {
		out["client::"] = append(out["client::"], dp(p, nil))
	}
	for t, reg := range r.topics {
		for _, e := range reg {
			k := "topic:" + t + ":"
			out[k] = append(out[k], dp(e.peer, e))
		}
	}
	for t, chans := range r.channels {
		for c, reg := range chans {
			for _, p := range reg {
				k := "channel:" + t + ":" + c
				out[k] = append(out[k], dp(p, nil))
			}
		}
	}
	r.mu.RUnlock()
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b DebugProducer) int { return strings.Compare(a.ID, b.ID) })
	}
	return out
}

func (r *Registry) ensureTopicLocked(topic string) map[string]*producerEntry {
	producers, ok := r.topics[topic]
	if !ok {
		r.gen.Add(1)
		producers = make(map[string]*producerEntry)
		r.topics[topic] = producers
	}
	return producers
}

func (r *Registry) ensureChannelLocked(topic, channel string) map[string]*peerState {
	chans, ok := r.channels[topic]
	if !ok {
		chans = make(map[string]map[string]*peerState)
		r.channels[topic] = chans
	}
	producers, ok := chans[channel]
	if !ok {
		r.gen.Add(1)
		producers = make(map[string]*peerState)
		chans[channel] = producers
	}
	return producers
}

func (r *Registry) deleteChannelLocked(topic, channel string) {
	r.gen.Add(1)
	chans := r.channels[topic]
	for _, p := range chans[channel] {
		delete(p.channels, chanKey{topic, channel})
	}
	delete(chans, channel)
	if len(chans) == 0 {
		delete(r.channels, topic)
	}
}

// channelNamesLocked returns the channel names of topic, unsorted (callers
// sort after releasing the lock).
func (r *Registry) channelNamesLocked(topic string) []string {
	chans := r.channels[topic]
	names := make([]string, 0, len(chans))
	for c := range chans {
		names = append(names, c)
	}
	return names
}

func (r *Registry) activeLocked(p *peerState, now time.Time) bool {
	return r.cfg.InactiveTimeout <= 0 || now.Sub(p.lastUpdate) < r.cfg.InactiveTimeout
}

func (r *Registry) tombstonedLocked(e *producerEntry, now time.Time) bool {
	return e.tombstoned && now.Sub(e.tombstonedAt) < r.cfg.TombstoneLifetime
}
