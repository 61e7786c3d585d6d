package receiver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

// reads counts the reads of each object and the listings of each
// directory of a dir store.
type reads struct {
	*dir.Store
	mu    sync.Mutex
	n     map[string]int
	lists map[string]int
}

func (c *reads) add(m map[string]int, k string) {
	c.mu.Lock()
	m[k]++
	c.mu.Unlock()
}
func (c *reads) get(m map[string]int, k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m[k]
}
func (c *reads) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	c.add(c.n, name)
	return c.Store.Get(ctx, name)
}
func (c *reads) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	c.add(c.n, name)
	return c.Store.GetRange(ctx, name, off, p)
}
func (c *reads) GetSuffix(ctx context.Context, name string, p []byte) (int, int64, error) {
	c.add(c.n, name)
	return c.Store.GetSuffix(ctx, name, p)
}
func (c *reads) List(ctx context.Context, d, after string, fn func(store.Object) error) error {
	c.add(c.lists, d)
	return c.Store.List(ctx, d, after, fn)
}

// A Multi reads each new bundle once, with one GET, and offers each
// stream its part: no stream lists the bundles or reads an index itself
// once it runs, and every replica is exact. With no memory for copies
// (a tiny PrefetchBytes), each part is offered by its place in the
// bundle and its stream reads it by one ranged read.
func TestMultiOffersBundleParts(t *testing.T) {
	t.Run("copies", func(t *testing.T) { testMultiOffersBundleParts(t, 0, 1) })
	t.Run("by-place", func(t *testing.T) { testMultiOffersBundleParts(t, 2048, 1+20) })
}

