package replica

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// testMsg is a Raft message whose Index identifies it in assertions.
func testMsg(from, to, index uint64, data string) *raftpb.Message {
	m := &raftpb.Message{
		Type:  raftpb.MsgApp.Enum(),
		From:  proto.Uint64(from),
		To:    proto.Uint64(to),
		Term:  proto.Uint64(3),
		Index: proto.Uint64(index),
	}
	if data != "" {
		m.Entries = []*raftpb.Entry{{Term: proto.Uint64(3), Index: proto.Uint64(index + 1), Data: []byte(data)}}
	}
	return m
}

// batchPayload encodes envs as one batch payload (without the size prefix).
func batchPayload(t testing.TB, envs ...Envelope) []byte {
	t.Helper()
	p := binary.BigEndian.AppendUint32(nil, uint32(len(envs)))
	for i := range envs {
		var err error
		if p, err = appendRecord(p, &envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// frame prefixes payload with its size.
func frame(payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

func sameEnvelopes(a, b []Envelope) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Group != b[i].Group || !proto.Equal(a[i].Msg, b[i].Msg) {
			return false
		}
	}
	return true
}

func TestBatchRoundTrip(t *testing.T) {
	in := []Envelope{
		{Group: MetaGroup, Msg: testMsg(1, 2, 7, "")},
		{Group: "orders", Msg: testMsg(1, 2, 8, "some entry data")},
		{Group: strings.Repeat("g", maxGroupLen), Msg: &raftpb.Message{}}, // an empty message encodes as 0 bytes
	}
	p := batchPayload(t, in...)
	out, err := decodeBatch(p)
	if err != nil {
		t.Fatal(err)
	}
	if !sameEnvelopes(in, out) {
		t.Fatalf("decoded %v, want %v", out, in)
	}
	// the decoded envelopes do not alias the payload
	clear(p)
	if !sameEnvelopes(in, out) {
		t.Fatal("decoded envelopes changed with the payload buffer")
	}
}

func TestAppendRecordRejects(t *testing.T) {
	for name, env := range map[string]Envelope{
		"empty group": {Group: "", Msg: testMsg(1, 2, 1, "")},
		"long group":  {Group: strings.Repeat("g", maxGroupLen+1), Msg: testMsg(1, 2, 1, "")},
		"nil message": {Group: "orders"},
	} {
		b, err := appendRecord([]byte("keep"), &env)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if string(b) != "keep" {
			t.Errorf("%s: buffer changed to %q", name, b)
		}
	}
}

// TestDecodeBatchMalformed: every rule of the format, broken once.
func TestDecodeBatchMalformed(t *testing.T) {
	good := batchPayload(t, Envelope{Group: "orders", Msg: testMsg(1, 2, 5, "x")})
	rec := good[4:]
	withCount := func(n uint32, rest []byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), rest...)
	}
	cases := map[string][]byte{
		"empty":                 {},
		"short count":           {0, 0, 1},
		"count 0":               withCount(0, rec),
		"count over max":        withCount(maxBatchCount+1, bytes.Repeat(rec, 2)),
		"count beyond bytes":    withCount(1000, rec),
		"count 2, one record":   withCount(2, append(rec[:len(rec):len(rec)], 0, 0, 0, 0, 0, 0)),
		"group length 0":        withCount(1, append([]byte{0}, rec[1:]...)),
		"group length too long": withCount(1, append([]byte{200}, rec[1:]...)),
		"message length beyond": withCount(1, func() []byte {
			r := bytes.Clone(rec)
			binary.BigEndian.PutUint32(r[1+len("orders"):], 1<<30)
			return r
		}()),
		"message not protobuf": withCount(1, append([]byte{1, 'g', 0, 0, 0, 2}, 0xff, 0xff)),
		"trailing bytes":       append(bytes.Clone(good), 0),
		"truncated record":     good[:len(good)-1],
	}
	for name, p := range cases {
		envs, err := decodeBatch(p)
		if !errors.Is(err, errFrame) {
			t.Errorf("%s: decodeBatch = %v, %v; want an errFrame", name, envs, err)
		}
	}
}

