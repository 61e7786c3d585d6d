package spool

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
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

// Empty on a journal someone else wrote: a torn tail holds nothing (as
// recovery drops it), an entry whose CRC matches but which does not parse
// is not empty (Open reports it), nor is a record of an unplaced spool's
// provisional file.
func TestEmptyHostileJournal(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	sp.Close()
	journal := filepath.Join(cfg.Dir, journalName(1))
	body := []byte{9, 0, 0, 0, 0} // kind 9: unknown
	entry := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	entry = binary.BigEndian.AppendUint32(entry, crc32.Checksum(body, crcTable))
	for _, c := range []struct {
		name, file string
		data       []byte
		want       bool
	}{
		{"torn tail", journal, entry[:6], true},
		{"CRC mismatch", journal, append(slices.Clone(entry[:8]), 1, 0, 0, 0, 0), true},
		{"unknown kind", journal, append(slices.Clone(entry), body...), false},
		{"provisional record", filepath.Join(cfg.Dir, provisionalName), appendEntry(nil, []batch.Record{{Data: []byte("x")}}, nil), false},
	} {
		os.Remove(journal)
		os.Remove(filepath.Join(cfg.Dir, provisionalName))
		if err := os.WriteFile(c.file, c.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if empty, err := Empty(cfg.Dir); empty != c.want || err != nil {
			t.Errorf("%s: Empty %v, %v; want %v", c.name, empty, err, c.want)
		}
	}
}
