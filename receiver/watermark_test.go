package receiver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/storetest"
)

// watermarkObjects lists the objects in a receiver's watermark dir.
func watermarkObjects(t *testing.T, st store.Store, id string) []string {
	t.Helper()
	var out []string
	err := st.List(context.Background(), catalog.WatermarkDir(testStream, id), "", func(o store.Object) error {
		out = append(out, o.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWatermarkPublished(t *testing.T) {
	segs := chain(t, 4, 10)
	st, _ := newStore(t)
	put(t, st, segs[:2]...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := testConfig(t, st, newRecorder(replica))
	cfg.ReceiverID = "dr-1"
	var logs ferrytest.LockedBuffer
	openLogged := func() *receiver.Receiver {
		r, err := receiver.Open(cfg, logs.Logger(slog.LevelInfo))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}

	check := func(s seg, when string) {
		t.Helper()
		ws, err := catalog.ReadWatermarks(t.Context(), st, testStream)
		if err != nil {
			t.Fatalf("%s: ReadWatermarks: %v", when, err)
		}
		if len(ws) != 1 || ws[0].Receiver != "dr-1" || ws[0].AppliedSeq != s.meta.LastSeq || ws[0].AppliedHash != s.hash || ws[0].Segment != s.name {
			t.Fatalf("%s: watermarks %+v, want one for dr-1 at %s", when, ws, s.name)
		}
		if objs := watermarkObjects(t, st, "dr-1"); len(objs) != 1 {
			t.Fatalf("%s: watermark objects %v, want only the newest", when, objs)
		}
		if l := logs.String(); strings.Contains(l, "level=WARN") {
			t.Fatalf("%s: warnings logged:\n%s", when, l)
		}
	}

	r := openLogged()
	if err := run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check(segs[1], "after the first run")

	put(t, st, segs[2:]...)
	cfg.Applier = newRecorder(replica)
	r = openLogged()
	if err := run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check(segs[3], "after the second run")

	// A restart with nothing new publishes the same seq again: that is no
	// conflict, and nothing to warn about.
	cfg.Applier = newRecorder(replica)
	r = openLogged()
	if err := run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check(segs[3], "after a run with nothing new")

	// The segments themselves are untouched by the watermark objects.
	wantFile(t, replica, want(1, 40), "after three runs")
}

func TestWatermarkFailureDoesNotStopApplying(t *testing.T) {
	segs := chain(t, 2, 10)
	st, _ := newStore(t)
	put(t, st, segs...)
	faulty := &storetest.Faulty{
		Store: st,
		PutFn: func(ctx context.Context, name string, data []byte) error {
			return errors.New("store is read-only today")
		},
	}
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := testConfig(t, faulty, newRecorder(replica))
	cfg.ReceiverID = "dr-1"
	cp := runOnce(t, cfg)
	wantCheckpoint(t, cp, segs[1], "after Run")
	wantFile(t, replica, want(1, 20), "after Run")
}

func TestWatermarksOfSeveralReceivers(t *testing.T) {
	segs := chain(t, 2, 10)
	st, _ := newStore(t)
	put(t, st, segs[0])
	cfg := testConfig(t, st, newRecorder(filepath.Join(t.TempDir(), "a")))
	cfg.ReceiverID = "a"
	runOnce(t, cfg)
	put(t, st, segs[1])
	cfg = testConfig(t, st, newRecorder(filepath.Join(t.TempDir(), "b")))
	cfg.ReceiverID = "b"
	runOnce(t, cfg)

	ws, err := catalog.ReadWatermarks(t.Context(), st, testStream)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, w := range ws {
		got[w.Receiver] = w.AppliedSeq
	}
	if len(ws) != 2 || got["a"] != 10 || got["b"] != 20 {
		t.Fatalf("watermarks %+v, want a at 10 and b at 20", ws)
	}
}

func TestOpenRefusesBadReceiverID(t *testing.T) {
	st, _ := newStore(t)
	cfg := testConfig(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	cfg.ReceiverID = "../x"
	if r, err := receiver.Open(cfg, quiet); err == nil {
		r.Close()
		t.Fatal("Open with receiver id ../x succeeded")
	} else if !strings.Contains(err.Error(), "receiver id") {
		t.Fatalf("Open: %q, want it to name the receiver id", err)
	}
}

// A receiver rebuilt from scratch under the same id (new state dir, same
// host name) publishes a lower seq than its predecessor left behind. The
// store must then say where it really is: retention trusting the old,
// higher watermark would delete segments it still needs.
func TestWatermarkOfRebuiltReceiver(t *testing.T) {
	segs := chain(t, 4, 10)
	st, _ := newStore(t)
	put(t, st, segs...)
	cfg := testConfig(t, st, newRecorder(filepath.Join(t.TempDir(), "old")))
	cfg.ReceiverID = "dr-1"
	runOnce(t, cfg)

	// The rebuilt receiver has applied only 1..10 so far.
	cfg = testConfig(t, &storetest.Faulty{Store: st, ListFn: listUpTo(st, segs[0].name)}, newRecorder(filepath.Join(t.TempDir(), "new")))
	cfg.ReceiverID = "dr-1"
	runOnce(t, cfg)

	ws, err := catalog.ReadWatermarks(t.Context(), st, testStream)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].AppliedSeq != 10 {
		t.Fatalf("watermarks %+v, want dr-1 at seq 10", ws)
	}
}

// listUpTo lists st's segments only up to and including the one named last
// (other objects are listed as they are).
func listUpTo(st store.Store, last string) func(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	return func(ctx context.Context, dir, after string, fn func(store.Object) error) error {
		return st.List(ctx, dir, after, func(o store.Object) error {
			if dir == testStream+"/" && o.Name > testStream+"/"+last {
				return nil
			}
			return fn(o)
		})
	}
}

// A damaged watermark is an error naming it, never skipped: retention
// decides by these, and a silently missing receiver would look absent.
func TestReadWatermarksReportsDamage(t *testing.T) {
	segs := chain(t, 1, 10)
	st, _ := newStore(t)
	put(t, st, segs[0])
	cfg := testConfig(t, st, newRecorder(filepath.Join(t.TempDir(), "a")))
	cfg.ReceiverID = "a"
	runOnce(t, cfg)
	objs := watermarkObjects(t, st, "a")
	if len(objs) != 1 {
		t.Fatalf("watermarks %v", objs)
	}
	ctx := context.Background()
	if err := st.Delete(ctx, objs[0]); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, objs[0], []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	_, err := catalog.ReadWatermarks(ctx, st, testStream)
	if err == nil || !strings.Contains(err.Error(), objs[0]) {
		t.Fatalf("ReadWatermarks over a damaged watermark: %v; want an error naming %s", err, objs[0])
	}
	failing := &storetest.Faulty{Store: st, GetFn: func(context.Context, string) (io.ReadCloser, error) {
		return nil, errors.New("connection reset")
	}}
	if _, err := catalog.ReadWatermarks(ctx, failing, testStream); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("ReadWatermarks with a failing Get: %v; want the error", err)
	}
}
