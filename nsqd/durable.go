package nsqd

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemq/sluice/protocol"
	"github.com/sluicemq/sluice/store"
)

// Durable topics. A durable topic writes every publish to its own segmented
// log (store.Log) and answers OK only once the node's committer has synced
// it; its channels are cursors over that log (store.Cursor) instead of
// queues holding copies. A channel loads messages from the log into its
// memory queue only while a consumer wants them, and records FIN and
// requeue progress in the topic's cursor journal, which the committer
// syncs every 100 ms. A message's ID is its sequence number in the log, so
// FIN finds its place in the cursor without a lookup table.
//
// Layout: <data-path>/durable/<topic>.log/ holds the segments, the journal
// (cursors.jnl) and topic.json (the topic's retention settings).

// durableDirName is the folder of durable topics inside --data-path.
const durableDirName = "durable"

// durableStaging is how many loaded messages a durable channel keeps in
// memory ahead of its consumers.
const durableStaging = 32768

// topicConfig says how a topic is created. The zero value is NSQ's topic.
type topicConfig struct {
	durable   bool
	retention store.Retention
	replicas  int // > 0: a replicated topic (durable)
}

// topicSettings is topic.json in a durable topic's folder.
type topicSettings struct {
	RetentionTime  string `json:"retention_time,omitempty"`
	RetentionBytes int64  `json:"retention_bytes,omitempty"`
	Replicas       int    `json:"replicas,omitempty"` // a replicated topic's
}

// durableTopic is the store side of a durable topic.
type durableTopic struct {
	dir       string
	log       *store.Log
	journal   *store.Journal
	retention store.Retention
	replicas  int                      // a replicated topic's replicas (topic.json); 0 otherwise
	restored  map[string]*store.Cursor // cursors read at open, taken by channels as they are created
	paused    atomic.Bool              // mirrors Topic.paused for the channels' loaders

	// topicCursor is where a channel created while the topic has none
	// starts (NSQ gives such a channel what the topic queued meanwhile);
	// guarded by Topic.mu.
	topicCursor *store.Cursor
}

func (n *NSQD) durableRoot() string { return filepath.Join(dataPathOf(n.opts), durableDirName) }

func (n *NSQD) durableTopicDir(name string) string {
	return filepath.Join(n.durableRoot(), name+".log")
}

// defaultTopicConfig is how a topic named name is created when nothing
// says otherwise: durable when its log exists or with --durable.
func (n *NSQD) defaultTopicConfig(name string) topicConfig {
	if protocol.IsEphemeral(name) {
		return topicConfig{}
	}
	if _, err := os.Stat(n.durableTopicDir(name)); err == nil {
		return topicConfig{durable: true, retention: n.nodeRetention()}
	}
	if n.opts.Durable {
		return topicConfig{durable: true, retention: n.nodeRetention()}
	}
	return topicConfig{}
}

func (n *NSQD) nodeRetention() store.Retention {
	return store.Retention{Time: n.opts.RetentionTime, Bytes: n.opts.RetentionBytes}
}

