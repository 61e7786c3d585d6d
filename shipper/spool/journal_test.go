package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

func journalRecords() []batch.Record {
	ts := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	return []batch.Record{
		{Seq: 7, Time: ts, Key: []byte("k1"), Op: "put", Data: []byte("one\n")},
		{Seq: 8, Time: ts.Add(time.Second), Data: []byte{0, '\n', 0xff}},
		{Seq: 9, Time: ts},
	}
}

func TestJournalEntryRoundTrip(t *testing.T) {
	cases := []struct {
		name   string
		recs   []batch.Record
		cursor []byte
	}{
		{"records and cursor", journalRecords(), []byte(`{"dev":1,"ino":2,"off":3}`)},
		{"no cursor", journalRecords(), nil},
		{"cursor only", nil, []byte("c")},
		{"empty", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := []byte("junk")
			b := appendEntry(bytes.Clone(prefix), c.recs, c.cursor)
			if !bytes.Equal(b[:len(prefix)], prefix) {
				t.Fatal("appendEntry overwrote dst")
			}
			entry := b[len(prefix):]
			// A second entry behind it must be left alone.
			two := appendEntry(bytes.Clone(entry), journalRecords()[:1], []byte("next"))
			recs, cursor, n, err := parseEntry(two)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(entry) {
				t.Fatalf("entry length %d, want %d", n, len(entry))
			}
			if !bytes.Equal(cursor, c.cursor) {
				t.Fatalf("cursor %q, want %q", cursor, c.cursor)
			}
			if len(recs) != len(c.recs) {
				t.Fatalf("%d records, want %d", len(recs), len(c.recs))
			}
			for i := range recs {
				got, want := recs[i], c.recs[i]
				if got.Seq != want.Seq || !got.Time.Equal(want.Time) || !bytes.Equal(got.Key, want.Key) ||
					got.Op != want.Op || !bytes.Equal(got.Data, want.Data) {
					t.Errorf("record %d = %+v, want %+v", i, got, want)
				}
			}
			recs2, cursor2, _, err := parseEntry(two[n:])
			if err != nil || string(cursor2) != "next" || len(recs2) != 1 {
				t.Fatalf("second entry: recs %d cursor %q err %v", len(recs2), cursor2, err)
			}
		})
	}
}

func TestJournalTornTail(t *testing.T) {
	entry := appendEntry(nil, journalRecords(), []byte("cursor"))
	for n := range len(entry) {
		_, _, k, err := parseEntry(entry[:n])
		if !errors.Is(err, errTornEntry) {
			t.Fatalf("entry cut to %d of %d bytes: err = %v, want errTornEntry", n, len(entry), err)
		}
		if k != 0 {
			t.Fatalf("entry cut to %d bytes: consumed %d", n, k)
		}
	}
}

func TestJournalFlippedByte(t *testing.T) {
	entry := appendEntry(nil, journalRecords(), []byte("cursor"))
	for i := range entry {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(entry)
			b[i] ^= mask
			_, _, _, err := parseEntry(b)
			if !errors.Is(err, errTornEntry) {
				t.Fatalf("byte %d ^ %#x: err = %v, want errTornEntry", i, mask, err)
			}
		}
	}
}

func TestJournalZeroFilledTail(t *testing.T) {
	// Some filesystems leave a crashed append as a run of zeros.
	if _, _, _, err := parseEntry(make([]byte, 64)); !errors.Is(err, errTornEntry) {
		t.Fatalf("zeros: err = %v, want errTornEntry", err)
	}
}

// FuzzParseEntry: no input may panic parseEntry, a successful parse
// consumes a sane length, and re-encoding what it returned gives back the
// same bytes.
func FuzzParseEntry(f *testing.F) {
	f.Add(appendEntry(nil, journalRecords(), []byte("cursor")))
	f.Add(appendEntry(nil, nil, nil))
	f.Add([]byte{0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, cursor, n, err := parseEntry(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("consumed %d on error", n)
			}
			return
		}
		if n < entryHeader+5 || n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		if again := appendEntry(nil, recs, cursor); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoding differs:\n% x\n% x", again, b[:n])
		}
	})
}

func TestJournalFileNames(t *testing.T) {
	for _, seq := range []uint64{1, 0xff, 1<<64 - 1} {
		got, ok := parseJournalName(journalName(seq))
		if !ok || got != seq {
			t.Fatalf("journalName(%d) = %s parses as %d, %v", seq, journalName(seq), got, ok)
		}
	}
	for _, bad := range []string{"journal", "journal-1", "journal-000000000000000g", "journal-00000000000000001", "xjournal-0000000000000001"} {
		if _, ok := parseJournalName(bad); ok {
			t.Fatalf("parseJournalName(%q) accepted it", bad)
		}
	}
	// Replay order: the single journal of older versions, then by seq
	// (hex names sort numerically); other files are not journals.
	dir := t.TempDir()
	for _, name := range []string{journalName(0x100), "state.json", journalName(0xf), legacyJournal, ".state.json.tmp", journalName(2)} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names, err := listJournals(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{legacyJournal, journalName(2), journalName(0xf), journalName(0x100)}; !slices.Equal(names, want) {
		t.Fatalf("listJournals = %q, want %q", names, want)
	}
}

// With JournalRotate, seals at entry boundaries keep the one journal file
// (no create and unlink per seal), a split entry or a full file starts a
// new one, and a copy of the spool taken as kill -9 would leave it
// recovers each record once, the sealed ones from their segments.
func TestJournalRotate(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	cfg.JournalRotate = 2000
	sp := openSpool(t, cfg)
	var want []string
	add := func(prefix string, n int) {
		recs := batchtest.Records(prefix, n)
		appendRecs(t, sp, recs, prefix)
		want = append(want, batchtest.Datas(recs)...)
	}
	first := journalFiles(t, cfg.Dir)
	for i := range 5 {
		add(fmt.Sprint("s", i), 3)
		if err := sp.Seal("test"); err != nil {
			t.Fatal(err)
		}
	}
	if got := journalFiles(t, cfg.Dir); !slices.Equal(got, first) {
		t.Fatalf("journal files after 5 seals at entry boundaries: %q, want still %q", got, first)
	}
	add("split", 13) // records 16-28: the batch is due at 25, mid-entry
	settle(t, sp)
	afterSplit := journalFiles(t, cfg.Dir)
	if len(afterSplit) != 1 || afterSplit[0] != journalName(26) {
		t.Fatalf("journal files after a mid-entry seal: %q, want only %s (the leftover's)", afterSplit, journalName(26))
	}
	for i := 0; slices.Equal(journalFiles(t, cfg.Dir), afterSplit); i++ {
		if i == 100 {
			t.Fatalf("journal file %s never rotated past JournalRotate %d bytes", afterSplit[0], cfg.JournalRotate)
		}
		add(fmt.Sprint("fill", i), 2)
		if err := sp.Seal("test"); err != nil {
			t.Fatal(err)
		}
	}
	add("open", 3) // unsealed, in the page cache only
	img := copyDir(t, cfg.Dir)
	rc := cfg
	rc.Dir = img
	sp2, err := Open(rc, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer sp2.Close()
	got := batchtest.Datas(batchtest.CheckChain(t, sealedFiles(t, img), 0, batch.ZeroHash))
	if !slices.Equal(got, want) {
		t.Fatalf("recovered %d records %q, want %d %q", len(got), got, len(want), want)
	}
}
