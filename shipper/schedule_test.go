package shipper

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

func mustCron(t *testing.T, spec string) cron.Schedule {
	t.Helper()
	s, err := cron.ParseStandard(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func at(day, hour, minute int) time.Time {
	return time.Date(2026, 3, day, hour, minute, 0, 0, time.UTC)
}

func TestWindowAt(t *testing.T) {
	sc := Schedules{Windows: []Window{{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour}}}
	for _, c := range []struct {
		now      time.Time
		open     bool
		boundary time.Time // Until when open, NextOpen when closed
	}{
		{at(10, 21, 0), false, at(10, 22, 0)},
		{at(10, 22, 0), true, at(11, 4, 0)},
		{at(11, 3, 59), true, at(11, 4, 0)}, // the window that opened the day before
		{at(11, 4, 0), false, at(11, 22, 0)},
		{at(11, 12, 0), false, at(11, 22, 0)},
	} {
		ws := sc.windowAt(c.now)
		got := ws.NextOpen
		if ws.Open {
			got = ws.Until
		}
		if ws.Open != c.open || !got.Equal(c.boundary) || !ws.Restricted {
			t.Errorf("at %s: %+v, want open=%t boundary %s", c.now.Format(time.DateTime), ws, c.open, c.boundary.Format(time.DateTime))
		}
	}
	if ws := (&Schedules{}).windowAt(at(1, 0, 0)); !ws.Open || ws.Restricted {
		t.Errorf("no windows: %+v, want always open", ws)
	}
	// Two windows: open in either, the next opening is the earliest.
	two := Schedules{Windows: []Window{
		{Start: mustCron(t, "0 1 * * *"), Duration: time.Hour},
		{Start: mustCron(t, "0 13 * * *"), Duration: time.Hour},
	}}
	if ws := two.windowAt(at(10, 13, 30)); !ws.Open || !ws.Until.Equal(at(10, 14, 0)) {
		t.Errorf("inside the second window: %+v", ws)
	}
	if ws := two.windowAt(at(10, 2, 0)); ws.Open || !ws.NextOpen.Equal(at(10, 13, 0)) {
		t.Errorf("between windows: %+v", ws)
	}
}

// windowedShipper runs a shipper whose clock starts at start, sending only
// 22:00-04:00 into a store whose Puts the test can hold.
func windowedShipper(t *testing.T, spool string, clk *ferrytest.Clock, st *gatedStore) *running {
	cfg := shipperConfig(t, Target{Name: "archive", Store: st})
	cfg.Spool.Dir = spool
	cfg.Spool.Now = clk.Now
	cfg.Spool.Policy = batch.FlushPolicy{MaxRecords: 5}
	cfg.Clock = clk
	cfg.Schedules.Windows = []Window{{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour, Spec: "0 22 * * *"}}
	return startShipper(t, cfg)
}

func appendN(t *testing.T, sh *Shipper, from, n int) {
	t.Helper()
	for i := range n {
		if _, err := sh.Append(context.Background(), batch.Record{Data: fmt.Appendf(nil, "r%d", from+i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// Outside a window records are accepted and sealed but nothing is sent;
// when the window opens the backlog drains; when it closes the segment
// being sent finishes and nothing more goes; a restart outside a window
// sends nothing either.
func TestSendingWindows(t *testing.T) {
	clk := ferrytest.NewClock(at(10, 12, 0))
	st := newGatedStore(t)
	close(st.gate)
	spool := t.TempDir()
	sh := windowedShipper(t, spool, clk, st)

	appendN(t, sh.Shipper, 0, 20) // four sealed segments
	if ws := sh.Window(); ws.Open || !ws.NextOpen.Equal(at(10, 22, 0)) {
		t.Fatalf("window state at noon: %+v", ws)
	}
	time.Sleep(100 * time.Millisecond)
	if n := st.puts.Load(); n != 0 {
		t.Fatalf("%d segments sent outside the window", n)
	}
	if got := sh.Spool().Stats().SealedPending; got != 4 {
		t.Fatalf("%d segments waiting in the spool, want 4", got)
	}

	clk.Set(at(10, 22, 0))
	waitFor(t, "backlog drained when the window opened", func() bool {
		return st.puts.Load() == 4 && sh.Spool().Stats().SealedPending == 0
	})

	// The window closes while a segment is on its way: it finishes, the
	// next one waits.
	held := gatedOn(st.Store) // the same store: a new one would lack the stream's start
	sh.stop(t)
	sh.Close()
	sh = windowedShipper(t, spool, clk, held)
	appendN(t, sh.Shipper, 20, 10) // two more segments
	waitFor(t, "two segments sealed", func() bool { return sh.Spool().Stats().SealedPending == 2 })
	time.Sleep(50 * time.Millisecond) // the sender is now blocked in the first Put
	clk.Set(at(11, 4, 0))             // the window closes
	close(held.gate)
	waitFor(t, "the segment in flight finished", func() bool { return held.puts.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := held.puts.Load(); n != 1 {
		t.Fatalf("%d segments sent after the window closed, want only the one in flight", n)
	}

	// Restart outside a window: nothing is sent until the next one.
	sh.stop(t)
	sh.Close()
	again := gatedOn(st.Store)
	close(again.gate)
	clk.Set(at(11, 9, 0))
	sh = windowedShipper(t, spool, clk, again)
	time.Sleep(100 * time.Millisecond)
	if n := again.puts.Load(); n != 0 {
		t.Fatalf("%d segments sent after a restart outside the window", n)
	}
	clk.Set(at(11, 22, 30))
	waitFor(t, "the rest sent in the next window", func() bool { return again.puts.Load() == 1 })
}

// flush_at seals the open batch on schedule even though no size, count or
// age rule would.
func TestFlushAt(t *testing.T) {
	clk := ferrytest.NewClock(at(10, 12, 10))
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "archive", Store: st})
	cfg.Spool.Now = clk.Now
	cfg.Spool.Policy = batch.FlushPolicy{MaxBytes: 1 << 30}
	cfg.Clock = clk
	cfg.Schedules.FlushAt = mustCron(t, "0 * * * *")
	sh := startShipper(t, cfg)
	appendN(t, sh.Shipper, 0, 3)
	time.Sleep(50 * time.Millisecond)
	if n := len(storeSegments(t, st, "app")); n != 0 {
		t.Fatalf("%d segments before the schedule fired", n)
	}
	clk.Set(at(10, 13, 0))
	waitFor(t, "segment sealed and sent at 13:00", func() bool { return len(storeSegments(t, st, "app")) == 1 })
	if segs := storeSegments(t, st, "app"); len(batchtest.CheckChain(t, segs, 0, batch.ZeroHash)) != 3 {
		t.Fatal("the scheduled segment does not hold the three records")
	}
}

// SetSchedules applies new windows to a running shipper: a sender waiting
// outside the old windows drains the backlog at once when a new one is
// open, and a closed window set while sending stops it before the next
// segment (the segment in flight finishes).
func TestSetSchedulesWindows(t *testing.T) {
	clk := ferrytest.NewClock(at(10, 12, 0))
	st := newGatedStore(t)
	close(st.gate)
	sh := windowedShipper(t, t.TempDir(), clk, st)
	appendN(t, sh.Shipper, 0, 20) // four sealed segments
	time.Sleep(100 * time.Millisecond)
	if n := st.puts.Load(); n != 0 {
		t.Fatalf("%d segments sent outside the window", n)
	}
	sh.SetSchedules(Schedules{Windows: []Window{{Start: mustCron(t, "0 12 * * *"), Duration: time.Hour, Spec: "0 12 * * *"}}})
	waitFor(t, "backlog drained under the new window", func() bool {
		return st.puts.Load() == 4 && sh.Spool().Stats().SealedPending == 0
	})
	if ws := sh.Window(); !ws.Open || !ws.Until.Equal(at(10, 13, 0)) {
		t.Fatalf("Window() does not report the new window: %+v", ws)
	}

	// Back to the night window: nothing more goes at noon.
	sh.SetSchedules(Schedules{Windows: []Window{{Start: mustCron(t, "0 22 * * *"), Duration: 6 * time.Hour}}})
	appendN(t, sh.Shipper, 20, 10)
	time.Sleep(150 * time.Millisecond)
	if n := st.puts.Load(); n != 4 {
		t.Fatalf("%d segments sent, want 4: the closed window set live did not stop sending", n)
	}
	sh.SetSchedules(Schedules{}) // no windows: always open
	waitFor(t, "the rest sent once the windows are gone", func() bool { return st.puts.Load() == 6 })
}

// SetSchedules sets a flush_at on a shipper started without one.
func TestSetSchedulesFlushAt(t *testing.T) {
	clk := ferrytest.NewClock(at(10, 12, 10))
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "archive", Store: st})
	cfg.Spool.Now = clk.Now
	cfg.Spool.Policy = batch.FlushPolicy{MaxBytes: 1 << 30}
	cfg.Clock = clk
	sh := startShipper(t, cfg)
	appendN(t, sh.Shipper, 0, 3)
	sh.SetSchedules(Schedules{FlushAt: mustCron(t, "0 * * * *")})
	time.Sleep(50 * time.Millisecond)
	if n := len(storeSegments(t, st, "app")); n != 0 {
		t.Fatalf("%d segments before the schedule fired", n)
	}
	clk.Set(at(10, 13, 0))
	waitFor(t, "segment sealed at 13:00 by the flush_at set live", func() bool { return len(storeSegments(t, st, "app")) == 1 })
}
