package nsqd

import (
	"bytes"
	"io"
	"testing"
)

// countingSource hands out data in reads no larger than the caller's
// space and at most max bytes each, counting the reads.
type countingSource struct {
	data  []byte
	max   int
	reads int
}

func (s *countingSource) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	s.reads++
	n := min(len(p), len(s.data))
	if s.max > 0 {
		n = min(n, s.max)
	}
	copy(p, s.data[:n])
	s.data = s.data[n:]
	return n, nil
}

// chunkSource hands out its chunks one per read (a chunk larger than the
// caller's space over several), like a socket whose peer sends each chunk
// only after the previous one was answered.
type chunkSource struct {
	chunks [][]byte
	reads  int
}

func (s *chunkSource) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	s.reads++
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

// nopHook is a readHook that does nothing.
type nopHook struct{}

func (nopHook) beforeRead(bool) error                    { return nil }
func (nopHook) afterRead(_ bool, _ int, err error) error { return err }

func readAllLines(t *testing.T, r *connReader) int {
	t.Helper()
	lines := 0
	for {
		if _, err := r.readLine(nopHook{}); err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			return lines
		}
		lines++
	}
}

func TestBusyConsumerFINsAreReadInLargeBlocks(t *testing.T) {
	const fins = 10000
	src := &countingSource{data: bytes.Repeat([]byte("FIN 0123456789abcdef\n"), fins)}
	r := &connReader{src: src}
	if got := readAllLines(t, r); got != fins {
		t.Fatalf("read %d lines, want %d", got, fins)
	}
	// 210,000 bytes: 13 reads of 16 KiB, and a few 64-byte reads that
	// start each busy spell; 64-byte reads throughout would be ~3,300
	if src.reads > 40 {
		t.Fatalf("%d reads for %d FIN lines that were all available at once", src.reads, fins)
	}
}

func TestQuietConnectionKeepsOnlyTheSmallBuffer(t *testing.T) {
	// heartbeat replies arriving one per read never take the pooled buffer
	src := &countingSource{data: bytes.Repeat([]byte("NOP\n"), 100), max: 4}
	r := &connReader{src: src}
	for i := 0; i < 100; i++ {
		if _, err := r.readLine(nopHook{}); err != nil {
			t.Fatal(err)
		}
		if r.buf != nil && !r.isSmall() {
			t.Fatalf("line %d: a quiet connection holds a %d-byte buffer", i, len(r.buf))
		}
	}
}

func TestPublisherReadsEachPUBInOneReadAfterTheFirst(t *testing.T) {
	// a PUB of a 100-byte body is 118 bytes: more than the small array,
	// so a publishing connection (readMessageBody sets keep) whose PUBs
	// arrive one per read keeps the pooled buffer between them instead of
	// reading each in two parts
	//
	// Each PUB arrives alone, as on a socket whose publisher waits for the
	// OK before sending the next: a stream cut at arbitrary places hid
	// that the small array's release in the middle of a PUB dropped keep,
	// so that every PUB was read in two parts (profiled: two reads per
	// PUB on durable-pub64).
	const pubs = 1000
	body := bytes.Repeat([]byte{'x'}, 100)
	cmd := append([]byte("PUB topic\n\x00\x00\x00\x64"), body...)
	src := &chunkSource{}
	for range pubs {
		src.chunks = append(src.chunks, cmd)
	}
	r := &connReader{src: src}
	got := make([]byte, 100)
	for i := 0; i < pubs; i++ {
		line, err := r.readLine(nopHook{})
		if err != nil || string(line) != "PUB topic" {
			t.Fatalf("PUB %d: line %q, %v", i, line, err)
		}
		r.keep = true // as readMessageBody does
		size, err := r.readInt32(nopHook{})
		if err != nil || size != 100 {
			t.Fatalf("PUB %d: size %d, %v", i, size, err)
		}
		if err := r.readFull(got, nopHook{}); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("PUB %d: body %q, %v", i, got, err)
		}
	}
	if src.reads > pubs+2 {
		t.Fatalf("%d reads for %d PUBs that arrived one per read", src.reads, pubs)
	}
	// going idle (shed or parked) gives the buffer back
	r.release()
	if r.buf != nil || r.keep {
		t.Fatal("release kept the buffer")
	}
}

func TestConsumerFINsLetTheBufferGoWhenQuiet(t *testing.T) {
	// a consumer's IDENTIFY body and FIN batches take the pooled buffer;
	// without publishing it gives it back once a read brings little data
	ident := append([]byte("IDENTIFY\n\x00\x00\x00\x80"), bytes.Repeat([]byte{' '}, 128)...)
	src := &countingSource{data: append(ident, []byte("FIN 0123456789abcdef\n")...), max: len(ident)}
	r := &connReader{src: src}
	if line, err := r.readLine(nopHook{}); err != nil || string(line) != "IDENTIFY" {
		t.Fatalf("line %q, %v", line, err)
	}
	if _, err := r.readInt32(nopHook{}); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 128)
	if err := r.readFull(body, nopHook{}); err != nil {
		t.Fatal(err)
	}
	if line, err := r.readLine(nopHook{}); err != nil || string(line) != "FIN 0123456789abcdef" {
		t.Fatalf("line %q, %v", line, err)
	}
	r.maybeRelease()
	if r.buf != nil && !r.isSmall() {
		t.Fatalf("a quiet consumer holds a %d-byte buffer", len(r.buf))
	}
}
