package receiver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/storetest"
)

// watermarkObjects lists the objects in a receiver's watermark dir.
func watermarkObjects(t *testing.T, st store.Store, id string) []string {
	t.Helper()
	var out []string
	err := st.List(context.Background(), catalog.WatermarkDir(receivertest.Stream, id), "", func(o store.Object) error {
		out = append(out, o.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWatermarkPublished(t *testing.T) {
	segs := receivertest.Chain(t, 4, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[:2]...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
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

	check := func(s receivertest.Seg, when string) {
		t.Helper()
		ws, err := catalog.ReadWatermarks(t.Context(), st, receivertest.Stream)
		if err != nil {
			t.Fatalf("%s: ReadWatermarks: %v", when, err)
		}
		if len(ws) != 1 || ws[0].Receiver != "dr-1" || ws[0].AppliedSeq != s.Meta.LastSeq || ws[0].AppliedHash != s.Hash || ws[0].Segment != s.Name {
			t.Fatalf("%s: watermarks %+v, want one for dr-1 at %s", when, ws, s.Name)
		}
		if objs := watermarkObjects(t, st, "dr-1"); len(objs) != 1 {
			t.Fatalf("%s: watermark objects %v, want only the newest", when, objs)
		}
		if l := logs.String(); strings.Contains(l, "level=WARN") {
			t.Fatalf("%s: warnings logged:\n%s", when, l)
		}
	}

	r := openLogged()
	if err := receivertest.Run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check(segs[1], "after the first run")

	receivertest.Put(t, st, segs[2:]...)
	cfg.Applier = newRecorder(replica)
	r = openLogged()
	if err := receivertest.Run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check(segs[3], "after the second run")

	// A restart with nothing new publishes the same seq again: that is no
	// conflict, and nothing to warn about.
	cfg.Applier = newRecorder(replica)
	r = openLogged()
	if err := receivertest.Run(t, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check(segs[3], "after a run with nothing new")

	// The segments themselves are untouched by the watermark objects.
	receivertest.WantFile(t, replica, receivertest.Want(1, 40), "after three runs")
}

func TestWatermarkFailureDoesNotStopApplying(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	faulty := &storetest.Faulty{
		Store: st,
		PutFn: func(ctx context.Context, name string, data []byte) error {
			return errors.New("store is read-only today")
		},
	}
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, faulty, newRecorder(replica))
	cfg.ReceiverID = "dr-1"
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[1], "after Run")
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after Run")
}

func TestWatermarksOfSeveralReceivers(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0])
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "a")))
	cfg.ReceiverID = "a"
	receivertest.RunOnce(t, cfg)
	receivertest.Put(t, st, segs[1])
	cfg = receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "b")))
	cfg.ReceiverID = "b"
	receivertest.RunOnce(t, cfg)

	ws, err := catalog.ReadWatermarks(t.Context(), st, receivertest.Stream)
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
	st, _ := receivertest.NewStore(t)
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	cfg.ReceiverID = "../x"
	if r, err := receiver.Open(cfg, receivertest.Quiet); err == nil {
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
	segs := receivertest.Chain(t, 4, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "old")))
	cfg.ReceiverID = "dr-1"
	receivertest.RunOnce(t, cfg)

	// The rebuilt receiver has applied only 1..10 so far.
	cfg = receivertest.Config(t, &storetest.Faulty{Store: st, ListFn: listUpTo(st, segs[0].Name)}, newRecorder(filepath.Join(t.TempDir(), "new")))
	cfg.ReceiverID = "dr-1"
	receivertest.RunOnce(t, cfg)

	ws, err := catalog.ReadWatermarks(t.Context(), st, receivertest.Stream)
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
			if dir == receivertest.Stream+"/" && o.Name > receivertest.Stream+"/"+last {
				return nil
			}
			return fn(o)
		})
	}
}

// A damaged watermark is an error naming it, never skipped: retention
// decides by these, and a silently missing receiver would look absent.
func TestReadWatermarksReportsDamage(t *testing.T) {
	segs := receivertest.Chain(t, 1, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0])
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "a")))
	cfg.ReceiverID = "a"
	receivertest.RunOnce(t, cfg)
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
	_, err := catalog.ReadWatermarks(ctx, st, receivertest.Stream)
	if err == nil || !strings.Contains(err.Error(), objs[0]) {
		t.Fatalf("ReadWatermarks over a damaged watermark: %v; want an error naming %s", err, objs[0])
	}
	failing := &storetest.Faulty{Store: st, GetFn: func(context.Context, string) (io.ReadCloser, error) {
		return nil, errors.New("connection reset")
	}}
	if _, err := catalog.ReadWatermarks(ctx, failing, receivertest.Stream); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("ReadWatermarks with a failing Get: %v; want the error", err)
	}
}

