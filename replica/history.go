package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// HistoryServer is implemented by a TopicHost that serves the messages its
// replicas hold to a replica that lacks them: one restored from a
// snapshot skips its log to the snapshot's end, and copies the messages
// below it (unfinished ones and the retained history) from the others
// afterwards. Request and answer are the TopicHost's own encoding; the
// cluster only carries them.
type HistoryServer interface {
	// TopicHistory answers req from this node's replica of topic.
	TopicHistory(topic string, req []byte) ([]byte, error)
}

// historyKind is the request that carries a history read. Its answers
// are not kept for requests sent again (see RequestMux): a read runs again
// instead, so the chunks of a long copy are not held for a minute each.
const historyKind = "topic.history"

// historyAttempt bounds one history request to one replica.
const historyAttempt = 10 * time.Second

// FetchHistory sends req to the other replicas of topic, its leader first,
// and returns the first answer and the replica that gave it. It fails
// with ErrUnknownTopic when this node holds no replica of topic.
func (c *Cluster) FetchHistory(ctx context.Context, topic string, req []byte) ([]byte, uint64, error) {
	lt, err := c.replicaOf(topic)
	if err != nil {
		return nil, 0, err
	}
	a, ok := c.Assignment(topic)
	if !ok {
		return nil, 0, fmt.Errorf("%w: %q", ErrUnknownTopic, topic)
	}
	var peers []uint64
	if l := c.host.Leader(lt.group); l != 0 && l != c.cfg.Self {
		peers = append(peers, l)
	}
	for _, m := range a.Members {
		if m != c.cfg.Self && !slices.Contains(peers, m) {
			peers = append(peers, m)
		}
	}
	if len(peers) == 0 {
		return nil, 0, fmt.Errorf("replica: %q has no other replica to copy its history from", topic)
	}
	body := appendString16(make([]byte, 0, 4+len(topic)+len(lt.group)+len(req)), topic)
	body = append(appendString16(body, lt.group), req...)
	var errs []error
	for _, p := range peers {
		actx, cancel := context.WithTimeout(ctx, historyAttempt)
		out, err := c.cfg.Requester.Request(actx, p, historyKind, body)
		cancel()
		if err == nil {
			return out, p, nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", c.Addr(p), err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, 0, fmt.Errorf("replica: read the history of %q: %w", topic, errors.Join(errs...))
}

// serveHistory answers a historyKind request.
func (c *Cluster) serveHistory(body []byte) ([]byte, error) {
	topic, rest, ok := cutString16(body)
	var group string
	if ok {
		group, rest, ok = cutString16(rest)
	}
	if !ok {
		return nil, errors.New("bad history request")
	}
	lt := c.local(topic)
	if lt == nil || lt.group != group {
		return nil, fmt.Errorf("%w: %q (group %s) has no replica on %s", ErrUnknownTopic, topic, group, c.cfg.SelfAddr)
	}
	hs, ok := c.cfg.Topics.(HistoryServer)
	if !ok {
		return nil, fmt.Errorf("node %s serves no topic history", c.cfg.SelfAddr)
	}
	return hs.TopicHistory(topic, rest)
}

// appendString16 appends s as [len u16][bytes] (the requests' strings:
// topic and group names, far below 64 KiB).
func appendString16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// cutString16 splits a [len u16][bytes] string off the front of b.
func cutString16(b []byte) (string, []byte, bool) {
	if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	return string(b[2 : 2+n]), b[2+n:], true
}
