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

// Empty tells a spool with nothing to ship from one whose journal holds
// records not sealed yet or whose sealed/ holds a segment. A journal
// whose records are all sealed (JournalRotate lets one file hold many
// seals) holds nothing.
func TestEmpty(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.JournalRotate = 1 << 20
	sp := openSpool(t, cfg, "t")
	if empty, err := Empty(cfg.Dir); !empty || err != nil {
		t.Fatalf("fresh spool: Empty %v, %v; want true", empty, err)
	}
	appendRecs(t, sp, []batch.Record{{Data: []byte("a")}}, "")
	if empty, err := Empty(cfg.Dir); empty || err != nil {
		t.Fatalf("a record in the journal: Empty %v, %v; want false", empty, err)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	if len(sealedFiles(t, cfg.Dir)) != 1 {
		t.Fatal("no sealed segment")
	}
	if empty, err := Empty(cfg.Dir); empty || err != nil {
		t.Fatalf("a sealed segment: Empty %v, %v; want false", empty, err)
	}
	sp.Confirm("t", 1)
	sp.Close()
	journals, err := listJournals(cfg.Dir)
	if err != nil || len(journals) != 1 {
		t.Fatalf("journals %q, %v", journals, err)
	}
	if fi, err := os.Stat(filepath.Join(cfg.Dir, journals[0])); err != nil || fi.Size() == 0 {
		t.Fatalf("journal %s: %v, want the sealed record still in it", journals[0], err)
	}
	if empty, err := Empty(cfg.Dir); !empty || err != nil {
		t.Fatalf("everything sealed, confirmed and closed: Empty %v, %v; want true", empty, err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "state.json"), []byte("{bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Empty(cfg.Dir); err == nil || !strings.Contains(err.Error(), "state.json is damaged") {
		t.Fatalf("damaged state.json: %v; want it named", err)
	}
}
