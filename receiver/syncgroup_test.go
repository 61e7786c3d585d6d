package receiver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// groupRig is a Multi of n streams fed bundles, whose SyncGroup syncs by
// syncFS.
type groupRig struct {
	tmp     string
	streams []string
	w       *bundletest.Writer
	m       *receiver.Multi
	stop    func()
}

func newGroupRig(t *testing.T, n int, log *slog.Logger, syncFS func(fs *os.File) error) *groupRig {
	raw, _ := receivertest.NewStore(t)
	g := &groupRig{tmp: t.TempDir(), w: bundletest.NewWriter(t, raw, bundleWriter)}
	for i := range n {
		g.streams = append(g.streams, fmt.Sprintf("s%02d", i))
	}
	g.w.Bundle(t, g.streams, 4)
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: g.stateDir(stream), Store: raw,
			Applier: &apply.File{Path: g.replica(stream)}, Fence: fence, RetryMin: 10 * time.Millisecond}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, log)
	}
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: raw, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Retry: 50 * time.Millisecond,
		SyncGroup: &receiver.SyncGroup{Linger: 20 * time.Millisecond, Sync: syncFS}}, log)
	if err != nil {
		t.Fatal(err)
	}
	g.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	g.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(g.stop)
	return g
}

func (g *groupRig) stateDir(s string) string { return filepath.Join(g.tmp, "state", s) }
func (g *groupRig) replica(s string) string  { return filepath.Join(g.tmp, s+".log") }

// applied waits until every stream's checkpoint is at its last seq.
func (g *groupRig) applied(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, s := range g.streams {
		for {
			if r := g.m.Receiver(s); r != nil && r.Checkpoint().LastSeq == g.w.Last(s) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: stream %s not applied through seq %d in a minute", what, s, g.w.Last(s))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// The streams of a Multi share their syncs: a bundle of 20 parts costs a
// few syncs of the file system, not 40 fsyncs; and the order a receiver
// alone keeps holds: at every sync, each stream's checkpoint (as written,
// durable or not: the kernel may write it back at any time) covers no
// more of its replica than an earlier sync found written, so a crash at
// any moment leaves a checkpoint whose data is durable. Every replica is
// exact.
func TestMultiGroupsSyncs(t *testing.T) {
	const n, bundles = 20, 5
	var mu sync.Mutex
	synced := map[string]int64{} // replica sizes an earlier sync found
	calls := 0
	var bad []string
	var g *groupRig
	check := func(*os.File) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		now := map[string]int64{}
		for _, s := range g.streams {
			fi, err := os.Stat(g.replica(s))
			if err != nil {
				continue // not opened yet
			}
			now[s] = fi.Size()
			cp, ok, err := receiver.LoadCheckpoint(g.stateDir(s))
			if err != nil || !ok {
				continue
			}
			size, _ := apply.FileSize(cp.Applier)
			if size > synced[s] {
				bad = append(bad, fmt.Sprintf("sync %d: %s's checkpoint covers %d bytes of its replica, synced so far %d", calls, s, size, synced[s]))
			}
		}
		for s, size := range now {
			synced[s] = size
		}
		return nil
	}
	g = newGroupRig(t, n, slog.New(slog.DiscardHandler), check)
	g.applied(t, "the first bundle")
	mu.Lock()
	before := calls
	mu.Unlock()
	for range bundles {
		g.w.Bundle(t, g.streams, 3)
		g.applied(t, "a new bundle")
	}
	g.stop()
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("a checkpoint ahead of the synced data:\n%s", strings.Join(bad, "\n"))
	}
	// Two syncs per bundle when all 20 streams meet in each; a loaded
	// machine may split them. Alone they fsync 2 files each: 40.
	t.Logf("%d bundles of %d parts: %d group syncs", bundles, n, calls-before)
	if got := calls - before; got == 0 || got > 10*bundles {
		t.Fatalf("%d bundles of %d parts made %d group syncs; want 2-%d (none: the streams fsync alone)", bundles, n, got, 10*bundles)
	}
	for _, s := range g.streams {
		got, err := os.ReadFile(g.replica(s))
		if err != nil {
			t.Fatal(err)
		}
		if want := bundletest.Want(s, 1, g.w.Last(s)); !bytes.Equal(got, want) {
			t.Fatalf("replica of %s: %d bytes, want %d", s, len(got), len(want))
		}
	}
}

// A failed group sync is fatal to every stream it covered, as a failed
// fsync is to one: each stops with an error naming its replica (or its
// checkpoint) and the sync's error, and is opened again (Open undoes
// what its checkpoint does not cover); once syncs succeed again every
// replica is exact, nothing repeated.
func TestMultiGroupSyncFailureStopsItsStreams(t *testing.T) {
	const n = 5
	var mu sync.Mutex
	fail := false
	var logs ferrytest.LockedBuffer
	g := newGroupRig(t, n, logs.Logger(slog.LevelInfo), func(*os.File) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			return errors.New("injected write-back error")
		}
		return nil
	})
	g.applied(t, "the first bundle")
	mu.Lock()
	fail = true
	mu.Unlock()
	g.w.Bundle(t, g.streams, 3)
	g.applied(t, "the bundle after the failed sync")
	g.w.Bundle(t, g.streams, 3)
	g.applied(t, "one more bundle")
	g.stop()
	l := logs.String()
	if !strings.Contains(l, "injected write-back error") || !strings.Contains(l, "stream stopped") {
		t.Fatalf("no stream stopped on the failed sync; logs:\n%s", l)
	}
	named := false
	for _, s := range g.streams {
		named = named || strings.Contains(l, g.replica(s)) || strings.Contains(l, filepath.Join(g.stateDir(s), "checkpoint.ferry"))
	}
	if !named {
		t.Fatalf("the failed sync's error names no replica or checkpoint; logs:\n%s", l)
	}
	for _, s := range g.streams {
		got, err := os.ReadFile(g.replica(s))
		if err != nil {
			t.Fatal(err)
		}
		if want := bundletest.Want(s, 1, g.w.Last(s)); !bytes.Equal(got, want) {
			t.Fatalf("replica of %s: %d bytes, want %d", s, len(got), len(want))
		}
	}
}
