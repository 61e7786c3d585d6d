package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch/batchtest"
)

// runCommitter runs c until the test ends.
func runCommitter(t *testing.T, c *Committer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("committer: %v", err)
		}
		c.Close()
	})
}

// TestGroupCommitOneSyncForAllSpools: the records two spools' sources
// append without waiting become durable within the Interval through one
// sync covering both spools' journals, not an fsync per spool.
func TestGroupCommitOneSyncForAllSpools(t *testing.T) {
	c := NewCommitter(50 * time.Millisecond)
	var syncs atomic.Int32
	var mu sync.Mutex
	var covered []string
	c.Sync = func(fs *os.File, files []*os.File) error {
		syncs.Add(1)
		mu.Lock()
		for _, f := range files {
			covered = append(covered, filepath.Base(filepath.Dir(f.Name())))
		}
		mu.Unlock()
		return syncFS(fs, files)
	}
	runCommitter(t, c)
	var fsyncs atomic.Int32
	var sps []*Spool
	for _, name := range []string{"a", "b"} {
		cfg := spoolConfig(t)
		cfg.Dir = filepath.Join(t.TempDir(), name)
		cfg.Committer = c
		cfg.SyncFile = func(f *os.File) error {
			if isJournalFile(filepath.Base(f.Name())) {
				fsyncs.Add(1)
			}
			return f.Sync()
		}
		sps = append(sps, openSpool(t, cfg))
	}
	var pos []uint64
	for _, sp := range sps {
		pos = append(pos, appendRecs(t, sp, batchtest.Records("x", 3), "c1"))
	}
	for i, sp := range sps {
		waitFor(t, "the journal durable without a waiter", func() bool {
			sp.mu.Lock()
			defer sp.mu.Unlock()
			return sp.synced >= pos[i]
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if n := syncs.Load(); n != 1 || !strings.Contains(strings.Join(covered, ","), "a") || !strings.Contains(strings.Join(covered, ","), "b") {
		t.Errorf("%d group syncs covering %q; want one covering both spools' journals", n, covered)
	}
	if n := fsyncs.Load(); n != 0 {
		t.Errorf("%d journal fsyncs of the spools' own; want none (the group sync covers the journals)", n)
	}
}

// TestGroupCommitSealsShareSync: seals of two spools sharing a Committer
// make their segments durable through one group sync covering both
// segment files, not an fsync of each file and of its directory.
func TestGroupCommitSealsShareSync(t *testing.T) {
	c := NewCommitter(time.Hour)
	c.SealWait = 200 * time.Millisecond // both seals wait for one sync
	var syncs atomic.Int32
	var mu sync.Mutex
	var sealed []string
	c.Sync = func(fs *os.File, files []*os.File) error {
		syncs.Add(1)
		mu.Lock()
		for _, f := range files {
			if filepath.Base(filepath.Dir(f.Name())) == "sealed" {
				sealed = append(sealed, filepath.Base(filepath.Dir(filepath.Dir(f.Name()))))
			}
		}
		mu.Unlock()
		return syncFS(fs, files)
	}
	runCommitter(t, c)
	var ownSyncs atomic.Int32
	var sps []*Spool
	for _, name := range []string{"a", "b"} {
		cfg := spoolConfig(t)
		cfg.Dir = filepath.Join(t.TempDir(), name)
		cfg.Committer = c
		cfg.Policy.MaxRecords = 3
		cfg.SyncFile = func(f *os.File) error {
			if filepath.Base(filepath.Dir(f.Name())) == "sealed" {
				ownSyncs.Add(1)
			}
			return f.Sync()
		}
		sps = append(sps, openSpool(t, cfg))
	}
	for _, sp := range sps {
		appendRecs(t, sp, batchtest.Records("x", 3), "c1") // due: seals
	}
	for _, sp := range sps {
		settle(t, sp)
		if n := len(sp.Pending(0)); n != 1 {
			t.Fatalf("%s: %d sealed segments pending, want 1", sp.cfg.Dir, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := syncs.Load(); n != 1 || len(sealed) != 2 || sealed[0] == sealed[1] {
		t.Errorf("%d group syncs covering the segments of %q; want one covering both spools' segments", n, sealed)
	}
	if n := ownSyncs.Load(); n != 0 {
		t.Errorf("%d fsyncs of sealed segments by the spools; want none", n)
	}
}

// TestGroupCommitFailureFailsEverySpool: a failed group sync (a write-back
// error syncfs reports) fails every spool it covered, and their waiters.
func TestGroupCommitFailureFailsEverySpool(t *testing.T) {
	c := NewCommitter(time.Hour)
	boom := errors.New("EIO from write-back")
	c.Sync = func(*os.File, []*os.File) error { return boom }
	runCommitter(t, c)
	var sps []*Spool
	for range 2 {
		cfg := spoolConfig(t)
		cfg.Committer = c
		sps = append(sps, openSpool(t, cfg))
	}
	posB := appendRecs(t, sps[1], batchtest.Records("b", 1), "b")
	posA := appendRecs(t, sps[0], batchtest.Records("a", 1), "a")
	if err := sps[0].WaitDurable(context.Background(), posA); !errors.Is(err, boom) || !errors.Is(err, ErrFailed) {
		t.Fatalf("WaitDurable after a failed group sync: %v; want the sync's error, failing the spool", err)
	}
	if err := sps[1].WaitDurable(context.Background(), posB); !errors.Is(err, boom) {
		t.Errorf("the other spool in the failed sync: WaitDurable %v; want the sync's error", err)
	}
	if _, err := sps[1].Append(context.Background(), batchtest.Records("c", 1), nil); err == nil {
		t.Error("append to a spool whose group sync failed: accepted")
	}
}

// TestGroupCommitCrashImages takes crash images of two spools sharing a
// Committer at every sync (the group's and each seal's) and checks each
// recovers consistently with every record its WaitDurable acknowledged:
// a spool's records are acknowledged only once the group sync covering
// them has returned.
func TestGroupCommitCrashImages(t *testing.T) {
	c := NewCommitter(time.Hour)  // only waiters commit: the images are taken while the test waits
	c.SealWait = time.Millisecond // for a seal, which the test waits for (settle)
	type side struct {
		cfg Config
		sim *crashSim
		sp  *Spool
		log *cursorLog
	}
	var sides []*side
	snapAll := func(point string) {
		for _, s := range sides {
			s.sim.take(s.cfg.Dir, point, powerLoss, resurrected, killed)
		}
	}
	c.Sync = func(fs *os.File, files []*os.File) error {
		// Time for a waiter acknowledged too early to say so.
		time.Sleep(30 * time.Millisecond)
		snapAll("before group sync")
		for _, f := range files {
			for _, s := range sides {
				// A journal, or a sealed segment waiting for the sync.
				if d := filepath.Dir(f.Name()); d == s.cfg.Dir || d == filepath.Join(s.cfg.Dir, "sealed") {
					// A file a seal retired meanwhile holds only sealed records.
					if err := s.sim.durableNow(f); err != nil && !errors.Is(err, os.ErrClosed) {
						return err
					}
				}
			}
		}
		return nil
	}
	runCommitter(t, c)
	for range 2 {
		s := &side{cfg: spoolConfig(t), sim: newCrashSim(t), log: newCursorLog()}
		s.cfg.Policy.MaxRecords = 10
		s.cfg.Committer = c
		s.cfg.SyncFile = s.sim.sync
		s.sim.snap = func(point string) { s.sim.take(s.cfg.Dir, point, powerLoss, resurrected, killed) }
		sides = append(sides, s)
	}
	for _, s := range sides {
		s.sp = openSpool(t, s.cfg)
	}
	ctx := context.Background()
	add := func(s *side, prefix string, n int, cursor string, wait bool) {
		pos := appendRecs(t, s.sp, batchtest.Records(prefix, n), cursor)
		s.log.add(prefix, n, cursor)
		settle(t, s.sp)
		if wait {
			if err := s.sp.WaitDurable(ctx, pos); err != nil {
				t.Fatal(err)
			}
			s.sim.acked.Store(uint64(len(s.log.want)))
		}
	}
	a, b := sides[0], sides[1]
	add(a, "a", 2, "a", false)
	add(b, "b", 3, "b", false)
	add(a, "c", 1, "c", true) // one sync for a's and b's journals
	b.sim.acked.Store(uint64(len(b.log.want)))
	add(b, "d", 12, "d", false) // seals 1-10 mid-entry
	add(a, "e", 4, "e", false)
	add(b, "f", 2, "f", true)
	a.sim.acked.Store(uint64(len(a.log.want)))
	add(a, "g", 9, "", false) // seals 1-10 mid-entry, no cursor
	add(b, "h", 1, "h", false)
	add(a, "i", 1, "i", true)
	b.sim.acked.Store(uint64(len(b.log.want)))
	for _, s := range sides {
		if err := s.sp.Close(); err != nil {
			t.Fatal(err)
		}
		s.sim.snap = nil
		s.sim.take(s.cfg.Dir, "after close", killed, powerLoss)
	}
	for i, s := range sides {
		t.Run([]string{"a", "b"}[i], func(t *testing.T) {
			checkImages(t, Config{Stream: s.cfg.Stream, Policy: s.cfg.Policy}, s.sim.images, s.log)
		})
	}
}

// BenchmarkGroupCommit commits 100 spools' journals, each with a fresh
// entry, per iteration: through one syncfs, or an fsync of each journal
// file in turn (the alternative issue 23 asked to measure).
func BenchmarkGroupCommit(b *testing.B) {
	for _, mode := range []struct {
		name string
		sync func(*os.File, []*os.File) error
	}{{"syncfs", syncFS}, {"fsync-each", fsyncEach}} {
		b.Run(mode.name, func(b *testing.B) {
			c := NewCommitter(time.Hour)
			c.Sync = mode.sync
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go c.Run(ctx)
			root := b.TempDir()
			var sps []*Spool
			for i := range 100 {
				sp, err := Open(Config{Dir: filepath.Join(root, fmt.Sprint(i)), Stream: "s", Fsync: FsyncBatch, Committer: c}, nil, quiet)
				if err != nil {
					b.Fatal(err)
				}
				defer sp.Close()
				sps = append(sps, sp)
			}
			recs := batchtest.Records("x", 1)
			b.ResetTimer()
			for range b.N {
				var pos uint64
				var err error
				for _, sp := range sps {
					if pos, err = sp.Append(ctx, recs, nil); err != nil {
						b.Fatal(err)
					}
				}
				if err := sps[len(sps)-1].WaitDurable(ctx, pos); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealMany seals one small segment in each of 100 spools sharing
// a Committer per iteration, all at once (as age-triggered seals of many
// streams come): each seal fsyncing its segment and sealed/ ("own"), or
// the seals sharing the group syncs ("shared"). cpu-ms/op is the process's
// CPU time (user+system) per iteration, which the wall time hides on a
// loaded machine.
func BenchmarkSealMany(b *testing.B) {
	for _, mode := range []struct {
		name   string
		shared bool
	}{{"own", false}, {"shared", true}} {
		b.Run(mode.name, func(b *testing.B) {
			c := NewCommitter(100 * time.Millisecond)
			c.SealSync = mode.shared
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go c.Run(ctx)
			root := b.TempDir()
			var sps []*Spool
			for i := range 100 {
				sp, err := Open(Config{Dir: filepath.Join(root, fmt.Sprint(i)), Stream: "s", Fsync: FsyncBatch, Committer: c,
					JournalRotate: 1 << 20}, nil, quiet)
				if err != nil {
					b.Fatal(err)
				}
				defer sp.Close()
				sps = append(sps, sp)
			}
			recs := batchtest.Records("x", 10)
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				for _, sp := range sps {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := sp.Append(ctx, recs, nil); err != nil {
							b.Error(err)
						}
						if err := sp.Seal("age"); err != nil {
							b.Error(err)
						}
						for _, seg := range sp.Pending(0) {
							sp.Confirm("", seg.LastSeq)
						}
					}()
				}
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestGroupCommitStateSharesSync: with a Committer that takes seals,
// SaveState makes state.json durable through two group syncs (its temp
// file, then the rename) instead of fsyncs of its own, and lets the
// confirmed segments it covers go only after the second: at every sync,
// what a power loss would keep of state.json is a state a sync made
// durable, and no segment past it is gone.
func TestGroupCommitStateSharesSync(t *testing.T) {
	c := NewCommitter(time.Hour)
	c.SealSync = true
	c.SealWait = time.Millisecond
	cfg := spoolConfig(t)
	cfg.Committer = c
	cfg.StateEvery = time.Nanosecond
	var ownSyncs atomic.Int32
	cfg.SyncFile = func(f *os.File) error {
		if strings.HasSuffix(f.Name(), ".state.json.tmp") {
			ownSyncs.Add(1)
		}
		return f.Sync()
	}
	readSealed := func(raw []byte) uint64 {
		var st spoolState
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Errorf("state.json: %v", err)
		}
		return st.SealedSeq
	}
	var mu sync.Mutex
	var (
		durable   = map[string]bool{} // state.json contents a sync made durable
		tmpSynced []byte              // the temp file a sync covered
		lastSeq   = map[string]uint64{}
		syncs     int
		tmpSyncs  int
		stateSeq  uint64 // sealed_seq of the state.json the last sync made durable
		stateRaw  []byte // and its content
		images    []string
		wants     []uint64 // per image: the last seq a completed Seal made durable
	)
	// image is the spool as a power loss now leaves it: state.json as the
	// last sync made it durable (the rename since may be lost), the temp
	// file gone, the files a sync covered as they are.
	image := func() {
		dir := copyDir(t, cfg.Dir)
		os.Remove(filepath.Join(dir, ".state.json.tmp"))
		if err := os.WriteFile(filepath.Join(dir, "state.json"), stateRaw, 0o644); err != nil {
			t.Error(err)
		}
		images = append(images, dir)
		var want uint64
		for _, last := range lastSeq {
			want = max(want, last)
		}
		wants = append(wants, want)
	}
	check := func(when string) {
		raw, err := os.ReadFile(filepath.Join(cfg.Dir, "state.json"))
		if err != nil {
			t.Errorf("%s: %v", when, err)
			return
		}
		if !durable[string(raw)] {
			t.Errorf("%s: state.json %s was renamed into place before a sync made its content durable", when, raw)
		}
		ents, _ := os.ReadDir(filepath.Join(cfg.Dir, "sealed"))
		have := map[string]bool{}
		for _, e := range ents {
			have[e.Name()] = true
		}
		for name, last := range lastSeq {
			if !have[name] && last > stateSeq {
				t.Errorf("%s: segment %s (through seq %d) removed, but the durable state.json covers only seq %d", when, name, last, stateSeq)
			}
		}
	}
	c.Sync = func(fs *os.File, files []*os.File) error {
		mu.Lock()
		defer mu.Unlock()
		check(fmt.Sprintf("before group sync %d", syncs+1))
		image()
		for _, f := range files {
			if strings.HasSuffix(f.Name(), ".state.json.tmp") {
				tmpSyncs++
				tmpSynced, _ = os.ReadFile(f.Name())
			}
		}
		if err := syncFS(fs, files); err != nil {
			return err
		}
		syncs++
		durable[string(tmpSynced)] = true
		if raw, err := os.ReadFile(filepath.Join(cfg.Dir, "state.json")); err == nil && durable[string(raw)] {
			stateSeq, stateRaw = readSealed(raw), raw // the rename is durable now
		}
		return nil
	}
	// Open writes the first state.json before the Committer runs.
	sp := openSpool(t, cfg, "t")
	raw, err := os.ReadFile(filepath.Join(cfg.Dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	durable[string(raw)] = true
	stateRaw = raw
	mu.Unlock()
	runCommitter(t, c)
	waitRunning(t, c)
	ownSyncs.Store(0)
	for i := range 3 {
		appendRecs(t, sp, batchtest.Records(fmt.Sprint("r", i), 2), "")
		if err := sp.Seal("test"); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		for _, seg := range sp.Pending(0) {
			lastSeq[seg.Name] = seg.LastSeq
		}
		mu.Unlock()
		sp.Confirm("t", uint64(2*(i+1))) // saves state.json in the background
		waitFor(t, "the confirmed segments gone", func() bool { return sealedCount(t, cfg.Dir) == 0 })
	}
	mu.Lock()
	check("at the end")
	if tmpSyncs < 3 || stateSeq != 6 {
		t.Errorf("%d group syncs covered state.json's temp file, the durable state.json is at seq %d; want 3 or more, and 6", tmpSyncs, stateSeq)
	}
	mu.Unlock()
	if n := ownSyncs.Load(); n != 0 {
		t.Errorf("%d fsyncs of state.json's temp file by the spool; want none (the group syncs cover it)", n)
	}
	// Each crash image recovers every sealed record, and the segments it
	// keeps continue its state.json.
	for i, dir := range images {
		rc := Config{Dir: dir, Stream: cfg.Stream, Policy: cfg.Policy}
		img, err := Open(rc, nil, quiet)
		if err != nil {
			t.Errorf("image %d: Open: %v", i+1, err)
			continue
		}
		if got := img.Stats().LastSeq; got < wants[i] {
			t.Errorf("image %d: recovered through seq %d, but seq %d was sealed", i+1, got, wants[i])
		}
		img.Close()
	}
	if len(images) < 6 {
		t.Errorf("%d crash images, want one per group sync (6 or more)", len(images))
	}
}

// TestGroupCommitStateSyncFailure: a failed group sync covering
// state.json's temp file fails the spool, naming the file, and keeps the
// confirmed segments.
func TestGroupCommitStateSyncFailure(t *testing.T) {
	c := NewCommitter(time.Hour)
	c.SealSync = true
	c.SealWait = time.Millisecond
	boom := errors.New("EIO from write-back")
	c.Sync = func(fs *os.File, files []*os.File) error {
		for _, f := range files {
			if strings.HasSuffix(f.Name(), ".state.json.tmp") {
				return boom
			}
		}
		return syncFS(fs, files)
	}
	cfg := spoolConfig(t)
	cfg.Committer = c
	cfg.StateEvery = time.Nanosecond
	sp := openSpool(t, cfg, "t")
	runCommitter(t, c)
	waitRunning(t, c)
	appendRecs(t, sp, batchtest.Records("a", 2), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Confirm("t", 2)
	waitFor(t, "the spool failed", func() bool { return sp.Err() != nil })
	err := sp.Err()
	if !errors.Is(err, boom) || !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), ".state.json.tmp") {
		t.Fatalf("spool error after a failed group sync of state.json: %v; want the sync's error naming .state.json.tmp, failing the spool", err)
	}
	if got := sealedFiles(t, cfg.Dir); len(got) != 1 {
		t.Errorf("sealed after the failed state.json sync: %v, want the confirmed segment kept", batchtest.SeqRanges(got))
	}
}

// TestStateFsyncsWithoutSharedSyncs: where the Committer does not take
// seals (syncfs without write-back errors, before Linux 5.8), SaveState
// fsyncs state.json's temp file itself.
func TestStateFsyncsWithoutSharedSyncs(t *testing.T) {
	c := NewCommitter(time.Hour)
	c.SealSync = false
	var own atomic.Int32
	cfg := spoolConfig(t)
	cfg.Committer = c
	cfg.StateEvery = time.Nanosecond
	cfg.SyncFile = func(f *os.File) error {
		if strings.HasSuffix(f.Name(), ".state.json.tmp") {
			own.Add(1)
		}
		return f.Sync()
	}
	sp := openSpool(t, cfg, "t")
	runCommitter(t, c)
	waitRunning(t, c)
	own.Store(0)
	appendRecs(t, sp, batchtest.Records("a", 2), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Confirm("t", 2)
	waitFor(t, "the confirmed segment gone", func() bool { return sealedCount(t, cfg.Dir) == 0 })
	if n := own.Load(); n != 1 {
		t.Errorf("%d fsyncs of state.json's temp file, want 1", n)
	}
}

// waitRunning waits until c's Run serves seals (and state.json writes).
func waitRunning(t *testing.T, c *Committer) {
	waitFor(t, "the committer running", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.running
	})
}

// TestGroupCommitConfirmDoesNotWaitForState: Confirm on a spool with a
// Committer saves state.json in the background, so the sender calling it
// does not wait the two group syncs; the segment goes once they are done.
func TestGroupCommitConfirmDoesNotWaitForState(t *testing.T) {
	c := NewCommitter(time.Hour)
	c.SealSync = true
	c.SealWait = 2 * time.Second // each shared sync waits this long
	cfg := spoolConfig(t)
	cfg.Committer = c
	cfg.StateEvery = time.Nanosecond
	sp := openSpool(t, cfg, "t")
	runCommitter(t, c)
	waitRunning(t, c)
	appendRecs(t, sp, batchtest.Records("a", 2), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sp.Confirm("t", 2)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Confirm took %v: it waited for the group syncs of state.json (2 x 2 s)", d)
	}
	waitFor(t, "the confirmed segment gone", func() bool { return sealedCount(t, cfg.Dir) == 0 })
	if st := readState(t, cfg.Dir); st.SealedSeq != 2 {
		t.Errorf("state.json sealed_seq %d, want 2", st.SealedSeq)
	}
}
