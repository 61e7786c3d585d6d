package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// A stream whose segments alternate between format 1 (as a shipper before
// format 2 wrote them) and format 2 (as ferry writes now) reads as one:
// verify, receive, restore up to a seq and up to a time inside a format-2
// segment, and cat print exactly its records. The segments are made with
// the batch package, the readers are the built binary.
func TestFormat2MixedStream(t *testing.T) {
	t.Parallel()
	s := newStream(t, "mixed")
	if err := os.MkdirAll(s.streamDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	var recs []batch.Record
	for i := range 400 {
		r := batch.Record{Seq: uint64(i + 1), Time: t0.Add(time.Duration(i/3) * time.Millisecond)} // threes share a time
		r.Data = fmt.Appendf(nil, "line %d of a mixed stream %s\n", i+1, strings.Repeat("x", i%50))
		if i%4 == 1 {
			r.Op, r.Key = "put", fmt.Appendf(nil, "key-%d", i%9)
		}
		recs = append(recs, r)
	}
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	prev := batch.ZeroHash
	for i, cut := range [][2]int{{0, 100}, {100, 250}, {250, 300}, {300, 400}} {
		format := 1 + (i+1)%2 // 1, 2, 1, 2
		if err := b.SetFormat(format); err != nil {
			t.Fatal(err)
		}
		b.Reset(s.name, 1, prev)
		for j := cut[0]; j < cut[1]; j++ {
			if err := b.Add(&recs[j]); err != nil {
				t.Fatal(err)
			}
		}
		seg, m, err := b.Seal(t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if m.Format != format {
			t.Fatalf("segment %d is format %d, want %d", i, m.Format, format)
		}
		if err := os.WriteFile(s.segmentPath(m.Name()), seg, 0o644); err != nil {
			t.Fatal(err)
		}
		prev = b.Hash()
	}
	data := func(recs []batch.Record) []byte {
		var out []byte
		for _, r := range recs {
			out = append(out, r.Data...)
		}
		return out
	}

	if r := s.verify(); r.Code != 0 || !strings.Contains(r.Stdout, "400 records, seq 1..400") {
		t.Fatalf("verify of a mixed stream: want exit 0 and 400 records:\n%s", r)
	}
	s.receiveOnce()
	s.wantReplica(data(recs), "after receive --once of a mixed stream")

	restore := func(until string) []byte {
		t.Helper()
		dir := t.TempDir()
		out := filepath.Join(dir, "replica")
		mustFerry(t, nil, "restore", "--store", s.store, "--stream", s.name, "--state", filepath.Join(dir, "state"),
			"--apply", "file:"+out, "--until", until)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := restore("180"), data(recs[:180]); !bytes.Equal(got, want) {
		t.Errorf("restore --until 180 (inside a format-2 segment): %s", describeDiff(want, got))
	}
	// Record 181 (index 180) is the first of its time: the restore stops
	// after the record before it.
	until := recs[179].Time.Format(time.RFC3339Nano)
	if got, want := restore(until), data(recs[:180]); !bytes.Equal(got, want) {
		t.Errorf("restore --until %s (inside a format-2 segment): %s", until, describeDiff(want, got))
	}

	out := mustFerry(t, nil, "cat", "--json", "--store", s.store, "--stream", s.name).Stdout
	dec := json.NewDecoder(strings.NewReader(out))
	for i := 0; dec.More(); i++ {
		var got struct {
			Seq  uint64    `json:"seq"`
			Time time.Time `json:"time"`
			Key  string    `json:"key"`
			Op   string    `json:"op"`
			Data string    `json:"data"`
		}
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("cat --json line %d: %v", i, err)
		}
		w := recs[i]
		if got.Seq != w.Seq || !got.Time.Equal(w.Time) || got.Key != string(w.Key) || got.Op != w.Op || got.Data != string(w.Data) {
			t.Fatalf("cat --json record %d: %+v, want seq %d time %s key %q op %q data %q", i, got, w.Seq, w.Time, w.Key, w.Op, w.Data)
		}
		if i == len(recs)-1 && dec.More() {
			t.Fatal("cat --json prints more records than the stream holds")
		}
	}
}

// ferry ship and push write format 2; what they wrote comes back intact
// through receive, verify and fetch.
func TestFormat2Written(t *testing.T) {
	t.Parallel()
	s := newStream(t, "f2")
	input := logLines(3, 1, 20_000)
	s.ship(input, "--max-bytes", "256KiB")
	segs := s.segments()
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	var stream int64
	for _, name := range segs {
		data, err := os.ReadFile(s.segmentPath(name))
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := batch.ParseMeta(data)
		if err != nil {
			t.Fatal(err)
		}
		if m.Format != 2 {
			t.Fatalf("ferry ship wrote %s in format %d, want 2", name, m.Format)
		}
		stream += m.UncompressedSize
	}
	// A line of the same read has the time of the line before: its frame
	// is its data and a head of one or two bytes.
	if lines := int64(bytes.Count(input, []byte("\n"))); stream > int64(len(input))+3*lines {
		t.Errorf("format-2 record streams hold %d bytes for %d bytes of %d lines", stream, len(input), lines)
	}
	s.receiveOnce()
	s.wantReplica(input, "after receive --once")
	if r := s.verify(); r.Code != 0 {
		t.Fatalf("verify: want exit 0:\n%s", r)
	}

	p := newStream(t, "pg")
	wal := filepath.Join(p.dir, "pg_wal")
	name := "000000010000000000000001"
	data := writeRandomFile(t, wal, name, 300<<10, 2)
	mustFerry(t, nil, p.pushArgs(filepath.Join(wal, name))...)
	for _, seg := range p.segments() {
		b, err := os.ReadFile(p.segmentPath(seg))
		if err != nil {
			t.Fatal(err)
		}
		if m, _, err := batch.ParseMeta(b); err != nil || m.Format != 2 {
			t.Fatalf("ferry push wrote %s in format %d (%v), want 2", seg, m.Format, err)
		}
	}
	out := filepath.Join(p.dir, "restore", "RECOVERYXLOG")
	os.MkdirAll(filepath.Dir(out), 0o755)
	mustFerry(t, nil, p.fetchArgs(name, out)...)
	wantFileContent(t, out, data)
}

// [ship] segment_format = 1 writes segments every ferry reads, for a
// rolling upgrade that reaches a shipper before its readers; the default
// writes format 2; anything else is refused naming the key.
func TestSegmentFormatKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key  string
		want int
	}{{"segment_format = 1\n", 1}, {"", 2}} {
		s := newStream(t, fmt.Sprintf("segfmt%d", tc.want))
		cfg := filepath.Join(s.dir, "ship.toml")
		if err := os.WriteFile(cfg, []byte("[ship]\n"+tc.key), 0o600); err != nil {
			t.Fatal(err)
		}
		input := logLines(7, 1, 3000)
		s.ship(input, "--config", cfg, "--max-bytes", "32KiB")
		infos := s.lsJSON()
		if len(infos) < 2 {
			t.Fatalf("%q: want several segments, have %d", tc.key, len(infos))
		}
		for _, si := range infos {
			if si.Format != tc.want {
				t.Fatalf("%q: segment %s is format %d, want %d", tc.key, si.Segment, si.Format, tc.want)
			}
		}
		s.receiveOnce()
		s.wantReplica(input, fmt.Sprintf("format %d segments", tc.want))
	}
	s := newStream(t, "segfmt3")
	cfg := filepath.Join(s.dir, "ship.toml")
	if err := os.WriteFile(cfg, []byte("[ship]\nsegment_format = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := ferry(t, strings.NewReader("x\n"), s.shipArgs("--config", cfg)...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "ship.segment_format: 3") || !strings.Contains(r.Stderr, cfg) {
		t.Fatalf("segment_format = 3: want a non-zero exit naming the file and key:\n%s", r)
	}
}
