//go:build unix

package batch

import (
	"errors"
	"syscall"
	"testing"
)

func TestCheckSizeFramingCap(t *testing.T) {
	// A limit above the framing cap does not lift the cap. CheckSize only
	// looks at lengths, so Data is 1 GiB of untouched anonymous mapping:
	// address space, no memory.
	n := MaxFramedRecord - RecordOverhead + 1
	huge, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		t.Fatalf("mmap %d bytes: %v", n, err)
	}
	defer syscall.Munmap(huge)
	r := Record{Data: huge}
	if err := r.CheckSize(2 * MaxFramedRecord); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("record of %d framed bytes: err = %v, want ErrTooLarge", r.FramedSize(), err)
	}
	r.Data = huge[:n-1]
	if err := r.CheckSize(2 * MaxFramedRecord); err != nil {
		t.Fatalf("record at the framing cap: %v", err)
	}
}
