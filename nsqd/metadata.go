package nsqd

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/sluicemq/sluice/protocol"
)

// metadata is the nsqd.dat document (§6.2).
type metadata struct {
	Topics  []topicMetadata `json:"topics"`
	Version string          `json:"version"`
}

type topicMetadata struct {
	Name     string            `json:"name"`
	Paused   bool              `json:"paused"`
	Channels []channelMetadata `json:"channels"`
	// Sluice's keys, written only for durable topics (NSQ ignores them).
	Durable        bool   `json:"durable,omitempty"`
	RetentionTime  string `json:"retention_time,omitempty"`
	RetentionBytes int64  `json:"retention_bytes,omitempty"`
	// Message policies (Sluice), written only when set.
	TTL      string `json:"ttl,omitempty"`
	MaxDepth int64  `json:"max_depth,omitempty"`
	Overflow string `json:"overflow,omitempty"`
}

type channelMetadata struct {
	Name   string `json:"name"`
	Paused bool   `json:"paused"`
	// Message policies (Sluice), written only when the channel sets them
	// itself (max_attempts absent: the node default).
	MaxAttempts     *int   `json:"max_attempts,omitempty"`
	DeadLetterTopic string `json:"dead_letter_topic,omitempty"`
	TTL             string `json:"ttl,omitempty"`
}

func (tm topicMetadata) policy() topicPolicy {
	p := topicPolicy{maxDepth: tm.MaxDepth, overflow: tm.Overflow}
	if tm.TTL != "" {
		p.ttl, _ = time.ParseDuration(tm.TTL)
	}
	if p.maxDepth < 0 {
		p.maxDepth = 0
	}
	if p.overflow != overflowDropOldest {
		p.overflow = ""
	}
	return p
}

func (cm channelMetadata) policy() channelPolicy {
	p := defaultChannelPolicy()
	if cm.MaxAttempts != nil && *cm.MaxAttempts >= 0 && *cm.MaxAttempts <= maxAttemptsLimit {
		p.maxAttempts = *cm.MaxAttempts
	}
	if protocol.IsValidTopicName(cm.DeadLetterTopic) {
		p.deadLetterTopic = cm.DeadLetterTopic
	}
	if cm.TTL != "" {
		if d, err := time.ParseDuration(cm.TTL); err == nil && d > 0 {
			p.ttl = d
		}
	}
	return p
}

// restoreChannel recreates a channel listed in nsqd.dat with its policy.
// A channel the node default --max-attempts cannot apply to (its default
// dead-letter topic name is not valid) comes back without max attempts
// rather than stopping the start.
func (n *NSQD) restoreChannel(t *Topic, name string, p channelPolicy) (*Channel, error) {
	if ch, ok := t.existingChannel(name); ok { // a durable topic's, opened from its journal
		if err := ch.applyPolicy(p, t.topicPolicyOf()); err != nil {
			n.logger.Error("channel policy cannot apply; max_attempts left unlimited", "topic", t.name, "channel", name, "err", err)
			p.maxAttempts = 0
			if err := ch.applyPolicy(p, t.topicPolicyOf()); err != nil {
				return nil, err
			}
		}
		return ch, nil
	}
	ch, _, err := t.getChannelFrom(name, channelStart{policy: &p})
	var pr *policyRefusal
	if errors.As(err, &pr) {
		n.logger.Error("channel policy cannot apply; max_attempts left unlimited", "topic", t.name, "channel", name, "err", pr.err)
		p.maxAttempts = 0
		ch, _, err = t.getChannelFrom(name, channelStart{policy: &p})
	}
	return ch, err
}

func (n *NSQD) metadataPath() string { return filepath.Join(dataPathOf(n.opts), "nsqd.dat") }

// loadMetadata recreates the topics and channels of nsqd.dat with their
// paused state; their disk queues reopen with whatever they hold.
func (n *NSQD) loadMetadata() error {
	data, err := os.ReadFile(n.metadataPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read metadata: %w", err)
	}
	var md metadata
	if err := json.Unmarshal(data, &md); err != nil {
		return fmt.Errorf("parse metadata %s: %w", n.metadataPath(), err)
	}
	for _, tm := range md.Topics {
		if !protocol.IsValidTopicName(tm.Name) || protocol.IsEphemeral(tm.Name) {
			n.logger.Warn("skipping topic with invalid name in metadata", "topic", tm.Name)
			continue
		}
		n.mu.Lock()
		t, ok := n.topics[tm.Name]
		if !ok {
			cfg := topicConfig{durable: tm.Durable, retention: n.nodeRetention()}
			if !tm.Durable {
				cfg = n.defaultTopicConfigForRestore(tm.Name)
			}
			var err error
			if t, err = newTopic(tm.Name, n, cfg); err != nil {
				n.mu.Unlock()
				return fmt.Errorf("restore topic %s: %w", tm.Name, err)
			}
			t.mu.Lock()
			t.held = true
			t.mu.Unlock()
			n.topics[tm.Name] = t
		}
		n.mu.Unlock()
		if tm.Paused {
			t.setPaused(true)
		}
		if tp := tm.policy(); tp.isSet() || tp.overflow != "" {
			t.setPolicy(tp)
		}
		for _, cm := range tm.Channels {
			if !protocol.IsValidChannelName(cm.Name) || protocol.IsEphemeral(cm.Name) {
				n.logger.Warn("skipping channel with invalid name in metadata", "topic", tm.Name, "channel", cm.Name)
				continue
			}
			ch, err := n.restoreChannel(t, cm.Name, cm.policy())
			if err != nil {
				return fmt.Errorf("restore channel %s:%s: %w", tm.Name, cm.Name, err)
			}
			if cm.Paused {
				ch.setPaused(true)
			}
		}
		t.release()
	}
	return nil
}

// snapshotMetadata is the nsqd.dat document as structures (appendMetadata
// writes the same document without building them).
func (n *NSQD) snapshotMetadata() metadata {
	md := metadata{Version: Version}
	for _, t := range n.topicList() {
		if t.ephemeral {
			continue
		}
		tm := topicMetadata{Name: t.name, Paused: t.isPaused()}
		if p := t.policy.Load(); p != nil {
			tm.MaxDepth, tm.Overflow = p.maxDepth, p.overflow
			if p.ttl > 0 {
				tm.TTL = p.ttl.String()
			}
		}
		if t.dur != nil {
			tm.Durable = true
			tm.RetentionBytes = t.dur.retention.Bytes
			if t.dur.retention.Time > 0 {
				tm.RetentionTime = t.dur.retention.Time.String()
			}
		}
		for _, ch := range t.channelList() {
			if ch.ephemeral {
				continue
			}
			cm := channelMetadata{Name: ch.name, Paused: ch.isPaused()}
			if p := ch.policy.Load(); p != nil {
				if p.maxAttempts >= 0 {
					ma := p.maxAttempts
					cm.MaxAttempts = &ma
				}
				cm.DeadLetterTopic = p.deadLetterTopic
				if p.ttl > 0 {
					cm.TTL = p.ttl.String()
				}
			}
			tm.Channels = append(tm.Channels, cm)
		}
		md.Topics = append(md.Topics, tm)
	}
	return md
}

