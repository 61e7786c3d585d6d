// Package hugepage allocates large byte buffers whose memory is advised
// for transparent huge pages.
//
// A process that fills a fresh buffer of many MiB (ferry fetch decoding a
// 16 MiB WAL segment, a push reading one) takes a page fault per 4 KiB
// page it touches first; on a virtual machine each costs microseconds, and
// for a 16 MiB buffer the faults cost about as much CPU as decoding it.
// With the advice (madvise MADV_HUGEPAGE, which counts where
// /sys/kernel/mm/transparent_hugepage/enabled is "madvise" or "always"),
// the kernel maps 2 MiB at a fault instead. Where THP is "never" or the
// advice fails, the buffer is ordinary memory: the advice changes no
// result, only the cost.
package hugepage

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Size is the huge page size the buffers are aligned to (x86-64, arm64
// with 4 KiB pages).
const Size = 2 << 20

// Make returns a zeroed buffer of length and capacity n, like make. A
// buffer of at least Size bytes starts on a Size boundary and is advised
// for huge pages (its whole huge pages; the tail past the last boundary
// is ordinary memory). It costs up to Size bytes of address space more
// than make, never memory that is not touched.
func Make(n int) []byte {
	if n < Size {
		return make([]byte, n)
	}
	b := make([]byte, n+Size)
	off := 0
	if a := uintptr(unsafe.Pointer(unsafe.SliceData(b))) % Size; a != 0 {
		off = int(Size - a)
	}
	b = b[off : off+n : off+n]
	unix.Madvise(b[:n&^(Size-1)], unix.MADV_HUGEPAGE) // advice: an error (no THP in the kernel) changes nothing
	return b
}

// Advised reports whether the first byte of p lies in memory advised for
// huge pages: its mapping in /proc/self/smaps has the VmFlag "hg", which
// madvise(MADV_HUGEPAGE) sets whatever THP's global setting. For tests.
func Advised(p []byte) (bool, error) {
	if len(p) == 0 {
		return false, fmt.Errorf("empty buffer")
	}
	a := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			if in {
				return slices.Contains(strings.Fields(rest), "hg"), nil
			}
			continue
		}
		// A mapping's first line: "lo-hi perms offset dev inode [path]".
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 && !strings.Contains(strings.Fields(line)[0], ":") {
			in = lo <= a && a < hi
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, fmt.Errorf("no mapping in /proc/self/smaps holds %#x", a)
}
