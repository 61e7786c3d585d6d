package shipper

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

func newDirStore(t *testing.T) *dir.Store {
	t.Helper()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func shipperConfig(t *testing.T, targets ...Target) Config {
	return Config{
		Spool:   spool.Config{Dir: t.TempDir(), Stream: "app", Policy: batch.FlushPolicy{MaxRecords: 10}},
		Targets: targets,
		Retry:   store.RetryPolicy{Min: time.Millisecond, Max: 5 * time.Millisecond},
	}
}

// running is a Shipper whose Run is going in the background.
type running struct {
	*Shipper
	cancel   context.CancelFunc
	finished chan struct{} // closed when Run has returned runErr
	runErr   error
}

// wait waits for Run to return by itself and returns its error.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.finished:
		return r.runErr
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going")
		return nil
	}
}

// stop ends Run and returns its error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

func startShipper(t *testing.T, cfg Config) *running {
	t.Helper()
	sh, err := New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Shipper: sh, cancel: cancel, finished: make(chan struct{})}
	go func() {
		r.runErr = sh.Run(ctx)
		close(r.finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.finished
		sh.Close()
	})
	return r
}

func drain(t *testing.T, sh *Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sh.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

func checkSpoolEmpty(t *testing.T, sh *Shipper) {
	t.Helper()
	if st := sh.Spool().Stats(); st.SealedPending != 0 || st.SpoolBytes != 0 {
		t.Fatalf("spool not empty: %+v", st)
	}
	// Confirm wakes Drain before it unlinks the retired files (outside
	// the spool's lock): give the unlinks a moment (a full run under load
	// once saw "1 files left in sealed/" right after Drain returned).
	var ents []os.DirEntry
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		ents, err = os.ReadDir(filepath.Join(sh.cfg.Spool.Dir, "sealed"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(ents) != 0 {
		t.Fatalf("%d files left in sealed/ 5 s after the drain", len(ents))
	}
}

func TestShipperEndToEnd(t *testing.T) {
	st := newDirStore(t)
	sh := startShipper(t, shipperConfig(t, Target{Name: "local", Store: st}))
	ctx := context.Background()
	seq, err := sh.Append(ctx, batch.Record{Key: []byte("k"), Op: "put", Data: []byte("first\n")})
	if err != nil || seq != 1 {
		t.Fatalf("Append: seq %d err %v, want 1", seq, err)
	}
	recs := batchtest.Records("r", 25)
	if err := sh.AppendBatch(ctx, recs, []byte("cur")); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)

	segs := storeSegments(t, st, "app")
	if got := batchtest.SeqRanges(segs); !slices.Equal(got, [][2]uint64{{1, 10}, {11, 20}, {21, 26}}) {
		t.Fatalf("store holds %v", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), append([]string{"first\n"}, batchtest.Lines("r", 1, 25)...); !slices.Equal(got, want) {
		t.Fatalf("store data %q, want %q", got, want)
	}
	if string(all[0].Key) != "k" || all[0].Op != "put" {
		t.Fatalf("first record key %q op %q", all[0].Key, all[0].Op)
	}
	checkSpoolEmpty(t, sh.Shipper)
	ts := sh.Targets()
	if len(ts) != 1 || ts[0].SentSeq != 26 || ts[0].Segments != 3 || ts[0].LastError != "" || ts[0].Store != st.String() {
		t.Fatalf("target status %+v", ts)
	}
	if c := sh.Spool().Cursor(); string(c) != "cur" {
		t.Fatalf("spool cursor %q, want cur", c)
	}
	if err := sh.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestShipperFanOut(t *testing.T) {
	a, b := newDirStore(t), newDirStore(t)
	sh := startShipper(t, shipperConfig(t, Target{Name: "a", Store: a}, Target{Name: "b", Store: b}))
	for i := range 5 {
		if err := sh.AppendBatch(context.Background(), batchtest.Records(fmt.Sprint("r", i), 7), nil); err != nil {
			t.Fatal(err)
		}
	}
	drain(t, sh.Shipper)
	sa, sb := storeSegments(t, a, "app"), storeSegments(t, b, "app")
	batchtest.CheckChain(t, sa, 0, batch.ZeroHash)
	if len(sa) != 4 || len(sb) != len(sa) {
		t.Fatalf("a holds %v, b holds %v; want 4 segments each", batchtest.SeqRanges(sa), batchtest.SeqRanges(sb))
	}
	for i := range sa {
		if sa[i].Name != sb[i].Name || sa[i].Hash != sb[i].Hash {
			t.Fatalf("segment %d differs between targets: %s/%.12s vs %s/%.12s", i, sa[i].Name, sa[i].Hash, sb[i].Name, sb[i].Hash)
		}
	}
	checkSpoolEmpty(t, sh.Shipper)
	for _, ts := range sh.Targets() {
		if ts.SentSeq != 35 {
			t.Fatalf("target %s sent through %d, want 35", ts.Name, ts.SentSeq)
		}
	}
}

// countingPuts wraps st, counting successful Puts per name, failing the
// first fails calls with err.
func countingPuts(st store.Store, fails int, err error) (*storetest.Faulty, func() map[string]int) {
	var mu sync.Mutex
	puts := map[string]int{}
	var calls atomic.Int64
	f := &storetest.Faulty{Store: st}
	f.PutFn = func(ctx context.Context, name string, data []byte) error {
		if calls.Add(1) <= int64(fails) {
			return err
		}
		if err := st.Put(ctx, name, data); err != nil {
			return err
		}
		mu.Lock()
		puts[name]++
		mu.Unlock()
		return nil
	}
	return f, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(puts)
	}
}

func TestShipperTransientErrors(t *testing.T) {
	real := newDirStore(t)
	flaky, puts := countingPuts(real, 5, errors.New("connection reset by peer"))
	steady := newDirStore(t)
	sh := startShipper(t, shipperConfig(t, Target{Name: "flaky", Store: flaky}, Target{Name: "steady", Store: steady}))
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 30), nil); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	segs := storeSegments(t, real, "app")
	if got := batchtest.SeqRanges(segs); !slices.Equal(got, [][2]uint64{{1, 10}, {11, 20}, {21, 30}}) {
		t.Fatalf("flaky target holds %v", got)
	}
	if got := batchtest.Datas(batchtest.CheckChain(t, segs, 0, batch.ZeroHash)); !slices.Equal(got, batchtest.Lines("r", 1, 30)) {
		t.Fatalf("data %q", got)
	}
	for name, n := range puts() {
		if n != 1 {
			t.Errorf("segment %s put %d times", name, n)
		}
	}
	checkSpoolEmpty(t, sh.Shipper)
	for _, ts := range sh.Targets() {
		if ts.LastError != "" {
			t.Errorf("target %s still reports error %q after recovering", ts.Name, ts.LastError)
		}
	}
	if err := sh.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestShipperConflictStopsRun(t *testing.T) {
	real := newDirStore(t)
	f := &storetest.Faulty{Store: real}
	f.PutFn = func(ctx context.Context, name string, data []byte) error {
		return fmt.Errorf("put %s: %w", name, store.ErrConflict)
	}
	sh := startShipper(t, shipperConfig(t, Target{Name: "t", Store: f}))
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 10), nil); err != nil {
		t.Fatal(err)
	}
	if err := sh.wait(t); !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "another writer") {
		t.Fatalf("Run: %v, want a conflict naming another writer", err)
	}
	// Nothing left the spool.
	if st := sh.Spool().Stats(); st.SealedPending != 1 {
		t.Fatalf("spool: %+v, want the segment kept", st)
	}
}

