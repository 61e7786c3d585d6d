//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// fetch returns a file only if it is exactly what was pushed under its
// name: a marker pointing at other records, a segment replaced by another
// one, and a marker that is a link to another name's, too large or not a
// marker all fail, naming what is wrong, and leave DEST alone.
func TestFetchHostileStore(t *testing.T) {
	t.Parallel()
	s := newStream(t, "wal")
	wal := filepath.Join(s.dir, "pg_wal")
	a, b := "000000010000000000000001", "000000010000000000000002"
	files := map[string][]byte{
		a: writeRandomFile(t, wal, a, 3<<20+5, 11),
		b: writeRandomFile(t, wal, b, 3<<20+5, 12),
	}
	for _, n := range []string{a, b} {
		mustFerry(t, nil, s.pushArgs(filepath.Join(wal, n))...)
	}
	pushed := filepath.Join(s.streamDir(), "pushed")
	ma, mb := s.marker(a), s.marker(b)
	orig, err := os.ReadFile(filepath.Join(pushed, a))
	if err != nil {
		t.Fatal(err)
	}
	restore := filepath.Join(s.dir, "restore")
	os.MkdirAll(restore, 0o755)
	dest := filepath.Join(restore, "RECOVERYXLOG")
	// refused fetches a into dest, which must stay absent.
	refused := func(why string, want ...string) ferrytest.Result {
		t.Helper()
		r := failFerry(t, nil, want, s.fetchArgs(a, dest)...)
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Errorf("%s: fetch failed but left %s (%v)", why, dest, err)
		}
		if left, _ := filepath.Glob(filepath.Join(restore, ".*")); len(left) > 0 {
			t.Errorf("%s: temp files left: %v", why, left)
		}
		return r
	}
	setMarker := func(m map[string]any) {
		t.Helper()
		raw, _ := json.Marshal(m)
		os.Remove(filepath.Join(pushed, a))
		if err := os.WriteFile(filepath.Join(pushed, a), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// a's marker pointing at b's records with a's hash: those records
	// are refused, and the scan finds a's own.
	setMarker(map[string]any{"name": a, "sha256": ma.SHA256, "size": ma.Size, "generation": 1, "first_seq": mb.FirstSeq, "last_seq": mb.LastSeq})
	r := mustFerry(t, nil, s.fetchArgs(a, dest)...)
	wantFileContent(t, dest, files[a])
	if !strings.Contains(r.Stderr, "scanning the stream") || !strings.Contains(r.Stderr, "not part of "+a) {
		t.Errorf("fetch through a marker naming b's records does not say it refused them:\n%s", r)
	}
	os.Remove(dest)
	// ... and with seqs near 2^64: the listing around them ends (it
	// hung until --timeout), and the scan finds a's own records.
	setMarker(map[string]any{"name": a, "sha256": ma.SHA256, "size": ma.Size, "generation": 1, "first_seq": uint64(1<<63 + 5), "last_seq": uint64(1<<63 + 9)})
	mustFerry(t, nil, s.fetchArgs("--timeout", "60s", a, dest)...)
	wantFileContent(t, dest, files[a])
	os.Remove(dest)
	// ... and with b's hash and size as well: b is never returned as a.
	setMarker(map[string]any{"name": a, "sha256": mb.SHA256, "size": mb.Size, "generation": 1, "first_seq": mb.FirstSeq, "last_seq": mb.LastSeq})
	refused("a marker forged from b's", a, "not part of "+a)

	// a marker that is a symlink to b's: refused by the name it holds.
	os.Remove(filepath.Join(pushed, a))
	if err := os.Symlink(b, filepath.Join(pushed, a)); err != nil {
		t.Fatal(err)
	}
	refused("a marker linked to b's", "pushed/"+a, "is for \""+b+"\"", "replaced")
	// Too large, and not a marker.
	os.Remove(filepath.Join(pushed, a))
	big := append(bytes.Repeat([]byte(" "), 70<<10), orig...)
	os.WriteFile(filepath.Join(pushed, a), big, 0o644)
	refused("an oversize marker", "pushed/"+a, "larger than", "damaged")
	os.WriteFile(filepath.Join(pushed, a), []byte("\x00\x01garbage{"), 0o644)
	refused("a garbage marker", "pushed/"+a, "damaged")
	os.WriteFile(filepath.Join(pushed, a), orig, 0o644)
	mustFerry(t, nil, s.fetchArgs(a, dest)...)
	wantFileContent(t, dest, files[a])
	os.Remove(dest)

	// The segment holding a's first record replaced by the segment
	// holding b's last: a valid segment under another name, refused.
	var segA, segB string
	segs, _ := filepath.Glob(filepath.Join(s.streamDir(), "*.seg.zst"))
	for _, p := range segs {
		var g uint32
		var lo, hi uint64
		if _, err := fmtSscanSegment(filepath.Base(p), &g, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if lo <= ma.FirstSeq && ma.FirstSeq <= hi {
			segA = p
		}
		if lo <= mb.LastSeq && mb.LastSeq <= hi {
			segB = p
		}
	}
	if segA == "" || segB == "" || segA == segB {
		t.Fatalf("segments %v: want a's first record and b's last in different ones", segs)
	}
	other, _ := os.ReadFile(segB)
	os.Remove(segA)
	if err := os.WriteFile(segA, other, 0o644); err != nil {
		t.Fatal(err)
	}
	refused("a segment replaced by another", filepath.Base(segA), "holds "+filepath.Base(segB))
}

// fmtSscanSegment parses a segment file name.
func fmtSscanSegment(name string, g *uint32, lo, hi *uint64) (int, error) {
	return fmt.Sscanf(name, "%08x-%016x-%016x.seg.zst", g, lo, hi)
}