// openDurableTopic opens (creating when needed) the log and journal of
// topic name. Settings found in topic.json win over cfg for an existing
// topic; a new topic writes cfg's.
func (n *NSQD) openDurableTopic(name string, cfg topicConfig) (*durableTopic, error) {
	dir := n.durableTopicDir(name)
	fs := store.OSFS{}
	settingsPath := filepath.Join(dir, "topic.json")
	retention := cfg.retention
	replicas := cfg.replicas
	if data, err := os.ReadFile(settingsPath); err == nil {
		var ts topicSettings
		if err := json.Unmarshal(data, &ts); err != nil {
			return nil, fmt.Errorf("read durable topic settings %s: %w", settingsPath, err)
		}
		replicas = ts.Replicas
		retention.Bytes = ts.RetentionBytes
		retention.Time = 0
		if ts.RetentionTime != "" {
			d, err := time.ParseDuration(ts.RetentionTime)
			if err != nil {
				return nil, fmt.Errorf("read durable topic settings %s: retention_time: %w", settingsPath, err)
			}
			retention.Time = d
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read durable topic settings: %w", err)
	} else {
		if err := fs.MkdirAll(dir); err != nil {
			return nil, fmt.Errorf("create durable topic folder: %w", err)
		}
		if err := n.writeTopicSettings(dir, retention, replicas); err != nil {
			return nil, err
		}
		for _, parent := range []string{n.durableRoot(), dataPathOf(n.opts)} {
			if err := fs.SyncDir(parent); err != nil {
				return nil, fmt.Errorf("create durable topic folder: %w", err)
			}
		}
	}
	logger := n.logger.With("topic", name)
	l, rep, err := store.OpenLog(fs, dir, store.LogOptions{
		SegmentBytes:   n.opts.DurableSegmentBytes,
		MaxRecordBytes: int(n.opts.MaxMsgSize) + 64,
		Logger:         logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open durable log of topic %s: %w", name, err)
	}
	for _, q := range rep.Quarantined {
		n.logger.Error("durable topic lost a corrupt segment (quarantined, not deleted)", "topic", name, "detail", q)
	}
	j, cursors, err := store.OpenJournal(fs, filepath.Join(dir, "cursors.jnl"), logger)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("open cursor journal of topic %s: %w", name, err)
	}
	// never hand out a sequence number a cursor has already passed (the
	// newest segment may have been lost or quarantined)
	var maxFloor uint64
	for _, c := range cursors {
		maxFloor = max(maxFloor, c.Floor)
	}
	if err := l.SkipTo(maxFloor); err != nil {
		l.Close()
		j.Close()
		return nil, err
	}
	dt := &durableTopic{dir: dir, log: l, journal: j, retention: retention, replicas: replicas, restored: cursors}
	if tc, ok := cursors[store.TopicCursor]; ok {
		dt.topicCursor = tc
		delete(cursors, store.TopicCursor)
	} else {
		dt.topicCursor = store.NewCursor(l.Start())
	}
	n.committer.AddJournal(j)
	return dt, nil
}

func (n *NSQD) writeTopicSettings(dir string, r store.Retention, replicas int) error {
	ts := topicSettings{RetentionBytes: r.Bytes, Replicas: replicas}
	if r.Time > 0 {
		ts.RetentionTime = r.Time.String()
	}
	data, _ := json.Marshal(ts)
	if err := store.WriteFileAtomic(store.OSFS{}, filepath.Join(dir, "topic.json"), data); err != nil {
		return fmt.Errorf("write durable topic settings: %w", err)
	}
	return nil
}

// listDurableTopics returns the names of the durable topics on disk.
func (n *NSQD) listDurableTopics() ([]string, error) {
	ents, err := os.ReadDir(n.durableRoot())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list durable topics: %w", err)
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || !e.IsDir() || !protocol.IsValidTopicName(name) || protocol.IsEphemeral(name) {
			continue
		}
		names = append(names, name)
	}
	return names, nil
}

// close flushes the journal and closes the files; with deleted it removes
// the topic's folder.
func (dt *durableTopic) close(n *NSQD, deleted bool) error {
	n.committer.RemoveJournal(dt.journal)
	err := dt.journal.Close()
	if cerr := dt.log.Close(); err == nil {
		err = cerr
	}
	if deleted {
		if rerr := os.RemoveAll(dt.dir); rerr != nil {
			return fmt.Errorf("remove durable topic folder: %w", rerr)
		}
		return nil
	}
	return err
}

// errDurableWrite wraps a failed durable write so the protocol can say why.
type durableWriteError struct{ err error }

func (e *durableWriteError) Error() string { return "durable write failed: " + e.err.Error() }
func (e *durableWriteError) Unwrap() error { return e.err }

// putDurable appends ents to the topic's log and waits for the group
// commit that makes them durable.
func (t *Topic) putDurable(ents []qentry) error {
	var scratch [4]store.Entry
	sents := scratch[:0]
	if len(ents) > len(scratch) {
		sents = make([]store.Entry, 0, len(ents))
	}
	sents = storeEntries(ents, sents)
	if t.repl != nil {
		return t.repl.publish(sents)
	}
	r, err := t.nsqd.committer.Append(t.dur.log, sents)
	clear(sents)
	if err != nil {
		return &durableWriteError{err}
	}
	if err := r.Wait(t.dur.log); err != nil {
		t.nsqd.setHealth(err)
		return &durableWriteError{err}
	}
	t.nsqd.setHealth(nil)
	return nil
}

// storeEntries appends the log entries of ents to sents.
func storeEntries(ents []qentry, sents []store.Entry) []store.Entry {
	for _, e := range ents {
		if e.m != nil {
			m := e.m
			se := store.Entry{TS: m.Timestamp, Body: m.Body}
			if m.deferBy > 0 {
				se.DeliverAt = m.Timestamp + int64(m.deferBy)
			}
			sents = append(sents, se)
			continue
		}
		sents = append(sents, store.Entry{TS: e.b.ts, Packed: e.b.data[e.off:], Count: int(e.end - e.idx)})
	}
	return sents
}

