package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/sluicemq/sluice/store"
)

// metaMachine is the meta group's state machine: the placement, and the
// index it reflects, kept in one file rewritten atomically whenever a
// command changes it (placement commands are rare: a node joining, a topic
// created, deleted or moved). Restarted with that index, the group applies
// the commands after it again, from exactly that state, so nothing is
// applied twice.
type metaMachine struct {
	fs       store.FS
	path     string
	log      *slog.Logger
	onChange func()

	mu      sync.Mutex // guards p, viewed and applied
	p       *Placement
	viewed  *Placement // view's copy of p; nil after a change
	applied uint64
}

type metaFile struct {
	Applied   uint64     `json:"applied"`
	Placement *Placement `json:"placement"`
}

func openMetaMachine(fs store.FS, path string, log *slog.Logger, onChange func()) (*metaMachine, error) {
	m := &metaMachine{fs: fs, path: path, log: log, onChange: onChange, p: NewPlacement()}
	b, err := readFile(fs, path)
	if err != nil {
		if errors.Is(err, errNoFile) {
			return m, nil
		}
		return nil, err
	}
	var mf metaFile
	if err := json.Unmarshal(b, &mf); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if mf.Placement != nil {
		p, err := UnmarshalPlacement(mustJSON(mf.Placement))
		if err != nil {
			return nil, err
		}
		m.p = p
	}
	m.applied = mf.Applied
	return m, nil
}

// Apply implements StateMachine.
func (m *metaMachine) Apply(last uint64, cmds []Command) error {
	m.mu.Lock()
	if len(cmds) > 0 {
		m.viewed = nil
	}
	for _, c := range cmds {
		if err := m.p.Apply(c.Index, c.Data); err != nil {
			// Refused the same way on every node: nothing changed.
			m.log.Debug("placement command refused", "index", c.Index, "err", err)
		}
	}
	advanced := last > m.applied
	if advanced {
		m.applied = last
	}
	var data []byte
	if len(cmds) > 0 {
		data = mustJSON(metaFile{Applied: m.applied, Placement: m.p})
	}
	m.mu.Unlock()
	if data == nil {
		if advanced {
			// Only membership changes or a leader's empty entry: the
			// placement is the same, but a node catching up (a lost
			// disk) may now have applied all the group had committed.
			m.onChange()
		}
		return nil
	}
	if err := store.WriteFileAtomic(m.fs, m.path, data); err != nil {
		return fmt.Errorf("write placement: %w", err)
	}
	m.onChange()
	return nil
}

// Restore implements StateMachine: the snapshot's data is a metaFile.
func (m *metaMachine) Restore(snap *raftpb.Snapshot) error {
	var mf metaFile
	if err := json.Unmarshal(snap.GetData(), &mf); err != nil {
		return fmt.Errorf("decode placement snapshot: %w", err)
	}
	p, err := UnmarshalPlacement(mustJSON(mf.Placement))
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.p, m.viewed = p, nil
	m.applied = snap.GetMetadata().GetIndex()
	data := mustJSON(metaFile{Applied: m.applied, Placement: m.p})
	m.mu.Unlock()
	if err := store.WriteFileAtomic(m.fs, m.path, data); err != nil {
		return fmt.Errorf("write placement: %w", err)
	}
	m.onChange()
	return nil
}

// snapshotData is the machine's state as a snapshot's data.
func (m *metaMachine) snapshotData() (uint64, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied, mustJSON(metaFile{Applied: m.applied, Placement: m.p})
}

func (m *metaMachine) appliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

// assignment returns a copy of topic's assignment.
func (m *metaMachine) assignment(topic string) (Assignment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.p.Topics[topic]
	if !ok {
		return Assignment{}, false
	}
	c := *a
	c.Members = append([]uint64(nil), a.Members...)
	return c, true
}

// view returns a copy of the placement, made once per change: callers
// share it and must not modify it.
func (m *metaMachine) view() *Placement {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.viewed == nil {
		m.viewed, _ = UnmarshalPlacement(mustJSON(m.p))
	}
	return m.viewed
}

var errNoFile = errors.New("no such file")

// readFile reads a whole file of fs (errNoFile when it does not exist).
func readFile(fs store.FS, name string) ([]byte, error) {
	dir := filepath.Dir(name)
	names, err := fs.List(dir)
	if err != nil {
		return nil, errNoFile
	}
	found := false
	for _, n := range names {
		if n == filepath.Base(name) {
			found = true
			break
		}
	}
	if !found {
		return nil, errNoFile
	}
	f, size, err := fs.OpenAppend(name, false)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