func testMultiOffersBundleParts(t *testing.T, prefetchBytes int64, readsPerBundle int) {
	raw, _ := receivertest.NewStore(t)
	st := &reads{Store: raw, n: map[string]int{}, lists: map[string]int{}}
	w := bundletest.NewWriter(t, st, bundleWriter)
	var streams []string
	for i := range 20 {
		streams = append(streams, fmt.Sprintf("s%02d", i))
	}
	w.Bundle(t, streams, 4) // before the Multi starts: each stream lists it itself

	tmp := t.TempDir()
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence, PrefetchBytes: prefetchBytes}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	applied := func(what string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for _, s := range streams {
			for {
				r := m.Receiver(s)
				if r != nil && r.Checkpoint().LastSeq == w.Last(s) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: stream %s not applied through seq %d in a minute", what, s, w.Last(s))
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	applied("the first bundle")
	wdir := catalog.WriterDir(bundleWriter)
	lists := st.get(st.lists, wdir)

	var keys []string
	for range 4 {
		key, _ := w.Bundle(t, streams, 3)
		keys = append(keys, key)
		applied("a new bundle")
		// Not in the same round: a listing that read _bundles/ before
		// the bundle was put and s03/ after this was would offer it
		// alone, and s03 would list the store itself for the part.
		w.Alone(t, "s03", 2)
		applied("a segment alone")
	}
	// The status counts the parts read as stored: every stream caught up.
	for _, ss := range m.Streams() {
		if ss.StoredSeq != w.Last(ss.Stream) || !ss.OldestUnapplied.IsZero() {
			t.Errorf("status of %s: stored seq %d, oldest unapplied %v; want %d, none", ss.Stream, ss.StoredSeq, ss.OldestUnapplied, w.Last(ss.Stream))
		}
	}
	for _, key := range keys {
		if n := st.get(st.n, key); n != readsPerBundle {
			t.Errorf("bundle %s read %d times, want %d", key, n, readsPerBundle)
		}
	}
	if n := st.get(st.lists, wdir) - lists; n != 0 {
		t.Errorf("%s listed %d times after the streams started; the Multi's listing should be the only one", wdir, n)
	}
	for _, s := range streams {
		got, err := os.ReadFile(filepath.Join(tmp, s+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if want := bundletest.Want(s, 1, w.Last(s)); !bytes.Equal(got, want) {
			t.Fatalf("replica of %s: %d bytes, want %d", s, len(got), len(want))
		}
	}
}

// A part damaged in a new bundle stops its stream's receiver with an
// error naming the bundle; the other streams' parts of it apply.
func TestMultiDamagedPartStopsItsStream(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	w := bundletest.NewWriter(t, st, bundleWriter)
	streams := []string{"s0", "s1", "s2"}
	w.Bundle(t, streams, 4)
	tmp := t.TempDir()
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	stopped := make(chan error, 10)
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Retry: time.Hour,
		OnStop: func(stream string, _ *receiver.Receiver, err error, _ bool) {
			if stream == "s1" && err != nil {
				stopped <- err
			}
		}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	receivertest.Eventually(t, "the first bundle applied", func() bool {
		for _, s := range streams {
			if r := m.Receiver(s); r == nil || r.Checkpoint().LastSeq != 4 {
				return false
			}
		}
		return true
	})

	var segs []bundletest.Seg
	for _, s := range streams {
		segs = append(segs, w.Seal(t, s, 3))
	}
	key, data := w.Pack(t, segs...)
	data[len(segs[0].Data)+100] ^= 1 // inside s1's part
	if err := st.Put(t.Context(), key, data); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stopped:
		if !strings.Contains(err.Error(), key) || !errors.Is(err, batch.ErrCorrupt) {
			t.Fatalf("s1 stopped with %v, want ErrCorrupt naming %s", err, key)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("s1 did not stop at its damaged part")
	}
	for _, s := range []string{"s0", "s2"} {
		receivertest.Eventually(t, s+" applied the bundle", func() bool {
			r := m.Receiver(s)
			return r != nil && r.Checkpoint().LastSeq == 7
		})
	}
}

// missing is a store whose next listings leave out one object, as an
// S3-compatible store's listing may for a while.
type missing struct {
	*reads
	mu    sync.Mutex
	key   string
	times int
	trees atomic.Int64
}

func (m *missing) ListTree(ctx context.Context, d string, descend func(string) bool, fn func(store.Object) error) error {
	defer m.trees.Add(1)
	return m.reads.Store.ListTree(ctx, d, descend, func(o store.Object) error {
		m.mu.Lock()
		skip := o.Name == m.key && m.times > 0
		if skip {
			m.times--
		}
		m.mu.Unlock()
		if skip {
			return nil
		}
		return fn(o)
	})
}

// A bundle read once and then missing from a listing is not read and
// offered again when it shows up in the next.
func TestMultiReadsABundleOnceThoughAListingMissesIt(t *testing.T) {
	raw, _ := receivertest.NewStore(t)
	st := &missing{reads: &reads{Store: raw, n: map[string]int{}, lists: map[string]int{}}}
	w := bundletest.NewWriter(t, st, bundleWriter)
	streams := []string{"s0", "s1"}
	w.Bundle(t, streams, 4)
	tmp := t.TempDir()
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 5 * time.Millisecond, PollMax: 5 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	appliedThrough := func(seq uint64) func() bool {
		return func() bool {
			for _, s := range streams {
				if r := m.Receiver(s); r == nil || r.Checkpoint().LastSeq != seq {
					return false
				}
			}
			return true
		}
	}
	receivertest.Eventually(t, "the first bundle applied", appliedThrough(4))
	key, _ := w.Bundle(t, streams, 3)
	receivertest.Eventually(t, "the second bundle applied", appliedThrough(7))
	st.mu.Lock()
	st.key, st.times = key, 1
	st.mu.Unlock()
	trees := st.trees.Load()
	receivertest.Eventually(t, "three more listings", func() bool { return st.trees.Load() >= trees+3 })
	if n := st.get(st.n, key); n != 1 {
		t.Fatalf("bundle %s read %d times, want once", key, n)
	}
}

// racing is a store on which the next bundle appears just as a stream
// lists its segments for the second time or later: what a store slow to
// list (S3), with bundles every few hundred milliseconds, makes likely
// for a stream that lists again right after a listing that applied
// something.
type racing struct {
	*reads
	mu     sync.Mutex
	w      *bundletest.Writer
	put    []string // keys of the bundles put
	left   int      // bundles still to put
	listed map[string]int
	t      *testing.T
}

func (r *racing) List(ctx context.Context, d, after string, fn func(store.Object) error) error {
	if stream, ok := strings.CutSuffix(d, "/"); ok && batch.CheckStream(stream) == nil && !strings.Contains(stream, "/") {
		r.mu.Lock()
		r.listed[stream]++
		if r.listed[stream] >= 2 && r.left > 0 {
			r.bundle()
		}
		r.mu.Unlock()
	}
	return r.reads.List(ctx, d, after, fn)
}

// bundle puts the next bundle, of a part of every stream; r.mu held.
func (r *racing) bundle() {
	key, _ := r.w.Bundle(r.t, []string{"s0", "s1", "s2", "s3"}, 3)
	r.put = append(r.put, key)
	r.left--
}

// A stream under a Multi whose own listing (its first) applied parts does
// not list the store again at once: the Multi offers it what comes after.
// It used to, and a bundle put meanwhile was then found by the stream's
// listing before the Multi's, read by the stream itself (its index and
// its part), applied, and followed by another listing, and so on: on
// versitygw under load, 888 GETs for 20 bundles instead of about 20.
// Here each bundle after the first appears just as a stream lists a
// second time; each must still be read once, by the Multi, and applied.
func TestMultiStreamListsOnceThenTakesOffers(t *testing.T) {
	raw, _ := receivertest.NewStore(t)
	st := &racing{reads: &reads{Store: raw, n: map[string]int{}, lists: map[string]int{}}, listed: map[string]int{}, left: 4, t: t}
	st.w = bundletest.NewWriter(t, st.reads, bundleWriter)
	streams := []string{"s0", "s1", "s2", "s3"}
	st.w.Bundle(t, streams, 4) // before the Multi starts: each stream lists it itself

	tmp := t.TempDir()
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	applied := func(what string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for _, s := range streams {
			for {
				st.mu.Lock()
				last := st.w.Last(s)
				st.mu.Unlock()
				if r := m.Receiver(s); r != nil && r.Checkpoint().LastSeq == last {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: stream %s not applied through seq %d in a minute", what, s, last)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	applied("the first bundle")
	for {
		time.Sleep(50 * time.Millisecond) // a second listing, if any, has begun
		st.mu.Lock()
		left := st.left
		if left > 0 {
			st.bundle()
		}
		st.mu.Unlock()
		applied("the bundles after it")
		if left == 0 {
			break
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, key := range st.put {
		if n := st.get(st.n, key); n != 1 {
			t.Errorf("bundle %s read %d times, want once (by the Multi; more: streams read it themselves)", key, n)
		}
	}
	for _, s := range streams {
		if n := st.listed[s]; n != 1 {
			t.Errorf("stream %s listed its segments %d times, want once (when it started)", s, n)
		}
		got, err := os.ReadFile(filepath.Join(tmp, s+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if want := bundletest.Want(s, 1, st.w.Last(s)); !bytes.Equal(got, want) {
			t.Fatalf("replica of %s: %d bytes, want %d", s, len(got), len(want))
		}
	}
}

// A part over its stream's MaxSegmentBytes is not decoded by the
// many-stream receiver (the index's length is not trusted past the cap):
// the stream stops at it with batch.ErrSegmentTooLarge naming the bundle,
// and the other streams apply theirs.
func TestMultiPartOverSegmentLimitStopsItsStream(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	w := bundletest.NewWriter(t, st, bundleWriter)
	streams := []string{"s0", "s1", "s2"}
	key, _ := w.Bundle(t, streams, 4)
	tmp := t.TempDir()
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence}
		if stream == "s1" {
			cfg.MaxSegmentBytes = 64 // below any part
		}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	stopped := make(chan error, 10)
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Retry: time.Hour,
		OnStop: func(stream string, _ *receiver.Receiver, err error, _ bool) {
			if stream == "s1" && err != nil {
				stopped <- err
			}
		}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case err := <-stopped:
		if !strings.Contains(err.Error(), key) || !errors.Is(err, batch.ErrSegmentTooLarge) {
			t.Fatalf("s1 stopped with %v, want ErrSegmentTooLarge naming %s", err, key)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("s1 did not stop at its part over max_segment_bytes")
	}
	for _, s := range []string{"s0", "s2"} {
		receivertest.Eventually(t, s+" applied the bundle", func() bool {
			r := m.Receiver(s)
			return r != nil && r.Checkpoint().LastSeq == 4
		})
	}
}
