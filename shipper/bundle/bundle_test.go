package bundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/bundle"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

var quiet = slog.New(slog.DiscardHandler)

var fastRetry = store.RetryPolicy{Min: time.Millisecond, Max: 5 * time.Millisecond}

// rigLeaseTTL is the rigs' shippers' writer lease TTL (0: the default);
// the idle fence check runs at a third of it.
var rigLeaseTTL time.Duration

// rig is a ship of several streams with a Bundler, all really started, on
// a spool root and a dir store; the test drives the ticks.
type rig struct {
	t      *testing.T
	root   string // spool root
	stRoot string // dir store root
	st     *dir.Store
	b      *bundle.Bundler
	ships  map[string]*shipper.Shipper
	runs   map[string]chan error
	cancel context.CancelFunc
	closed bool
}

func openRig(t *testing.T, root, stRoot string, names []string, maxBytes int64, step func(string)) (*rig, error) {
	t.Helper()
	return openRigCap(t, root, stRoot, names, maxBytes, 0, step)
}

func openRigCap(t *testing.T, root, stRoot string, names []string, maxBytes, maxBundle int64, step func(string)) (*rig, error) {
	t.Helper()
	return openRigWith(t, root, stRoot, names, func(c *bundle.Config) {
		c.MaxBytes, c.MaxBundleBytes, c.Step = maxBytes, maxBundle, step
	})
}

func openRigWith(t *testing.T, root, stRoot string, names []string, edit func(*bundle.Config)) (*rig, error) {
	t.Helper()
	st, err := dir.New(stRoot)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bundle.Config{Dir: filepath.Join(root, bundle.DirName), Interval: time.Hour,
		Targets: []bundle.Target{{Name: "t1", Store: st}}, Retry: fastRetry, Log: quiet}
	edit(&cfg)
	var shipTargets []shipper.Target // the streams ship to the Bundler's targets
	for _, bt := range cfg.Targets {
		shipTargets = append(shipTargets, shipper.Target{Name: bt.Name, Store: bt.Store})
	}
	b, err := bundle.Open(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, root: root, stRoot: stRoot, st: st, b: b, ships: map[string]*shipper.Shipper{}, runs: map[string]chan error{}, cancel: cancel}
	t.Cleanup(r.close)
	for _, name := range names {
		sh, err := shipper.New(ctx, shipper.Config{
			Spool: spool.Config{Dir: filepath.Join(root, name), Stream: name, Policy: batch.FlushPolicy{MaxRecords: 1000},
				Parts: b.Parts(name)},
			Targets: shipTargets,
			Retry:   fastRetry,
			Lease:   shipper.LeaseConfig{TTL: rigLeaseTTL},
		}, quiet)
		if err != nil {
			r.close()
			return nil, err
		}
		r.ships[name] = sh
		done := make(chan error, 1)
		r.runs[name] = done
		go func() { done <- sh.Run(ctx) }()
		b.Register(name, sh)
	}
	return r, nil
}

func (r *rig) close() {
	if r.closed {
		return
	}
	r.closed = true
	for name, sh := range r.ships {
		r.b.Unregister(name)
		sh.Close()
	}
	r.cancel()
	r.b.Close()
}

func (r *rig) appendLines(name, prefix string, from, to int) {
	r.t.Helper()
	var recs []batch.Record
	for i := from; i <= to; i++ {
		recs = append(recs, batch.Record{Data: fmt.Appendf(nil, "%s-%d\n", prefix, i)})
	}
	if err := r.ships[name].AppendBatch(context.Background(), recs, nil); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) tick() {
	r.t.Helper()
	if err := r.b.Tick(context.Background()); err != nil {
		r.t.Fatalf("Tick: %v", err)
	}
}

// drain waits until every stream's spool has every target's confirmation.
func (r *rig) drain() {
	r.t.Helper()
	for name, sh := range r.ships {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		done := make(chan error, 1)
		go func() { done <- sh.Drain(ctx) }()
		// Drain seals the open batch alone; bundles go by ticks.
		for {
			select {
			case err := <-done:
				cancel()
				if err != nil {
					r.t.Fatalf("drain %s: %v", name, err)
				}
			case <-time.After(20 * time.Millisecond):
				r.tick()
				continue
			}
			break
		}
	}
}

