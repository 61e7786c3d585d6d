package shipper

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// quiet is the logger for tests: the code under test logs warnings on
// purpose (torn tails, retries), which would only clutter the output.
var quiet = slog.New(slog.DiscardHandler)

// clock is an injectable SpoolConfig.Now that moves only when told to.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// spoolConfig is a small-limits config for a spool in a fresh temp dir.
func spoolConfig(t *testing.T) SpoolConfig {
	return SpoolConfig{Dir: t.TempDir(), Stream: "app", Fsync: FsyncBatch}
}

// openSpool opens cfg and closes the spool when the test ends.
func openSpool(t *testing.T, cfg SpoolConfig, targets ...string) *Spool {
	t.Helper()
	sp, err := OpenSpool(cfg, targets, quiet)
	if err != nil {
		t.Fatalf("OpenSpool: %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// records returns n records whose data is "<prefix>-<i>\n" (i from 1).
func records(prefix string, n int) []batch.Record {
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i].Data = fmt.Appendf(nil, "%s-%d\n", prefix, i+1)
	}
	return recs
}

func appendRecs(t *testing.T, sp *Spool, recs []batch.Record, cursor string) uint64 {
	t.Helper()
	var c []byte
	if cursor != "" {
		c = []byte(cursor)
	}
	pos, err := sp.Append(context.Background(), recs, c)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return pos
}

// seg is one decoded segment file.
type seg struct {
	name string
	hash string
	meta batch.Meta
	recs []batch.Record
}

func decodeSegment(t *testing.T, name string, data []byte) seg {
	t.Helper()
	s, recs, err := batch.Decode(data, 0)
	if err != nil {
		t.Fatalf("segment %s: %v", name, err)
	}
	if got := s.Meta.Name(); got != name {
		t.Fatalf("segment file %s holds metadata for %s", name, got)
	}
	return seg{name: name, hash: s.Hash, meta: s.Meta, recs: recs}
}

// sealedFiles decodes every segment in dir/sealed, in name order.
func sealedFiles(t *testing.T, dir string) []seg {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "sealed"))
	if err != nil {
		t.Fatal(err)
	}
	var out []seg
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, "sealed", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decodeSegment(t, e.Name(), data))
	}
	return out
}

// checkChain verifies that segs are consecutive: seqs continue from
// afterSeq without gap or overlap, each segment's PrevSHA256 is the hash of
// the one before (prev for the first), and every record seq is in place.
// It returns all records in order.
func checkChain(t *testing.T, segs []seg, afterSeq uint64, prev string) []batch.Record {
	t.Helper()
	var all []batch.Record
	want := afterSeq + 1
	for _, s := range segs {
		if s.meta.FirstSeq != want {
			t.Fatalf("segment %s starts at seq %d, want %d", s.name, s.meta.FirstSeq, want)
		}
		if s.meta.PrevSHA256 != prev {
			t.Fatalf("segment %s prev_sha256 %.16s, want %.16s", s.name, s.meta.PrevSHA256, prev)
		}
		for _, r := range s.recs {
			if r.Seq != want {
				t.Fatalf("segment %s: record seq %d, want %d", s.name, r.Seq, want)
			}
			want++
		}
		prev = s.hash
		all = append(all, s.recs...)
	}
	return all
}

func seqRanges(segs []seg) [][2]uint64 {
	var out [][2]uint64
	for _, s := range segs {
		out = append(out, [2]uint64{s.meta.FirstSeq, s.meta.LastSeq})
	}
	return out
}

func datas(recs []batch.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

// lines returns "<prefix>-<i>\n" for i in from..to.
func lines(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s-%d\n", prefix, i))
	}
	return out
}

// fakeSink records every batch a source appends, deep-copying because
// sources reuse their buffers. fail, when set, is returned by the call
// with that index (0-based) instead of recording it.
type fakeSink struct {
	mu      sync.Mutex
	batches [][]batch.Record
	cursors [][]byte
	failAt  int
	failErr error
}

func (s *fakeSink) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil && len(s.batches) == s.failAt {
		return s.failErr
	}
	cp := make([]batch.Record, len(recs))
	for i, r := range recs {
		cp[i] = batch.Record{Time: r.Time, Op: r.Op, Key: bytes.Clone(r.Key), Data: bytes.Clone(r.Data)}
	}
	s.batches = append(s.batches, cp)
	s.cursors = append(s.cursors, bytes.Clone(cursor))
	return nil
}

func (s *fakeSink) records() []batch.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []batch.Record
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

func (s *fakeSink) datas() []string { return datas(s.records()) }

func (s *fakeSink) lastCursor() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cursors) == 0 {
		return nil
	}
	return slices.Clone(s.cursors[len(s.cursors)-1])
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// copyDir copies the regular files of src (recursively) to a new temp dir,
// skipping LOCK, as a crash image of a spool.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Name() == "LOCK" {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
