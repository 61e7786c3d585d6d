package s3

import "testing"

// A Content-Range the store cannot take at its word is refused, so that a
// server that ignored the Range header (or lies about the object) is
// never read past the caller's buffer.
func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		v                 string
		first, last, size int64
		ok                bool
	}{
		{"bytes 0-71/72", 0, 71, 72, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"", 0, 0, 0, false},
		{"bytes 0-71/*", 0, 0, 0, false},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"items 0-1/2", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/1", 0, 0, 0, false},
	} {
		first, last, size, ok := parseContentRange(tc.v)
		if ok != tc.ok || (ok && (first != tc.first || last != tc.last || size != tc.size)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v", tc.v, first, last, size, ok, tc.first, tc.last, tc.size, tc.ok)
		}
	}
}
