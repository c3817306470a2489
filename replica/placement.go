package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Placement is the state of the meta group: which nodes the cluster has
// and which of them hold each replicated topic. Every node applies the same
// placement commands in the same order, so every node holds the same
// Placement at the same index. It has no I/O and no clock: the meta group's
// state machine wraps it.
type Placement struct {
	Nodes  map[uint64]NodeInfo    `json:"nodes"`
	Topics map[string]*Assignment `json:"topics"`
}

// NodeInfo is what the cluster knows of a node.
type NodeInfo struct {
	Addr string `json:"addr"` // broadcast_address:tcp_port
}

// Assignment is where a replicated topic lives.
type Assignment struct {
	Replicas int      `json:"replicas"`
	Members  []uint64 `json:"members"` // sorted
	// Generation counts the replacements so far: a group of generation 0
	// is bootstrapped by its first members, a member that joins later
	// starts empty and receives the log from the leader.
	Generation int `json:"generation,omitempty"`
	// Retention settings of the topic, as given at creation.
	RetentionTime  string `json:"retention_time,omitempty"`
	RetentionBytes int64  `json:"retention_bytes,omitempty"`
	// Created is the meta index at which the topic was created: a topic
	// deleted and created again is a new group.
	Created uint64 `json:"created"`
}

// Has reports whether node is a member.
func (a *Assignment) Has(node uint64) bool { return slices.Contains(a.Members, node) }

// GroupName is the Raft group of the assignment's topic: the topic name
// and its creation index, so a group of a deleted topic never mixes with
// the group of the topic created again under the same name.
func GroupName(topic string, created uint64) string {
	return fmt.Sprintf("%s@%d", topic, created)
}

// Placement commands, as proposed to the meta group (JSON: they are rare).
type placementCmd struct {
	Op             string   `json:"op"` // "node", "create", "delete", "replace"
	Node           uint64   `json:"node,omitempty"`
	Addr           string   `json:"addr,omitempty"`
	Topic          string   `json:"topic,omitempty"`
	Replicas       int      `json:"replicas,omitempty"`
	Members        []uint64 `json:"members,omitempty"`
	Old            uint64   `json:"old,omitempty"`
	New            uint64   `json:"new,omitempty"`
	RetentionTime  string   `json:"retention_time,omitempty"`
	RetentionBytes int64    `json:"retention_bytes,omitempty"`
}

// Errors of placement commands: a command that fails changes nothing.
var (
	ErrTopicExists     = errors.New("the topic is already replicated with other settings")
	ErrUnknownTopic    = errors.New("no such replicated topic")
	ErrNotEnoughNodes  = errors.New("not enough live nodes for the replicas asked")
	ErrBadPlacementCmd = errors.New("malformed placement command")
)

// NewPlacement returns an empty placement.
func NewPlacement() *Placement {
	return &Placement{Nodes: make(map[uint64]NodeInfo), Topics: make(map[string]*Assignment)}
}

// EncodeNodeCmd is the command that records a node and its address.
func EncodeNodeCmd(id uint64, addr string) []byte {
	return mustJSON(placementCmd{Op: "node", Node: id, Addr: addr})
}

// EncodeCreateCmd is the command that creates a replicated topic on
// members (as chosen by ChooseMembers on the proposer).
func EncodeCreateCmd(topic string, a Assignment) []byte {
	return mustJSON(placementCmd{Op: "create", Topic: topic, Replicas: a.Replicas, Members: a.Members,
		RetentionTime: a.RetentionTime, RetentionBytes: a.RetentionBytes})
}

// EncodeDeleteCmd is the command that deletes a replicated topic.
func EncodeDeleteCmd(topic string) []byte { return mustJSON(placementCmd{Op: "delete", Topic: topic}) }

// EncodeReplaceCmd is the command that replaces member old of topic by new.
func EncodeReplaceCmd(topic string, old, new uint64) []byte {
	return mustJSON(placementCmd{Op: "replace", Topic: topic, Old: old, New: new})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings and numbers always encode
	}
	return b
}

