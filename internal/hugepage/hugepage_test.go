package hugepage

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// vmFlags returns the VmFlags of the mapping holding address a in
// /proc/self/smaps.
func vmFlags(t *testing.T, a uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 && strings.Contains(strings.Fields(line)[0], "-") {
			in = lo <= a && a < hi
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no mapping holds %#x in /proc/self/smaps", a)
	return nil
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

func TestMakeAdvisesHugePages(t *testing.T) {
	for _, n := range []int{Size, 16<<20 + 123, 5 * Size} {
		b := Make(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("Make(%d): len %d cap %d", n, len(b), cap(b))
		}
		a := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if a%Size != 0 {
			t.Errorf("Make(%d) starts at %#x, not on a %d boundary", n, a, Size)
		}
		// smaps shows madvise(MADV_HUGEPAGE) as the flag "hg" of the
		// mapping, whatever THP's global setting.
		for _, off := range []int{0, n&^(Size-1) - 1} {
			if fl := vmFlags(t, a+uintptr(off)); !hasFlag(fl, "hg") {
				t.Errorf("Make(%d): byte %d's mapping is not advised for huge pages: VmFlags %v", n, off, fl)
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
