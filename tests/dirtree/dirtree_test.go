//go:build linux

// Package dirtree_test replicates a real directory tree through the real
// pieces, in process: a source.Dir feeding a Shipper that seals into a
// directory store, and a Receiver applying the store with an apply.Dir.
// It changes the tree in the ways a mail store and its users do (renames,
// deletes, bursts of rewrites, files growing while they are read, type
// changes, symlinks pointing outside) and, after each phase, waits until a
// walk of the replica equals a walk of the source.
package dirtree_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/treetest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

const stream = "tree"

// rig is the shipper side and the receiver side of one test.
type rig struct {
	t                *testing.T
	src, replica     string
	spool, state     string
	store            store.Store
	logs             *ferrytest.LockedBuffer // the pieces' logs, printed when the test fails
	log              *slog.Logger
	sh               *shipper.Shipper
	source           *source.Dir
	stopShip         func()
	stopRecv         func()
	shipErr, recvErr chan error
}

func newRig(t *testing.T) *rig {
	base := t.TempDir()
	st, err := dir.New(filepath.Join(base, "store"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &ferrytest.LockedBuffer{}
	r := &rig{
		t: t, src: filepath.Join(base, "src"), replica: filepath.Join(base, "replica"),
		spool: filepath.Join(base, "spool"), state: filepath.Join(base, "state"),
		store: st, logs: logs, log: logs.Logger(slog.LevelInfo),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return r
}

// startShipping starts a Shipper on the spool and a source.Dir on the tree.
func (r *rig) startShipping() {
	r.t.Helper()
	cfg := shipper.Config{
		Spool: spool.Config{Dir: r.spool, Stream: stream, Fsync: spool.FsyncBatch,
			Policy: batch.FlushPolicy{MaxAge: 50 * time.Millisecond, MaxBytes: 4 << 20}},
		Targets: []shipper.Target{{Name: "store", Store: r.store}},
		Retry:   store.RetryPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	}
	ctx, cancel := context.WithCancel(context.Background())
	sh, err := shipper.New(ctx, cfg, r.log)
	if err != nil {
		r.t.Fatalf("shipper.New: %v", err)
	}
	r.sh = sh
	r.source = &source.Dir{Root: r.src, SpoolDir: r.spool, Cursor: sh.Spool().Cursor(),
		Exclude: []string{"*.lock", "scratch"}, Debounce: 50 * time.Millisecond, Log: r.log}
	runDone, srcDone := make(chan error, 1), make(chan error, 1)
	srcCtx, stopSrc := context.WithCancel(ctx)
	go func() { runDone <- sh.Run(ctx) }()
	go func() { srcDone <- r.source.Run(srcCtx, sh) }()
	r.shipErr = make(chan error, 2)
	stopped := false
	r.stopShip = func() {
		if stopped {
			return
		}
		stopped = true
		stopSrc()
		if err := <-srcDone; err != nil {
			r.t.Errorf("dir source: %v", err)
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := sh.Drain(dctx); err != nil {
			r.t.Errorf("drain: %v", err)
		}
		dcancel()
		cancel()
		if err := <-runDone; err != nil {
			r.t.Errorf("shipper: %v", err)
		}
		sh.Close()
	}
	r.t.Cleanup(r.stopShip)
	go func() {
		select {
		case err := <-srcDone:
			srcDone <- err
			if err != nil {
				r.shipErr <- fmt.Errorf("dir source: %w", err)
			}
		case <-srcCtx.Done():
		}
	}()
}

// startReceiving starts a Receiver applying the store to the replica.
func (r *rig) startReceiving() {
	r.t.Helper()
	rc, err := receiver.Open(receiver.Config{
		Stream: stream, StateDir: r.state, Store: r.store,
		Applier: &apply.Dir{Root: r.replica},
		PollMin: 10 * time.Millisecond, PollMax: 50 * time.Millisecond,
		RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	}, r.log)
	if err != nil {
		r.t.Fatalf("receiver.Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rc.Run(ctx) }()
	r.recvErr = make(chan error, 1)
	stopped := false
	r.stopRecv = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("receiver: %v", err)
		}
		rc.Close()
	}
	r.t.Cleanup(r.stopRecv)
	go func() {
		select {
		case err := <-done:
			done <- err
			if err != nil {
				r.recvErr <- err
			}
		case <-ctx.Done():
		}
	}()
}

// waitEqual waits until the replica equals the source (walk, compare) and
// returns how long it took.
func (r *rig) waitEqual(t *testing.T, what string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var diff string
	for time.Since(start) < limit {
		select {
		case err := <-r.shipErr:
			t.Fatalf("%s: %v", what, err)
		case err := <-r.recvErr:
			t.Fatalf("%s: receiver stopped: %v", what, err)
		default:
		}
		if diff = compareTrees(r.src, r.replica); diff == "" {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: replica still differs from the source after %s:\n%s", what, limit, diff)
	return 0
}

// treeOptions is what the comparison looks at: every path's type,
// content, link target, mode bits and mtime to the second, leaving out the
// excluded paths.
var treeOptions = treetest.Options{
	Mode:  0o7777,
	Mtime: time.Second,
	Skip: func(rel string, _ fs.DirEntry) bool {
		return strings.HasSuffix(rel, ".lock") || rel == "scratch"
	},
}

// compareTrees returns "" when both trees hold the same paths with the
// same types, content, modes, link targets and mtimes (to the second), and
// otherwise the first differences.
func compareTrees(src, replica string) string {
	a, err := treetest.Walk(src, treeOptions)
	if err != nil {
		return "walk source: " + err.Error()
	}
	b, err := treetest.Walk(replica, treeOptions)
	if err != nil {
		return "walk replica: " + err.Error()
	}
	return treetest.Diff("source", a, "replica", b)
}

func writeFile(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // beyond the umask
		t.Fatal(err)
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// buildTree makes 2000 small binary files in 20x5 nested directories, plus
// a large file, symlinks (one pointing outside the tree, one dangling),
// odd names, an empty directory and excluded files.
func buildTree(t *testing.T, root string, rng *rand.Rand) {
	t.Helper()
	old := time.Now().Add(-48 * time.Hour)
	for d := range 20 {
		for s := range 5 {
			for f := range 20 {
				p := filepath.Join(root, fmt.Sprintf("d%02d/s%d/f%03d.bin", d, s, f))
				mode := os.FileMode(0o644)
				switch {
				case f%7 == 0:
					mode = 0o600
				case f%11 == 0:
					mode = 0o755
				}
				writeFile(t, p, randBytes(rng, rng.IntN(4096)), mode)
				mt := old.Add(time.Duration(rng.IntN(86400)) * time.Second)
				if err := os.Chtimes(p, mt, mt); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	writeFile(t, filepath.Join(root, "big/large.bin"), randBytes(rng, 3<<20+12345), 0o644)
	writeFile(t, filepath.Join(root, "names/with space.txt"), []byte("space\n"), 0o644)
	writeFile(t, filepath.Join(root, "names/ünïcödé.txt"), []byte("unicode\n"), 0o644)
	writeFile(t, filepath.Join(root, "names/new\nline"), []byte("newline in the name\n"), 0o644)
	writeFile(t, filepath.Join(root, "names/empty"), nil, 0o644)
	writeFile(t, filepath.Join(root, "d00/mailbox.lock"), []byte("locked\n"), 0o644)
	writeFile(t, filepath.Join(root, "scratch/tmp.bin"), []byte("excluded dir\n"), 0o644)
	if err := os.MkdirAll(filepath.Join(root, "links"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"outside":  "/etc/hostname", // outside the tree: must stay a link
		"relative": "../d00/s0/f000.bin",
		"dangling": "nowhere/at/all",
		"dir-up":   "../../..",
	} {
		if err := os.Symlink(target, filepath.Join(root, "links", name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "empty"), 0o750); err != nil {
		t.Fatal(err)
	}
}

func TestReplicateTree(t *testing.T) {
	r := newRig(t)
	rng := rand.New(rand.NewPCG(1, 2))
	buildTree(t, r.src, rng)

	r.startReceiving()
	start := time.Now()
	r.startShipping()
	for !r.source.Status().Baseline && time.Since(start) < time.Minute {
		time.Sleep(5 * time.Millisecond)
	}
	shipped := time.Since(start)
	took := shipped + r.waitEqual(t, "baseline", 60*time.Second)
	st := r.source.Status()
	t.Logf("baseline: %d records (%.1f MiB framed, %d directories watched) shipped into the spool in %s, replica equal after %s",
		st.Records, float64(st.Bytes)/(1<<20), st.Watched, shipped.Round(time.Millisecond), took.Round(time.Millisecond))
	if _, err := os.Lstat(filepath.Join(r.replica, "d00/mailbox.lock")); !os.IsNotExist(err) {
		t.Fatalf("excluded file was replicated (lstat: %v)", err)
	}
	if target, err := os.Readlink(filepath.Join(r.replica, "links/outside")); err != nil || target != "/etc/hostname" {
		t.Fatalf("links/outside in the replica: target %q, %v; want a symlink to /etc/hostname", target, err)
	}

	t.Run("changes", func(t *testing.T) { changeTree(t, r, rng) })
	if t.Failed() {
		return
	}
	t.Run("restart", func(t *testing.T) { restart(t, r) })
}

// changeTree makes every kind of change while the source runs.
func changeTree(t *testing.T, r *rig, rng *rand.Rand) {
	src := r.src
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	// A file growing while it is read: 4 KiB appends for ~600ms, past the
	// chunk size, so it is read both whole and in chunks while it grows.
	wg.Go(func() {
		f, err := os.OpenFile(filepath.Join(src, "grow.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		buf := bytes.Repeat([]byte("0123456789abcdef"), 256)
		for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end); {
			if _, err := f.Write(buf); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	// Rapid rewrites of one file: only the last state must arrive.
	wg.Go(func() {
		for i := range 300 {
			if err := os.WriteFile(filepath.Join(src, "d09/s0/counter.txt"), fmt.Appendf(nil, "n=%d\n", i), 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	})
	must(os.Rename(filepath.Join(src, "d00/s0/f001.bin"), filepath.Join(src, "d00/s1/renamed.bin")))
	must(os.Rename(filepath.Join(src, "d01"), filepath.Join(src, "d01-renamed")))
	must(os.Rename(filepath.Join(src, "d10/s0"), filepath.Join(src, "d11/moved-s0")))
	must(os.Remove(filepath.Join(src, "d02/s0/f000.bin")))
	must(os.RemoveAll(filepath.Join(src, "d03")))
	// A new nested directory filled at once, before any watch on it can exist.
	for i := range 50 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("new/a/b/c/m%02d", i)), randBytes(rng, 100+i), 0o644)
	}
	must(os.Chmod(filepath.Join(src, "d04/s0/f000.bin"), 0o640))
	mt := time.Now().Add(-time.Hour)
	must(os.Chtimes(filepath.Join(src, "d04/s0/f002.bin"), mt, mt))
	// Type changes: a file becomes a directory, a directory a symlink
	// pointing outside the tree, a symlink a file.
	must(os.Remove(filepath.Join(src, "d05/s0/f000.bin")))
	writeFile(t, filepath.Join(src, "d05/s0/f000.bin/inside"), []byte("was a file\n"), 0o644)
	must(os.RemoveAll(filepath.Join(src, "d06/s0")))
	must(os.Symlink("/usr", filepath.Join(src, "d06/s0")))
	must(os.Remove(filepath.Join(src, "links/dangling")))
	writeFile(t, filepath.Join(src, "links/dangling"), []byte("now a file\n"), 0o644)
	must(os.Remove(filepath.Join(src, "links/relative")))
	must(os.Symlink("../d00/s1/renamed.bin", filepath.Join(src, "links/relative")))
	// The large file rewritten in place with other content and size.
	writeFile(t, filepath.Join(src, "big/large.bin"), randBytes(rng, 5<<20+7), 0o644)
	// Lock files and the excluded directory change too; nothing must arrive.
	writeFile(t, filepath.Join(src, "d05/new.lock"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(src, "scratch/more.bin"), []byte("x"), 0o644)
	wg.Wait()
	took := r.waitEqual(t, "after changes", 60*time.Second)
	t.Logf("changes replicated %s after the last one", took.Round(time.Millisecond))
	if got, _ := os.ReadFile(filepath.Join(r.replica, "d09/s0/counter.txt")); string(got) != "n=299\n" {
		t.Fatalf("counter.txt in the replica holds %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(r.replica, "d06/s0")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("d06/s0 in the replica should be a symlink: %v", err)
	}
}

// restart stops both sides, changes the tree while they are down, and
// starts them again: the source must ship only the differences.
func restart(t *testing.T, r *rig) {
	r.stopShip()
	r.stopRecv()
	if err := os.RemoveAll(filepath.Join(r.src, "d07")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(r.src, "d08/s0/f000.bin"), []byte("changed while stopped\n"), 0o644)
	writeFile(t, filepath.Join(r.src, "d08/added.bin"), []byte("added while stopped\n"), 0o644)
	if err := os.Chmod(filepath.Join(r.src, "d08/s1/f001.bin"), 0o444); err != nil {
		t.Fatal(err)
	}

	r.startReceiving()
	r.startShipping()
	r.waitEqual(t, "after restart", 60*time.Second)
	st := r.source.Status()
	// d07 (one rmdir), two files, one attr and the directories whose time
	// changed: a handful of records, not the tree.
	if st.Records == 0 || st.Records > 10 {
		t.Fatalf("after the restart the source shipped %d records; want only the differences (about 6)", st.Records)
	}
	t.Logf("after restart: %d records shipped", st.Records)
}

// The replica is refused when it already holds files and the receiver
// state is new: it is not ferry's to overwrite.
func TestRefusesNonEmptyReplica(t *testing.T) {
	r := newRig(t)
	writeFile(t, filepath.Join(r.replica, "foreign"), []byte("x"), 0o644)
	_, err := receiver.Open(receiver.Config{Stream: stream, StateDir: r.state, Store: r.store,
		Applier: &apply.Dir{Root: r.replica}}, r.log)
	if err == nil || !strings.Contains(err.Error(), "already holds files") {
		t.Fatalf("Open over a non-empty replica: %v", err)
	}
}
