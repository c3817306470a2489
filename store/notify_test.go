package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncedUnder returns the synced contents of every file under dir.
func syncedUnder(fs *MemFS, dir string) []byte {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []byte
	for p, nd := range fs.nodes {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, nd.synced...)
		}
	}
	return out
}

// recordingNotifier records, for one producer, the outcome of each of its
// appends in the order it was told, and whether the entry was on stable
// storage (in the synced view of the file system) when it was told OK.
type recordingNotifier struct {
	fs     *MemFS
	dir    string
	mu     sync.Mutex
	bodies [][]byte // appended, in order; guarded by mu
	told   int
	errs   []error
	bad    []string
}

func (n *recordingNotifier) add(body []byte) {
	n.mu.Lock()
	n.bodies = append(n.bodies, body)
	n.mu.Unlock()
}

func (n *recordingNotifier) Committed(err error) {
	n.mu.Lock()
	body := n.bodies[n.told]
	n.told++
	n.errs = append(n.errs, err)
	n.mu.Unlock()
	if err == nil && !bytes.Contains(syncedUnder(n.fs, n.dir), body) {
		n.mu.Lock()
		n.bad = append(n.bad, string(body))
		n.mu.Unlock()
	}
}

// Producers that do not wait (AppendNotify, many appends outstanding) are
// told of each append once, in their order, and only once it is synced.
func TestAppendNotifyTellsInOrderAfterTheSync(t *testing.T) {
	mem := newMemDir(t, "/d")
	fs := slowSyncFS{mem, 300 * time.Microsecond}
	l, _ := mustOpenLog(t, fs, "/d/t", LogOptions{SegmentBytes: 16 << 10})
	defer l.Close()
	c := NewCommitter(0)
	const producers, appends = 8, 120
	ns := make([]*recordingNotifier, producers)
	var wg sync.WaitGroup
	for p := range ns {
		n := &recordingNotifier{fs: mem, dir: "/d/t"}
		ns[p] = n
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range appends {
				body := []byte(fmt.Sprintf("producer-%02d-append-%04d", p, k))
				n.add(body)
				if err := c.AppendNotify(l, []Entry{{TS: 1, Body: body}}, n); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.Close() // commits what is queued and returns once every notice is out
	for p, n := range ns {
		if n.told != appends {
			t.Fatalf("producer %d told %d times for %d appends", p, n.told, appends)
		}
		for k, err := range n.errs {
			if err != nil {
				t.Fatalf("producer %d append %d: %v", p, k, err)
			}
		}
		if len(n.bad) > 0 {
			t.Fatalf("producer %d told OK before the sync for %d appends, first %s", p, len(n.bad), n.bad[0])
		}
	}
	// the log holds each producer's appends in its order
	next := make([]int, producers)
	for _, rec := range readFrom(t, l, l.Start(), 256) {
		var p, k int
		if _, err := fmt.Sscanf(string(rec.Body), "producer-%02d-append-%04d", &p, &k); err != nil {
			t.Fatalf("record %q: %v", rec.Body, err)
		}
		if k != next[p] {
			t.Fatalf("producer %d: append %d stored after %d", p, k, next[p]-1)
		}
		next[p]++
	}
	for p, k := range next {
		if k != appends {
			t.Fatalf("producer %d: %d of %d appends stored", p, k, appends)
		}
	}
}

// A round that fails tells every append it held the error, in order, and
// the appends after it are told OK once the disk works again.
func TestAppendNotifyTellsAFailedRoundsErrorInOrder(t *testing.T) {
	mem := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, mem, "/d/t", LogOptions{})
	defer l.Close()
	c := NewCommitter(0)
	defer c.Close()
	n := &recordingNotifier{fs: mem, dir: "/d/t"}
	push := func(k int) {
		body := []byte(fmt.Sprintf("append-%04d", k))
		n.add(body)
		if err := c.AppendNotify(l, []Entry{{TS: 1, Body: body}}, n); err != nil {
			t.Fatal(err)
		}
	}
	waitTold := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n.mu.Lock()
			told := n.told
			n.mu.Unlock()
			if told == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("told %d times, want %d", told, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for k := range 10 {
		push(k)
	}
	waitTold(10)
	mem.FailAfter(0) // every write and sync fails
	for k := 10; k < 20; k++ {
		push(k)
	}
	waitTold(20)
	mem.FailAfter(-1)
	for k := 20; k < 30; k++ {
		push(k)
	}
	waitTold(30)
	for k, err := range n.errs {
		switch failed := k >= 10 && k < 20; {
		case failed && !errors.Is(err, errInjected):
			t.Fatalf("append %d during the failure: %v, want the injected error", k, err)
		case !failed && err != nil:
			t.Fatalf("append %d: %v", k, err)
		}
	}
	if len(n.bad) > 0 {
		t.Fatalf("told OK before the sync: %v", n.bad)
	}
}

// AppendNotify after Close queues nothing and tells nobody.
func TestAppendNotifyAfterCloseFails(t *testing.T) {
	mem := newMemDir(t, "/d")
	l, _ := mustOpenLog(t, mem, "/d/t", LogOptions{})
	defer l.Close()
	c := NewCommitter(0)
	c.Close()
	n := &recordingNotifier{fs: mem, dir: "/d/t"}
	if err := c.AppendNotify(l, []Entry{{TS: 1, Body: []byte("x")}}, n); !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendNotify after Close: %v, want ErrClosed", err)
	}
	if n.told != 0 {
		t.Fatal("told about an append that was refused")
	}
}
