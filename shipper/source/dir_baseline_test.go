//go:build linux

package source

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
)

// every is a schedule that fires d after the last time.
type every time.Duration

func (e every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

// baselineRecords returns the records of the baseline b, begin to end,
// checking the markers' data.
func baselineRecords(t *testing.T, recs []batch.Record, b batch.Baseline) []batch.Record {
	t.Helper()
	var begin, end int = -1, -1
	for i, r := range recs {
		switch r.Seq {
		case b.BeginSeq:
			begin = i
		case b.EndSeq:
			end = i
		}
	}
	if begin < 0 || end < 0 || recs[begin].Op != dirtree.OpBaselineBegin || recs[end].Op != dirtree.OpBaselineEnd {
		t.Fatalf("baseline %+v: no begin/end records at its seqs", b)
	}
	var d dirtree.BaselineData
	if err := json.Unmarshal(recs[end].Data, &d); err != nil || d.Version != 1 || d.BeginSeq != b.BeginSeq || d.Paths != b.Paths {
		t.Fatalf("baseline-end data %s (%v), want version 1, begin_seq %d, paths %d", recs[end].Data, err, b.BeginSeq, b.Paths)
	}
	return recs[begin : end+1]
}

func waitBaseline(t *testing.T, ch <-chan batch.Baseline) batch.Baseline {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no baseline completed")
		return batch.Baseline{}
	}
}

// A source with a baseline schedule starts with one (the spool has none)
// and ships another whenever the schedule fires: every path in full, so
// the records from a begin to its end alone rebuild the tree, even for
// paths the index knows unchanged. The spool records the last one.
func TestDirSourceBaselineOnSchedule(t *testing.T) {
	root, _ := dirTestTree(t)
	sink := &dirSink{}
	done := make(chan batch.Baseline, 10)
	src := dirSourceFor(t, root)
	src.Baseline = every(400 * time.Millisecond)
	src.OnBaseline = func(b batch.Baseline) { done <- b }
	run := startDirSource(t, src, sink)

	first := waitBaseline(t, done)
	if first.BeginSeq != 1 {
		t.Fatalf("first baseline begins at seq %d; a new spool starts with one", first.BeginSeq)
	}
	m := newDirModel(t)
	m.apply(baselineRecords(t, sink.records(), first))
	want := walkDirTree(t, root, "skip.tmp", "locks")
	if d := diffDirNodes(want, m.nodes); d != "" {
		t.Fatalf("the first baseline does not rebuild the tree:\n%s", d)
	}

	dirWrite(t, filepath.Join(root, "a/new.txt"), "new\n", 0o644)
	var second batch.Baseline
	for second.BeginSeq <= first.EndSeq {
		second = waitBaseline(t, done)
	}
	run.converge(t, newDirModel(t), "skip.tmp", "locks")
	fresh := newDirModel(t)
	fresh.apply(baselineRecords(t, sink.records(), second))
	if d := diffDirNodes(walkDirTree(t, root, "skip.tmp", "locks"), fresh.nodes); d != "" {
		t.Fatalf("the second baseline alone does not rebuild the tree:\n%s", d)
	}
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	last, ok, err := LoadLastBaseline(src.SpoolDir)
	if err != nil || !ok || last.EndSeq < second.EndSeq {
		t.Fatalf("spool's last baseline %+v ok=%v err=%v, want at least %+v", last, ok, err, second)
	}
}

// Without a schedule there is no baseline until one is requested.
func TestDirSourceBaselineOnRequest(t *testing.T) {
	root, _ := dirTestTree(t)
	sink := &dirSink{}
	done := make(chan batch.Baseline, 10)
	src := dirSourceFor(t, root)
	src.OnBaseline = func(b batch.Baseline) { done <- b }
	run := startDirSource(t, src, sink)
	run.converge(t, newDirModel(t), "skip.tmp", "locks")
	for _, r := range sink.records() {
		if r.Op == dirtree.OpBaselineBegin {
			t.Fatal("a baseline without a schedule or a request")
		}
	}
	n := len(sink.records())
	src.RequestBaseline()
	b := waitBaseline(t, done)
	if b.BeginSeq != uint64(n)+1 || b.Paths == 0 {
		t.Fatalf("requested baseline %+v, want it to begin at seq %d and ship paths", b, n+1)
	}
	m := newDirModel(t)
	m.apply(baselineRecords(t, sink.records(), b))
	if d := diffDirNodes(walkDirTree(t, root, "skip.tmp", "locks"), m.nodes); d != "" {
		t.Fatalf("the requested baseline does not rebuild the tree:\n%s", d)
	}
}

// A restart whose last baseline is older than the schedule allows starts
// with one (it was missed while the source was down); a recent one waits.
func TestDirSourceBaselineCatchesUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		age  time.Duration
		want bool
	}{{"missed", time.Hour, true}, {"recent", time.Second, false}} {
		t.Run(tc.name, func(t *testing.T) {
			root, _ := dirTestTree(t)
			src := dirSourceFor(t, root)
			src.Baseline = every(time.Minute)
			if err := saveLastBaseline(src.SpoolDir, batch.Baseline{BeginSeq: 1, EndSeq: 9, EndTime: time.Now().Add(-tc.age)}); err != nil {
				t.Fatal(err)
			}
			r, err := src.start()
			if err != nil {
				t.Fatal(err)
			}
			defer r.rootDir.Close()
			defer r.idx.close()
			if got := r.baselineDue(time.Now()); got != tc.want {
				t.Fatalf("baseline due at start = %v, want %v (next %v)", got, tc.want, r.nextBaseline)
			}
		})
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, dirBaselineFile), []byte("{"), 0o644)
	if _, _, err := LoadLastBaseline(dir); err == nil {
		t.Fatal("a damaged dirbaseline.json was accepted")
	}
}
