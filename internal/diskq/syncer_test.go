package diskq

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// waitFor polls cond until it holds or ten seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never: %s", what)
}

// TestSyncerWritesMetadataAfterChangesAndDropsReadAhead: with --sync-every
// far away, the Syncer persists a queue's positions after its changes
// (go-diskqueue's --sync-timeout), and a queue whose reads stopped lets go
// of its read-ahead block.
func TestSyncerWritesMetadataAfterChangesAndDropsReadAhead(t *testing.T) {
	dir := t.TempDir()
	s := NewSyncer(20 * time.Millisecond)
	q := Open("timed", dir, Options{MaxBytesPerFile: 1 << 20, MinMsgSize: 1, MaxMsgSize: 100, SyncEvery: 1 << 30,
		Syncer: s, Logger: quiet})
	defer q.Close()
	meta := filepath.Join(dir, "timed.diskqueue.meta.dat")
	for i := range 10 {
		if err := q.Put(body(i, 20)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "metadata with depth 10", func() bool {
		b, _ := os.ReadFile(meta)
		return string(b) == "10\n0,0\n0,240\n"
	})
	recs, _ := q.Read(nil, 3) // the other 7 stay buffered
	if len(recs) != 3 {
		t.Fatalf("read %d", len(recs))
	}
	waitFor(t, "metadata with the read position", func() bool {
		b, _ := os.ReadFile(meta)
		return string(b) == "7\n0,72\n0,240\n"
	})
	waitFor(t, "read-ahead block released", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.buf == nil
	})
	recs, _ = q.Read(nil, 10)
	if len(recs) != 7 || string(recs[0][:3]) != "m3-" {
		t.Fatalf("after the block was released, read %d records starting %q", len(recs), recs[0])
	}
}