// retain removes finished segments and compacts the journal when it has
// grown. Called about once a second.
func (t *Topic) retain(now time.Time) {
	dt := t.dur
	t.mu.RLock()
	chans := t.chanList
	floor := dt.topicCursor.Floor
	t.mu.RUnlock()
	if len(chans) > 0 {
		floor = ^uint64(0)
		for _, ch := range chans {
			ch.mu.Lock()
			if ch.dlog != nil {
				floor = min(floor, ch.dlog.cursor.Floor)
			}
			ch.mu.Unlock()
		}
	}
	if _, err := dt.log.Retain(floor, dt.retention, now); err != nil {
		t.logger.Error("failed to remove finished segment", "err", err)
	}
	if dt.journal.NeedsCompaction() {
		// the channel list and the topic's cursor are read before the
		// journal is locked (lock order: Topic.mu before the journal's); a
		// channel created or deleted meanwhile is recorded after the
		// compaction. Channel cursors are read under the journal's lock,
		// which is safe: no channel lock is held while journaling.
		gen := dt.journal.StateGen()
		t.mu.RLock()
		chans := t.chanList
		topicCursor := dt.topicCursor.Clone()
		t.mu.RUnlock()
		err := dt.journal.Compact(gen, func() map[string]*store.Cursor {
			out := map[string]*store.Cursor{store.TopicCursor: topicCursor}
			for _, ch := range chans {
				ch.mu.Lock()
				if ch.dlog != nil && ch.dlog.persist && !ch.exiting {
					cur := ch.dlog.cursor.Clone()
					// the journal records deliveries; the cursor in memory
					// does not (the in-flight list has them)
					ch.inFlight.each(func(m *Message) {
						if seq, ok := seqOf(m.ID); ok {
							cur.Delivered(seq, m.Attempts)
						}
					})
					out[ch.name] = cur
				}
				ch.mu.Unlock()
			}
			return out
		})
		if err != nil && !errors.Is(err, store.ErrCompactionRaced) {
			t.logger.Error("failed to compact cursor journal", "err", err)
		}
	}
}

// channelStart is where a new channel of a durable topic begins.
type channelStart struct {
	kind string // "", "earliest", "latest", "time"
	at   time.Time

	policy *channelPolicy // a new channel's own policy (nil: none of its own)

	// copying: this replica is still copying the messages a restore
	// skipped (replicated_history.go), the lowest of them uncopied;
	// earliest starts there, not at the oldest message the log holds yet
	copying  bool
	uncopied uint64
}

// parseChannelStart parses the start parameter of /channel/create.
func parseChannelStart(s string) (channelStart, error) {
	switch s {
	case "":
		return channelStart{}, nil
	case "earliest", "latest":
		return channelStart{kind: s}, nil
	}
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return channelStart{}, fmt.Errorf("start must be earliest, latest or an RFC 3339 time, got %q", s)
	}
	return channelStart{kind: "time", at: at}, nil
}

// channelLog is a durable channel's position in its topic's log.
type channelLog struct {
	dt      *durableTopic
	persist bool // false for ephemeral channels: their progress is not journaled

	readMu sync.Mutex // guards reader; taken before Channel.mu
	reader *store.Reader

	cursor *store.Cursor // guarded by Channel.mu
}

// attachDurable makes c a cursor over dt's log, restored from the journal
// or starting where start says. Called with the topic lock held, before
// the channel is visible; hadChannels says whether the topic had any.
func (c *Channel) attachDurable(dt *durableTopic, start channelStart, hadChannels bool) error {
	dl := &channelLog{dt: dt, persist: !c.ephemeral}
	if cur, ok := dt.restored[c.name]; ok && dl.persist {
		delete(dt.restored, c.name)
		dl.cursor = cur
	} else {
		var floor uint64
		switch start.kind {
		case "earliest":
			floor = dt.log.Start()
			if start.copying {
				floor = min(floor, start.uncopied)
			}
		case "latest":
			floor = dt.log.End()
		case "time":
			seq, err := dt.log.SeqAtTime(start.at.UnixNano())
			if err != nil {
				return fmt.Errorf("find start time in log: %w", err)
			}
			floor = seq
			if start.copying && seq <= dt.log.Start() {
				// older than what the log holds yet: the start may be
				// among the messages still to copy (earlier ones are
				// delivered too, rather than any lost)
				floor = min(floor, start.uncopied)
			}
		default:
			floor = dt.log.End()
			if !hadChannels {
				floor = dt.topicCursor.Floor
			}
		}
		dl.cursor = store.NewCursor(floor)
		if dl.persist {
			if err := dt.journal.SetState(c.name, dl.cursor.Clone(), true); err != nil {
				return fmt.Errorf("record new channel: %w", err)
			}
		}
	}
	dl.reader = dt.log.NewReader(dl.cursor.Floor)
	c.dlog = dl
	c.backend = nil
	c.refillLimit = durableStaging
	c.roomCh = make(chan struct{}, 1)
	c.wg.Add(1)
	go c.loadLoop()
	return nil
}

