package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []Record{
		{Seq: 0, TS: 0, DeliverAt: 0, Body: []byte{}},
		{Seq: 1, TS: 1700000000123456789, DeliverAt: 0, Body: []byte("hello")},
		{Seq: 1<<64 - 1, TS: -1, DeliverAt: 1<<63 - 1, Body: bytes.Repeat([]byte{0xab}, 70000)},
	}
	var buf []byte
	for _, rec := range tests {
		buf = appendRecord(buf, rec.Seq, rec.TS, rec.DeliverAt, rec.Body)
	}
	rest := buf
	for i, want := range tests {
		got, n, err := decodeRecord(rest, 1<<20, true)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if n != recOverhead+len(want.Body) {
			t.Fatalf("record %d: size %d, want %d", i, n, recOverhead+len(want.Body))
		}
		if got.Seq != want.Seq || got.TS != want.TS || got.DeliverAt != want.DeliverAt || !bytes.Equal(got.Body, want.Body) {
			t.Fatalf("record %d: got %+v", i, got)
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left over", len(rest))
	}
}

// Every single flipped byte of a record is detected: the length goes out of
// range, the record runs past the data, or the checksum fails.
func TestRecordCorruptionIsDetected(t *testing.T) {
	good := appendRecord(nil, 42, 7, 9, []byte("a body of some length"))
	for i := range good {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte(nil), good...)
			b[i] ^= flip
			rec, _, err := decodeRecord(b, 1<<20, true)
			var ce *corruptError
			if err == nil {
				t.Fatalf("byte %d ^ %#x: decoded %+v", i, flip, rec)
			}
			if !errors.Is(err, errShort) && !errors.As(err, &ce) {
				t.Fatalf("byte %d ^ %#x: unexpected error %v", i, flip, err)
			}
		}
	}
	// every proper prefix is short, not corrupt
	for n := range len(good) {
		if _, _, err := decodeRecord(good[:n], 1<<20, true); !errors.Is(err, errShort) {
			t.Fatalf("prefix of %d bytes: %v, want errShort", n, err)
		}
	}
}

func TestRecordLimitsAndKinds(t *testing.T) {
	rec := appendRecord(nil, 1, 2, 3, make([]byte, 100))
	if _, _, err := decodeRecord(rec, recFixed+99, true); err == nil {
		t.Fatal("a record longer than maxLen decoded")
	}
	if _, _, err := decodeRecord(rec, recFixed+100, true); err != nil {
		t.Fatalf("a record of exactly maxLen: %v", err)
	}
	short := binary.BigEndian.AppendUint32(nil, recFixed-1)
	short = append(short, make([]byte, 40)...)
	if _, _, err := decodeRecord(short, 1<<20, true); err == nil {
		t.Fatal("a length below the fixed fields decoded")
	}
	// an unknown kind with a valid checksum is still refused
	bad := append([]byte(nil), rec...)
	bad[recHeader] = 9
	binary.BigEndian.PutUint32(bad[4:], crc32c(bad[recHeader:]))
	if _, _, err := decodeRecord(bad, 1<<20, true); err == nil {
		t.Fatal("unknown kind decoded")
	}
	// without verification (the cache path) a bad checksum goes unnoticed:
	// only bytes the log wrote itself are decoded that way
	bad = append([]byte(nil), rec...)
	bad[len(bad)-1] ^= 1
	if _, _, err := decodeRecord(bad, 1<<20, false); err != nil {
		t.Fatalf("unverified decode: %v", err)
	}
}
