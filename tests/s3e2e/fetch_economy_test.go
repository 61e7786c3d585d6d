package s3e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/versitygw"
)

// TestFetchRequestEconomy counts the S3 requests of a restore_command:
// ferry fetch of a pushed file reads its marker and the segments holding
// its records, and lists the stream's segments once, starting just before
// them (start-after), not the whole stream; a name never pushed costs one
// GET.
func TestFetchRequestEconomy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withProxy)
	p := h.proxy
	s := h.newStream("fetch-economy", "pg")
	s.ship(numbered(1, 20_000), "--max-bytes", "32KiB")
	older := s.segments()

	dir := t.TempDir()
	name := "000000010000000000000007"
	data := make([]byte, 3<<20+11)
	rand.NewChaCha8([32]byte{7}).Read(data)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	h.ferry(nil, "push", "--store", s.url(), "--stream", s.name, "--spool", s.spool, filepath.Join(dir, name))
	var m struct {
		Generation uint32 `json:"generation"`
		FirstSeq   uint64 `json:"first_seq"`
		LastSeq    uint64 `json:"last_seq"`
	}
	if err := json.Unmarshal(h.object(s.dirKey()+"pushed/"+name), &m); err != nil {
		t.Fatal(err)
	}
	var holding []string
	for _, n := range s.segments() {
		if g, lo, hi, _ := batch.ParseSegmentName(n); g == m.Generation && hi >= m.FirstSeq && lo <= m.LastSeq {
			holding = append(holding, n)
		}
	}
	if len(older) < 10 || len(holding) == 0 {
		t.Fatalf("%d segments before the push, %d holding the file's records %d-%d: want many, and some", len(older), len(holding), m.FirstSeq, m.LastSeq)
	}

	p.ResetCounts()
	out := filepath.Join(dir, "restored")
	h.ferry(nil, "fetch", "--store", s.url(), "--stream", s.name, name, out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatalf("fetched %d bytes, want the %d pushed", len(got), len(data))
	}
	objPrefix := "/" + h.bucket + "/" + s.dirKey()
	gets := map[string]int{}
	var lists []versitygw.Request
	for _, r := range p.Requests() {
		switch r.Kind {
		case versitygw.Get:
			gets[strings.TrimPrefix(r.Path, objPrefix)]++
		case versitygw.List:
			if r.Query.Get("prefix") == s.dirKey() {
				lists = append(lists, r)
			}
		case versitygw.Put, versitygw.Delete:
			t.Errorf("fetch wrote to the store: %s %s", r.Method, r.Path)
		}
	}
	t.Logf("fetch of a file in %d of %d segments: requests %v", len(holding), len(older)+len(holding), p.Counts())
	if gets["pushed/"+name] != 1 {
		t.Errorf("fetch read the marker %d times, want once", gets["pushed/"+name])
	}
	delete(gets, "pushed/"+name)
	for _, n := range holding {
		if gets[n] != 1 {
			t.Errorf("fetch read segment %s %d times, want once", n, gets[n])
		}
		delete(gets, n)
	}
	for k, n := range gets {
		t.Errorf("fetch read %s %d times: it holds none of the file's records", k, n)
	}
	// The listing starts at most 64 seqs before the file's first record
	// (names sort by generation, then first seq).
	floor := s.dirKey() + fmt.Sprintf("%08x-%016x", m.Generation, m.FirstSeq-min(m.FirstSeq, 64))
	if len(lists) != 1 || lists[0].Query.Get("start-after") < floor {
		for _, r := range lists {
			t.Logf("LIST start-after %q", r.Query.Get("start-after"))
		}
		t.Errorf("fetch listed the stream's segments %d times; want once, starting after %q or later", len(lists), floor)
	}

	// A name never pushed: one GET of its marker, nothing else.
	p.ResetCounts()
	r := h.run(nil, nil, "fetch", "--store", s.url(), "--stream", s.name, "000000010000000000000008", out)
	if r.Code != 1 || !strings.Contains(r.Stderr, "not found") {
		t.Errorf("fetch of a name never pushed: want exit 1, not found:\n%s", r)
	}
	if c := p.Counts(); c[versitygw.Get] != 1 || len(p.Requests()) != 1 {
		t.Errorf("fetch of a name never pushed made requests %v; want one GET", c)
	}
}
