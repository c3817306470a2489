package nsqd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// Deferred messages on disk (NSQ's storage mode, with --keep-deferred).
// go-diskqueue records
// hold a message's ID, timestamp, attempts and body, not when a deferred
// message is due, and NSQ delivers a deferred message that went to disk
// (at shutdown, or with --mem-queue-size=0 when its topic had no channel
// or a backlog) as soon as it is read back. Sluice keeps the deadlines of
// such messages beside the queue files, in <data-path>/deferred.dat
// (written at shutdown, read at start), and applies them when the message
// is read back: it is delivered at its deadline (publish or REQ time plus
// the delay), not at once. The disk queue files stay NSQ's: NSQ reading
// them delivers those messages at once, as it always did.
//
// A queue's deadlines are guarded by its owner's lock (Topic.mu,
// Channel.mu) and looked up only while it has any.

// diskDeferrals maps the IDs of deferred messages in one disk queue to
// their deadlines (ns since the epoch).
type diskDeferrals map[protocol.MessageID]int64

// deferralsFile is deferred.dat: disk queue name -> ID -> deadline.
type deferralsFile struct {
	Queues map[string]map[string]int64 `json:"queues"`
}

func (n *NSQD) deferralsPath() string { return filepath.Join(dataPathOf(n.opts), "deferred.dat") }

// loadDeferrals reads deferred.dat into n.restoredDeferrals; topics and
// channels take theirs as they are created.
func (n *NSQD) loadDeferrals() error {
	if !n.opts.KeepDeferred {
		return nil
	}
	data, err := os.ReadFile(n.deferralsPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read deferred message deadlines: %w", err)
	}
	var f deferralsFile
	if err := json.Unmarshal(data, &f); err != nil {
		// the messages themselves are in the disk queues: without their
		// deadlines they are delivered when read, as NSQ does
		n.logger.Error("ignoring unreadable deferred message deadlines", "path", n.deferralsPath(), "err", err)
		return nil
	}
	n.deferralsMu.Lock()
	defer n.deferralsMu.Unlock()
	n.restoredDeferrals = map[string]diskDeferrals{}
	for q, ids := range f.Queues {
		d := diskDeferrals{}
		for s, at := range ids {
			if id, ok := messageIDFrom(s); ok {
				d[id] = at
			}
		}
		if len(d) > 0 {
			n.restoredDeferrals[q] = d
		}
	}
	return nil
}

// takeDeferrals hands queue its restored deadlines (nil when none).
func (n *NSQD) takeDeferrals(queue string) diskDeferrals {
	n.deferralsMu.Lock()
	defer n.deferralsMu.Unlock()
	d := n.restoredDeferrals[queue]
	delete(n.restoredDeferrals, queue)
	return d
}

// keepDeferrals records a closing queue's deadlines for deferred.dat.
func (n *NSQD) keepDeferrals(queue string, d diskDeferrals) {
	if len(d) == 0 || !n.opts.KeepDeferred {
		return
	}
	n.deferralsMu.Lock()
	defer n.deferralsMu.Unlock()
	if n.closingDeferrals == nil {
		n.closingDeferrals = map[string]diskDeferrals{}
	}
	n.closingDeferrals[queue] = d
}

// persistDeferrals writes deferred.dat once every queue is closed: the
// deadlines of closing queues and those restored for queues not opened
// this time. Without any, the file is removed.
func (n *NSQD) persistDeferrals() error {
	if !n.opts.KeepDeferred {
		return nil
	}
	n.deferralsMu.Lock()
	defer n.deferralsMu.Unlock()
	f := deferralsFile{Queues: map[string]map[string]int64{}}
	for _, src := range []map[string]diskDeferrals{n.restoredDeferrals, n.closingDeferrals} {
		for q, d := range src {
			ids := make(map[string]int64, len(d))
			for id, at := range d {
				ids[string(id[:])] = at
			}
			f.Queues[q] = ids
		}
	}
	path := n.deferralsPath()
	if len(f.Queues) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	data, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode deferred message deadlines: %w", err)
	}
	if err := store.WriteFileAtomic(store.OSFS{}, path, data); err != nil {
		return fmt.Errorf("write deferred message deadlines: %w", err)
	}
	return nil
}

// noteDeferred records the deadline of a deferred message going to disk.
func (d *diskDeferrals) noteDeferred(m *Message, at int64) {
	if *d == nil {
		*d = diskDeferrals{}
	}
	(*d)[m.ID] = at
}

// deadlineOf returns and forgets the deadline of a message read back.
func (d diskDeferrals) deadlineOf(id protocol.MessageID) (int64, bool) {
	if len(d) == 0 {
		return 0, false
	}
	at, ok := d[id]
	if ok {
		delete(d, id)
	}
	return at, ok
}
