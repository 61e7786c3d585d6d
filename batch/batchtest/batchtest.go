// Package batchtest holds helpers for tests of what ferry writes: records
// with predictable data to feed in, and segment files decoded and checked
// to form one gapless, chained stream. The spool's tests check its sealed/
// directory with them, the shipper's tests its targets' stores.
package batchtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Records returns n records whose data is "<prefix>-<i>\n" (i from 1).
func Records(prefix string, n int) []batch.Record {
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i].Data = fmt.Appendf(nil, "%s-%d\n", prefix, i+1)
	}
	return recs
}

// Lines returns "<prefix>-<i>\n" for i in from..to: the data of Records.
func Lines(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s-%d\n", prefix, i))
	}
	return out
}

// Datas returns the data of recs as strings.
func Datas(recs []batch.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Data)
	}
	return out
}

// Segment is one decoded segment file.
type Segment struct {
	Name    string
	Hash    string
	Meta    batch.Meta
	Records []batch.Record
}

// Decode decodes the segment file name, which holds data. It fails t if
// the segment is damaged or its metadata names another file.
func Decode(t testing.TB, name string, data []byte) Segment {
	t.Helper()
	s, recs, err := batch.Decode(data, 0)
	if err != nil {
		t.Fatalf("segment %s: %v", name, err)
	}
	if got := s.Meta.Name(); got != name {
		t.Fatalf("segment file %s holds metadata for %s", name, got)
	}
	out := make([]batch.Record, 0, recs.Len())
	for _, r := range recs.All() {
		out = append(out, r)
	}
	return Segment{Name: name, Hash: s.Hash, Meta: s.Meta, Records: out}
}

// ReadDir decodes every file in dir as a segment, in name order.
func ReadDir(t testing.TB, dir string) []Segment {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []Segment
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Decode(t, e.Name(), data))
	}
	return out
}

// ReadStore decodes every segment of stream in st, in name order.
func ReadStore(t testing.TB, st store.Store, stream string) []Segment {
	t.Helper()
	ctx := context.Background()
	var names []string
	err := st.List(ctx, batch.StreamDir(stream), "", func(o store.Object) error {
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []Segment
	for _, n := range names {
		rc, err := st.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		data, err := batch.ReadAll(rc, 1<<30)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Decode(t, strings.TrimPrefix(n, stream+"/"), data))
	}
	return out
}

// CheckChain verifies that segs are consecutive: seqs continue from
// afterSeq without gap or overlap, each segment's PrevSHA256 is the hash of
// the one before (prev for the first), and every record seq is in place.
// It returns all records in order.
func CheckChain(t testing.TB, segs []Segment, afterSeq uint64, prev string) []batch.Record {
	t.Helper()
	var all []batch.Record
	want := afterSeq + 1
	for _, s := range segs {
		if s.Meta.FirstSeq != want {
			t.Fatalf("segment %s starts at seq %d, want %d", s.Name, s.Meta.FirstSeq, want)
		}
		if s.Meta.PrevSHA256 != prev {
			t.Fatalf("segment %s prev_sha256 %.16s, want %.16s", s.Name, s.Meta.PrevSHA256, prev)
		}
		for _, r := range s.Records {
			if r.Seq != want {
				t.Fatalf("segment %s: record seq %d, want %d", s.Name, r.Seq, want)
			}
			want++
		}
		prev = s.Hash
		all = append(all, s.Records...)
	}
	return all
}

// SeqRanges returns the first and last seq of each segment.
func SeqRanges(segs []Segment) [][2]uint64 {
	var out [][2]uint64
	for _, s := range segs {
		out = append(out, [2]uint64{s.Meta.FirstSeq, s.Meta.LastSeq})
	}
	return out
}