// storeRecords reads stream's records from the store: its own segments
// and its parts in every bundle, merged by seq, the chain checked.
func storeRecords(t *testing.T, st store.Store, stream string) ([]string, int) {
	t.Helper()
	ctx := context.Background()
	segs := batchtest.ReadStore(t, st, stream)
	parts := 0
	var writers []string
	st.(store.DirLister).ListDirs(ctx, catalog.BundlesDir, func(name string) error {
		writers = append(writers, strings.TrimSuffix(strings.TrimPrefix(name, catalog.BundlesDir), "/"))
		return nil
	})
	for _, w := range writers {
		var keys []store.Object
		st.List(ctx, catalog.WriterDir(w), "", func(o store.Object) error { keys = append(keys, o); return nil })
		for _, o := range keys {
			rc, err := st.Get(ctx, o.Name)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(rc)
			rc.Close()
			bd, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
			if err != nil {
				t.Fatalf("bundle %s: %v", o.Name, err)
			}
			i, ok := bd.Find(stream)
			if !ok {
				continue
			}
			_, raw, err := bd.OpenPart(i, nil)
			if err != nil {
				t.Fatalf("bundle %s part %d: %v", o.Name, i, err)
			}
			segs = append(segs, batchtest.Decode(t, bd.Parts[i].Name(), raw))
			parts++
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].Meta.FirstSeq < segs[j].Meta.FirstSeq })
	return batchtest.Datas(batchtest.CheckChain(t, segs, 0, batch.ZeroHash)), parts
}