func TestShipperRealConflict(t *testing.T) {
	// Another writer already put different bytes under the name this
	// shipper's first segment gets.
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	sh := startShipper(t, cfg)
	name := batch.SegmentKey("app", batch.SegmentName(1, 1, 10))
	if err := st.Put(context.Background(), name, []byte("someone else's segment")); err != nil {
		t.Fatal(err)
	}
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 10), nil); err != nil {
		t.Fatal(err)
	}
	if err := sh.wait(t); err == nil || !strings.Contains(err.Error(), "another writer") || !strings.Contains(err.Error(), name) {
		t.Fatalf("Run: %v, want a conflict naming %s and another writer", err, name)
	}
}

func TestShipperContinuesStreamFromStore(t *testing.T) {
	st := newDirStore(t)
	first := startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
	if err := first.AppendBatch(context.Background(), batchtest.Records("old", 12), nil); err != nil {
		t.Fatal(err)
	}
	drain(t, first.Shipper)
	if err := first.stop(t); err != nil {
		t.Fatal(err)
	}
	first.Close()

	// A new host with an empty spool takes over the stream.
	second := startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
	seq, err := second.Append(context.Background(), batch.Record{Data: []byte("new-1\n")})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 13 {
		t.Fatalf("first seq of the new spool %d, want 13", seq)
	}
	drain(t, second.Shipper)
	segs := storeSegments(t, st, "app")
	if got := batchtest.SeqRanges(segs); !slices.Equal(got, [][2]uint64{{1, 10}, {11, 12}, {13, 13}}) {
		t.Fatalf("store holds %v", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash) // the new segment's prev is the old last's hash
	if got, want := batchtest.Datas(all), append(batchtest.Lines("old", 1, 12), "new-1\n"); !slices.Equal(got, want) {
		t.Fatalf("data %q", got)
	}
}

func TestShipperDrainTimeout(t *testing.T) {
	real := newDirStore(t)
	dead := &storetest.Faulty{Store: real, PutFn: func(ctx context.Context, name string, data []byte) error {
		return errors.New("no route to host")
	}}
	cfg := shipperConfig(t, Target{Name: "dead", Store: dead})
	sh := startShipper(t, cfg)
	if _, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := sh.Drain(ctx)
	if err == nil || !strings.Contains(err.Error(), cfg.Spool.Dir) || !strings.Contains(err.Error(), "1 segment(s)") {
		t.Fatalf("Drain: %v, want a timeout naming the spool and 1 segment", err)
	}
	if ts := sh.Targets(); !strings.Contains(ts[0].LastError, "no route to host") {
		t.Fatalf("target status %+v, want the last error", ts[0])
	}
	if err := sh.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	sh.Close()

	// The next start sends what was left.
	cfg.Targets = []Target{{Name: "dead", Store: real}}
	sh = startShipper(t, cfg)
	drain(t, sh.Shipper)
	if got := batchtest.SeqRanges(storeSegments(t, real, "app")); !slices.Equal(got, [][2]uint64{{1, 1}}) {
		t.Fatalf("store holds %v after restart", got)
	}
}

func TestShipperSealsByAge(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Spool.Policy = batch.FlushPolicy{MaxAge: 20 * time.Millisecond}
	sh := startShipper(t, cfg)
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 3), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the age trigger to seal and ship", func() bool {
		return len(storeSegments(t, st, "app")) == 1
	})
	if got := batchtest.SeqRanges(storeSegments(t, st, "app")); got[0] != [2]uint64{1, 3} {
		t.Fatalf("store holds %v", got)
	}
}

