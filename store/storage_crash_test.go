package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// crashSeed returns the seed of a crash test: SLUICE_STORE_SEED replays one.
func crashSeed(t *testing.T) uint64 {
	if s := os.Getenv("SLUICE_STORE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SLUICE_STORE_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// body encodes a unique message id so recovered records can be checked.
func body(id uint64, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, id)
	for i := 8; i < len(b); i++ {
		b[i] = byte(id + uint64(i))
	}
	return b
}

func packed(ids []uint64, size int) []byte {
	var p []byte
	for _, id := range ids {
		b := body(id, size)
		p = binary.BigEndian.AppendUint32(p, uint32(len(b)))
		p = append(p, b...)
	}
	return p
}

// crashWorkload runs producers against a log on fs until the injected
// failure stops them; it returns the ids whose append was acknowledged and
// the finishes the journal acknowledged as synced.
func crashWorkload(t *testing.T, fs *MemFS, rng *rand.Rand, dir string, life uint64) (acked, delivered, finished map[uint64]bool) {
	none := func() (map[uint64]bool, map[uint64]bool, map[uint64]bool) {
		return map[uint64]bool{}, map[uint64]bool{}, map[uint64]bool{}
	}
	// with the injected failure, opening may itself fail: nothing is
	// acknowledged then, and the next recovery must still succeed
	l, _, err := OpenLog(fs, dir, LogOptions{SegmentBytes: 2048, CacheBytes: 1024})
	if err != nil {
		return none()
	}
	defer l.Close()
	j, cursors, err := OpenJournal(fs, dir+"/cursors.jnl", nil)
	if err != nil {
		return none()
	}
	defer j.Close()
	cur := cursors["c"]
	if cur == nil {
		cur = NewCursor(l.Start())
		if err := j.SetState("c", cur.Clone(), true); err != nil {
			return none()
		}
	}
	c := NewCommitter(time.Hour) // journals flushed by hand below
	acked = map[uint64]bool{}
	delivered = map[uint64]bool{}
	finished = map[uint64]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	seeds := []uint64{rng.Uint64(), rng.Uint64(), rng.Uint64()}
	for p, s := range seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(s, uint64(p)))
			next := life<<48 | uint64(p+1)<<40
			for range 40 {
				var ents []Entry
				var ids []uint64
				for range 1 + r.IntN(3) {
					if r.IntN(2) == 0 {
						ids = append(ids, next)
						ents = append(ents, Entry{TS: int64(next), DeliverAt: int64(next % 7), Body: body(next, 20+r.IntN(200))})
						next++
						continue
					}
					n := 1 + r.IntN(5)
					var batch []uint64
					for range n {
						batch = append(batch, next)
						next++
					}
					ids = append(ids, batch...)
					ents = append(ents, Entry{TS: int64(batch[0]), Packed: packed(batch, 30), Count: n})
				}
				rd, err := c.Append(l, ents)
				if err != nil {
					return
				}
				if err := rd.Wait(l); err != nil {
					continue // refused: may or may not be on disk; not acknowledged
				}
				mu.Lock()
				for _, id := range ids {
					acked[id] = true
				}
				mu.Unlock()
			}
		}()
	}
	// a consumer finishing what it reads, with journal flushes
	rd := l.NewReader(cur.Floor)
	var pendingFin []uint64
	for range 60 {
		recs, err := rd.Read(nil, 10)
		if err != nil {
			break
		}
		for _, rec := range recs {
			mu.Lock()
			delivered[binary.BigEndian.Uint64(rec.Body)] = true
			mu.Unlock()
			cur.Finish(rec.Seq)
			j.Finish("c", rec.Seq)
			pendingFin = append(pendingFin, rec.Seq)
		}
		if rng.IntN(3) == 0 {
			if _, _, err := j.Flush(); err == nil {
				mu.Lock()
				for _, s := range pendingFin {
					finished[s] = true
				}
				mu.Unlock()
				pendingFin = pendingFin[:0]
			}
		}
		if rng.IntN(10) == 0 {
			l.Retain(cur.Floor, Retention{}, time.Now())
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
	}
	wg.Wait()
	c.Close()
	return acked, delivered, finished
}

