package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// BenchmarkMultiStepIdle is the CPU a Multi spends on one poll's listing
// of n idle streams, all running, each offered its segments already: the
// reconciliation alone, without the listing's I/O.
func BenchmarkMultiStepIdle(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := &Multi{cfg: MultiConfig{Match: func(string) bool { return true }}, log: slog.New(slog.DiscardHandler),
				running: map[string]*streamRun{}, failed: map[string]time.Time{}, logged: map[string]string{}}
			var listed []StreamSegments
			for i := range n {
				s := fmt.Sprintf("s%05d", i)
				var segs []store.Object
				offered := map[string]bool{}
				for seq := uint64(1); seq <= 3; seq++ {
					name := batch.SegmentName(1, seq, seq)
					segs = append(segs, store.Object{Name: s + "/" + name, Size: 100})
					offered[name] = true
				}
				listed = append(listed, StreamSegments{Stream: s, Segments: segs})
				m.running[s] = &streamRun{r: &Receiver{}, done: make(chan struct{}), offered: offered}
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				m.step(ctx, listed, nil)
			}
		})
	}
}

// treeOf is a TreeLister of a fixed listing.
type treeOf []store.Object

func (t treeOf) ListTree(_ context.Context, _ string, _ func(string) bool, fn func(store.Object) error) error {
	for _, o := range t {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkListStreams is the CPU of sorting one listing of 10,000
// streams with 10 segments each into streams.
func BenchmarkListStreams(b *testing.B) {
	var tree treeOf
	for i := range 10000 {
		s := fmt.Sprintf("s%05d", i)
		for seq := uint64(1); seq <= 10; seq++ {
			tree = append(tree, store.Object{Name: s + "/" + batch.SegmentName(1, seq, seq), Size: 100})
		}
		tree = append(tree, store.Object{Name: s + "/generations/00000001.json"})
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ListStreams(ctx, tree); err != nil {
			b.Fatal(err)
		}
	}
}

// ListStreams takes a listing's first element as a stream only if it can
// name one, and a stream's segments only directly under it, sorted.
func TestListStreamsHostileNames(t *testing.T) {
	seg := func(seq uint64) string { return batch.SegmentName(1, seq, seq) }
	tree := treeOf{
		{Name: "app/" + seg(2)},
		{Name: "app/" + seg(1)},
		{Name: "app/sub/" + seg(3)}, // not directly under the stream
		{Name: "app/generations/00000001.json"},
		{Name: "app/" + seg(4) + ".tmp"}, // not a segment name
		{Name: "_fleet/dr/leases/app"},   // the fleet's objects
		{Name: "_fleet/dr/members/m1"},
		{Name: "..//" + seg(1)},
		{Name: "bad name/" + seg(1)},
		{Name: "-x/" + seg(1)},
		{Name: "README"},                       // no stream at all
		{Name: "b2/generations/00000001.json"}, // a stream with no segment yet
	}
	got, err := ListStreams(context.Background(), tree)
	if err != nil {
		t.Fatal(err)
	}
	var streams []string
	for _, ss := range got {
		streams = append(streams, ss.Stream)
	}
	if fmt.Sprint(streams) != "[app b2]" {
		t.Fatalf("streams %v, want [app b2]", streams)
	}
	var segs []string
	for _, o := range got[0].Segments {
		segs = append(segs, o.Name)
	}
	if want := fmt.Sprint([]string{"app/" + seg(1), "app/" + seg(2)}); fmt.Sprint(segs) != want {
		t.Fatalf("app's segments %v, want %v", segs, want)
	}
	if len(got[1].Segments) != 0 {
		t.Fatalf("b2's segments %v, want none", got[1].Segments)
	}
}

// A syncfs error is reported once, to the first syncfs on the group's
// descriptor after it: the batch that sees it may not be the one whose
// writes it lost. A stream that wrote before a failed sync and asks after
// it must fail too, though its own syncfs returns 0; one that joined after
// the failure syncs normally.
func TestSyncGroupFailureReachesLaterRequests(t *testing.T) {
	calls := 0
	g := &SyncGroup{Linger: time.Microsecond, Sync: func(*os.File) error {
		calls++
		if calls == 1 {
			return errors.New("input/output error")
		}
		return nil
	}}
	defer g.Close()
	fs, err := g.register(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, b := g.seen(fs), g.seen(fs) // both streams have written meanwhile
	if err := g.sync(fs, &b); err == nil {
		t.Fatal("the failed sync returned nil to the stream that asked for it")
	}
	if err := g.sync(fs, &a); err == nil {
		t.Fatal("a stream that wrote before a failed sync synced without error after it: the failure may have lost its writes")
	}
	c := g.seen(fs) // joined after the failure
	if err := g.sync(fs, &c); err != nil {
		t.Fatalf("a stream that joined after the failure: %v", err)
	}
	if err := g.sync(fs, &c); err != nil {
		t.Fatalf("its second sync: %v", err)
	}
}