func TestShipperRunStopsOnFsyncFailure(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	var failing atomic.Bool
	cfg.Spool.SyncFile = func(f *os.File) error {
		if failing.Load() {
			return errors.New("disk on fire")
		}
		return f.Sync()
	}
	sh := startShipper(t, cfg)
	failing.Store(true)
	if err := sh.AppendBatch(context.Background(), batchtest.Records("r", 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := sh.wait(t); !errors.Is(err, spool.ErrFailed) {
		t.Fatalf("Run: %v, want spool.ErrFailed", err)
	}
	if _, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); !errors.Is(err, spool.ErrFailed) {
		t.Fatalf("Append after failure: %v", err)
	}
}

func TestShipperConcurrentAppends(t *testing.T) {
	st := newDirStore(t)
	sh := startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := sh.Append(context.Background(), batch.Record{Data: fmt.Appendf(nil, "%d-%d", w, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	drain(t, sh.Shipper)
	all := batchtest.CheckChain(t, storeSegments(t, st, "app"), 0, batch.ZeroHash)
	if len(all) != workers*each {
		t.Fatalf("%d records in the store, want %d", len(all), workers*each)
	}
	seen := map[string]bool{}
	for _, r := range all {
		if seen[string(r.Data)] {
			t.Fatalf("record %q twice", r.Data)
		}
		seen[string(r.Data)] = true
	}
}

func TestNewValidates(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t)
	if _, err := New(context.Background(), cfg, quiet); err == nil {
		t.Fatal("New without targets succeeded")
	}
	cfg = shipperConfig(t, Target{Name: "x", Store: st}, Target{Name: "x", Store: st})
	if _, err := New(context.Background(), cfg, quiet); err == nil || !strings.Contains(err.Error(), `"x" configured twice`) {
		t.Fatalf("duplicate target: %v", err)
	}
}

func TestNewFailsOnDamagedNewestSegment(t *testing.T) {
	st := newDirStore(t)
	name := batch.SegmentKey("app", batch.SegmentName(1, 1, 5))
	if err := st.Put(context.Background(), name, []byte("not a segment")); err != nil {
		t.Fatal(err)
	}
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	_, err := New(context.Background(), cfg, quiet)
	if err == nil || !errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), batch.SegmentName(1, 1, 5)) {
		t.Fatalf("New: %v, want ErrCorrupt naming the segment", err)
	}
	// New released the spool.
	cfg.Targets = []Target{{Name: "t", Store: newDirStore(t)}}
	sh, err := New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	sh.Close()
}

func TestShipperDrainReturnsWhenRunFails(t *testing.T) {
	f := &storetest.Faulty{Store: newDirStore(t), PutFn: func(ctx context.Context, name string, data []byte) error {
		return fmt.Errorf("put %s: %w", name, store.ErrConflict)
	}}
	cfg := shipperConfig(t, Target{Name: "t", Store: f})
	sh := startShipper(t, cfg)
	if _, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err := sh.Drain(ctx)
	if err == nil || !strings.Contains(err.Error(), "another writer") || !strings.Contains(err.Error(), cfg.Spool.Dir) {
		t.Fatalf("Drain: %v, want Run's error and the spool left behind", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Drain took %v: it waited for its timeout instead of noticing Run failed", d)
	}
	if err := sh.wait(t); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Run: %v", err)
	}
}

// Confirmed segments that wait in the spool for state.json are not
// "unsent": OldestUnsent (metrics and /healthz read it) ignores them.
func TestOldestUnsentIgnoresConfirmed(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Spool.StateEvery = time.Hour
	sh := startShipper(t, cfg)
	for _, p := range []string{"a", "b", "c"} {
		for _, r := range batchtest.Records(p, 10) {
			if _, err := sh.Append(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "segment "+p+" confirmed", func() bool { return sh.Targets()[0].SentSeq == sh.spool.Stats().LastSeq })
	}
	if n := len(sh.spool.Pending(0)); n == 0 {
		t.Fatal("no confirmed segment waits for state.json: the case under test did not arise")
	}
	if o := sh.OldestUnsent(); !o.IsZero() {
		t.Fatalf("OldestUnsent %v with every segment confirmed, want zero", o)
	}
}

// The shipper's appenders wait out a full spool disk (the source stops
// reading) and carry on when there is room.
func TestShipperWaitsOutFullSpool(t *testing.T) {
	disk := &ferrytest.FullDisk{}
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "archive", Store: st})
	cfg.Spool.WriteFile = disk.Write
	sh := startShipper(t, cfg)
	disk.Full.Store(true)
	done := make(chan error, 1)
	go func() {
		var err error
		for i := range 20 {
			if _, err = sh.Append(context.Background(), batch.Record{Data: fmt.Appendf(nil, "r%d", i)}); err != nil {
				break
			}
		}
		done <- err
	}()
	waitFor(t, "appends meeting the full disk", func() bool { return disk.Failed.Load() >= 2 })
	select {
	case err := <-done:
		t.Fatalf("appends finished on a full disk: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	disk.Full.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	if recs := batchtest.CheckChain(t, storeSegments(t, st, "app"), 0, batch.ZeroHash); len(recs) != 20 {
		t.Fatalf("%d records stored, want 20", len(recs))
	}
}
