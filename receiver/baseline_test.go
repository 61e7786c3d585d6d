package receiver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/retention"
	"github.com/ferry-dr/ferry/store"
)

// baselineNow is the clock of the baseline tests: markers are dated back
// from it.
var baselineNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// putBaseline stores the marker of a baseline of testStream over seqs
// begin..end that ended endAge before baselineNow.
func putBaseline(t *testing.T, st store.Store, begin, end uint64, endAge time.Duration) batch.Baseline {
	t.Helper()
	b := batch.Baseline{Stream: receivertest.Stream, Generation: 1, BeginSeq: begin, EndSeq: end,
		BeginTime: baselineNow.Add(-endAge - time.Minute), EndTime: baselineNow.Add(-endAge)}
	if err := st.Put(context.Background(), batch.BaselineKey(receivertest.Stream, b), batch.MarshalBaseline(b)); err != nil {
		t.Fatal(err)
	}
	return b
}

// A restore into a new state starts at the newest baseline that ends by
// the boundary, at the stream's start when none does and it is still
// there, and refuses when neither is possible.
func TestPlanRestoreStart(t *testing.T) {
	ctx := context.Background()
	day := 24 * time.Hour
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 10, 10)...)
	putBaseline(t, st, 15, 25, 8*day)
	putBaseline(t, st, 55, 62, 4*day)
	for _, tc := range []struct {
		until     uint64
		untilTime time.Time
		want      uint64 // 0: stream start
	}{
		{0, time.Time{}, 55},
		{70, time.Time{}, 55},
		{61, time.Time{}, 15},
		{20, time.Time{}, 0},
		{0, baselineNow.Add(-5 * day), 15},
		{0, baselineNow.Add(-9 * day), 0},
	} {
		start, err := receiver.PlanRestoreStart(ctx, st, receivertest.Stream, 1, tc.until, tc.untilTime)
		var got uint64
		if start.Baseline != nil {
			got = start.Baseline.BeginSeq
		}
		if err != nil || got != tc.want {
			t.Errorf("until %d / %v: start %d (%v), want %d", tc.until, tc.untilTime, got, err, tc.want)
		}
	}
	// Pruned through seq 20: a boundary before the first baseline's end
	// cannot be restored.
	for _, name := range []string{batch.SegmentName(1, 1, 10), batch.SegmentName(1, 11, 20)} {
		if err := st.Delete(ctx, batch.SegmentKey(receivertest.Stream, name)); err != nil {
			t.Fatal(err)
		}
	}
	if start, err := receiver.PlanRestoreStart(ctx, st, receivertest.Stream, 1, 61, time.Time{}); !errors.Is(err, receiver.ErrPruned) {
		t.Fatalf("restore to seq 61 after pruning seq 1..20 (the baseline at 15 is gone): start %+v, err %v", start, err)
	} else if !strings.Contains(err.Error(), "seq 1..20 were pruned") {
		t.Fatalf("error does not say what is missing: %v", err)
	}
}

// Retention cuts in front of the newest baseline under keep_min, and a
// restore after the prune starts at that baseline.
func TestPlanRestoreStartAfterPrune(t *testing.T) {
	ctx := context.Background()
	day := 24 * time.Hour
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 10, 10)...)
	putBaseline(t, st, 15, 25, 8*day)
	putBaseline(t, st, 55, 62, 4*day)
	putBaseline(t, st, 95, 99, time.Hour)
	p, err := retention.Compute(ctx, st, receivertest.Stream, retention.Policy{KeepMin: 1}, baselineNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(ctx, st, nil); err != nil {
		t.Fatal(err)
	}
	start, err := receiver.PlanRestoreStart(ctx, st, receivertest.Stream, 1, 0, time.Time{})
	if err != nil || start.Baseline == nil || start.Baseline.BeginSeq != 95 {
		t.Fatalf("restore after the prune starts at %+v (%v), want the baseline at seq 95", start, err)
	}
}

// putBaselineOf is putBaseline for generation gen.
func putBaselineOf(t *testing.T, st store.Store, gen uint32, begin, end uint64, endAge time.Duration) {
	t.Helper()
	b := batch.Baseline{Stream: receivertest.Stream, Generation: gen, BeginSeq: begin, EndSeq: end,
		BeginTime: baselineNow.Add(-endAge - time.Minute), EndTime: baselineNow.Add(-endAge)}
	if err := st.Put(context.Background(), batch.BaselineKey(receivertest.Stream, b), batch.MarshalBaseline(b)); err != nil {
		t.Fatal(err)
	}
}

// A restore starts at a baseline the history holds whole, in whichever
// generation: not at one the old primary wrote past the fork, nor one
// that straddles it.
func TestPlanRestoreStartFollowsTheHistory(t *testing.T) {
	ctx := context.Background()
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	f.putAll(t, st)
	putBaselineOf(t, st, 1, 12, 18, 5*time.Hour)
	putBaselineOf(t, st, 1, 15, 25, 4*time.Hour) // straddles the fork
	putBaselineOf(t, st, 1, 22, 28, 3*time.Hour) // the old primary's
	putBaselineOf(t, st, 2, 22, 24, 2*time.Hour)
	for _, tc := range []struct {
		until   uint64
		begin   uint64
		segment string
	}{
		{0, 22, f.g2[0].Name},
		{30, 22, f.g2[0].Name},
		{23, 12, f.g1[1].Name},
	} {
		start, err := receiver.PlanRestoreStart(ctx, st, receivertest.Stream, 1, tc.until, time.Time{})
		if err != nil || start.Baseline == nil || start.Baseline.BeginSeq != tc.begin || start.Segment != tc.segment {
			t.Errorf("until %d: start %+v (%v), want the baseline at seq %d in %s", tc.until, start, err, tc.begin, tc.segment)
		}
	}
	// Pruned through seq 20: the first segment of the history is
	// generation 2's, and the baseline before it cannot be used.
	for _, s := range f.g1 {
		if err := st.Delete(ctx, s.Key()); err != nil {
			t.Fatal(err)
		}
	}
	if start, err := receiver.PlanRestoreStart(ctx, st, receivertest.Stream, 1, 23, time.Time{}); !errors.Is(err, receiver.ErrPruned) || !strings.Contains(err.Error(), "seq 1..20 were pruned") {
		t.Fatalf("restore to seq 23 after pruning generation 1: start %+v, err %v; want ErrPruned for seq 1..20", start, err)
	}
}
