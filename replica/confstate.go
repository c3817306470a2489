package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/sluicemq/sluice/store"
)

// The membership a group has once its applied conf changes are applied is
// kept beside the log, in conf.state: [crc32c u32][index u64][ConfState],
// the index being that of the conf change. raft does not apply a conf
// change again after a restart past it, so without this a restarted node
// would start with no members. A snapshot's ConfState is newer when its
// index is higher.

const confFile = "conf.state"

// SetConfState records durably (before it returns) the membership cs
// that the conf change at index made.
func (s *Storage) SetConfState(index uint64, cs *pb.ConfState) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	enc, err := proto.Marshal(cs)
	if err != nil {
		return fmt.Errorf("encode membership of raft log %s: %w", s.dir, err)
	}
	b := make([]byte, 12, 12+len(enc))
	binary.BigEndian.PutUint64(b[4:], index)
	b = append(b, enc...)
	binary.BigEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
	if err := store.WriteFileAtomic(s.fs, filepath.Join(s.dir, confFile), b); err != nil {
		return fmt.Errorf("record membership of raft log %s: %w", s.dir, err)
	}
	s.mu.Lock()
	s.conf, s.confIndex = proto.CloneOf(cs), index
	s.mu.Unlock()
	return nil
}

// loadConf reads conf.state, if there is one.
func (s *Storage) loadConf() error {
	b, err := readFile(s.fs, filepath.Join(s.dir, confFile))
	if errors.Is(err, errNoFile) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(b) < 12 || crc32.Checksum(b[4:], castagnoli) != binary.BigEndian.Uint32(b) {
		return fmt.Errorf("raft log %s: %s is corrupt", s.dir, confFile)
	}
	var cs pb.ConfState
	if err := proto.Unmarshal(b[12:], &cs); err != nil {
		return fmt.Errorf("raft log %s: %s: %w", s.dir, confFile, err)
	}
	s.conf, s.confIndex = &cs, binary.BigEndian.Uint64(b[4:])
	return nil
}
