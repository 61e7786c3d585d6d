package shipper

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The read-ahead takes .ready files in the order PostgreSQL's archiver
// does: timeline history files first, then by name; other files and
// names a push cannot carry are skipped.
func TestReadyFilesOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"000000020000000000000003.ready", "00000002.history.ready", "000000010000000000000002.partial.ready",
		"000000010000000000000001.00000028.backup.ready", "000000010000000000000001.done", ".hidden.ready", "xlogtemp.123"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readyFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"00000002.history", "000000010000000000000001.00000028.backup", "000000010000000000000002.partial", "000000020000000000000003"}
	if !slices.Equal(got, want) {
		t.Fatalf("readyFiles = %q, want %q", got, want)
	}
}
