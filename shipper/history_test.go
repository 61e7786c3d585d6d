package shipper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

// shipAndClose ships n records through a shipper on cfg, drains it and
// closes it, releasing its lease.
func shipAndClose(t *testing.T, cfg Config, prefix string, n int) {
	t.Helper()
	sh := startShipper(t, cfg)
	if err := sh.AppendBatch(context.Background(), batchtest.Records(prefix, n), nil); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	if err := sh.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
}

// promote records generation gen of stream app in st, forked at the end
// of seg (or at seq 0 when seg is nil), as a DR site's promotion does.
func promote(t *testing.T, st store.Store, gen uint32, seg *batchtest.Segment, site string) batch.Generation {
	t.Helper()
	rec := batch.Generation{Stream: "app", Generation: gen, Parent: gen - 1, Time: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC),
		Site: site, Host: site + "-host", Reason: "promote"}
	if seg != nil {
		rec.ForkSeq, rec.ForkHash = seg.Meta.LastSeq, seg.Hash
	}
	if err := catalog.CreateGeneration(context.Background(), st, rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func readState(t *testing.T, spoolDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(spoolDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A fresh spool follows the history: generation 2 forked at seq 10 and
// has no segments yet, so the new spool starts at seq 11 in generation 2,
// chained to the fork hash, and ignores generation 1's segments after the
// fork. A later fresh spool continues after generation 2's newest segment.
func TestFreshSpoolFollowsNewestGeneration(t *testing.T) {
	st := newDirStore(t)
	shipAndClose(t, shipperConfig(t, Target{Name: "t", Store: st}), "g1-", 25) // 1-10, 11-20, 21-25
	g1 := storeSegments(t, st, "app")
	rec := promote(t, st, 2, &g1[0], "dr-b")

	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	sh := startShipper(t, cfg)
	if g := sh.Generation(); g != 2 {
		t.Fatalf("fresh spool writes generation %d, want 2", g)
	}
	if h, ok := sh.History(); !ok || h.Newest().Generation != 2 {
		t.Fatalf("History() = %v, %v; want generation 2's", h.Newest(), ok)
	}
	if s := readState(t, cfg.Spool.Dir); !strings.Contains(s, `"generation":2`) || !strings.Contains(s, `"sealed_seq":10`) {
		t.Fatalf("state.json %s, want generation 2 at seq 10", s)
	}
	seq, err := sh.Append(context.Background(), batch.Record{Data: []byte("g2-1\n")})
	if err != nil || seq != 11 {
		t.Fatalf("first append: seq %d, err %v; want 11", seq, err)
	}
	if err := sh.AppendBatch(context.Background(), batchtest.Records("g2-", 9), nil); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	sh.stop(t)
	sh.Close()
	var g2 []batchtest.Segment
	for _, s := range storeSegments(t, st, "app") {
		if s.Meta.Generation == 2 {
			g2 = append(g2, s)
		}
	}
	if got := batchtest.SeqRanges(g2); !slices.Equal(got, [][2]uint64{{11, 20}}) {
		t.Fatalf("generation 2 holds %v, want [11 20]", got)
	}
	batchtest.CheckChain(t, g2, rec.ForkSeq, rec.ForkHash)

	// Generation 2 has a segment now: the next fresh spool continues after it.
	next := startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
	if seq, err := next.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil || seq != 21 || next.Generation() != 2 {
		t.Fatalf("next fresh spool: seq %d, generation %d, err %v; want 21 in generation 2", seq, next.Generation(), err)
	}
}

// Generation 2 forked at seq 0 (the stream started again) begins at seq 1
// with the zero hash.
func TestFreshSpoolFollowsForkAtZero(t *testing.T) {
	st := newDirStore(t)
	shipAndClose(t, shipperConfig(t, Target{Name: "t", Store: st}), "g1-", 5)
	promote(t, st, 2, nil, "dr-b")
	sh := startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
	if seq, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil || seq != 1 || sh.Generation() != 2 {
		t.Fatalf("seq %d, generation %d, err %v; want 1 in generation 2", seq, sh.Generation(), err)
	}
	drain(t, sh.Shipper)
	segs := storeSegments(t, st, "app")
	last := segs[len(segs)-1]
	if last.Name != batch.SegmentName(2, 1, 1) || last.Meta.PrevSHA256 != batch.ZeroHash {
		t.Fatalf("newest segment %s prev %.12s, want %s after the zero hash", last.Name, last.Meta.PrevSHA256, batch.SegmentName(2, 1, 1))
	}
}

// The longest history wins and travels: a target without the records
// gets them, create-only, before anything is shipped.
func TestHistoryCopiedToTargetThatLacksIt(t *testing.T) {
	a, b := newDirStore(t), newDirStore(t)
	shipAndClose(t, shipperConfig(t, Target{Name: "a", Store: a}, Target{Name: "b", Store: b}), "g1-", 10)
	seg := storeSegments(t, a, "app")[0]
	promote(t, a, 2, &seg, "dr-b")
	rec3 := promote(t, a, 3, &seg, "dr-c")

	sh := startShipper(t, shipperConfig(t, Target{Name: "a", Store: a}, Target{Name: "b", Store: b}))
	if g := sh.Generation(); g != 3 {
		t.Fatalf("generation %d, want 3", g)
	}
	h, err := catalog.ReadHistory(context.Background(), b, "app")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := h.Record(3); h.Newest().Generation != 3 || !sameRecord(got, rec3) {
		t.Fatalf("target b's history ends at %+v, want the copied %+v", h.Newest(), rec3)
	}
}

// Histories that disagree are refused, naming both stores, before any
// lease is taken or segment read.
func TestConflictingHistoriesRefused(t *testing.T) {
	a, b := newDirStore(t), newDirStore(t)
	shipAndClose(t, shipperConfig(t, Target{Name: "a", Store: a}, Target{Name: "b", Store: b}), "g1-", 20)
	segs := storeSegments(t, a, "app")
	promote(t, a, 2, &segs[0], "dr-b")
	promote(t, b, 2, &segs[1], "dr-c")

	_, err := New(context.Background(), shipperConfig(t, Target{Name: "a", Store: a}, Target{Name: "b", Store: b}), quiet)
	if err == nil || !strings.Contains(err.Error(), "conflicting generation histories") ||
		!strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), b.String()) ||
		!strings.Contains(err.Error(), "dr-b") || !strings.Contains(err.Error(), "dr-c") {
		t.Fatalf("New: %v, want conflicting histories naming both stores and sites", err)
	}
}

// A spool of an older generation is fenced at New: the error is the
// history's, and nothing it holds is sent.
func TestOldGenerationSpoolFencedAtNew(t *testing.T) {
	st := newDirStore(t)
	down := &storetest.Faulty{Store: st, PutFn: func(context.Context, string, []byte) error { return errors.New("no route to host") }}
	cfg := shipperConfig(t, Target{Name: "t", Store: down})
	sh := startShipper(t, cfg)
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 10), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed put", func() bool { return sh.Targets()[0].Failures > 0 })
	sh.stop(t)
	sh.Close() // one segment stays in the spool

	rec := promote(t, st, 2, nil, "dr-b")
	cfg.Targets = []Target{{Name: "t", Store: st}}
	_, err := New(context.Background(), cfg, quiet)
	var fe *batch.FencedError
	want := fmt.Sprintf("fenced: generation 2 was promoted at seq 0 on dr-b at %s; run ferry rejoin", rec.Time.Format(time.RFC3339))
	if !errors.As(err, &fe) || err.Error() != want {
		t.Fatalf("New: %v, want %q", err, want)
	}
	if segs := storeSegments(t, st, "app"); len(segs) != 0 {
		t.Fatalf("a fenced spool put %v", batchtest.SeqRanges(segs))
	}
	if _, _, err := st.Load(context.Background(), LeaseKey("app")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a fenced shipper took the lease: %v", err)
	}

	// An explicit generation older than the newest is fenced too, even
	// on a fresh spool; one newer than the history has no record.
	cfg = shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Spool.Generation = 1
	if _, err := New(context.Background(), cfg, quiet); !errors.Is(err, batch.ErrFenced) {
		t.Fatalf("explicit generation 1: %v, want fenced", err)
	}
	cfg = shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Spool.Generation = 3
	if _, err := New(context.Background(), cfg, quiet); !errors.Is(err, batch.ErrUnknownGeneration) || !strings.Contains(err.Error(), "generation 3") {
		t.Fatalf("explicit generation 3: %v, want no record of generation 3", err)
	}
}

