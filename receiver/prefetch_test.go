package receiver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/storetest"
)

// getWatch wraps a store, counting the Gets of each object and how many
// run at once, and remembering the order they finish in. before, if set,
// runs inside each Get before the object is opened.
type getWatch struct {
	storetest.Faulty

	mu           sync.Mutex
	gets         map[string]int
	active, most int
	finished     []string
	finishedCh   map[string]chan struct{}
	before       func(ctx context.Context, name string) error
}

func watchGets(st store.Store) *getWatch {
	w := &getWatch{gets: map[string]int{}, finishedCh: map[string]chan struct{}{}}
	w.Faulty = storetest.Faulty{Store: st, GetFn: w.get}
	return w
}

func (w *getWatch) get(ctx context.Context, name string) (io.ReadCloser, error) {
	w.mu.Lock()
	w.gets[name]++
	w.active++
	w.most = max(w.most, w.active)
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.active--
		w.finished = append(w.finished, name)
		if ch, ok := w.finishedCh[name]; ok {
			close(ch)
			delete(w.finishedCh, name)
		}
		w.mu.Unlock()
	}()
	if w.before != nil {
		if err := w.before(ctx, name); err != nil {
			return nil, err
		}
	}
	return w.Store.Get(ctx, name)
}

// finishedGet returns a channel closed when a Get of name has returned.
func (w *getWatch) finishedGet(name string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	w.finishedCh[name] = ch
	return ch
}

func (w *getWatch) stats() (gets map[string]int, most, active int, finished []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.gets), w.most, w.active, slices.Clone(w.finished)
}

// Segments fetched ahead finish in any order (here the later ones first);
// they are still applied in seq order, each exactly once, and each fetched
// once.
func TestPrefetchAppliesInOrder(t *testing.T) {
	segs := receivertest.Chain(t, 12, 10)
	for _, tc := range []struct {
		name     string
		prefetch int
		most     int // at most this many Gets at once
	}{
		{"prefetch 4", 4, 5},
		{"prefetch 2", 2, 3},
		{"no prefetch", -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := receivertest.NewStore(t)
			receivertest.Put(t, st, segs...)
			w := watchGets(st)
			// A Get returns only after the Get of the next segment has
			// (or after half a second, when that one is not under way):
			// the later ones finish first however slow the machine.
			if tc.prefetch > 0 {
				w.before = func(ctx context.Context, name string) error {
					i := slices.IndexFunc(segs, func(s receivertest.Seg) bool { return s.Key() == name })
					if i+1 == len(segs) {
						return nil
					}
					select {
					case <-w.finishedGet(segs[i+1].Key()):
					case <-time.After(500 * time.Millisecond):
					case <-ctx.Done():
					}
					return nil
				}
			}
			replica := filepath.Join(t.TempDir(), "replica")
			ap := newRecorder(replica)
			cfg := receivertest.Config(t, w, ap)
			cfg.Prefetch = tc.prefetch
			r := receivertest.Open(t, cfg)
			if err := receivertest.Run(t, r); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got, want := ap.Applied(), names(segs...); !slices.Equal(got, want) {
				t.Fatalf("applied %v, want %v", got, want)
			}
			receivertest.WantFile(t, replica, receivertest.Want(1, 120), "after Run")
			receivertest.WantCheckpoint(t, r.Checkpoint(), segs[11], "after Run")
			gets, most, _, finished := w.stats()
			for _, s := range segs {
				if gets[s.Key()] != 1 {
					t.Errorf("segment %s fetched %d times, want once", s.Name, gets[s.Key()])
				}
			}
			if most > tc.most {
				t.Errorf("%d Gets at once, want at most %d", most, tc.most)
			}
			if tc.prefetch > 0 {
				if most < 2 {
					t.Errorf("never more than one Get at once with prefetch %d", tc.prefetch)
				}
				if slices.IsSorted(finished) {
					t.Errorf("Gets finished in seq order %v; the test wants them out of order", finished)
				}
			}
		})
	}
}

// Damage found in a segment fetched ahead stops the receiver there: what
// comes before it is applied and checkpointed, nothing after it is, and the
// error names it.
func TestPrefetchStopsAtDamagedSegment(t *testing.T) {
	segs := receivertest.Chain(t, 6, 10)
	st, root := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	bad := append([]byte(nil), segs[2].Data...)
	bad[len(bad)-5] ^= 0x40 // in the payload: its checksum no longer matches
	if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(segs[2].Key())), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	w := watchGets(st)
	fetchedBad := w.finishedGet(segs[2].Key())
	replica := filepath.Join(t.TempDir(), "replica")
	rec := newRecorder(replica)
	ap := &slowApplier{recorder: rec, before: func(meta *batch.Meta) error {
		if meta.Name() != segs[0].Name {
			return nil
		}
		// Segment 3 is read while segment 1 is still applying.
		select {
		case <-fetchedBad:
			return nil
		case <-time.After(5 * time.Second):
			return fmt.Errorf("segment %s was not fetched while %s applied: %w", segs[2].Name, meta.Name(), receiver.ErrFatal)
		}
	}}
	cfg := receivertest.Config(t, w, ap)
	cfg.Once = false
	cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour // damage is not retried
	r := receivertest.Open(t, cfg)
	err := receivertest.Run(t, r)
	if !errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), segs[2].Key()) {
		t.Fatalf("Run: %v, want ErrCorrupt naming %s", err, segs[2].Key())
	}
	if got, want := rec.Applied(), names(segs[:2]...); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[1], "after the damaged segment")
	receivertest.WantCheckpoint(t, loadCheckpoint(t, cfg), segs[1], "checkpoint file after the damaged segment")
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after the damaged segment")
}