// Apply applies one command committed at index. The error says why the
// command changed nothing; it is the same on every node.
func (p *Placement) Apply(index uint64, data []byte) error {
	var c placementCmd
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("%w: %v", ErrBadPlacementCmd, err)
	}
	switch c.Op {
	case "node":
		if c.Node == 0 || c.Addr == "" {
			return fmt.Errorf("%w: node without id or address", ErrBadPlacementCmd)
		}
		p.Nodes[c.Node] = NodeInfo{Addr: c.Addr}
		return nil
	case "create":
		if c.Topic == "" || c.Replicas < 1 || len(c.Members) != c.Replicas {
			return fmt.Errorf("%w: create %q with %d replicas on %d members", ErrBadPlacementCmd, c.Topic, c.Replicas, len(c.Members))
		}
		members := slices.Clone(c.Members)
		slices.Sort(members)
		if len(slices.Compact(members)) != c.Replicas {
			return fmt.Errorf("%w: create %q names a member twice", ErrBadPlacementCmd, c.Topic)
		}
		if old, ok := p.Topics[c.Topic]; ok {
			if old.Replicas != c.Replicas {
				return fmt.Errorf("%w: %q has %d replicas", ErrTopicExists, c.Topic, old.Replicas)
			}
			return nil // created already: the first creation stands
		}
		p.Topics[c.Topic] = &Assignment{Replicas: c.Replicas, Members: members, Created: index,
			RetentionTime: c.RetentionTime, RetentionBytes: c.RetentionBytes}
		return nil
	case "delete":
		if _, ok := p.Topics[c.Topic]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Topic)
		}
		delete(p.Topics, c.Topic)
		return nil
	case "replace":
		a, ok := p.Topics[c.Topic]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Topic)
		}
		if !a.Has(c.Old) || a.Has(c.New) || c.New == 0 {
			return fmt.Errorf("%w: replace %x by %x in %q", ErrBadPlacementCmd, c.Old, c.New, c.Topic)
		}
		for i, m := range a.Members {
			if m == c.Old {
				a.Members[i] = c.New
			}
		}
		slices.Sort(a.Members)
		a.Generation++
		return nil
	default:
		return fmt.Errorf("%w: unknown op %q", ErrBadPlacementCmd, c.Op)
	}
}

// Load returns how many replicated topics each node holds.
func (p *Placement) Load() map[uint64]int {
	load := make(map[uint64]int, len(p.Nodes))
	for _, a := range p.Topics {
		for _, m := range a.Members {
			load[m]++
		}
	}
	return load
}

// ChooseMembers picks replicas nodes among live for a new topic: self
// first when live (producers publish to their local nsqd, and a local
// replica saves the forward), then the least loaded, lowest ID first. It
// is deterministic for the same inputs.
func ChooseMembers(live []uint64, load map[uint64]int, replicas int, self uint64) ([]uint64, error) {
	if replicas < 1 || replicas > len(live) {
		return nil, fmt.Errorf("%w: %d replicas asked, %d live nodes", ErrNotEnoughNodes, replicas, len(live))
	}
	cand := slices.Clone(live)
	sort.Slice(cand, func(i, j int) bool {
		a, b := cand[i], cand[j]
		if (a == self) != (b == self) {
			return a == self
		}
		if load[a] != load[b] {
			return load[a] < load[b]
		}
		return a < b
	})
	out := slices.Clone(cand[:replicas])
	slices.Sort(out)
	return out, nil
}

// ChooseReplacement picks the live node that replaces a lost member of a:
// the least loaded live node that is not already a member, or 0 if none.
func ChooseReplacement(a *Assignment, live []uint64, load map[uint64]int) uint64 {
	var best uint64
	for _, n := range live {
		if a.Has(n) {
			continue
		}
		if best == 0 || load[n] < load[best] || (load[n] == load[best] && n < best) {
			best = n
		}
	}
	return best
}

// Marshal encodes the placement for a snapshot.
func (p *Placement) Marshal() ([]byte, error) { return json.Marshal(p) }

// UnmarshalPlacement decodes a snapshot of a placement.
func UnmarshalPlacement(b []byte) (*Placement, error) {
	p := NewPlacement()
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("decode placement snapshot: %w", err)
	}
	if p.Nodes == nil {
		p.Nodes = make(map[uint64]NodeInfo)
	}
	if p.Topics == nil {
		p.Topics = make(map[string]*Assignment)
	}
	return p, nil
}