// TestCrashAtAnyStepLosesNoAcknowledgedMessage runs a workload of
// concurrent appends, reads, finishes and retention on the strict MemFS,
// makes every operation after the n-th fail (n over many crash points),
// simulates a power cut and reopens: recovery must succeed, every
// acknowledged message must read back intact unless its consumer finished
// it durably, and sequence numbers must be contiguous.
func TestCrashAtAnyStepLosesNoAcknowledgedMessage(t *testing.T) {
	seed := crashSeed(t)
	t.Logf("seed %d (SLUICE_STORE_SEED=%d replays)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	points := 60
	if os.Getenv("SLUICE_STORE_LONG") != "" {
		points = 2000
	}
	for i := range points {
		fs := NewMemFS()
		dir := "/data/t.log"
		if err := fs.MkdirAll(dir); err != nil {
			t.Fatal(err)
		}
		fs.SyncDir(dir)
		fs.SyncDir("/data")
		crashAt := rng.IntN(400)
		fs.FailAfter(crashAt)
		acked, delivered, finished := crashWorkload(t, fs, rng, dir, 1)
		fs.Crash()
		checkRecovered(t, fs, dir, acked, delivered, finished, fmt.Sprintf("round %d (crash after %d ops)", i, crashAt))
		// a second life on the recovered files, crashing again
		fs.FailAfter(rng.IntN(400))
		acked2, delivered2, finished2 := crashWorkload(t, fs, rng, dir, 2)
		fs.Crash()
		for id := range acked2 {
			acked[id] = true
		}
		for id := range delivered2 {
			delivered[id] = true
		}
		for s := range finished2 {
			finished[s] = true
		}
		checkRecovered(t, fs, dir, acked, delivered, finished, fmt.Sprintf("round %d, second crash", i))
	}
}

func checkRecovered(t *testing.T, fs *MemFS, dir string, acked, delivered, finished map[uint64]bool, what string) {
	t.Helper()
	l, _, err := OpenLog(fs, dir, LogOptions{SegmentBytes: 2048})
	if err != nil {
		t.Fatalf("%s: recovery failed: %v", what, err)
	}
	defer l.Close()
	j, cursors, err := OpenJournal(fs, dir+"/cursors.jnl", nil)
	if err != nil {
		t.Fatalf("%s: journal recovery failed: %v", what, err)
	}
	defer j.Close()
	cur := cursors["c"]
	for s := range finished {
		if cur == nil || !cur.IsDone(s) {
			t.Fatalf("%s: finish of %d was synced but is lost", what, s)
		}
	}
	seen := map[uint64]bool{}
	r := l.NewReader(0)
	expect := l.Start()
	for {
		recs, err := r.Read(nil, 100)
		if err != nil {
			t.Fatalf("%s: read after recovery: %v", what, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			if rec.Seq != expect {
				t.Fatalf("%s: sequence %d, want %d", what, rec.Seq, expect)
			}
			expect++
			id := binary.BigEndian.Uint64(rec.Body)
			if !bytes.Equal(rec.Body, body(id, len(rec.Body))) {
				t.Fatalf("%s: record %d has a damaged body", what, rec.Seq)
			}
			if seen[id] {
				t.Fatalf("%s: message %x stored twice", what, id)
			}
			seen[id] = true
		}
	}
	if expect != l.End() {
		t.Fatalf("%s: read up to %d, log ends at %d", what, expect, l.End())
	}
	// acknowledged ⊆ stored ∪ delivered: a message may be gone from the
	// log only when its segment was removed after the consumer had it
	for id := range acked {
		if !seen[id] && !delivered[id] {
			t.Fatalf("%s: acknowledged message %x lost (never delivered, not in the recovered log)", what, id)
		}
	}
}
