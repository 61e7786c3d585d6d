package receiver

import (
	"context"
	"fmt"
	"log/slog"
	"path"
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
				for seq := uint64(1); seq <= 3; seq++ {
					name := batch.SegmentName(1, seq, seq)
					segs = append(segs, store.Object{Name: s + "/" + name, Size: 100})
				}
				listed = append(listed, StreamSegments{Stream: s, Segments: segs})
				m.running[s] = &streamRun{r: &Receiver{}, done: make(chan struct{}), offered: path.Base(segs[2].Name)}
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				m.step(ctx, listed)
			}
		})
	}
}

// treeOf is a TreeLister of a fixed listing.
type treeOf []store.Object

func (t treeOf) ListTree(_ context.Context, _ string, fn func(store.Object) error) error {
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
