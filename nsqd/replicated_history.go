package nsqd

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluicemq/sluice/store"
)

// A replica restored from a snapshot (it replaced a lost one, or was gone
// while the others compacted their Raft logs) skips its topic log to the
// snapshot's end. Below it are messages its channels have not finished
// (a snapshot does not wait for consumers) and the retained history that
// a channel created with start=earliest or start=<time> replays. So the
// replica then copies them from the others, the leader first, in chunks
// from the top down, each written as a sealed segment below what it holds
// (store.Log.Backfill); while unfinished ones are missing, its channels
// do not deliver, even if it leads. The ranges still to copy are kept in
// history.json in the topic's folder, written before the skip, so a
// restart goes on with the copy (and keeps the gate). A replica whose
// copy is unfinished serves no history itself.

// historyChunkBytes bounds one answer of a history read; historyChunkMsgs
// the messages it looks at.
const (
	historyChunkBytes = 1 << 20
	historyChunkMsgs  = 16384
)

// historyRetry is how long the copy waits after a failed read, doubled
// after each failure in a row up to historyRetryMax.
const (
	historyRetry    = 2 * time.Second
	historyRetryMax = time.Minute
)

// historyRange is [From, To) of the topic's sequence numbers, skipped by a
// restore and still to be copied.
type historyRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Unfinished: the range holds messages some channel has not finished
	// (the snapshot was taken with a backlog); until it is copied this
	// replica does not deliver.
	Unfinished bool `json:"unfinished,omitempty"`
}

type historyFile struct {
	Ranges []historyRange `json:"ranges"`
}

func historyPath(dir string) string { return filepath.Join(dir, "history.json") }

