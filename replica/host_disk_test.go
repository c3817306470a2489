package replica

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemq/sluice/store"
)

// diskNode runs a host over the real Storage on a MemFS, which keeps only
// what was synced when it crashes.
type diskNode struct {
	id      uint64
	fs      *store.MemFS
	storage *Storage
	machine *modelMachine
	mn      *memNode
	// amnesiac starts the group with GroupConfig.Amnesiac (a node back
	// on a wiped disk), and onAmnesia as its OnAmnesia.
	amnesiac  bool
	onAmnesia func(leader uint64)
}

func startDiskNode(t *testing.T, net *memNet, dn *diskNode, ids []uint64) {
	t.Helper()
	st, err := OpenStorage(dn.fs, "/raft", StorageOptions{SegmentSize: 4096, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("node %d: open storage: %v", dn.id, err)
	}
	dn.storage = st
	h := NewHost(HostConfig{ID: dn.id, Transport: memTransport{net: net, from: dn.id}, Logger: quietLogger(),
		Tick: 20 * time.Millisecond, ElectionTicks: 10})
	applied, _ := dn.machine.snapshot()
	if err := h.AddGroup(GroupConfig{Name: "orders", Storage: st, Machine: dn.machine, Bootstrap: ids, Applied: applied,
		Amnesiac: dn.amnesiac, OnAmnesia: dn.onAmnesia}); err != nil {
		t.Fatal(err)
	}
	h.Start()
	mn := &memNode{id: dn.id, net: net, inbox: make(chan []Envelope, 1024), done: make(chan struct{}), host: h}
	mn.serve(h)
	net.mu.Lock()
	net.nodes[dn.id] = mn
	net.mu.Unlock()
	dn.mn = mn
}

// startDiskGroup starts a node of the group "orders" on a MemFS of its own
// for each of ids, stopped at the end of the test.
func startDiskGroup(t *testing.T, net *memNet, ids []uint64) []*diskNode {
	t.Helper()
	var nodes []*diskNode
	for _, id := range ids {
		dn := &diskNode{id: id, fs: store.NewMemFS(), machine: &modelMachine{}}
		nodes = append(nodes, dn)
		startDiskNode(t, net, dn, ids)
	}
	t.Cleanup(func() {
		for _, dn := range nodes {
			stopDiskNode(net, dn)
		}
	})
	return nodes
}

func stopDiskNode(net *memNet, dn *diskNode) {
	if dn.mn == nil {
		return
	}
	net.mu.Lock()
	delete(net.nodes, dn.id)
	net.mu.Unlock()
	close(dn.mn.done)
	dn.mn.wg.Wait()
	dn.mn.host.Close()
	dn.storage.Close()
	dn.mn = nil
}

// settlePrefix marks the entries a test proposes only to learn the fate of
// an earlier proposal (see TestGroupOnDiskSurvivesACrashThatDropsUnsyncedWrites).
const settlePrefix = "settle:"

// proposeDecided proposes d through dn until it is applied there. A leader
// change (an election on a loaded machine) leaves a proposal's fate open:
// once an entry proposed after it (a settle entry) is applied on dn, d is
// applied too or never will be, and is proposed again only then, so that
// it is applied once.
func proposeDecided(t *testing.T, dn *diskNode, d string) {
	t.Helper()
	for try := 0; ; try++ {
		err := propose(dn.mn.host, "orders", d, 5*time.Second)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrLeaderChanged) || try == 5 {
			t.Fatalf("propose %s: %v", d, err)
		}
		settle := fmt.Sprintf("%s%s-%d", settlePrefix, d, try)
		for errors.Is(propose(dn.mn.host, "orders", settle, 5*time.Second), ErrLeaderChanged) {
		}
		if slices.Contains(applied(dn.machine), d) {
			return
		}
	}
}

// proposed is what m applied, less the settle entries.
func proposed(m *modelMachine) []string {
	var out []string
	for _, d := range applied(m) {
		if !strings.HasPrefix(d, settlePrefix) {
			out = append(out, d)
		}
	}
	return out
}

func TestGroupOnDiskSurvivesACrashThatDropsUnsyncedWrites(t *testing.T) {
	net := newMemNet(5)
	ids := []uint64{1, 2, 3}
	nodes := startDiskGroup(t, net, ids)
	leaderOf := func() *diskNode {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for _, dn := range nodes {
				if dn.mn != nil {
					if st, ok := dn.mn.host.Status("orders"); ok && st.IsLead {
						return dn
					}
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatal("no leader")
		return nil
	}
	var acked []string
	publish := func(from *diskNode, n int, tag string) {
		for i := 0; i < n; i++ {
			d := fmt.Sprintf("%s-%d", tag, i)
			proposeDecided(t, from, d)
			acked = append(acked, d)
		}
	}
	publish(leaderOf(), 40, "a")
	// Crash the leader: its file system keeps only what was synced.
	victim := leaderOf()
	stopDiskNode(net, victim)
	victim.fs.Crash()
	publish(leaderOf(), 40, "b")
	startDiskNode(t, net, victim, nil)
	if len(victim.storage.Recovery().Cut) > 0 {
		t.Logf("recovery cut: %v", victim.storage.Recovery().Cut)
	}
	publish(leaderOf(), 20, "c")
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, dn := range nodes {
			if len(proposed(dn.machine)) != len(acked) {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			for _, dn := range nodes {
				t.Logf("node %d applied %d", dn.id, len(proposed(dn.machine)))
			}
			t.Fatalf("nodes did not all apply the %d acknowledged proposals", len(acked))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, dn := range nodes {
		got := proposed(dn.machine)
		slices.Sort(got)
		want := slices.Clone(acked)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("node %d applied a different set", dn.id)
		}
		// The membership survived the restart (conf.state).
		st, _ := dn.mn.host.Status("orders")
		if len(st.Voters) != 3 {
			t.Fatalf("node %d voters %v after restart, want 3", dn.id, st.Voters)
		}
	}
}