// segmentsOnly is a link-like target: it holds no history.
type segmentsOnly struct{ *storetest.Faulty }

func (segmentsOnly) SegmentsOnly() bool { return true }

// putWatch wraps st: it records every segment Put and flags one that
// starts after the shipper halted.
type putWatch struct {
	mu    sync.Mutex
	puts  []string
	late  []string
	sh    *Shipper
	ready chan struct{} // closed once sh is set
}

func (w *putWatch) wrap(st store.Store) *storetest.Faulty {
	return &storetest.Faulty{Store: st, PutFn: func(ctx context.Context, name string, data []byte) error {
		<-w.ready
		if _, ok := store.ParseSegmentObject(name); ok {
			w.mu.Lock()
			w.puts = append(w.puts, name)
			if w.sh.haltErr() != nil {
				w.late = append(w.late, name)
			}
			w.mu.Unlock()
		}
		return st.Put(ctx, name, data)
	}}
}

// Fenced while running: a promotion recorded mid-run stops Run with the
// fenced error at the next send round, and no segment is Put to any
// target (the link-like one included) after it was detected. The spool
// keeps the rest.
func TestFencedWhileRunning(t *testing.T) {
	st, linkStore := newDirStore(t), newDirStore(t)
	w := &putWatch{ready: make(chan struct{})}
	cfg := shipperConfig(t, Target{Name: "store", Store: w.wrap(st)}, Target{Name: "link", Store: segmentsOnly{w.wrap(linkStore)}})
	cfg.Lease.TTL = time.Hour // no idle look at the history during the test
	sh := startShipper(t, cfg)
	w.sh = sh.Shipper
	close(w.ready)
	if err := sh.AppendBatch(context.Background(), batchtest.Records("a", 10), nil); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	seg := storeSegments(t, st, "app")[0]
	promote(t, st, 2, &seg, "dr-b")

	for i := range 5 {
		if err := sh.AppendBatch(context.Background(), batchtest.Records(fmt.Sprint("b", i), 10), nil); err != nil {
			t.Fatal(err)
		}
	}
	err := sh.wait(t)
	if !errors.Is(err, batch.ErrFenced) || !strings.HasPrefix(err.Error(), "fenced: generation 2 was promoted at seq 10 on dr-b") {
		t.Fatalf("Run: %v, want the fenced error", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.late) != 0 {
		t.Fatalf("segments put after the shipper was fenced: %v", w.late)
	}
	if got := batchtest.SeqRanges(storeSegments(t, st, "app")); !slices.Equal(got, [][2]uint64{{1, 10}}) {
		t.Fatalf("store holds %v after the fence, want only [1 10]", got)
	}
	if p := sh.Spool().Stats().SealedPending; p == 0 {
		t.Fatal("nothing left in the spool")
	}
	if c := drainErr(t, sh.Shipper); !errors.Is(c, batch.ErrFenced) {
		t.Fatalf("Drain after the fence: %v, want it to report the fence", c)
	}
}

func drainErr(t *testing.T, sh *Shipper) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return sh.Drain(ctx)
}