func markers(t *testing.T, st store.Store, stream string) []catalog.BundleMarker {
	t.Helper()
	ms, err := catalog.ListBundleMarkers(context.Background(), st, stream)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestTickBundlesStreams(t *testing.T) {
	var r *rig
	var oldest time.Time
	r, err := openRig(t, t.TempDir(), t.TempDir(), []string{"b", "a", "c", "idle"}, 2000, func(step string) {
		if step == "committed" && oldest.IsZero() {
			oldest = r.ships["a"].OldestUnsent() // the part, not put yet
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.appendLines("b", "b", 1, 5)
	r.appendLines("a", "a", 1, 3)
	r.appendLines("c", "c", 1, 200) // over bundle_max: seals alone
	r.tick()
	if oldest.IsZero() {
		t.Error("OldestUnsent is zero while a part waits for its bundle's put")
	}
	st := r.b.Stats()
	if st.Bundles != 1 || st.Parts != 2 || st.Put != 1 {
		t.Fatalf("after one tick: %+v, want 1 bundle of 2 parts, put", st)
	}
	key := catalog.BundleKey(r.b.Writer(), 1)
	rc, err := r.st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("bundle %s not in the store: %v", key, err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	bd, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(bd.Parts) != 2 || bd.Parts[0].Stream != "a" || bd.Parts[1].Stream != "b" {
		t.Fatalf("bundle parts %+v, want a then b", bd.Parts)
	}
	// c's own seal runs on its spool's sealer: a tick passes over a
	// stream with a seal in flight, so wait for it to end (under load
	// the second tick came first 3 times in 80 runs).
	for deadline := time.Now().Add(20 * time.Second); r.ships["c"].Spool().Stats().SegmentsOut < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("stream c's own segment not sealed after 20 s")
		}
	}
	r.appendLines("a", "a", 4, 6)
	r.appendLines("c", "c", 201, 203) // a part after its own segment
	r.tick()
	r.drain()
	for name, n := range map[string]int{"a": 6, "b": 5, "c": 203} {
		got, parts := storeRecords(t, r.st, name)
		if want := batchtest.Lines(name, 1, n); !slices.Equal(got, want) {
			t.Fatalf("stream %s in the store: %d records, want %d", name, len(got), len(want))
		}
		ms := markers(t, r.st, name)
		switch name {
		case "c":
			// Its first batch was over bundle_max: alone; then a part.
			if parts != 1 || len(ms) != 1 || ms[0].FirstBundle != 2 || ms[0].FirstSeq != 201 {
				t.Fatalf("stream c: %d parts, markers %+v; want one part, marked at bundle 2 seq 201", parts, ms)
			}
		default:
			if parts == 0 || len(ms) != 1 || ms[0].FirstBundle != 1 || ms[0].FirstSeq != 1 || ms[0].Writer != r.b.Writer() {
				t.Fatalf("stream %s: %d parts, markers %+v; want one marker, bundle 1 seq 1", name, parts, ms)
			}
		}
	}
	if ms := markers(t, r.st, "idle"); len(ms) != 0 {
		t.Fatalf("idle stream got markers %v", ms)
	}
	// Every bundle is in the store and every spool saved past it: the
	// bundle files go.
	for _, sh := range r.ships {
		sh.Spool().SaveState()
	}
	r.tick()
	left, _ := os.ReadDir(filepath.Join(r.root, bundle.DirName, "sealed"))
	if len(left) != 0 {
		t.Fatalf("bundle files left after every target and spool has them: %v", left)
	}
}

func TestWriterIDKept(t *testing.T) {
	root := t.TempDir()
	r, err := openRig(t, root, t.TempDir(), nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := r.b.Writer()
	if !catalog.ValidWriter(id) {
		t.Fatalf("writer id %q", id)
	}
	r.close()
	r2, err := openRig(t, root, t.TempDir(), nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.b.Writer() != id {
		t.Fatalf("writer id changed across opens: %s, %s", id, r2.b.Writer())
	}
	if _, err := openRig(t, root, t.TempDir(), nil, 0, nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second Bundler on a locked spool: %v", err)
	}
}

func TestBundleConflictStops(t *testing.T) {
	stRoot := t.TempDir()
	r, err := openRig(t, t.TempDir(), stRoot, []string{"a"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another ship with this writer id put bundle 1 already.
	if err := r.st.Put(context.Background(), catalog.BundleKey(r.b.Writer(), 1), []byte("someone else's bundle")); err != nil {
		t.Fatal(err)
	}
	r.appendLines("a", "a", 1, 3)
	err = r.b.Tick(context.Background())
	if err == nil || !strings.Contains(err.Error(), "writer id "+r.b.Writer()) {
		t.Fatalf("Tick over another writer's bundle: %v", err)
	}
}

func TestOverlapStops(t *testing.T) {
	r, err := openRig(t, t.TempDir(), t.TempDir(), []string{"a"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another writer's segment of generation 1 at seqs 2..9.
	seg := batch.SegmentKey("a", batch.SegmentName(1, 2, 9))
	if err := r.st.Put(context.Background(), seg, []byte("x")); err != nil {
		t.Fatal(err)
	}
	r.appendLines("a", "a", 1, 3)
	err = r.b.Tick(context.Background())
	if err == nil || !strings.Contains(err.Error(), "overlaps") || !strings.Contains(err.Error(), seg) {
		t.Fatalf("Tick with an overlapping segment in the store: %v", err)
	}
	if ms := markers(t, r.st, "a"); len(ms) != 0 {
		t.Fatalf("marker written despite the overlap: %v", ms)
	}
}

// copyTree copies the regular files under src, LOCK files left out, to a
// new temp dir: what a kill -9 leaves (the page cache survives).
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if d.Name() == "LOCK" || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// restoreImage puts the image img where the crashed files were, so that
// the restart is the same spool (its writer leases name its path).
func restoreImage(t *testing.T, img, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(img, dst); err != nil {
		t.Fatal(err)
	}
}

// TestKilledAtEachStep: a kill -9 image of the spools and the store taken
// at each step of a bundle's life, restarted: every stream ends in the
// store with every record once, in one chain.
func TestKilledAtEachStep(t *testing.T) {
	for _, step := range []string{"written", "renamed", "committed", "marked", "put"} {
		t.Run(step, func(t *testing.T) {
			root, stRoot := t.TempDir(), t.TempDir()
			var imgRoot, imgSt string
			hook := func(s string) {
				if s == step && imgRoot == "" {
					imgRoot, imgSt = copyTree(t, root), copyTree(t, stRoot)
				}
			}
			r, err := openRig(t, root, stRoot, []string{"a", "b"}, 0, hook)
			if err != nil {
				t.Fatal(err)
			}
			r.appendLines("a", "a", 1, 5)
			r.appendLines("b", "b", 1, 4)
			r.tick()
			r.close()
			if imgRoot == "" {
				t.Fatalf("step %s never came", step)
			}
			restoreImage(t, imgRoot, root)
			restoreImage(t, imgSt, stRoot)
			r2, err := openRig(t, root, stRoot, []string{"a", "b"}, 0, nil)
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			r2.appendLines("a", "a", 6, 8)
			r2.appendLines("b", "b", 5, 6)
			r2.tick()
			r2.drain()
			for name, n := range map[string]int{"a": 8, "b": 6} {
				got, _ := storeRecords(t, r2.st, name)
				if want := batchtest.Lines(name, 1, n); !slices.Equal(got, want) {
					t.Fatalf("stream %s after a kill at %s: %q, want %q", name, step, got, want)
				}
			}
		})
	}
}

// TestRecoverDamagedBundles: a torn newest bundle is removed and its
// streams seal their records again; a damaged older one stops the start,
// naming it.
func TestRecoverDamagedBundles(t *testing.T) {
	for _, which := range []string{"newest", "older"} {
		t.Run(which, func(t *testing.T) {
			root, stRoot := t.TempDir(), t.TempDir()
			var img, imgSt string
			n := 0
			r, err := openRig(t, root, stRoot, []string{"a"}, 0, func(s string) {
				if s == "written" {
					n++
					if n == 2 {
						img, imgSt = copyTree(t, root), copyTree(t, stRoot)
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			r.appendLines("a", "a", 1, 3)
			r.tick()
			r.appendLines("a", "a", 4, 5)
			r.tick()
			r.close()
			restoreImage(t, img, root)
			restoreImage(t, imgSt, stRoot)
			// The second bundle's rename reached the disk, its data not
			// all (no fsync covered it): torn under its name.
			sealedDir := filepath.Join(root, bundle.DirName, "sealed")
			if err := os.Rename(filepath.Join(sealedDir, "."+batch.BundleName(2)+".tmp"), filepath.Join(sealedDir, batch.BundleName(2))); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(sealedDir, batch.BundleName(2))
			if which == "older" {
				victim = filepath.Join(sealedDir, batch.BundleName(1))
			}
			fi, err := os.Stat(victim)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(victim, fi.Size()-10); err != nil {
				t.Fatal(err)
			}
			r2, err := openRig(t, root, stRoot, []string{"a"}, 0, nil)
			if which == "older" {
				if err == nil || !strings.Contains(err.Error(), victim) {
					t.Fatalf("open with a damaged older bundle: %v; want an error naming %s", err, victim)
				}
				return
			}
			if err != nil {
				t.Fatalf("open with a torn newest bundle: %v", err)
			}
			if _, err := os.Stat(victim); !os.IsNotExist(err) {
				t.Fatalf("torn newest bundle still there: %v", err)
			}
			r2.tick()
			r2.drain()
			got, _ := storeRecords(t, r2.st, "a")
			if want := batchtest.Lines("a", 1, 5); !slices.Equal(got, want) {
				t.Fatalf("stream a: %q, want %q", got, want)
			}
		})
	}
}

// TestBundleBytesCap: parts past MaxBundleBytes go into another bundle of
// the same tick, in name order.
func TestBundleBytesCap(t *testing.T) {
	r, err := openRigCap(t, t.TempDir(), t.TempDir(), []string{"a", "b", "c"}, 0, 600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		r.appendLines(n, n+"-a-long-line-that-compresses-a-bit-less-"+n, 1, 10)
	}
	r.tick()
	if st := r.b.Stats(); st.Bundles < 2 || st.Parts != 3 {
		t.Fatalf("one tick of 3 parts under a 600-byte cap: %+v, want 3 parts in 2 or more bundles", st)
	}
	var streams []string
	for n := uint64(1); n <= r.b.Stats().Bundles; n++ {
		rc, err := r.st.Get(context.Background(), catalog.BundleKey(r.b.Writer(), n))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		bd, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range bd.Parts {
			streams = append(streams, p.Stream)
		}
	}
	if !slices.Equal(streams, []string{"a", "b", "c"}) {
		t.Fatalf("parts across bundles: %v", streams)
	}
}

// TestDrainPutsLeftovers: bundles turned off with one committed but not
// put: a Drain Bundler puts it, the spools adopt its parts, and nothing
// new goes into a bundle.
func TestDrainPutsLeftovers(t *testing.T) {
	root, stRoot := t.TempDir(), t.TempDir()
	var imgRoot, imgSt string
	r, err := openRig(t, root, stRoot, []string{"a", "b"}, 0, func(s string) {
		if s == "committed" && imgRoot == "" {
			imgRoot, imgSt = copyTree(t, root), copyTree(t, stRoot)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.appendLines("a", "a", 1, 4)
	r.appendLines("b", "b", 1, 2)
	r.tick()
	r.close()
	restoreImage(t, imgRoot, root)
	restoreImage(t, imgSt, stRoot)
	if left, err := bundle.Leftover(filepath.Join(root, bundle.DirName)); err != nil || !left {
		t.Fatalf("Leftover: %v, %v; want true", left, err)
	}
	r2, err := openRigWith(t, root, stRoot, []string{"a", "b"}, func(c *bundle.Config) { c.Drain = true })
	if err != nil {
		t.Fatal(err)
	}
	r2.appendLines("a", "a", 5, 6)
	r2.tick()
	r2.drain()
	if st := r2.b.Stats(); st.Bundles != 0 || st.Put != 1 {
		t.Fatalf("drain Bundler: %+v, want no bundle sealed and the leftover put", st)
	}
	for name, n := range map[string]int{"a": 6, "b": 2} {
		got, parts := storeRecords(t, r2.st, name)
		if want := batchtest.Lines(name, 1, n); !slices.Equal(got, want) || parts != 1 {
			t.Fatalf("stream %s: %q in %d parts, want %q, one part", name, got, parts, want)
		}
	}
}

// downStore fails every bundle put while down is set, as a target that
// is unreachable.
type downStore struct {
	store.Store
	down *atomic.Bool
}

func (d downStore) Put(ctx context.Context, key string, data []byte) error {
	if d.down.Load() && strings.HasPrefix(key, catalog.BundlesDir) {
		return errors.New("connection refused")
	}
	return d.Store.Put(ctx, key, data)
}

// TestTargetDownHoldsNothingBack: while a target refuses bundle puts, the
// ticks go on sealing, a stream ends (Unregister) at once, and the
// bundles go out once the target is back.
func TestTargetDownHoldsNothingBack(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	r, err := openRigWith(t, t.TempDir(), t.TempDir(), []string{"a", "b"}, func(c *bundle.Config) {
		c.Interval = 20 * time.Millisecond
		c.Targets[0].Store = downStore{Store: c.Targets[0].Store, down: &down}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- r.b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	r.appendLines("a", "a", 1, 3)
	r.appendLines("b", "b", 1, 3)
	waitStats(t, r.b, "a first bundle", func(s bundle.Stats) bool { return s.Bundles >= 1 })
	r.appendLines("b", "b", 4, 5)
	waitStats(t, r.b, "a second bundle while the target is down", func(s bundle.Stats) bool { return s.Bundles >= 2 })
	done := make(chan struct{})
	go func() { r.b.Unregister("a"); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Unregister waited for a target that is down")
	}
	r.b.Register("a", r.ships["a"])
	down.Store(false)
	waitStats(t, r.b, "every bundle put", func(s bundle.Stats) bool { return s.Put == s.Bundles })
}

func waitStats(t *testing.T, b *bundle.Bundler, what string, cond func(bundle.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(b.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFencedStreamLeftOut: a stream fenced by a promotion (its shipper
// halted) gets no part in the next bundle; the others go on.
func TestFencedStreamLeftOut(t *testing.T) {
	rigLeaseTTL = 300 * time.Millisecond
	defer func() { rigLeaseTTL = 0 }()
	r, err := openRig(t, t.TempDir(), t.TempDir(), []string{"a", "b"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.appendLines("a", "a", 1, 3)
	r.appendLines("b", "b", 1, 3)
	r.tick()
	rec := batch.Generation{Stream: "a", Generation: 2, Parent: 1, Time: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC),
		Site: "dr-b", Host: "dr-b-host", Reason: "promote", ForkSeq: 3}
	segs, _ := storeRecords(t, r.st, "a")
	if len(segs) != 3 {
		t.Fatalf("stream a holds %d records before the promotion", len(segs))
	}
	bd := readBundle(t, r, 1)
	i, _ := bd.Find("a")
	rec.ForkHash = bd.Parts[i].SHA256
	if err := catalog.CreateGeneration(context.Background(), r.st, rec); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.ships["a"].Halted() == nil {
		if time.Now().After(deadline) {
			t.Fatal("stream a's shipper never learned of the promotion")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.appendLines("a", "a", 4, 5)
	r.appendLines("b", "b", 4, 5)
	if err := r.b.Tick(context.Background()); err != nil {
		t.Fatalf("Tick with a fenced stream: %v", err)
	}
	bd = readBundle(t, r, 2)
	if len(bd.Parts) != 1 || bd.Parts[0].Stream != "b" {
		t.Fatalf("bundle 2 holds %+v, want only stream b", bd.Parts)
	}
}

func readBundle(t *testing.T, r *rig, n uint64) *batch.Bundle {
	t.Helper()
	rc, err := r.st.Get(context.Background(), catalog.BundleKey(r.b.Writer(), n))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, _ := io.ReadAll(rc)
	bd, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	return bd
}

// TestFullDiskSealsAlone: a bundle file that finds the disk full is not
// fatal: its parts seal alone (waiting out the disk as seals do), and the
// next tick bundles again once there is room.
func TestFullDiskSealsAlone(t *testing.T) {
	var full atomic.Bool
	full.Store(true)
	r, err := openRigWith(t, t.TempDir(), t.TempDir(), []string{"a", "b"}, func(c *bundle.Config) {
		c.WriteFile = func(f *os.File, p []byte) (int, error) {
			if full.Load() {
				return 0, syscall.ENOSPC
			}
			return f.Write(p)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.appendLines("a", "a", 1, 3)
	r.appendLines("b", "b", 1, 2)
	r.tick()
	if st := r.b.Stats(); st.Bundles != 0 {
		t.Fatalf("a bundle was sealed on a full disk: %+v", st)
	}
	full.Store(false)
	r.appendLines("a", "a", 4, 5)
	// The first tick may find a's alone seal still in flight.
	for deadline := time.Now().Add(10 * time.Second); r.b.Stats().Bundles == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("after the disk has room: %+v, want a bundle", r.b.Stats())
		}
		r.tick()
		time.Sleep(5 * time.Millisecond)
	}
	r.drain()
	for name, n := range map[string]int{"a": 5, "b": 2} {
		got, _ := storeRecords(t, r.st, name)
		if want := batchtest.Lines(name, 1, n); !slices.Equal(got, want) {
			t.Fatalf("stream %s: %q, want %q", name, got, want)
		}
	}
	for name, sh := range r.ships {
		if err := sh.Spool().Err(); err != nil {
			t.Fatalf("stream %s's spool failed: %v", name, err)
		}
	}
}

// TestFreshSpoolContinuesAfterPart: a stream whose newest segment in the
// store is a part, shipped again from a fresh spool (a new host, a lost
// spool), continues after that part: its seqs and chain, not from seq 1.
func TestFreshSpoolContinuesAfterPart(t *testing.T) {
	root, stRoot := t.TempDir(), t.TempDir()
	r, err := openRig(t, root, stRoot, []string{"a"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.appendLines("a", "a", 1, 4)
	r.tick()
	r.appendLines("a", "a", 5, 7)
	r.tick()
	r.drain()
	r.close()
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	r2, err := openRig(t, t.TempDir(), stRoot, []string{"a"}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r2.ships["a"].Spool().LastSeq(); got != 7 {
		t.Fatalf("fresh spool starts after seq %d, want 7 (the newest part's)", got)
	}
	r2.appendLines("a", "a", 8, 9)
	r2.tick()
	r2.drain()
	got, parts := storeRecords(t, r2.st, "a")
	if want := batchtest.Lines("a", 1, 9); !slices.Equal(got, want) || parts != 3 {
		t.Fatalf("stream a: %q in %d parts, want %q in 3", got, parts, want)
	}
}

// TestTargetsConfirmedApart: with one of two targets down, the other's
// senders confirm the parts it holds (and go on past them); the spool
// keeps them until both do.
func TestTargetsConfirmedApart(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	st2, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := openRigWith(t, t.TempDir(), t.TempDir(), []string{"a"}, func(c *bundle.Config) {
		c.Interval = 20 * time.Millisecond
		c.Targets = append(c.Targets, bundle.Target{Name: "t2", Store: downStore{Store: st2, down: &down}})
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- r.b.Run(ctx) }()
	defer func() {
		cancel()
		<-runErr
	}()
	r.appendLines("a", "a", 1, 3)
	sp := r.ships["a"].Spool()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("t1 confirming the part", func() bool { return sp.Confirmed("t1") == 3 })
	if got := sp.Confirmed("t2"); got != 0 {
		t.Fatalf("t2, down, confirmed through %d", got)
	}
	if n := len(sp.Unconfirmed()); n != 1 {
		t.Fatalf("%d segments wait for a target, want the part", n)
	}
	down.Store(false)
	waitFor("t2 confirming the part", func() bool { return sp.Confirmed("t2") == 3 })
}