// wmCounting counts the requests made of a receiver's watermark dir.
type wmCounting struct {
	store.Store
	dir             string
	lists, deletes  int
	deleteFailsOnce bool
}

func (c *wmCounting) List(ctx context.Context, d, after string, fn func(store.Object) error) error {
	if d == c.dir {
		c.lists++
	}
	return c.Store.List(ctx, d, after, fn)
}

func (c *wmCounting) Delete(ctx context.Context, name string) error {
	if strings.HasPrefix(name, c.dir) {
		c.deletes++
		if c.deleteFailsOnce {
			c.deleteFailsOnce = false
			return errors.New("injected delete failure")
		}
	}
	return c.Store.Delete(ctx, name)
}

// A receiver lists its watermark dir once, at its first publish (to
// delete what an earlier receiver under its id left); after that each
// publish deletes the watermark it put last by name: a PUT and a DELETE,
// not a PUT, a LIST and a DELETE. A delete that fails makes the next
// publish list again, so no watermark is left behind.
func TestWatermarkPublishListsOnce(t *testing.T) {
	segs := receivertest.Chain(t, 6, 10)
	raw, _ := receivertest.NewStore(t)
	// An earlier receiver's watermark under the same id, above what is
	// applied: the first publish must delete it.
	if _, err := catalog.PutWatermark(t.Context(), raw, catalog.Watermark{Format: 1, Receiver: "dr-1", Stream: receivertest.Stream, AppliedSeq: 1000}); err != nil {
		t.Fatal(err)
	}
	st := &wmCounting{Store: raw, dir: catalog.WatermarkDir(receivertest.Stream, "dr-1")}
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	cfg.ReceiverID = "dr-1"
	r := receivertest.Open(t, cfg)
	for i, s := range segs {
		if i == 3 {
			st.deleteFailsOnce = true
		}
		receivertest.Put(t, raw, s)
		if err := receivertest.Run(t, r); err != nil {
			t.Fatal(err)
		}
		objs := watermarkObjects(t, raw, "dr-1")
		if want := catalog.WatermarkKey(receivertest.Stream, "dr-1", s.Meta.LastSeq); i != 3 && (len(objs) != 1 || objs[0] != want) {
			t.Fatalf("after publish %d: watermark objects %v; want only %s", i+1, objs, want)
		}
	}
	// Publish 1 lists (and deletes the stale one); 2-6 delete by name;
	// the failed delete of publish 4 makes publish 5 list again.
	if st.lists != 2 || st.deletes != 7 {
		t.Fatalf("6 publishes made %d LISTs and %d DELETEs of the watermark dir; want 2 and 7", st.lists, st.deletes)
	}
}

// The last segment of a burst, applied within PublishEvery of the
// previous publish, is published at the end of that period even though
// nothing more comes: a shipper waiting for ack "applied" through the
// store reads it there. (Published only after the next apply, it waited
// for a segment that might never come.)
func TestWatermarkOfABurstsLastSegmentPublished(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	cfg.ReceiverID = "dr-1"
	cfg.Once = false
	cfg.PublishEvery = time.Second
	// The receiver's clock moves only when the test moves it: whatever
	// the machine's load, the second segment is applied "within
	// PublishEvery" of the first publish, and the period ends with
	// nothing applied after it.
	base := time.Now()
	var ahead atomic.Int64
	cfg.Now = func() time.Time { return base.Add(time.Duration(ahead.Load())) }
	r := receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	applied := func(seq uint64) func() (bool, string) {
		return func() (bool, string) {
			ws, err := catalog.ReadWatermarks(t.Context(), st, receivertest.Stream)
			if err != nil {
				return false, err.Error()
			}
			if len(ws) != 1 || ws[0].AppliedSeq != seq {
				return false, fmt.Sprintf("watermarks %+v, want dr-1 at seq %d", ws, seq)
			}
			return true, ""
		}
	}
	receivertest.Put(t, st, segs[0])
	ferrytest.Eventually(t, 10*time.Second, "the first segment's watermark", applied(segs[0].Meta.LastSeq))
	receivertest.Put(t, st, segs[1])
	ferrytest.Eventually(t, 10*time.Second, "the second segment applied", func() (bool, string) {
		return r.Checkpoint().LastSeq == segs[1].Meta.LastSeq, fmt.Sprint(r.Checkpoint())
	})
	if ok, why := applied(segs[0].Meta.LastSeq)(); !ok {
		t.Fatalf("published before PublishEvery passed: %s", why)
	}
	ahead.Store(int64(cfg.PublishEvery))
	ferrytest.Eventually(t, 5*cfg.PublishEvery, "the second segment's watermark, with nothing applied after it", applied(segs[1].Meta.LastSeq))
}
