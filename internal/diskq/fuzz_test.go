package diskq

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/sluicemq/sluice/store"
)

// FuzzReadCorruptFiles opens a queue over arbitrary bytes in two data
// files and an arbitrary metadata file, and reads until nothing is left.
// Whatever the bytes, reading ends (a bounded number of calls), never
// returns a record outside the size bounds, and leaves a queue that works:
// a record put afterwards is the next one read, and the depth is then 0.
func FuzzReadCorruptFiles(f *testing.F) {
	var good []byte
	for i := range 5 {
		b := fmt.Appendf(nil, "record %d", i)
		good = binary.BigEndian.AppendUint32(good, uint32(len(b)))
		good = append(good, b...)
	}
	f.Add(good, good[:30], []byte("5\n0,0\n1,30\n"))
	f.Add(good, []byte{}, []byte("5\n0,13\n0,65\n"))
	f.Add(good[:20], good, []byte("3\n0,0\n0,65\n"))
	f.Add(append([]byte{0xff, 0xff, 0xff, 0xff}, good...), good, []byte("9\n0,0\n1,65\n"))
	f.Add(good, good, []byte("2\n3,0\n1,10\n"))
	f.Add(good, good, []byte("1\n0,0\n900000000,0\n"))
	f.Add(good, good, []byte("garbage"))
	f.Fuzz(func(t *testing.T, file0, file1, meta []byte) {
		fs := store.NewMemFS()
		fs.MkdirAll("/q")
		fs.WriteFile("/q/f.diskqueue.000000.dat", file0)
		fs.WriteFile("/q/f.diskqueue.000001.dat", file1)
		fs.WriteFile("/q/f.diskqueue.meta.dat", meta)
		const minSize, maxSize = 2, 64
		q := Open("f", "/q", Options{FS: fs, MaxBytesPerFile: 100, MinMsgSize: minSize, MaxMsgSize: maxSize,
			SyncEvery: 7, Logger: quiet, ReadBlock: 16})
		for calls := 0; ; calls++ {
			if calls > len(file0)+len(file1)+8 {
				t.Fatalf("still reading after %d calls", calls)
			}
			recs, err := q.Read(nil, 3)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if len(r) < minSize || len(r) > maxSize {
					t.Fatalf("read a %d-byte record, bounds [%d, %d]", len(r), minSize, maxSize)
				}
			}
			if len(recs) == 0 {
				break
			}
		}
		if err := q.Put([]byte("after")); err != nil {
			t.Fatal(err)
		}
		var last []byte
		for calls := 0; ; calls++ {
			if calls > 4 {
				t.Fatal("the record put after the corruption was not read")
			}
			recs, _ := q.Read(nil, 100)
			if len(recs) == 0 {
				break
			}
			last = recs[len(recs)-1]
		}
		if !bytes.Equal(last, []byte("after")) {
			t.Fatalf("last record read %q, want the one put after reading everything", last)
		}
		if d := q.Depth(); d != 0 {
			t.Fatalf("depth %d after reading everything", d)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