// historyRequest asks for the held messages of [From, To): the answer
// holds those of [Low, To), Low chosen by the server to keep it small.
type historyRequest struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// loadHistory reads the ranges left to copy.
func (r *replTopic) loadHistory() error {
	b, err := os.ReadFile(historyPath(r.t.dur.dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", historyPath(r.t.dur.dir), err)
	}
	var hf historyFile
	if err := json.Unmarshal(b, &hf); err != nil {
		return fmt.Errorf("read %s: %w", historyPath(r.t.dur.dir), err)
	}
	r.histMu.Lock()
	r.history = hf.Ranges
	r.setGatesLocked()
	r.histMu.Unlock()
	return nil
}

// setGatesLocked derives historyDue and gated from the ranges left
// (histMu held).
func (r *replTopic) setGatesLocked() {
	r.historyDue.Store(len(r.history) > 0)
	gated := false
	for _, h := range r.history {
		gated = gated || h.Unfinished
	}
	r.gated.Store(gated)
}

// saveHistoryLocked writes the ranges left to copy (histMu held).
func (r *replTopic) saveHistoryLocked() error {
	if len(r.history) == 0 {
		err := os.Remove(historyPath(r.t.dur.dir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", historyPath(r.t.dur.dir), err)
		}
		return nil
	}
	data, _ := json.Marshal(historyFile{Ranges: r.history})
	if err := store.WriteFileAtomic(store.OSFS{}, historyPath(r.t.dur.dir), data); err != nil {
		return fmt.Errorf("write %s: %w", historyPath(r.t.dur.dir), err)
	}
	return nil
}

// noteSkipped records that the log skips [from, to), before it does; with
// unfinished, the channels stop delivering until the range is copied.
func (r *replTopic) noteSkipped(from, to uint64, unfinished bool) error {
	r.histMu.Lock()
	defer r.histMu.Unlock()
	r.history = append(r.history, historyRange{From: from, To: to, Unfinished: unfinished})
	err := r.saveHistoryLocked()
	r.setGatesLocked()
	return err
}

// uncopied returns the lowest sequence number still to copy; ok is false
// when nothing is left to copy.
func (r *replTopic) uncopied() (low uint64, ok bool) {
	r.histMu.Lock()
	defer r.histMu.Unlock()
	for i, h := range r.history {
		if i == 0 || h.From < low {
			low = h.From
		}
	}
	return low, len(r.history) > 0
}

// gateForFloors marks unfinished every range left to copy that a channel
// has not finished (its floor is below the range's end: a channel created
// with start=earliest or a time, or a leader's cursor taken), so that the
// channels do not deliver until the range is here, then read it. A range
// skipped with no backlog otherwise stays history, copied without a gate.
func (r *replTopic) gateForFloors() {
	if !r.historyDue.Load() {
		return
	}
	low := uint64(math.MaxUint64)
	for _, ch := range r.t.channelList() {
		if ch.ephemeral || ch.dlog == nil {
			continue
		}
		ch.mu.Lock()
		low = min(low, ch.dlog.cursor.Floor)
		ch.mu.Unlock()
	}
	r.histMu.Lock()
	marked := false
	for i := range r.history {
		if h := &r.history[i]; !h.Unfinished && low < h.To {
			h.Unfinished, marked = true, true
		}
	}
	var err error
	if marked {
		err = r.saveHistoryLocked()
		r.setGatesLocked()
	}
	r.histMu.Unlock()
	if !marked {
		return
	}
	if err != nil {
		r.t.logger.Error("record that a channel waits for messages still to copy", "err", err)
	}
	r.t.logger.Info("a channel starts below the messages this replica has not copied yet: it delivers once they are here", "floor", low)
	r.updateStandby()
	r.handOffIfGated()
}

// unfinishedBelowEnd reports whether a channel of the snapshot (or the
// topic cursor of a topic without channels) has not finished every message
// below its end.
func (ts *topicSnapshot) unfinishedBelowEnd() (bool, error) {
	recs := make([][]byte, 0, len(ts.Cursors)+1)
	for _, rec := range ts.Cursors {
		recs = append(recs, rec)
	}
	if ts.Topic != nil {
		recs = append(recs, ts.Topic)
	}
	for _, rec := range recs {
		_, cur, err := store.DecodeCursorState(rec)
		if err != nil {
			return false, err
		}
		if cur.Floor < ts.End {
			return true, nil
		}
	}
	return false, nil
}

// wakeHistory starts the copy when there is one to do.
func (r *replTopic) wakeHistory() {
	select {
	case r.historyWake <- struct{}{}:
	default:
	}
}

// historyLoop copies the skipped ranges while the topic is open.
func (r *replTopic) historyLoop() {
	ctx, cancel := r.stopContext()
	defer cancel()
	for {
		select {
		case <-r.stop:
			return
		case <-r.historyWake:
		}
		wait := historyRetry
		for r.historyDue.Load() {
			if err := r.copyHistory(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.t.logger.Warn("copy the messages a restore skipped from the other replicas; trying again", "err", err, "in", wait)
				select {
				case <-r.stop:
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, historyRetryMax)
			}
		}
	}
}

// copyHistory copies the newest range left, down to its start or to the
// oldest message the replica it reads holds.
func (r *replTopic) copyHistory(ctx context.Context) error {
	r.histMu.Lock()
	if len(r.history) == 0 {
		r.histMu.Unlock()
		return nil
	}
	hr := r.history[len(r.history)-1]
	r.histMu.Unlock()
	cl := r.t.nsqd.cluster.Load()
	if cl == nil {
		return errors.New("replication is not running")
	}
	rate := r.t.nsqd.opts.ReplicaHistoryRate
	var owed time.Duration // --replica-history-rate's pause before the next read
	fetch := func(ctx context.Context, req []byte) ([]byte, error) {
		for owed > 0 {
			// (in steps: a leader gated meanwhile asks again to hand
			// its leadership on, raft having given a transfer up)
			step := min(owed, handOffEvery)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(step):
			}
			owed -= step
			r.handOffIfGated()
		}
		out, peer, err := cl.FetchHistory(ctx, r.t.name, req)
		if err != nil {
			return nil, err
		}
		r.historyPeer.Store(peer)
		r.handOffIfGated()
		if rate > 0 {
			owed = time.Duration(float64(len(out)) / float64(rate) * float64(time.Second))
		}
		return out, nil
	}
	copied, low, err := backfillRange(ctx, r.t.dur.log, hr, fetch)
	if err != nil {
		return fmt.Errorf("history of %s: %w", r.t.name, err)
	}
	r.histMu.Lock()
	// (a restore meanwhile may have added a newer range after it, and
	// gateForFloors marked this one unfinished)
	if i := slices.IndexFunc(r.history, func(h historyRange) bool { return h.From == hr.From && h.To == hr.To }); i >= 0 {
		r.history = slices.Delete(r.history, i, i+1)
	}
	err = r.saveHistoryLocked()
	ungate := r.gated.Load()
	for _, h := range r.history {
		ungate = ungate && !h.Unfinished
	}
	if err == nil && !ungate {
		r.setGatesLocked()
	}
	r.histMu.Unlock()
	if err != nil {
		return err
	}
	if ungate {
		// Every unfinished message is here now. While the gate still
		// holds the channels in standby (whoever leads), they read their
		// log again from their floors (a read while messages were missing
		// would have passed them); then they deliver if this node leads.
		for _, ch := range r.t.channelList() {
			if ch.dlog != nil {
				ch.mu.Lock()
				cur := ch.dlog.cursor.Clone()
				ch.mu.Unlock()
				ch.takeCursor(cur)
			}
		}
		r.histMu.Lock()
		r.setGatesLocked() // (a restore meanwhile may have gated it again)
		r.histMu.Unlock()
		r.updateStandby()
		r.t.logger.Info("a replicated topic's replica holds every unfinished message again", "leading", r.leading.Load(), "gated", r.gated.Load())
	}
	r.t.logger.Info("copied the messages a restore skipped from the other replicas",
		"messages", copied, "from", low, "to", hr.To)
	return nil
}

// backfillRange copies into log the messages of hr that fetch's answers
// hold, from the top down, and returns how many it copied and the low end
// of what it covered (above hr.From when the replica read holds nothing
// older). Called again after a failure, it goes on below what it copied.
func backfillRange(ctx context.Context, log *store.Log, hr historyRange, fetch func(context.Context, []byte) ([]byte, error)) (int, uint64, error) {
	cur := hr.To
	if recs, err := log.NewReader(hr.From).Read(nil, 1); err != nil {
		return 0, cur, err
	} else if len(recs) > 0 && recs[0].Seq < hr.To {
		cur = recs[0].Seq
	}
	copied := 0
	for cur > hr.From {
		if err := ctx.Err(); err != nil {
			return copied, cur, err
		}
		req, _ := json.Marshal(historyRequest{From: hr.From, To: cur})
		out, err := fetch(ctx, req)
		if err != nil {
			return copied, cur, err
		}
		peerStart, low, recs, err := decodeHistory(out)
		if err != nil {
			return copied, cur, err
		}
		if low >= cur || low < hr.From {
			return copied, cur, fmt.Errorf("an answer for %d-%d starts at %d", hr.From, cur-1, low)
		}
		if k := len(recs); k > 0 && (recs[0].Seq < low || recs[k-1].Seq >= cur) {
			return copied, cur, fmt.Errorf("an answer for %d-%d holds messages %d-%d", low, cur-1, recs[0].Seq, recs[k-1].Seq)
		}
		// consecutive runs, the newest first: what the log holds from
		// cur down stays one range without a hole
		for end := len(recs); end > 0; {
			start := end - 1
			for start > 0 && recs[start-1].Seq+1 == recs[start].Seq {
				start--
			}
			if err := log.Backfill(recs[start:end]); err != nil {
				return copied, cur, err
			}
			copied += end - start
			end = start
		}
		cur = low
		if low <= peerStart {
			break // the replica read holds nothing older
		}
	}
	return copied, cur, nil
}

// TopicHistory implements replica.HistoryServer.
func (rt replicaTopics) TopicHistory(topic string, req []byte) ([]byte, error) {
	return rt.n.topicHistory(topic, req)
}

// topicHistory answers a history read: the held messages of the requested
// range, at most historyChunkBytes of them (at least one message), the
// newest kept.
func (n *NSQD) topicHistory(topic string, req []byte) ([]byte, error) {
	var hr historyRequest
	if err := json.Unmarshal(req, &hr); err != nil || hr.To <= hr.From {
		return nil, fmt.Errorf("bad history request %q", req)
	}
	t, ok := n.ExistingTopic(topic)
	if !ok || t.repl == nil {
		return nil, fmt.Errorf("topic %s has no replica here", topic)
	}
	if t.repl.historyDue.Load() {
		return nil, fmt.Errorf("the replica of %s on this node is copying its own history", topic)
	}
	return historyAnswer(t.dur.log, hr, historyChunkBytes, historyChunkMsgs)
}

// historyAnswer reads log's messages of [hr.From, hr.To) for a history
// read: at most maxMsgs sequence numbers and maxBytes of messages (at
// least one message), the newest kept. The answer is the log's oldest held
// message, the low end of the range it covers ([low, hr.To): every message
// held there is in it), then the messages.
func historyAnswer(log *store.Log, hr historyRequest, maxBytes, maxMsgs int) ([]byte, error) {
	start := log.Start()
	if end := log.End(); end < hr.To {
		return nil, fmt.Errorf("messages up to %d applied here, not %d", end, hr.To)
	}
	to := hr.To
	low := max(hr.From, start)
	if to > low && to-low > uint64(maxMsgs) {
		low = to - uint64(maxMsgs)
	}
	var recs []store.Record
	size := 0
	if low < to {
		rd := log.NewReader(low)
		var buf []store.Record
	read:
		for {
			var err error
			buf, err = rd.Read(buf[:0], 256)
			if err != nil {
				return nil, fmt.Errorf("read history: %w", err)
			}
			if len(buf) == 0 {
				break
			}
			for _, rec := range buf {
				if rec.Seq >= to {
					break read
				}
				recs = append(recs, rec)
				size += historyRecOverhead + len(rec.Body)
				for len(recs) > 1 && size > maxBytes {
					size -= historyRecOverhead + len(recs[0].Body)
					recs[0] = store.Record{}
					recs = recs[1:]
					low = recs[0].Seq
				}
			}
		}
	}
	low = min(low, to)
	out := make([]byte, 0, 16+size)
	out = binary.BigEndian.AppendUint64(out, start)
	out = binary.BigEndian.AppendUint64(out, low)
	for _, rec := range recs {
		out = binary.BigEndian.AppendUint64(out, rec.Seq)
		out = binary.BigEndian.AppendUint64(out, uint64(rec.TS))
		out = binary.BigEndian.AppendUint64(out, uint64(rec.DeliverAt))
		out = binary.BigEndian.AppendUint32(out, uint32(len(rec.Body)))
		out = append(out, rec.Body...)
	}
	return out, nil
}

const historyRecOverhead = 8 + 8 + 8 + 4

// decodeHistory parses a TopicHistory answer: the server's oldest held
// message, the low end of the answered range, and its messages in order.
func decodeHistory(b []byte) (start, low uint64, recs []store.Record, err error) {
	if len(b) < 16 {
		return 0, 0, nil, errors.New("short history answer")
	}
	start, low = binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
	b = b[16:]
	for len(b) > 0 {
		if len(b) < historyRecOverhead {
			return 0, 0, nil, errors.New("history answer ends inside a message header")
		}
		n := int(binary.BigEndian.Uint32(b[24:]))
		if len(b) < historyRecOverhead+n {
			return 0, 0, nil, errors.New("history answer ends inside a message")
		}
		rec := store.Record{
			Seq:       binary.BigEndian.Uint64(b),
			TS:        int64(binary.BigEndian.Uint64(b[8:])),
			DeliverAt: int64(binary.BigEndian.Uint64(b[16:])),
			Body:      b[historyRecOverhead : historyRecOverhead+n],
		}
		if k := len(recs); k > 0 && rec.Seq <= recs[k-1].Seq {
			return 0, 0, nil, fmt.Errorf("history answer: message %d after %d", rec.Seq, recs[k-1].Seq)
		}
		recs = append(recs, rec)
		b = b[historyRecOverhead+n:]
	}
	return start, low, recs, nil
}