// A shipper with nothing to send learns of the promotion too, at the
// lease's renewal pace, and stops.
func TestFencedWhileIdle(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = 300 * time.Millisecond
	sh := startShipper(t, cfg)
	promote(t, st, 2, nil, "dr-b")
	if err := sh.wait(t); !errors.Is(err, batch.ErrFenced) {
		t.Fatalf("Run: %v, want fenced", err)
	}
}

// A link target's refusal wrapping batch.ErrFenced halts the shipper at
// once: not retried, nothing more sent.
func TestLinkFencedErrorHalts(t *testing.T) {
	n := 0
	var mu sync.Mutex
	link := segmentsOnly{&storetest.Faulty{Store: newDirStore(t), PutFn: func(_ context.Context, name string, _ []byte) error {
		mu.Lock()
		n++
		mu.Unlock()
		return fmt.Errorf("put %s: refused: %w", name, batch.ErrFenced)
	}}}
	sh := startShipper(t, shipperConfig(t, Target{Name: "link", Store: link}))
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 30), nil); err != nil {
		t.Fatal(err)
	}
	err := sh.wait(t)
	if !errors.Is(err, batch.ErrFenced) || !strings.Contains(err.Error(), "target link") {
		t.Fatalf("Run: %v, want the link's fenced error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Fatalf("%d puts to the link, want 1 (no retry)", n)
	}
}