// appendMetadata appends the nsqd.dat document to b: the bytes of
// json.Marshal(n.snapshotMetadata()), written from the topics and
// channels directly (with 100,000 channels, building the structures and
// encoding them by reflection took most of a rewrite's CPU).
func (n *NSQD) appendMetadata(b []byte) []byte {
	b = append(b, `{"topics":`...)
	first := true
	for _, t := range n.topicList() {
		if t.ephemeral {
			continue
		}
		if first {
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		first = false
		b = append(b, `{"name":`...)
		b = appendJSONString(b, t.name)
		b = append(b, `,"paused":`...)
		b = strconv.AppendBool(b, t.isPaused())
		b = append(b, `,"channels":`...)
		firstCh := true
		for _, ch := range t.channelList() {
			if ch.ephemeral {
				continue
			}
			if firstCh {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			firstCh = false
			b = append(b, `{"name":`...)
			b = appendJSONString(b, ch.name)
			b = append(b, `,"paused":`...)
			b = strconv.AppendBool(b, ch.isPaused())
			if p := ch.policy.Load(); p != nil {
				if p.maxAttempts >= 0 {
					b = append(b, `,"max_attempts":`...)
					b = strconv.AppendInt(b, int64(p.maxAttempts), 10)
				}
				if p.deadLetterTopic != "" {
					b = append(b, `,"dead_letter_topic":`...)
					b = appendJSONString(b, p.deadLetterTopic)
				}
				if p.ttl > 0 {
					b = append(b, `,"ttl":`...)
					b = appendJSONString(b, p.ttl.String())
				}
			}
			b = append(b, '}')
		}
		if firstCh {
			b = append(b, "null"...)
		} else {
			b = append(b, ']')
		}
		if t.dur != nil {
			b = append(b, `,"durable":true`...)
			if t.dur.retention.Time > 0 {
				b = append(b, `,"retention_time":`...)
				b = appendJSONString(b, t.dur.retention.Time.String())
			}
			if t.dur.retention.Bytes != 0 {
				b = append(b, `,"retention_bytes":`...)
				b = strconv.AppendInt(b, t.dur.retention.Bytes, 10)
			}
		}
		if p := t.policy.Load(); p != nil {
			if p.ttl > 0 {
				b = append(b, `,"ttl":`...)
				b = appendJSONString(b, p.ttl.String())
			}
			if p.maxDepth != 0 {
				b = append(b, `,"max_depth":`...)
				b = strconv.AppendInt(b, p.maxDepth, 10)
			}
			if p.overflow != "" {
				b = append(b, `,"overflow":`...)
				b = appendJSONString(b, p.overflow)
			}
		}
		b = append(b, '}')
	}
	if first {
		b = append(b, "null"...)
	} else {
		b = append(b, ']')
	}
	b = append(b, `,"version":`...)
	b = appendJSONString(b, Version)
	return append(b, '}')
}

// metaWrites coalesces nsqd.dat writes: a caller waits for a write that
// started after its call, and callers arriving during a write share the
// next one (with 100,000 topics and channels created one by one, each
// creation rewriting and syncing the whole file made creation quadratic).
type metaWrites struct {
	mu      sync.Mutex
	cond    *sync.Cond
	req     uint64 // requests so far
	written uint64 // requests covered by the last finished write
	writing bool
	err     error // of the last finished write

	wake    chan struct{} // asks the background writer for a write
	stop    chan struct{}
	done    chan struct{}
	running bool // the background writer was started (by Start)

	lastSize int // of the last nsqd.dat encoded (guarded by NSQD.persistMu)
}

func (m *metaWrites) init() {
	m.cond = sync.NewCond(&m.mu)
	m.wake = make(chan struct{}, 1)
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
}

// persistMetadata writes nsqd.dat (see metaWrites) and returns the result
// of the write that covered this call.
func (n *NSQD) persistMetadata() error {
	m := &n.meta
	m.mu.Lock()
	m.req++
	mine := m.req
	for m.written < mine {
		if m.writing {
			m.cond.Wait()
			continue
		}
		m.writing = true
		target := m.req
		m.mu.Unlock()
		err := n.writeMetadata()
		m.mu.Lock()
		m.writing = false
		m.written, m.err = target, err
		m.cond.Broadcast()
	}
	err := m.err
	m.mu.Unlock()
	return err
}

// metadataWriter writes nsqd.dat in the background after topology changes
// (as NSQ does: a create is answered before nsqd.dat is rewritten), at
// most every 100 ms, or, when a write takes long (100,000 channels make a
// file of several MB), after a pause of four times the last write:
// creating topics and channels one after the other then spends at most a
// fifth of the time rewriting the file instead of most of it. It runs from Start
// until exit has written the file a last time.
func (n *NSQD) metadataWriter() {
	m := &n.meta
	defer close(m.done)
	for {
		select {
		case <-m.wake:
		case <-m.stop:
			return
		}
		start := time.Now()
		if err := n.persistMetadata(); err != nil {
			n.logger.Error("failed to persist metadata", "err", err)
		}
		select {
		case <-time.After(metadataWritePause(time.Since(start))):
		case <-m.stop:
			return
		}
	}
}

// metadataWritePause is how long the background writer waits after a
// write of nsqd.dat that took took.
func metadataWritePause(took time.Duration) time.Duration {
	return max(100*time.Millisecond, 4*took)
}

// writeMetadata writes nsqd.dat atomically: temp file, fsync, rename.
func (n *NSQD) writeMetadata() error {
	n.persistMu.Lock()
	defer n.persistMu.Unlock()
	data := n.appendMetadata(make([]byte, 0, n.meta.lastSize+4<<10))
	n.meta.lastSize = len(data)
	path := n.metadataPath()
	tmp := fmt.Sprintf("%s.%d.tmp", path, rand.Int64())
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write metadata: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sync metadata: %w", err)
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename metadata: %w", err)
	}
	return nil
}

// persistMetadataOrLog has nsqd.dat rewritten soon after a topology change
// (the background writer logs errors: the change itself succeeded).
func (n *NSQD) persistMetadataOrLog() {
	select {
	case n.meta.wake <- struct{}{}:
	default:
	}
}

// defaultTopicConfigForRestore is how a topic listed in nsqd.dat without
// the durable key is recreated: as NSQ's topic (its disk queue files are
// there), unless a durable log exists for it.
func (n *NSQD) defaultTopicConfigForRestore(name string) topicConfig {
	if _, err := os.Stat(n.durableTopicDir(name)); err == nil {
		return topicConfig{durable: true, retention: n.nodeRetention()}
	}
	return topicConfig{}
}

// loadDurableTopics opens every durable topic found on disk, with the
// channels its cursor journal lists. It runs before nsqd.dat is read, so a
// topic created just before a crash (before nsqd.dat was rewritten) comes
// back too.
func (n *NSQD) loadDurableTopics() error {
	names, err := n.listDurableTopics()
	if err != nil {
		return err
	}
	for _, name := range names {
		t, err := newTopic(name, n, topicConfig{durable: true, retention: n.nodeRetention()})
		if err != nil {
			return fmt.Errorf("restore durable topic %s: %w", name, err)
		}
		n.mu.Lock()
		n.topics[name] = t
		n.mu.Unlock()
		restored := make([]string, 0, len(t.dur.restored))
		for ch := range t.dur.restored {
			restored = append(restored, ch)
		}
		for _, ch := range restored {
			if !protocol.IsValidChannelName(ch) || protocol.IsEphemeral(ch) {
				continue
			}
			if _, err := n.restoreChannel(t, ch, defaultChannelPolicy()); err != nil {
				return fmt.Errorf("restore channel %s:%s: %w", name, ch, err)
			}
		}
		n.logger.Info("opened durable topic", "topic", name, "channels", len(restored), "messages", t.dur.log.End()-t.dur.log.Start())
	}
	return nil
}
