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