// The split-brain message says which kind of conflict it was.
func TestConflictMessageSaysOverlap(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = -1 // the other writer did not take one
	sh := startShipper(t, cfg)
	// Another writer stored seqs 5..12 of generation 1.
	other := batch.SegmentKey("app", batch.SegmentName(1, 5, 12))
	if err := st.Put(context.Background(), other, []byte("someone else's segment")); err != nil {
		t.Fatal(err)
	}
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 10), nil); err != nil {
		t.Fatal(err)
	}
	err := sh.wait(t)
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "overlaps a different segment") ||
		strings.Contains(err.Error(), "exists there with different content") {
		t.Fatalf("Run: %v, want an overlap named as such", err)
	}
}

// downStore is a dir store that fails every call while down is set, as an
// unreachable endpoint does.
type downStore struct {
	*dir.Store
	down atomic.Bool
}

var errDown = errors.New("dial tcp: connection refused")

func (d *downStore) Put(ctx context.Context, name string, data []byte) error {
	if d.down.Load() {
		return errDown
	}
	return d.Store.Put(ctx, name, data)
}

func (d *downStore) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	if d.down.Load() {
		return errDown
	}
	return d.Store.List(ctx, dir, after, fn)
}

func (d *downStore) Swap(ctx context.Context, name string, data []byte, old string) (string, error) {
	if d.down.Load() {
		return "", errDown
	}
	return d.Store.Swap(ctx, name, data, old)
}

// A spool that knows its stream starts while its target is down: it takes
// records, and sends nothing until the target answers and the history and
// lease are checked. A promotion recorded meanwhile fences it then.
func TestTargetDownAtStart(t *testing.T) {
	for _, promoted := range []bool{false, true} {
		t.Run(fmt.Sprint("promoted=", promoted), func(t *testing.T) {
			st := &downStore{Store: newDirStore(t)}
			cfg := shipperConfig(t, Target{Name: "t", Store: st})
			shipAndClose(t, cfg, "a", 10)
			st.down.Store(true)
			sh := startShipper(t, cfg)
			if _, ok := sh.History(); ok {
				t.Fatal("History() ok while the target is down")
			}
			if err := sh.AppendBatch(context.Background(), batchtest.Records("b", 10), nil); err != nil {
				t.Fatal(err)
			}
			if promoted {
				promote(t, st.Store, 2, nil, "dr-b")
			}
			time.Sleep(20 * time.Millisecond)
			st.down.Store(false)
			if promoted {
				if err := sh.wait(t); !errors.Is(err, batch.ErrFenced) {
					t.Fatalf("Run: %v, want fenced", err)
				}
				if got := batchtest.SeqRanges(storeSegments(t, st, "app")); !slices.Equal(got, [][2]uint64{{1, 10}}) {
					t.Fatalf("store holds %v, want only [1 10]", got)
				}
				return
			}
			drain(t, sh.Shipper)
			if got := batchtest.SeqRanges(storeSegments(t, st, "app")); !slices.Equal(got, [][2]uint64{{1, 10}, {11, 20}}) {
				t.Fatalf("store holds %v", got)
			}
			if l, _ := loadLease(t, st.Store); l.Spool != cfg.Spool.Dir || l.Released {
				t.Fatalf("lease %+v, want this shipper's", l)
			}
			if _, ok := sh.History(); !ok {
				t.Fatal("History() not ok once the target answered")
			}
		})
	}
	// A permanent error still fails New.
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	shipAndClose(t, cfg, "a", 10)
	cfg.Targets = []Target{{Name: "t", Store: &storetest.Faulty{Store: st, ListFn: func(context.Context, string, string, func(store.Object) error) error {
		return fmt.Errorf("403 AccessDenied: %w", store.ErrPermanent)
	}}}}
	if _, err := New(context.Background(), cfg, quiet); !errors.Is(err, store.ErrPermanent) {
		t.Fatalf("New with a permanent error: %v", err)
	}
}
