package store

import (
	"bytes"
	"testing"
)

// A log that defers its syncs keeps, through a crash, everything before
// its last Sync and every segment it sealed, and recovers without error
// (the newest segment only loses its unsynced tail); a log that does not
// defer keeps everything committed.
func TestDeferredSyncLogKeepsWhatItSyncedAndSealedThroughACrash(t *testing.T) {
	const dir = "/d"
	fs := newMemDir(t, dir)
	opts := LogOptions{SegmentBytes: 4 << 10}
	l, _ := mustOpenLog(t, fs, dir, opts)
	l.DeferSyncs()
	c := NewCommitter(0)
	var id uint64
	appendN := func(n int) {
		t.Helper()
		for range n {
			if err := commitWait(c, l, msgEntry(id, 300)); err != nil {
				t.Fatal(err)
			}
			id++
		}
	}
	appendN(40) // several sealed segments, an unsynced active one
	if l.Segments() < 3 {
		t.Fatalf("%d segments, want several", l.Segments())
	}
	syncsBefore := fs.SyncCount
	appendN(5)
	if fs.SyncCount != syncsBefore {
		t.Fatalf("commits within a segment synced %d times, want none", fs.SyncCount-syncsBefore)
	}
	if got := len(readAll(t, l)); got != 45 {
		t.Fatalf("readers see %d records before any Sync, want 45", got)
	}
	sealedEnd := l.segs[len(l.segs)-1].base
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	synced := l.End()
	appendN(3) // never synced
	c.Close()
	fs.Crash()

	l2, _ := mustOpenLog(t, fs, dir, opts)
	defer l2.Close()
	if l2.End() != synced {
		t.Fatalf("after the crash the log ends at %d, want %d (synced); sealed segments ended at %d", l2.End(), synced, sealedEnd)
	}
	for i, r := range readAll(t, l2) {
		if r.Seq != uint64(i) || !bytes.Equal(r.Body, msgBody(uint64(i), 300)) {
			t.Fatalf("record %d: seq %d, body differs: %v", i, r.Seq, !bytes.Equal(r.Body, msgBody(uint64(i), 300)))
		}
	}

	// Without a Sync, a crash keeps the sealed segments: recovery cuts
	// only the active one.
	l2.DeferSyncs()
	c2 := NewCommitter(0)
	base := l2.End()
	for k := range 30 {
		if err := commitWait(c2, l2, msgEntry(uint64(base)+uint64(k), 300)); err != nil {
			t.Fatal(err)
		}
	}
	sealed := l2.segs[len(l2.segs)-1].base
	c2.Close()
	fs.Crash()
	l3, _ := mustOpenLog(t, fs, dir, opts)
	defer l3.Close()
	if l3.End() < sealed {
		t.Fatalf("after a crash without Sync the log ends at %d, before its sealed segments' end %d", l3.End(), sealed)
	}
	if got := len(readAll(t, l3)); uint64(got) != l3.End() {
		t.Fatalf("read %d records, the log ends at %d", got, l3.End())
	}
}
