package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
)

// fillUntilFull appends through a committer from several producers until the
// disk (MemFS.SetSpace) is full, and returns the acknowledged ids.
func fillUntilFull(t *testing.T, c *Committer, l *Log, rng *rand.Rand, nextID *uint64, producers int) (acked map[uint64]bool, first map[uint64]uint64) {
	t.Helper()
	acked, first = map[uint64]bool{}, map[uint64]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var full []error
	for p := range producers {
		seed := rng.Uint64()
		base := *nextID + uint64(p)<<24
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			id := base
			for range 2000 {
				var e Entry
				var ids []uint64
				if r.IntN(2) == 0 {
					ids = []uint64{id}
					e = msgEntry(id, 10+r.IntN(300))
				} else {
					for range 1 + r.IntN(8) {
						ids = append(ids, id+uint64(len(ids)))
					}
					e = packEntry(ids, 10+r.IntN(100))
				}
				id += uint64(len(ids))
				err := commitWait(c, l, e)
				mu.Lock()
				if err != nil {
					full = append(full, err)
					mu.Unlock()
					return
				}
				for _, x := range ids {
					acked[x] = true
					first[x] = ids[0]
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	*nextID += uint64(producers) << 24
	if len(full) == 0 {
		t.Fatal("the disk never filled up")
	}
	for _, err := range full {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append on a full disk: %v, want an error wrapping ENOSPC", err)
		}
	}
	return acked, first
}

// checkExactly asserts l holds exactly the acked messages, each once, with
// contiguous sequence numbers.
func checkExactly(t *testing.T, what string, l *Log, acked map[uint64]bool, first map[uint64]uint64) {
	t.Helper()
	recs := readFrom(t, l, 0, 500)
	seen := map[uint64]bool{}
	for i, rec := range recs {
		if rec.Seq != l.Start()+uint64(i) {
			t.Fatalf("%s: record %d has seq %d, want %d", what, i, rec.Seq, l.Start()+uint64(i))
		}
		id := checkRecord(t, rec, first)
		if !acked[id] || seen[id] {
			t.Fatalf("%s: message %x read (acknowledged %v, read before %v)", what, id, acked[id], seen[id])
		}
		seen[id] = true
	}
	if len(seen) != len(acked) || l.Start()+uint64(len(recs)) != l.End() {
		t.Fatalf("%s: read %d of %d acknowledged messages; start %d end %d", what, len(seen), len(acked), l.Start(), l.End())
	}
}

func TestFullDisk(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 5))
	runs := 12
	if longTests() {
		runs = 200
	}
	for run := range runs {
		space := int64(2000 + rng.IntN(60000))
		segBytes := int64(512 + rng.IntN(8192))
		producers := 1 + rng.IntN(4)
		ending := []string{"crash", "close", "more space"}[run%3]
		what := fmt.Sprintf("run %d (space %d, segments of %d, %d producers, then %s)", run, space, segBytes, producers, ending)
		fs := newMemDir(t, "/d")
		opts := LogOptions{SegmentBytes: segBytes, CacheBytes: 1 + rng.IntN(4096)}
		l, _ := mustOpenLog(t, fs, "/d", opts)
		j, _ := mustOpenJournal(t, fs) // shares the disk
		j.SetState("c", NewCursor(0), true)
		fs.SetSpace(space)
		c := NewCommitter(0)
		var nextID uint64
		acked, first := fillUntilFull(t, c, l, rng, &nextID, producers)
		// nothing of the failed writes is visible, and the full disk keeps
		// refusing
		checkExactly(t, what+", full", l, acked, first)
		if err := commitWait(c, l, msgEntry(1<<60, int(space))); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s: append on a still full disk: %v", what, err)
		}
		j.Finish("c", 0)
		if _, _, err := j.Flush(); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s: journal flush on a full disk: %v", what, err)
		}
		switch ending {
		case "more space":
			fs.SetSpace(space * 4)
			more, moreFirst := fillUntilFull(t, c, l, rng, &nextID, producers)
			for id := range more {
				acked[id], first[id] = true, moreFirst[id]
			}
			checkExactly(t, what+", after more space", l, acked, first)
			c.Close()
			fs.Crash()
		case "close":
			// a clean stop: the failed write's bytes may be in the file
			c.Close()
			l.Close()
			j.Close()
		case "crash":
			c.Close()
			fs.Crash()
		}
		fs.SetSpace(0)
		l2, rep := mustOpenLog(t, fs, "/d", opts)
		if len(rep.Quarantined) != 0 || (ending != "close" && len(rep.Cut) != 0) {
			t.Fatalf("%s: recovery report %+v", what, rep)
		}
		checkExactly(t, what+", recovered", l2, acked, first)
		c2 := NewCommitter(0)
		if err := commitWait(c2, l2, msgEntry(1<<61, 100)); err != nil {
			t.Fatalf("%s: append after recovery: %v", what, err)
		}
		acked[1<<61] = true
		checkExactly(t, what+", appended after recovery", l2, acked, first)
		c2.Close()
		l2.Close()
		if _, got, err := OpenJournal(fs, jpath, nil); err != nil || got["c"] == nil {
			t.Fatalf("%s: journal after a full disk: %v %v", what, err, got)
		}
	}
}
