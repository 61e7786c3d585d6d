package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/shipper/source"
)

// forkOffset cuts at the divergent records that end at the spool's cursor
// when the cursor is a tail: source's position in the file, even when the
// lines after it (read but never sealed) repeat them, which a search for
// their last occurrence would take instead; without such a cursor it
// searches.
func TestForkOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	// Through the fork, the divergent records, then lines read but not
	// sealed that happen to repeat them.
	data := []byte("a1\na2\n" + "x\ny\n" + "x\ny\nz\n")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tail := []byte("x\ny\n")
	cursor, err := source.TailCursorAt(path, 10) // after the divergent records
	if err != nil {
		t.Fatal(err)
	}
	other, err := source.TailCursorAt(path, 6) // a file that was rotated away
	if err != nil {
		t.Fatal(err)
	}
	other = []byte(strings.Replace(string(other), `"ino":`, `"ino":1`, 1))
	for _, tc := range []struct {
		name   string
		tail   []byte
		cursor []byte
		want   int64
		err    string
	}{
		{"cursor", tail, cursor, 6, ""},
		{"cursor, no records past the fork", nil, cursor, 10, ""},
		{"no tail: cursor", tail, nil, 10, ""},
		{"cursor in another file", tail, other, 10, ""},
		{"no tail: cursor, nothing past the fork", nil, nil, int64(len(data)), ""},
		{"cursor, records not before it", []byte("a2\n"), cursor, 0, "does not hold the divergent records right before byte 10"},
		{"no tail: cursor, records missing", []byte("q\n"), nil, 0, "does not hold the divergent records"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := forkOffset(path, data, tc.tail, tc.cursor)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "" && got != tc.want:
				t.Fatalf("fork at %d, want %d", got, tc.want)
			}
		})
	}
	if _, err := forkOffset(path, data[:8], tail, cursor); err == nil || !strings.Contains(err.Error(), "fewer than the 10") {
		t.Fatalf("a file shorter than the cursor: error %v", err)
	}
}
