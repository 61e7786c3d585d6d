package storetest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/ferry-dr/ferry/store"
)

// RunRange runs the store.RangeGetter conformance tests against stores
// from newStore, each test on a fresh, empty store.
func RunRange(t *testing.T, newStore func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, store.RangeGetter)
	}{
		{"GetRange", testGetRange},
		{"GetRangePastEnd", testGetRangePastEnd},
		{"GetRangeMissing", testGetRangeMissing},
		{"GetSuffix", testGetSuffix},
		{"GetRangeInvalidName", testGetRangeInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			rg, ok := s.(store.RangeGetter)
			if !ok {
				t.Fatalf("%s is not a store.RangeGetter", s)
			}
			tc.fn(t, rg)
		})
	}
}

func testGetRange(t *testing.T, s store.RangeGetter) {
	data := randomBytes(100_000, 7)
	mustPut(t, s, "s/obj", data)
	for _, r := range []struct{ off, n int }{{0, 1}, {0, 100_000}, {1, 99_999}, {12_345, 4_096}, {99_999, 1}, {50_000, 0}} {
		p := bytes.Repeat([]byte{0xEE}, r.n+8)
		if err := s.GetRange(t.Context(), "s/obj", int64(r.off), p[:r.n]); err != nil {
			t.Fatalf("GetRange(%d, %d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(p[:r.n], data[r.off:r.off+r.n]) {
			t.Errorf("GetRange(%d, %d) read other bytes than the object's", r.off, r.n)
		}
		if !bytes.Equal(p[r.n:], bytes.Repeat([]byte{0xEE}, 8)) {
			t.Errorf("GetRange(%d, %d) wrote past the buffer it was given", r.off, r.n)
		}
	}
}

func testGetRangePastEnd(t *testing.T, s store.RangeGetter) {
	mustPut(t, s, "s/obj", randomBytes(1_000, 8))
	for _, r := range []struct{ off, n int }{{990, 11}, {0, 1_001}, {1_000, 1}, {5_000, 10}} {
		err := s.GetRange(t.Context(), "s/obj", int64(r.off), make([]byte, r.n))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("GetRange(%d, %d) of a 1000-byte object = %v, want an error wrapping io.ErrUnexpectedEOF", r.off, r.n, err)
		}
	}
}

func testGetRangeMissing(t *testing.T, s store.RangeGetter) {
	if err := s.GetRange(t.Context(), "s/nope", 0, make([]byte, 10)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRange of a missing object = %v, want store.ErrNotFound", err)
	}
	if _, _, err := s.GetSuffix(t.Context(), "s/nope", make([]byte, 10)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetSuffix of a missing object = %v, want store.ErrNotFound", err)
	}
}

func testGetSuffix(t *testing.T, s store.RangeGetter) {
	data := randomBytes(70_000, 9)
	mustPut(t, s, "s/obj", data)
	for _, want := range []int{1, 72, 65_536, 70_000, 70_001, 200_000} {
		p := bytes.Repeat([]byte{0xEE}, want)
		n, size, err := s.GetSuffix(t.Context(), "s/obj", p)
		if err != nil {
			t.Fatalf("GetSuffix(%d): %v", want, err)
		}
		if size != int64(len(data)) {
			t.Errorf("GetSuffix(%d) says the object has %d bytes, want %d", want, size, len(data))
		}
		if wantN := min(want, len(data)); n != wantN {
			t.Fatalf("GetSuffix(%d) read %d bytes, want %d", want, n, wantN)
		}
		if !bytes.Equal(p[:n], data[len(data)-n:]) {
			t.Errorf("GetSuffix(%d) read other bytes than the object's last %d", want, n)
		}
		if !bytes.Equal(p[n:], bytes.Repeat([]byte{0xEE}, want-n)) {
			t.Errorf("GetSuffix(%d) wrote past the %d bytes it read", want, n)
		}
	}
}

func testGetRangeInvalidName(t *testing.T, s store.RangeGetter) {
	for _, name := range []string{"", "/abs", "a/../b", "dir/"} {
		if err := s.GetRange(t.Context(), name, 0, make([]byte, 1)); !errors.Is(err, store.ErrPermanent) {
			t.Errorf("GetRange(%q) = %v, want an error wrapping store.ErrPermanent", name, err)
		}
	}
}
