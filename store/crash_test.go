package store

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// The crash tests run a topic's whole storage life on MemFS — producers
// appending through a committer, two channels reading, finishing,
// requeueing and journaling, retention and journal compaction — stop the
// disk at some point (FailAfter(n) for a sweep of n, at a random moment,
// or a disk failing single operations at random), cut the power (Crash),
// and start again, for a few lives. After every crash, recovery must
// succeed and agree with a model of what was promised:
//
//   - every message whose append was acknowledged, and every message a
//     channel read, is in the log at the same sequence number with the
//     same body, TS and DeliverAt — unless retention removed it after
//     every channel had finished it;
//   - sequence numbers run contiguously from Start to End, and no message
//     is stored twice;
//   - every finish (and delivery count) recorded before a Flush, SetState
//     or Compact that returned nil is in the replayed cursor, and every
//     channel whose state was synced exists.

var crashChannels = []string{"c1", "c2"}

// crashModel is what the storage promised so far, over all lives.
type crashModel struct {
	mu     sync.Mutex
	nextID uint64
	acked  map[uint64]bool   // ids whose Round.Wait returned nil
	first  map[uint64]uint64 // id -> first id of its entry (its TS and DeliverAt)
	read   map[uint64]uint64 // seq -> id, for every record a channel read

	finMem     map[string]map[uint64]bool   // finished in memory, in some life
	finSynced  map[string]map[uint64]bool   // finished, then a journal write returned nil
	attSynced  map[string]map[uint64]uint16 // delivery count, then a journal write returned nil
	floorSync  map[string]uint64            // floor of the last synced reset
	stateSaved map[string]bool              // a SetState with sync returned nil
}

func newCrashModel() *crashModel {
	m := &crashModel{
		acked: map[uint64]bool{}, first: map[uint64]uint64{}, read: map[uint64]uint64{},
		finMem: map[string]map[uint64]bool{}, finSynced: map[string]map[uint64]bool{},
		attSynced: map[string]map[uint64]uint16{}, floorSync: map[string]uint64{}, stateSaved: map[string]bool{},
	}
	for _, ch := range crashChannels {
		m.finMem[ch], m.finSynced[ch], m.attSynced[ch] = map[uint64]bool{}, map[uint64]bool{}, map[uint64]uint16{}
	}
	return m
}

// crashChannel is one channel's state within a life.
type crashChannel struct {
	name    string
	cur     *Cursor
	r       *Reader
	pending []uint64          // finished since the last successful journal write
	delivs  map[uint64]uint16 // delivery counts since then
}

var crashOpts = LogOptions{SegmentBytes: 1500, CacheBytes: 700}

const crashDir = "/data/topic"

// crashLife runs one life of the topic on fs (with mem the MemFS below
// it) and returns when its disk has stopped (FailAfter(0)), as at a power
// cut; the caller then calls mem.Crash. It returns the operations mem had
// left just before it stopped the disk.
func crashLife(t *testing.T, m *crashModel, fs FS, mem *MemFS, rng *rand.Rand) (opsLeft int) {
	var cleanup []func()
	defer func() {
		mem.mu.Lock()
		opsLeft = mem.opsLeft
		mem.mu.Unlock()
		mem.FailAfter(0) // the power is cut: nothing after this reaches the disk
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]() // stops the goroutines; their writes fail
		}
	}()
	l, _, err := OpenLog(fs, crashDir, crashOpts)
	if err != nil {
		return // the disk failed during recovery; the next start tries again
	}
	cleanup = append(cleanup, func() { l.Close() })
	j, cursors, err := OpenJournal(fs, crashDir+"/cursors.jnl", nil)
	if err != nil {
		return
	}
	cleanup = append(cleanup, func() { j.Close() })
	var maxFloor uint64
	for _, c := range cursors {
		maxFloor = max(maxFloor, c.Floor)
	}
	if err := l.SkipTo(maxFloor); err != nil {
		return
	}
	var chans []*crashChannel
	for _, name := range crashChannels {
		ch := &crashChannel{name: name, cur: cursors[name], delivs: map[uint64]uint16{}}
		if ch.cur == nil {
			ch.cur = NewCursor(l.Start())
			if err := j.SetState(name, ch.cur.Clone(), true); err != nil {
				return
			}
			m.stateSaved[name] = true
		}
		ch.r = l.NewReader(ch.cur.Floor)
		chans = append(chans, ch)
	}
	c := NewCommitter(time.Millisecond)
	c.AddJournal(j)
	cleanup = append(cleanup, c.Close, func() { c.RemoveJournal(j) })

	var wg sync.WaitGroup
	for p := range 3 {
		seed := rng.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			crashProducer(m, c, l, rand.New(rand.NewPCG(seed, uint64(p))))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for idle := 0; idle < 3; {
		changed := l.Changed()
		n := 0
		for _, ch := range chans {
			n += crashConsume(t, m, ch, j, rng)
		}
		crashHousekeeping(m, l, j, chans, rng)
		if n > 0 {
			continue
		}
		select {
		case <-changed:
		case <-done:
			idle++ // producers finished: drain what is left, then crash
		}
	}
	return
}

