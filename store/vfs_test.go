package store

import (
	"testing"
)

// WriteFileAtomic replaces a file whole, even over a stale temporary file
// it could not remove first.
func TestWriteFileAtomicOverAStaleTemporaryFile(t *testing.T) {
	for _, removeFails := range []bool{false, true} {
		mem := newMemDir(t, "/d")
		fs := &faultFS{FS: mem}
		mem.WriteFile("/d/topic.json.tmp", []byte(`{"stale": tr`)) // a crash mid-write
		if removeFails {
			fs.failOnce("remove", "/d/topic.json.tmp", false)
		}
		if err := WriteFileAtomic(fs, "/d/topic.json", []byte(`{"new": 1}`)); err != nil {
			t.Fatal(err)
		}
		mem.Crash()
		if got, err := mem.ReadFile("/d/topic.json"); err != nil || string(got) != `{"new": 1}` {
			t.Fatalf("remove fails %v: %q, %v", removeFails, got, err)
		}
	}
}

// The same for a journal compaction: a stale compaction file left behind
// must not be replayed in front of the new one.
func TestJournalCompactionOverAStaleTemporaryFile(t *testing.T) {
	mem := newMemDir(t, "/d")
	fs := &faultFS{FS: mem}
	j, _ := mustOpenJournal(t, fs)
	live := map[string]*Cursor{"a": NewCursor(4)}
	j.SetState("a", live["a"].Clone(), true)
	stale := appendJournalRecord(nil, jState, 7, func(b []byte) []byte { return appendState(b, "deleted-long-ago", NewCursor(1)) })
	mem.WriteFile(jpath+".tmp", stale)
	fs.failOnce("remove", jpath+".tmp", false)
	if err := j.Compact(j.StateGen(), func() map[string]*Cursor { return cloneAll(live) }); err != nil {
		t.Fatal(err)
	}
	j.Close()
	_, got := mustOpenJournal(t, mem)
	if d := sameCursors(got, live); d != "" {
		t.Fatal(d)
	}
}