// loadLoop moves messages from the log into memory while a consumer wants
// them and memory has room.
func (c *Channel) loadLoop() {
	defer c.wg.Done()
	dl := c.dlog
	for {
		c.mu.Lock()
		want := c.wantRefillLocked() && !dl.dt.paused.Load()
		c.mu.Unlock()
		if !want {
			select {
			case <-c.roomCh:
				continue
			case <-c.exitCh:
				return
			}
		}
		changed := dl.dt.log.Changed()
		n, err := c.loadFromLog()
		if err != nil {
			c.log().Error("failed to read durable log", "err", err)
			select {
			case <-time.After(time.Second):
			case <-c.exitCh:
				return
			}
			continue
		}
		if n > 0 {
			continue
		}
		select {
		case <-changed:
		case <-c.roomCh:
		case <-c.exitCh:
			return
		}
	}
}

// loadFromLog loads the next batch of unfinished messages; it returns how
// many records it read (0 at the end of the log).
func (c *Channel) loadFromLog() (int, error) {
	n, dead, drops, eff, err := c.readLogBatch()
	// dead letters are published, and drops finished, outside the read
	// lock: a dead-letter topic's commit is not waited for while holding it
	c.dropped(drops)
	c.disposeDead(dead, eff)
	return n, err
}

// readLogBatch is loadFromLog's read under the channel's read lock; it
// returns what the channel's policies take out of the batch.
func (c *Channel) readLogBatch() (n int, dead []deadItem, drops []*Message, eff *effectivePolicy, err error) {
	dl := c.dlog
	dl.readMu.Lock()
	defer dl.readMu.Unlock()
	c.mu.Lock()
	limit := c.refillLimit - c.mem.len()
	if next := dl.cursor.NextUnfinished(dl.reader.Seq()); next != dl.reader.Seq() {
		dl.reader.Seek(next)
	}
	c.mu.Unlock()
	if limit <= 0 {
		return 0, nil, nil, nil, nil
	}
	// one slice per batch rather than one kept per channel: an idle
	// channel holds nothing
	n = min(limit, 4096)
	if avail := dl.dt.log.End() - dl.reader.Seq(); avail < uint64(n) {
		n = int(avail)
	}
	if n <= 0 {
		return 0, nil, nil, nil, nil
	}
	recs, err := dl.reader.Read(make([]store.Record, 0, n), n)
	if err != nil || len(recs) == 0 {
		return 0, nil, nil, nil, err
	}
	slab := make([]Message, len(recs))
	now := time.Now().UnixNano()
	eff = c.eff.Load()
	c.mu.Lock()
	pushed := 0
	for i := range recs {
		rec := &recs[i]
		if dl.cursor.IsDone(rec.Seq) {
			continue
		}
		m := &slab[i]
		*m = Message{ID: protocol.NewMessageID(rec.Seq), Body: rec.Body, Timestamp: rec.TS, heapIndex: -1}
		until := rec.DeliverAt
		if h, ok := dl.cursor.Held[rec.Seq]; ok {
			m.Attempts = h.Attempts
			until = max(until, h.Until)
		}
		if c.takeDropLocked() {
			drops = append(drops, m)
			continue
		}
		if eff != nil && eff.expired(m, now) {
			dead = append(dead, deadItem{m, reasonTTL})
			continue
		}
		if until > now {
			c.deferLocked(m, until)
			continue
		}
		c.mem.push(m)
		pushed++
	}
	c.wakeWaitersLocked(pushed)
	c.mu.Unlock()
	c.messageCount.Add(uint64(pushed))
	return len(recs), dead, drops, eff, nil
}

// seqOf returns the log sequence number a durable message's ID encodes.
func seqOf(id protocol.MessageID) (uint64, bool) {
	var raw [8]byte
	if _, err := hex.Decode(raw[:], id[:]); err != nil {
		return 0, false
	}
	return uint64(raw[0])<<56 | uint64(raw[1])<<48 | uint64(raw[2])<<40 | uint64(raw[3])<<32 |
		uint64(raw[4])<<24 | uint64(raw[5])<<16 | uint64(raw[6])<<8 | uint64(raw[7]), true
}