func TestReadFrameLimits(t *testing.T) {
	for name, tc := range map[string]struct {
		in   []byte
		want error
	}{
		"size 0":     {[]byte{0, 0, 0, 0}, errFrame},
		"over limit": {[]byte{0, 0, 4, 1}, errFrame}, // 1025 > 1024
		"huge":       {[]byte{0xff, 0xff, 0xff, 0xff}, errFrame},
		"short size": {[]byte{0, 0}, io.ErrUnexpectedEOF},
	} {
		_, err := readFrameSize(bytes.NewReader(tc.in), 1024)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// a truncated payload, small and large
	for _, size := range []int{10, 3 * readChunk} {
		_, err := readPayload(bytes.NewReader(make([]byte, size-1)), size, nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("truncated payload of %d: %v", size, err)
		}
		got, err := readPayload(bytes.NewReader(bytes.Repeat([]byte{7}, size)), size, make([]byte, 0, 16))
		if err != nil || len(got) != size || got[size-1] != 7 {
			t.Errorf("payload of %d: %d bytes, %v", size, len(got), err)
		}
	}
}

func TestHello(t *testing.T) {
	h := appendHello(nil, 11, 22)
	size, err := readFrameSize(bytes.NewReader(h), helloMaxSize)
	if err != nil || size != helloMinSize {
		t.Fatalf("hello size %d, %v", size, err)
	}
	from, to, err := parseHello(h[4:])
	if err != nil || from != 11 || to != 22 {
		t.Fatalf("parseHello = %d, %d, %v", from, to, err)
	}
	// later versions may append fields
	if from, _, err := parseHello(append(bytes.Clone(h[4:]), "future"...)); err != nil || from != 11 {
		t.Fatalf("hello with reserved bytes: %d, %v", from, err)
	}
	if _, _, err := parseHello(h[4:12]); !errors.Is(err, errFrame) {
		t.Fatalf("short hello: %v", err)
	}
	if _, _, err := parseHello(make([]byte, 16)); !errors.Is(err, errFrame) {
		t.Fatalf("hello from 0: %v", err)
	}
}

// TestWriteFramesSplits: the writer's frames decode back to the records in
// order, closing frames at frameTarget and at maxBatchCount.
func TestWriteFramesSplits(t *testing.T) {
	small := batchPayload(t, Envelope{Group: "g", Msg: &raftpb.Message{}})[4:] // 6 bytes
	big := batchPayload(t, Envelope{Group: "g", Msg: testMsg(1, 2, 2, strings.Repeat("b", frameTarget))})[4:]
	var recs [][]byte
	for range maxBatchCount + 10 {
		recs = append(recs, small)
	}
	recs = append(recs, big, small, big)
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	if err := writeFrames(w, recs, DefaultMaxFrameSize); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	var counts []int
	r := bytes.NewReader(out.Bytes())
	for r.Len() > 0 {
		size, err := readFrameSize(r, DefaultMaxFrameSize)
		if err != nil {
			t.Fatal(err)
		}
		p, err := readPayload(r, size, nil)
		if err != nil {
			t.Fatal(err)
		}
		envs, err := decodeBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, len(envs))
	}
	want := []int{maxBatchCount, 10, 1, 1, 1} // big records travel alone past the target
	if len(counts) != len(want) {
		t.Fatalf("frames of %v records, want %v", counts, want)
	}
	for i := range want {
		if counts[i] != want[i] {
			t.Fatalf("frames of %v records, want %v", counts, want)
		}
	}
}

// FuzzDecodeBatch: no input panics the decoder or makes it allocate beyond
// reason; what decodes re-encodes to an equivalent batch.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(batchPayload(f, Envelope{Group: "orders", Msg: testMsg(1, 2, 5, "x")}))
	f.Add(batchPayload(f,
		Envelope{Group: MetaGroup, Msg: testMsg(1, 2, 5, "")},
		Envelope{Group: "t", Msg: &raftpb.Message{}},
	))
	f.Add([]byte{0, 0, 0, 1, 1, 'g', 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 1, 'g', 0, 0, 0, 3, 0x3a, 0x01, 0x0a})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		envs, err := decodeBatch(p)
		if err != nil {
			if !errors.Is(err, errFrame) {
				t.Fatalf("error %v is not an errFrame", err)
			}
			return
		}
		again, err := decodeBatch(batchPayload(t, envs...))
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if !sameEnvelopes(envs, again) {
			t.Fatal("re-encoded batch differs")
		}
	})
}

// FuzzReadStream: a stream of frames read the way ServeConn reads them
// never panics, whatever the sizes claim.
func FuzzReadStream(f *testing.F) {
	f.Add(append(appendHello(nil, 1, 2), frame(batchPayload(f, Envelope{Group: "g", Msg: testMsg(1, 2, 1, "")}))...))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0x10, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		var buf []byte
		for {
			size, err := readFrameSize(r, 1<<16)
			if err != nil {
				return
			}
			p, err := readPayload(r, size, buf)
			if err != nil {
				return
			}
			buf = p
			decodeBatch(p)
		}
	})
}
