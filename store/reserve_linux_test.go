package store

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReserveKeepsSizeAndBytes: reserving space past a file's end changes
// neither its size nor what it holds, on the operating system's file
// system and on MemFS.
func TestReserveKeepsSizeAndBytes(t *testing.T) {
	mem := newMemDir(t, "/d")
	for _, c := range []struct {
		name string
		fs   FS
		path string
	}{{"os", OSFS{}, filepath.Join(t.TempDir(), "f")}, {"mem", mem, "/d/f"}} {
		f, _, err := c.fs.OpenAppend(c.path, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
		r, ok := f.(Reserver)
		if !ok {
			t.Fatalf("%s: files are not Reservers", c.name)
		}
		if err := r.Reserve(3, 1<<16); err != nil {
			if c.name == "os" && (errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)) {
				t.Logf("os: the file system of %s cannot reserve: %v", c.path, err)
				f.Close()
				continue
			}
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, err := f.Write([]byte("de")); err != nil {
			t.Fatal(err)
		}
		f.Close()
		_, size, err := c.fs.OpenAppend(c.path, false)
		if err != nil || size != 5 {
			t.Fatalf("%s: size %d after reserving, want 5 (%v)", c.name, size, err)
		}
		if c.name == "os" {
			b, _ := os.ReadFile(c.path)
			if string(b) != "abcde" {
				t.Fatalf("os: file holds %q", b)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(c.path, &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks*512 < 1<<16 {
				t.Fatalf("os: %d bytes allocated after reserving 64 KiB", st.Blocks*512)
			}
		}
	}
	if b, _ := mem.ReadFile("/d/f"); string(b) != "abcde" {
		t.Fatalf("mem: file holds %q", b)
	}
}

// TestMemFSReserveTakesSpace: a reservation counts against SetSpace at once
// (all or nothing), and writes into it need no more.
func TestMemFSReserveTakesSpace(t *testing.T) {
	mem := newMemDir(t, "/d")
	mem.SetSpace(100)
	f, _, _ := mem.OpenAppend("/d/a", true)
	if err := f.(Reserver).Reserve(0, 101); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("reserving more than the disk: %v, want ENOSPC", err)
	}
	if err := f.(Reserver).Reserve(0, 60); err != nil {
		t.Fatal(err)
	}
	g, _, _ := mem.OpenAppend("/d/b", true)
	if n, err := g.Write(make([]byte, 50)); n != 40 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("another file wrote %d bytes (%v) into a disk with 40 free", n, err)
	}
	if _, err := f.Write(make([]byte, 60)); err != nil {
		t.Fatalf("write into the reservation on a full disk: %v", err)
	}
	if _, err := f.Write([]byte{1}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past the reservation on a full disk: %v, want ENOSPC", err)
	}
}
