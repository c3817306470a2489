//go:build linux

package bench

import (
	"os"
	"syscall"
	"testing"
)

// The bench reads a process's CPU time and minor page faults from
// /proc/<pid>/stat: touching 64 MiB of freshly mapped memory adds a fault
// per 4 KiB page touched (at least one per 2 MiB with huge pages), and
// spinning adds CPU time.
func TestProcessStatCountsFaultsOfFreshPagesAndCPUTime(t *testing.T) {
	before, err := readProcessStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const size, pages = 64 << 20, (64 << 20) / 4096
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	for i := 0; i < size; i += 4096 {
		mem[i] = 1
	}
	x := 0
	for {
		after, err := readProcessStat(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after.ticks > before.ticks {
			if got := after.minflt - before.minflt; got < pages/512 {
				t.Fatalf("%d minor faults after touching %d freshly mapped pages", got, pages)
			}
			break
		}
		for i := range 1 << 20 { // spin until the CPU time moves
			x += i
		}
	}
	_ = x
}