// finishedLocked records that m is finished (FIN, or consumed by sampling).
// It returns the sequence number to journal after unlocking.
func (dl *channelLog) finishedLocked(m *Message) (uint64, bool) {
	seq, ok := seqOf(m.ID)
	if !ok || !dl.cursor.Finish(seq) {
		return 0, false
	}
	return seq, dl.persist
}

// requeuedLocked records m's attempts and deadline as it goes back to the
// queue. The returned note is journaled after unlocking.
func (dl *channelLog) requeuedLocked(m *Message, until int64) (requeueNote, bool) {
	seq, ok := seqOf(m.ID)
	if !ok {
		return requeueNote{}, false
	}
	h := store.Held{Attempts: m.Attempts, Until: until}
	dl.cursor.Requeue(seq, h)
	return requeueNote{seq, h}, dl.persist
}

type requeueNote struct {
	seq  uint64
	held store.Held
}

func (c *Channel) journalRequeues(notes []requeueNote) {
	for _, n := range notes {
		c.dlog.dt.journal.Requeue(c.name, n.seq, n.held)
	}
}

// depthDurable is what the channel has not yet delivered: loaded messages
// plus those still in the log.
func (c *Channel) durableBacklog() int64 {
	end := c.dlog.dt.log.End()
	c.dlog.readMu.Lock()
	seq := c.dlog.reader.Seq()
	c.dlog.readMu.Unlock()
	if end > seq {
		return int64(end - seq)
	}
	return 0
}

// emptyDurable finishes everything the channel has (/channel/empty).
func (c *Channel) emptyDurable() error {
	dl := c.dlog
	dl.readMu.Lock()
	defer dl.readMu.Unlock()
	c.mu.Lock()
	end := dl.dt.log.End()
	dl.cursor.Reset(end)
	dl.reader.Seek(end)
	c.mem = msgQueue{}
	c.inFlight = newInFlight()
	c.deferred = nil
	for _, cl := range c.clients {
		cl.inFlightCount.Store(0)
	}
	c.kickAllLocked()
	snap := dl.cursor.Clone()
	c.mu.Unlock()
	if dl.persist {
		return dl.dt.journal.SetState(c.name, snap, true)
	}
	return nil
}

// takeCursor replaces the channel's progress by the replicated topic
// leader's: what it holds in memory goes (it is reloaded from the log when
// this node leads), and the journal keeps the new cursor.
func (c *Channel) takeCursor(cur *store.Cursor) {
	dl := c.dlog
	if dl == nil {
		return
	}
	dl.readMu.Lock()
	defer dl.readMu.Unlock()
	c.mu.Lock()
	dl.cursor = cur
	dl.reader.Seek(cur.Floor)
	c.mem = msgQueue{}
	c.inFlight = newInFlight()
	c.deferred = nil
	for _, cl := range c.clients {
		cl.inFlightCount.Store(0)
	}
	snap := cur.Clone()
	c.mu.Unlock()
	if dl.persist {
		if err := dl.dt.journal.SetState(c.name, snap, false); err != nil {
			c.log().Error("journal a replicated cursor", "err", err)
		}
	}
}

// closeDurable records the attempts and deadlines of what the channel holds
// in memory, so a restart redelivers them with their history.
func (c *Channel) closeDurable(deleted bool) error {
	dl := c.dlog
	if deleted {
		if dl.persist {
			return dl.dt.journal.Delete(c.name)
		}
		return nil
	}
	if !dl.persist {
		return nil
	}
	c.mu.Lock()
	var notes []requeueNote
	for _, m := range c.inFlight.drain() {
		if note, ok := dl.requeuedLocked(m, 0); ok {
			notes = append(notes, note)
		}
	}
	for _, m := range c.deferred.drain() {
		if note, ok := dl.requeuedLocked(m, m.deadline); ok {
			notes = append(notes, note)
		}
	}
	for _, m := range c.mem.drain() {
		if m.Attempts > 0 {
			if note, ok := dl.requeuedLocked(m, 0); ok {
				notes = append(notes, note)
			}
		}
	}
	c.mu.Unlock()
	c.journalRequeues(notes)
	return nil
}

// hasDurableTopic reports whether any topic is durable.
func (n *NSQD) hasDurableTopic() bool {
	for _, t := range n.topicList() {
		if t.dur != nil {
			return true
		}
	}
	return false
}
