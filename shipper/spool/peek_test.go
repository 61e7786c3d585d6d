package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// Generation reads a spool's pinned generation while another holds it,
// and names a damaged state.json or another stream's spool.
func TestGenerationWithoutOpening(t *testing.T) {
	dir := t.TempDir()
	sp, err := Open(Config{Dir: dir, Stream: "app"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Continue(3, 10, batch.ZeroHash); err != nil {
		t.Fatal(err)
	}
	if g, err := Generation(dir, "app"); g != 3 || err != nil {
		t.Fatalf("Generation of an open spool continued in generation 3: %d, %v", g, err)
	}
	sp.Close()
	if _, err := Generation(dir, "other"); err == nil || !strings.Contains(err.Error(), `"app"`) {
		t.Fatalf("another stream's spool: %v; want an error naming its stream", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Generation(dir, "app"); err == nil || !strings.Contains(err.Error(), "state.json is damaged") {
		t.Fatalf("damaged state.json: %v; want it named", err)
	}
}