func crashProducer(m *crashModel, c *Committer, l *Log, r *rand.Rand) {
	for range 25 {
		var ents []Entry
		var ids []uint64
		m.mu.Lock()
		for range 1 + r.IntN(3) {
			n := 1
			if r.IntN(2) == 0 {
				n = 2 + r.IntN(6)
			}
			batch := make([]uint64, n)
			for i := range batch {
				batch[i] = m.nextID
				m.first[m.nextID] = batch[0]
				m.nextID++
			}
			ids = append(ids, batch...)
			if n == 1 {
				ents = append(ents, msgEntry(batch[0], 8+r.IntN(150)))
			} else {
				ents = append(ents, packEntry(batch, 8+r.IntN(60)))
			}
		}
		m.mu.Unlock()
		if err := commitWait(c, l, ents...); err != nil {
			continue // not acknowledged: may or may not be stored
		}
		m.mu.Lock()
		for _, id := range ids {
			m.acked[id] = true
		}
		m.mu.Unlock()
	}
}

// crashConsume reads a few records for ch and finishes, delivers or
// requeues them; it returns how many it read.
func crashConsume(t *testing.T, m *crashModel, ch *crashChannel, j *Journal, rng *rand.Rand) int {
	if next := ch.cur.NextUnfinished(ch.r.Seq()); next != ch.r.Seq() {
		ch.r.Seek(next)
	}
	recs, err := ch.r.Read(nil, 1+rng.IntN(12))
	if err != nil {
		t.Fatalf("channel %s: read: %v", ch.name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, rec := range recs {
		id := binary.BigEndian.Uint64(rec.Body)
		if prev, ok := m.read[rec.Seq]; ok && prev != id {
			t.Fatalf("channel %s: seq %d holds message %x, read as %x before", ch.name, rec.Seq, id, prev)
		}
		m.read[rec.Seq] = id
		if ch.cur.IsDone(rec.Seq) {
			continue
		}
		switch k := rng.IntN(10); {
		case k < 6:
			ch.cur.Finish(rec.Seq)
			j.Finish(ch.name, rec.Seq)
			m.finMem[ch.name][rec.Seq] = true
			ch.pending = append(ch.pending, rec.Seq)
		case k < 8:
			a := ch.cur.Held[rec.Seq].Attempts + 1
			ch.cur.Delivered(rec.Seq, a)
			j.Deliver(ch.name, []Delivery{{Seq: rec.Seq, Attempts: a}})
			ch.delivs[rec.Seq] = a
		default:
			h := Held{Attempts: ch.cur.Held[rec.Seq].Attempts, Until: rng.Int64N(1e12)}
			ch.cur.Requeue(rec.Seq, h)
			j.Requeue(ch.name, rec.Seq, h)
		}
	}
	return len(recs)
}

// journalSynced records that everything journaled so far is durable.
func (m *crashModel) journalSynced(chans []*crashChannel) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range chans {
		for _, s := range ch.pending {
			m.finSynced[ch.name][s] = true
		}
		for s, a := range ch.delivs {
			m.attSynced[ch.name][s] = max(m.attSynced[ch.name][s], a)
		}
		ch.pending, ch.delivs = ch.pending[:0], map[uint64]uint16{}
	}
}

func crashHousekeeping(m *crashModel, l *Log, j *Journal, chans []*crashChannel, rng *rand.Rand) {
	switch k := rng.IntN(40); {
	case k < 6:
		if _, _, err := j.Flush(); err == nil {
			m.journalSynced(chans)
		}
	case k < 8:
		ch := chans[rng.IntN(len(chans))]
		if err := j.SetState(ch.name, ch.cur.Clone(), true); err == nil {
			m.journalSynced(chans)
		}
	case k < 9:
		// a channel emptied: everything up to the end is finished (and
		// noted as read, so the model knows which messages those were)
		ch := chans[rng.IntN(len(chans))]
		end := l.End()
		skipped := l.NewReader(ch.cur.Floor)
		m.mu.Lock()
		for {
			recs, err := skipped.Read(nil, 64)
			if err != nil || len(recs) == 0 {
				break
			}
			for _, rec := range recs {
				if rec.Seq < end {
					m.read[rec.Seq] = binary.BigEndian.Uint64(rec.Body)
				}
			}
		}
		for s := ch.cur.Floor; s < end; s++ {
			m.finMem[ch.name][s] = true
		}
		m.mu.Unlock()
		ch.cur.Reset(end)
		ch.r.Seek(end)
		if err := j.SetState(ch.name, ch.cur.Clone(), true); err == nil {
			m.journalSynced(chans)
			m.mu.Lock()
			m.floorSync[ch.name] = max(m.floorSync[ch.name], end)
			m.mu.Unlock()
		}
	case k < 11:
		err := j.Compact(j.StateGen(), func() map[string]*Cursor {
			out := map[string]*Cursor{}
			for _, ch := range chans {
				out[ch.name] = ch.cur.Clone()
			}
			return out
		})
		if err == nil {
			m.journalSynced(chans)
		}
	case k < 16:
		floor := ^uint64(0)
		for _, ch := range chans {
			floor = min(floor, ch.cur.Floor)
		}
		l.Retain(floor, Retention{}, time.Now())
	}
}

// checkCrashRecovery opens what a crash left and compares it with m.
func checkCrashRecovery(t *testing.T, m *crashModel, mem *MemFS, what string, strict bool) {
	t.Helper()
	l, rep, err := OpenLog(mem, crashDir, crashOpts)
	if err != nil {
		t.Fatalf("%s: recovery failed: %v", what, err)
	}
	defer l.Close()
	if len(rep.Quarantined) != 0 || (strict && len(rep.Cut) != 0) {
		t.Fatalf("%s: recovery found damage the crash cannot have made: %+v", what, rep)
	}
	j, cursors, err := OpenJournal(mem, crashDir+"/cursors.jnl", nil)
	if err != nil {
		t.Fatalf("%s: journal recovery failed: %v", what, err)
	}
	defer j.Close()
	m.mu.Lock()
	defer m.mu.Unlock()

	held := map[uint64]uint64{} // id -> seq
	start, end := l.Start(), l.End()
	recs := readFrom(t, l, 0, 100)
	for i, rec := range recs {
		if rec.Seq != start+uint64(i) {
			for _, s := range l.segs {
				t.Logf("segment %s: seqs [%d, %d), %d bytes", s.name, s.base, s.end, s.size)
			}
			for n, c := range cursors {
				t.Logf("cursor %q: floor %d", n, c.Floor)
			}
			t.Logf("files %v, recovery report %+v", mem.Files(), rep)
			t.Fatalf("%s: record %d has seq %d, want %d (start %d)", what, i, rec.Seq, start+uint64(i), start)
		}
		id := checkRecord(t, rec, m.first)
		if _, dup := held[id]; dup {
			t.Fatalf("%s: message %x stored twice", what, id)
		}
		held[id] = rec.Seq
		if prev, ok := m.read[rec.Seq]; ok && prev != id {
			t.Fatalf("%s: seq %d, read as message %x before the crash, now holds %x", what, rec.Seq, prev, id)
		}
	}
	if start+uint64(len(recs)) != end {
		t.Fatalf("%s: read %d records from %d, log ends at %d", what, len(recs), start, end)
	}
	finishedByAll := func(seq uint64) bool {
		for _, ch := range crashChannels {
			if !m.finMem[ch][seq] {
				return false
			}
		}
		return true
	}
	for seq, id := range m.read {
		if _, ok := held[id]; !ok && !(seq < start && finishedByAll(seq)) {
			t.Fatalf("%s: message %x (seq %d) was read before the crash and is gone (start %d)", what, id, seq, start)
		}
	}
	for id := range m.acked {
		if _, ok := held[id]; ok {
			continue
		}
		removed := false
		for seq, rid := range m.read {
			if rid == id && seq < start && finishedByAll(seq) {
				removed = true
			}
		}
		if !removed {
			t.Fatalf("%s: acknowledged message %x lost", what, id)
		}
	}
	for _, ch := range crashChannels {
		cur := cursors[ch]
		if cur == nil {
			if m.stateSaved[ch] {
				t.Fatalf("%s: channel %s had a synced state and is gone", what, ch)
			}
			continue
		}
		if cur.Floor > end {
			t.Fatalf("%s: channel %s's floor %d is past the log's end %d", what, ch, cur.Floor, end)
		}
		if cur.Floor < m.floorSync[ch] {
			t.Fatalf("%s: channel %s's floor %d is below its synced reset to %d", what, ch, cur.Floor, m.floorSync[ch])
		}
		for s := range m.finSynced[ch] {
			if !cur.IsDone(s) {
				t.Fatalf("%s: channel %s's synced finish of %d is lost", what, ch, s)
			}
		}
		for s, a := range m.attSynced[ch] {
			if !cur.IsDone(s) && cur.Held[s].Attempts < a {
				t.Fatalf("%s: channel %s's seq %d: attempts %d, %d were synced", what, ch, s, cur.Held[s].Attempts, a)
			}
		}
	}
}

// crashRound runs lives on a fresh file system, each ended by a crash, and
// checks recovery after each. setup arms the failure of a life and returns
// the FS the life uses and what to do after it (nil: nothing).
func crashRound(t *testing.T, rng *rand.Rand, lives int, what string, strict bool, setup func(life int, mem *MemFS) (FS, func())) {
	mem := NewMemFS()
	mem.MkdirAll(crashDir)
	mem.SyncDir(crashDir)
	m := newCrashModel()
	for life := range lives {
		fs, after := setup(life, mem)
		crashLife(t, m, fs, mem, rng)
		if after != nil {
			after()
		}
		mem.Crash()
		checkCrashRecovery(t, m, mem, fmt.Sprintf("%s, life %d", what, life), strict)
	}
}

// opsOfALife counts the disk operations of a life without failures, to
// spread the crash points over.
func opsOfALife(t *testing.T, rng *rand.Rand) int {
	mem := NewMemFS()
	mem.MkdirAll(crashDir)
	mem.SyncDir(crashDir)
	const budget = 1 << 30
	mem.FailAfter(budget)
	return budget - crashLife(t, newCrashModel(), mem, mem, rng)
}

func TestCrashAtEveryStep(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 6))
	ops := opsOfALife(t, rng)
	points := 60
	if longTests() {
		points = ops // every one
	}
	t.Logf("a life makes about %d disk operations; %d crash points", ops, points)
	for i := range points {
		n := i * ops / points
		crashRound(t, rng, 3, fmt.Sprintf("crash point %d", n), true, func(life int, mem *MemFS) (FS, func()) {
			if life == 0 {
				mem.FailAfter(n)
			} else {
				mem.FailAfter(rng.IntN(ops + 1))
			}
			return mem, nil
		})
	}
}

func TestCrashAtRandomMoments(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	rounds := 15
	if longTests() {
		rounds = 300
	}
	for i := range rounds {
		crashRound(t, rng, 3, fmt.Sprintf("round %d", i), true, func(life int, mem *MemFS) (FS, func()) {
			d := time.Duration(rng.IntN(8000)) * time.Microsecond
			fired := make(chan struct{})
			timer := time.AfterFunc(d, func() { mem.FailAfter(0); close(fired) })
			return mem, func() {
				if !timer.Stop() {
					<-fired // it must not cut the power of the next life
				}
			}
		})
	}
}

// A disk that fails single operations (some after they took effect) and
// then loses power keeps every promise too.
func TestCrashOnAFlakyDisk(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 8))
	rounds := 15
	if longTests() {
		rounds = 300
	}
	for i := range rounds {
		failP := []float64{0.01, 0.03, 0.1}[i%3]
		crashRound(t, rng, 3, fmt.Sprintf("round %d (failure rate %.2f)", i, failP), false, func(life int, mem *MemFS) (FS, func()) {
			return newFlakyFS(mem, rng.Uint64(), failP), nil
		})
	}
}
