package receiver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

// counting counts the requests made of a store, by kind: what an S3
// store would send (one ListTree is one request per 1,000 keys there).
type counting struct {
	*dir.Store
	lists, trees, gets, puts, others atomic.Int64
}

func (c *counting) List(ctx context.Context, d, after string, fn func(store.Object) error) error {
	c.lists.Add(1)
	return c.Store.List(ctx, d, after, fn)
}
func (c *counting) ListTree(ctx context.Context, d string, descend func(string) bool, fn func(store.Object) error) error {
	c.trees.Add(1)
	return c.Store.ListTree(ctx, d, descend, fn)
}
func (c *counting) ListDirs(ctx context.Context, d string, fn func(string) error) error {
	c.others.Add(1)
	return c.Store.ListDirs(ctx, d, fn)
}
func (c *counting) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, name)
}

func (c *counting) total() int64 {
	return c.lists.Load() + c.trees.Load() + c.gets.Load() + c.puts.Load() + c.others.Load()
}

// Idle streams under a Multi cost one shared listing per poll, not one
// LIST each: measured with 1, 100 and 1000 idle streams.
func TestMultiRequestsPerPollIdle(t *testing.T) {
	for _, n := range []int{1, 100, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			raw, _ := receivertest.NewStore(t)
			st := &counting{Store: raw}
			for i := range n {
				s := receivertest.SealSeg(t, fmt.Sprintf("s%04d", i), 1, 1, 3, batch.ZeroHash)
				if err := raw.Put(context.Background(), batch.SegmentKey(fmt.Sprintf("s%04d", i), s.Name), s.Data); err != nil {
					t.Fatal(err)
				}
			}
			tmp := t.TempDir()
			open := func(stream string, fence func() error) (*receiver.Receiver, error) {
				cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
					Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Prefetch: -1,
					PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Fence: fence}
				if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
					return nil, err
				}
				return receiver.Open(cfg, slog.New(slog.DiscardHandler))
			}
			poll := 20 * time.Millisecond
			m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
				PollMin: poll, PollMax: poll}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			for i, deadline := 0, time.Now().Add(3*time.Minute); i < n; {
				if r := m.Receiver(fmt.Sprintf("s%04d", i)); r != nil && r.Checkpoint().LastSeq == 3 {
					i++
					continue
				}
				if time.Now().After(deadline) {
					t.Fatalf("stream s%04d not applied after 3 minutes", i)
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(5 * poll) // the first passes' own listings are done
			before, trees := st.total(), st.trees.Load()
			start := time.Now()
			for st.trees.Load()-trees < 11 && time.Since(start) < time.Minute {
				time.Sleep(poll)
			}
			polls := st.trees.Load() - trees
			reqs := st.total() - before
			t.Logf("%d idle streams: %d requests in %d polls: %.2f per poll", n, reqs, polls, float64(reqs)/float64(polls))
			if polls < 10 {
				t.Fatalf("only %d listings in %v", polls, time.Since(start))
			}
			if reqs > polls+2 {
				t.Errorf("%d idle streams cost %d requests in %d polls: want one listing per poll", n, reqs, polls)
			}
		})
	}
}

// seen records the objects a store's ListTree reports, before any filter
// of the caller's.
type seen struct {
	*dir.Store
	names []string
}

func (s *seen) ListTree(ctx context.Context, d string, descend func(string) bool, fn func(store.Object) error) error {
	return s.Store.ListTree(ctx, d, descend, func(o store.Object) error {
		s.names = append(s.names, o.Name)
		return fn(o)
	})
}

// The shared listing walks only the directories that can hold what it
// looks for: each stream's own (its segments) and the bundles'. A
// stream's sub-directories (watermarks, claims, generations, bundle
// markers) hold no segment; a directory store walked and stat'ed them
// at every poll, three of every four directories of a busy receiver. A
// stream whose only objects are in them is still listed.
func TestMultiListingSkipsStreamSubdirs(t *testing.T) {
	raw, _ := receivertest.NewStore(t)
	ctx := context.Background()
	seg := receivertest.SealSeg(t, "s1", 1, 1, 3, batch.ZeroHash)
	bundle := catalog.BundleKey("00000000000000b1", 1)
	for _, name := range []string{batch.SegmentKey("s1", seg.Name), "s1/watermarks/r.id", "s1/watermarks/r/0000000000000003.json",
		"s1/claims/x", "s1/generations/0000000001.json", "s1/bundled/00000000000000b1-1.json", bundle, "_fleet/dr/members/m1",
		"s2/bundled/00000000000000b1-1.json"} {
		if err := raw.Put(ctx, name, seg.Data); err != nil {
			t.Fatal(err)
		}
	}
	st := &seen{Store: raw}
	streams, err := receiver.ListStreams(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	// s2's only object is a bundle marker: its directory still shows it.
	if len(streams) != 2 || streams[0].Stream != "s1" || len(streams[0].Segments) != 1 || streams[1].Stream != "s2" || len(streams[1].Segments) != 0 {
		t.Fatalf("ListStreams = %+v; want s1 with its one segment and s2 with none", streams)
	}
	want := []string{bundle, batch.SegmentKey("s1", seg.Name)}
	slices.Sort(st.names)
	if !slices.Equal(st.names, want) {
		t.Fatalf("the store's walk reported %q; want only %q (the segment and the bundle)", st.names, want)
	}
}
