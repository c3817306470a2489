package nsqd

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

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
}

type channelMetadata struct {
	Name   string `json:"name"`
	Paused bool   `json:"paused"`
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
			t = newTopic(tm.Name, n)
			t.mu.Lock()
			t.held = true
			t.mu.Unlock()
			n.topics[tm.Name] = t
		}
		n.mu.Unlock()
		if tm.Paused {
			t.setPaused(true)
		}
		for _, cm := range tm.Channels {
			if !protocol.IsValidChannelName(cm.Name) || protocol.IsEphemeral(cm.Name) {
				n.logger.Warn("skipping channel with invalid name in metadata", "topic", tm.Name, "channel", cm.Name)
				continue
			}
			ch, _, err := t.getChannel(cm.Name)
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

func (n *NSQD) snapshotMetadata() metadata {
	md := metadata{Version: Version}
	for _, t := range n.topicList() {
		if t.ephemeral {
			continue
		}
		tm := topicMetadata{Name: t.name, Paused: t.isPaused()}
		for _, ch := range t.channelList() {
			if ch.ephemeral {
				continue
			}
			tm.Channels = append(tm.Channels, channelMetadata{Name: ch.name, Paused: ch.isPaused()})
		}
		md.Topics = append(md.Topics, tm)
	}
	return md
}

// persistMetadata writes nsqd.dat atomically: temp file, fsync, rename.
func (n *NSQD) persistMetadata() error {
	n.persistMu.Lock()
	defer n.persistMu.Unlock()
	data, err := json.Marshal(n.snapshotMetadata())
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
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

// persistMetadataOrLog writes nsqd.dat after a topology change; it is
// called where the change itself already succeeded, so errors are logged
// rather than returned.
func (n *NSQD) persistMetadataOrLog() {
	if err := n.persistMetadata(); err != nil {
		n.logger.Error("failed to persist metadata", "err", err)
	}
}
