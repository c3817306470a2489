package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// slowSyncFS makes every file sync take a while, as a disk flush does, so
// that appends pile up behind it.
type slowSyncFS struct {
	FS
	delay time.Duration
}

type slowSyncFile struct {
	File
	delay time.Duration
}

func (f slowSyncFS) OpenAppend(name string, create bool) (File, int64, error) {
	file, size, err := f.FS.OpenAppend(name, create)
	if err != nil {
		return nil, 0, err
	}
	return slowSyncFile{file, f.delay}, size, nil
}

func (f slowSyncFile) Sync() error {
	time.Sleep(f.delay)
	return f.File.Sync()
}

// Many producers on several logs: every append is committed once, in
// order per producer, and each round costs one fsync per log it covered.
func TestCommitterGroupsConcurrentAppends(t *testing.T) {
	mem := newMemDir(t, "/d")
	fs := slowSyncFS{mem, 500 * time.Microsecond}
	const nlogs, producers, appends = 4, 24, 40
	logs := make([]*Log, nlogs)
	for i := range logs {
		dir := fmt.Sprintf("/d/t%d", i)
		logs[i], _ = mustOpenLog(t, fs, dir, LogOptions{SegmentBytes: 8 << 10})
		defer logs[i].Close()
	}
	c := NewCommitter(0)
	var mu sync.Mutex
	rounds := map[*Round]map[*Log]bool{}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range appends {
				l := logs[(p+k)%nlogs]
				id := uint64(p)<<32 | uint64(k)<<8
				var ents []Entry
				if k%3 == 0 {
					ents = []Entry{packEntry([]uint64{id, id + 1, id + 2}, 50)}
				} else {
					ents = []Entry{msgEntry(id, 30+k)}
				}
				r, err := c.Append(l, ents)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if rounds[r] == nil {
					rounds[r] = map[*Log]bool{}
				}
				rounds[r][l] = true
				mu.Unlock()
				if err := r.Wait(l); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.Close()
	if t.Failed() {
		return
	}
	want := 0
	for _, ls := range rounds {
		want += len(ls)
	}
	syncs := memSyncs(mem)
	t.Logf("%d appends in %d rounds, %d fsyncs", producers*appends, len(rounds), syncs)
	if syncs != want || c.Syncs() != uint64(want) {
		t.Fatalf("%d fsyncs (committer counted %d), want one per log per round: %d", syncs, c.Syncs(), want)
	}
	if syncs*3 > producers*appends {
		t.Fatalf("%d fsyncs for %d appends: appends are not grouped", syncs, producers*appends)
	}
	// every message once, producers' messages in their order
	first := map[uint64]uint64{} // the 2nd and 3rd of a pack carry the 1st's TS
	for p := range uint64(producers) {
		for k := uint64(0); k < appends; k += 3 {
			id := p<<32 | k<<8
			first[id+1], first[id+2] = id, id
		}
	}
	seen := map[uint64]bool{}
	for i, l := range logs {
		last := map[uint64]uint64{}
		recs := readFrom(t, l, 0, 1000)
		for k, rec := range recs {
			if rec.Seq != uint64(k) {
				t.Fatalf("log %d: record %d has seq %d", i, k, rec.Seq)
			}
			id := checkRecord(t, rec, first)
			if seen[id] {
				t.Fatalf("message %x stored twice", id)
			}
			seen[id] = true
			p := id >> 32
			if prev, ok := last[p]; ok && prev > id {
				t.Fatalf("log %d: producer %d's message %x after %x", i, p, id, prev)
			}
			last[p] = id
		}
	}
	if want := producers * appends * 5 / 3; len(seen) < want {
		t.Fatalf("%d messages stored, want about %d", len(seen), want)
	}
}

func TestCommitterCloseCommitsWhatIsQueued(t *testing.T) {
	mem := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, slowSyncFS{mem, time.Millisecond}, "/d", LogOptions{})
	defer l.Close()
	c := NewCommitter(0)
	var rounds []*Round
	for id := range uint64(50) {
		r, err := c.Append(l, []Entry{msgEntry(id, 10)})
		if err != nil {
			t.Fatal(err)
		}
		rounds = append(rounds, r)
	}
	c.Close()
	for i, r := range rounds {
		select {
		case <-r.done:
		default:
			t.Fatalf("round of append %d still open after Close", i)
		}
		if err := r.Wait(l); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if got := readFrom(t, l, 0, 100); len(got) != 50 {
		t.Fatalf("%d messages after Close, want 50", len(got))
	}
	if _, err := c.Append(l, []Entry{msgEntry(50, 10)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
	c.Close() // twice is fine
	mem.Crash()
	l2, _ := mustOpenLog(t, mem, "/d", LogOptions{})
	defer l2.Close()
	if l2.End() != 50 {
		t.Fatalf("after a crash the log ends at %d, want 50", l2.End())
	}
}

// A log that fails does not fail the others committed in the same round,
// and a closed log refuses appends.
func TestCommitterFailuresStayWithTheirLog(t *testing.T) {
	good := newMemDir(t, "/d")
	bad := newMemDir(t, "/d")
	lg, _ := mustOpenLog(t, good, "/d", LogOptions{})
	lb, _ := mustOpenLog(t, bad, "/d", LogOptions{})
	c := NewCommitter(0)
	defer c.Close()
	bad.FailAfter(0)
	for i := range uint64(20) {
		rg, err := c.Append(lg, []Entry{msgEntry(i, 10)})
		if err != nil {
			t.Fatal(err)
		}
		rb, err := c.Append(lb, []Entry{msgEntry(i, 10)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rg.Wait(lg); err != nil {
			t.Fatalf("healthy log: %v", err)
		}
		if err := rb.Wait(lb); err == nil {
			t.Fatal("failing log acknowledged an append")
		}
	}
	if lg.End() != 20 || lb.End() != 0 {
		t.Fatalf("ends %d and %d", lg.End(), lb.End())
	}
	lg.Close()
	if err := commitWait(c, lg, msgEntry(20, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append to a closed log: %v", err)
	}
}

// Entries the log could not read back are refused at Append: a body
// larger than the log's record limit (it would be acknowledged, then cut
// at the next start as implausible) and a malformed MPUB pack (it would
// crash the committer).
func TestCommitterRefusesUnreadableEntries(t *testing.T) {
	fs := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, fs, "/d", LogOptions{MaxRecordBytes: 100 + recOverhead})
	defer l.Close()
	c := NewCommitter(0)
	defer c.Close()
	tests := []struct {
		name string
		e    Entry
	}{
		{"body over the limit", Entry{Body: make([]byte, 101)}},
		{"packed body over the limit", packEntry([]uint64{1, 2}, 101)},
		{"count beyond the pack", Entry{Packed: packEntry([]uint64{1, 2}, 10).Packed, Count: 3}},
		{"size beyond the pack", Entry{Packed: []byte{0, 0, 1, 0, 'x'}, Count: 1}},
		{"truncated size", Entry{Packed: []byte{0, 0}, Count: 1}},
		{"negative count", Entry{Packed: []byte{}, Count: -1}},
	}
	for _, tt := range tests {
		if _, err := c.Append(l, []Entry{msgEntry(0, 10), tt.e}); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	// entries at the limit, and packs with bytes after Count messages,
	// are fine
	p := packEntry([]uint64{5, 6, 7}, 100)
	p.Count = 2
	if err := commitWait(c, l, Entry{Body: make([]byte, 100)}, p); err != nil {
		t.Fatal(err)
	}
	if l.End() != 3 {
		t.Fatalf("log ends at %d, want 3", l.End())
	}
	c.Close()
	l.Close()
	l2, rep := mustOpenLog(t, fs, "/d", LogOptions{MaxRecordBytes: 100 + recOverhead})
	defer l2.Close()
	if len(rep.Cut) != 0 || l2.End() != 3 {
		t.Fatalf("reopen: %+v, end %d", rep, l2.End())
	}
}

func TestCommitterReportsTheSequenceNumbersItAssigned(t *testing.T) {
	mem := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, mem, "/d", LogOptions{})
	defer l.Close()
	c := NewCommitter(0)
	defer c.Close()
	var first, second, third uint64
	packed := append(binary.BigEndian.AppendUint32(nil, 1), 'a')
	packed = append(binary.BigEndian.AppendUint32(packed, 1), 'b')
	r, err := c.Append(l, []Entry{
		{TS: 1, Body: []byte("x"), SeqOut: &first},
		{TS: 1, Packed: packed, Count: 2, SeqOut: &second},
		{TS: 1, Body: []byte("y"), SeqOut: &third},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(l); err != nil {
		t.Fatal(err)
	}
	if first != 0 || second != 1 || third != 3 {
		t.Fatalf("assigned %d %d %d, want 0 1 3", first, second, third)
	}
	got := readFrom(t, l, third, 1)
	if len(got) != 1 || string(got[0].Body) != "y" {
		t.Fatalf("record at %d: %+v", third, got)
	}
}

// With many producers waiting on each sync, the committer is woken about
// once per round (the round's first append, and the one that fills it
// while it gathers), not once per append.
func TestCommitterIsNotWokenByEveryAppend(t *testing.T) {
	mem := newMemDir(t, "/d")
	fs := slowSyncFS{mem, 2 * time.Millisecond}
	l, _ := mustOpenLog(t, fs, "/d/t", LogOptions{})
	defer l.Close()
	c := NewCommitter(0)
	const producers, appends = 64, 30
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range appends {
				r, err := c.Append(l, []Entry{msgEntry(uint64(p)<<32|uint64(k)<<8, 20)})
				if err != nil {
					t.Error(err)
					return
				}
				if err := r.Wait(l); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.Close()
	wakeups, rounds := c.wakeups.Load(), c.rounds.Load()
	t.Logf("%d appends in %d rounds, %d wake-ups", producers*appends, rounds, wakeups)
	if rounds == 0 || wakeups > 3*rounds {
		t.Fatalf("%d wake-ups for %d rounds of %d appends", wakeups, rounds, producers*appends)
	}
}
