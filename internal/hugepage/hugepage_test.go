package hugepage

import (
	"testing"
	"unsafe"
)

func TestMakeAdvisesHugePages(t *testing.T) {
	// Advised tells the difference: ordinary heap memory (taken before
	// any Make, so it cannot be a freed Make buffer) is not advised.
	plain := make([]byte, 8<<20)
	if ok, err := Advised(plain); err != nil || ok {
		t.Fatalf("Advised(make(8 MiB)) = %v, %v; want false", ok, err)
	}
	for _, n := range []int{Size, 16<<20 + 123, 5 * Size} {
		b := Make(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("Make(%d): len %d cap %d", n, len(b), cap(b))
		}
		if a := uintptr(unsafe.Pointer(unsafe.SliceData(b))); a%Size != 0 {
			t.Errorf("Make(%d) starts at %#x, not on a %d boundary", n, a, Size)
		}
		for _, off := range []int{0, n&^(Size-1) - 1} {
			if ok, err := Advised(b[off:]); err != nil || !ok {
				t.Errorf("Make(%d): byte %d's mapping is not advised for huge pages (%v)", n, off, err)
			}
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("Make(%d): byte %d is %d, not zero", n, i, c)
			}
		}
		b[0], b[n-1] = 1, 2 // writable to both ends
	}
}

func TestMakeSmall(t *testing.T) {
	b := Make(Size - 1)
	if len(b) != Size-1 || cap(b) != Size-1 {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	if Make(0) == nil || len(Make(0)) != 0 {
		t.Fatal("Make(0) is not an empty slice")
	}
}