// slowApplier runs before ahead of each Apply of the recorder.
type slowApplier struct {
	*recorder
	before func(meta *batch.Meta) error
}

func (a *slowApplier) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	if err := a.before(meta); err != nil {
		return err
	}
	return a.recorder.Apply(ctx, meta, recs)
}

// Cancelling a receiver while segments are being fetched ahead ends every
// fetcher before Run returns, and leaves no goroutine behind.
func TestPrefetchCancelEndsFetchers(t *testing.T) {
	segs := receivertest.Chain(t, 6, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	baseline := runtime.NumGoroutine()

	w := watchGets(st)
	stuck := make(chan struct{}, len(segs))
	w.before = func(ctx context.Context, name string) error {
		if name == segs[0].Key() {
			return nil
		}
		stuck <- struct{}{}
		<-ctx.Done() // a store that hangs until the receiver gives up
		return ctx.Err()
	}
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	cfg := receivertest.Config(t, w, ap)
	cfg.Once = false
	r := receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for range 4 { // segments 2..5 are being fetched
		select {
		case <-stuck:
		case <-time.After(5 * time.Second):
			t.Fatal("segments after the first were not fetched ahead")
		}
	}
	receivertest.Eventually(t, "the first segment applied", func() bool { return len(ap.Applied()) == 1 })
	cancel()
	receivertest.WaitReturned(t, done, "Run did not return after cancel")
	if _, _, active, _ := w.stats(); active != 0 {
		t.Fatalf("%d Gets still running after Run returned", active)
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[0], "after cancel")
	receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after cancel")
	r.Close()
	receivertest.Eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

// A byte cap smaller than any one segment still lets every segment through,
// one decoded at a time.
func TestPrefetchByteCapBelowOneSegment(t *testing.T) {
	segs := receivertest.Chain(t, 8, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	cfg := receivertest.Config(t, st, ap)
	cfg.PrefetchBytes = 1
	cp := receivertest.RunOnce(t, cfg)
	if got, want := ap.Applied(), names(segs...); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantCheckpoint(t, cp, segs[7], "after Run")
	receivertest.WantFile(t, replica, receivertest.Want(1, 80), "after Run")
}

// A segment larger than MaxSegmentBytes is refused, whatever size the
// listing gave, and so is one claiming to decompress to more: at once
// (the retry backoff is an hour), naming the segment, its size and the
// limit, and nothing after it is applied.
func TestPrefetchRefusesOversizeSegment(t *testing.T) {
	small := receivertest.SealSeg(t, receivertest.Stream, 1, 1, 5, batch.ZeroHash)
	big := receivertest.SealSeg(t, receivertest.Stream, 1, 6, 40, small.Hash)
	// bomb is big claiming 1 GiB: a forgery whose checksums all hold.
	m, off, err := batch.ParseMeta(big.Data)
	if err != nil {
		t.Fatal(err)
	}
	m.UncompressedSize = 1 << 30
	bombData, _, err := batch.Assemble(m, big.Data[off:])
	if err != nil {
		t.Fatal(err)
	}
	bomb := receivertest.Seg{Name: big.Name, Data: bombData, Meta: m, Hash: batch.Hash(bombData)}
	for _, tc := range []struct {
		desc  string
		seg   receivertest.Seg
		limit int64
		want  string
	}{
		{"stored size", big, int64(len(big.Data)) - 1, fmt.Sprintf("%d bytes (%s) stored, over the limit of %d", len(big.Data), sizeString(len(big.Data)), len(big.Data)-1)},
		{"claimed size", bomb, 1 << 20, "claims 1073741824 uncompressed bytes (1.0 GiB), over the limit of 1048576 (1.0 MiB)"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st, _ := receivertest.NewStore(t)
			receivertest.Put(t, st, small, tc.seg)
			replica := filepath.Join(t.TempDir(), "replica")
			ap := newRecorder(replica)
			cfg := receivertest.Config(t, st, ap)
			cfg.MaxSegmentBytes = tc.limit
			cfg.Once = false
			cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour
			r := receivertest.Open(t, cfg)
			err := receivertest.Run(t, r)
			if !errors.Is(err, batch.ErrSegmentTooLarge) || !strings.Contains(err.Error(), "segment "+tc.seg.Key()+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v\nwant ErrSegmentTooLarge naming %s and saying %q", err, tc.seg.Key(), tc.want)
			}
			if got, want := ap.Applied(), names(small); !slices.Equal(got, want) {
				t.Fatalf("applied %v, want %v", got, want)
			}
			receivertest.WantFile(t, replica, receivertest.Want(1, 5), "after the oversize segment")
		})
	}
}

// sizeString is batch's rendering of a size in an error.
func sizeString(n int) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }
