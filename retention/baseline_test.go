package retention

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

func putBaseline(t *testing.T, st store.Store, begin, end uint64, endAge time.Duration) batch.Baseline {
	t.Helper()
	b := batch.Baseline{Stream: "app", Generation: 1, BeginSeq: begin, EndSeq: end, BeginTime: now.Add(-endAge - time.Minute), EndTime: now.Add(-endAge)}
	if err := st.Put(context.Background(), batch.BaselineKey("app", b), batch.MarshalBaseline(b)); err != nil {
		t.Fatal(err)
	}
	return b
}

func markerNames(t *testing.T, st store.Store) []string {
	t.Helper()
	ms, err := catalog.ListBaselines(context.Background(), st, "app")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// With baselines, the cut is in front of the newest baseline that ended
// before now-keep_for (so a restore to any time in keep_for has one), never
// further than the other rules allow, and markers of baselines whose begin
// goes are deleted with the segments.
func TestBaselineCut(t *testing.T) {
	day := 24 * time.Hour
	ctx := context.Background()

	t.Run("keep_for keeps the baseline that serves its oldest time", func(t *testing.T) {
		st, _ := archive(t, 10, now, daysOld)
		putBaseline(t, st, 15, 25, 8*day+12*time.Hour)
		putBaseline(t, st, 55, 62, 4*day+12*time.Hour)
		p, err := Compute(ctx, st, "app", Policy{KeepFor: 6 * day}, now)
		if err != nil {
			t.Fatal(err)
		}
		// keep_for alone would delete 5 segments (6 days old and older).
		if p.Delete != 1 || p.Anchor == nil || p.Anchor.BeginSeq != 15 || len(p.DeleteBaselines) != 0 {
			t.Fatalf("plan: delete %d, anchor %+v, markers %v; want 1 segment deleted, anchor at seq 15", p.Delete, p.Anchor, p.DeleteBaselines)
		}
		sum := p.Summary(true)
		if !strings.Contains(sum, "begin (seq 15) of baseline 00000001-000000000000000f-0000000000000019.json") ||
			!strings.Contains(sum, "the oldest point a fresh restore can start from") {
			t.Fatalf("summary does not say why:\n%s", sum)
		}
	})

	t.Run("keep_min only: newest baseline, older markers go", func(t *testing.T) {
		st, _ := archive(t, 10, now, daysOld)
		putBaseline(t, st, 15, 25, 8*day)
		putBaseline(t, st, 55, 62, 4*day)
		newest := putBaseline(t, st, 95, 99, time.Hour)
		p, err := Compute(ctx, st, "app", Policy{KeepMin: 1}, now)
		if err != nil {
			t.Fatal(err)
		}
		if p.Delete != 9 || p.Anchor == nil || p.Anchor.BeginSeq != 95 || len(p.DeleteBaselines) != 2 {
			t.Fatalf("plan: delete %d, anchor %+v, markers %v; want 9 segments and 2 markers deleted", p.Delete, p.Anchor, p.DeleteBaselines)
		}
		if _, err := p.Apply(ctx, st, nil); err != nil {
			t.Fatal(err)
		}
		if got := markerNames(t, st); len(got) != 1 || got[0] != batch.BaselineName(1, newest.BeginSeq, newest.EndSeq) {
			t.Fatalf("markers left: %v", got)
		}
		// A restore from here starts at the newest baseline
		// (receiver's TestPlanRestoreStartAfterPrune).
	})

	t.Run("no baseline old enough: nothing goes", func(t *testing.T) {
		st, _ := archive(t, 10, now, daysOld)
		putBaseline(t, st, 95, 99, 12*time.Hour)
		putBaseline(t, st, 200, 210, 9*day) // its begin is not in the store
		p, err := Compute(ctx, st, "app", Policy{KeepFor: 6 * day}, now)
		if err != nil {
			t.Fatal(err)
		}
		if p.Delete != 0 || p.Anchor != nil || !strings.Contains(p.Reason, "no complete baseline ended more than keep_for") {
			t.Fatalf("plan: delete %d, anchor %+v, reason %q", p.Delete, p.Anchor, p.Reason)
		}
	})

	t.Run("receivers still hold the cut back", func(t *testing.T) {
		st, _ := archive(t, 10, now, daysOld)
		putBaseline(t, st, 95, 99, time.Hour)
		register(t, st, "dr", 1, 30)
		p, err := Compute(ctx, st, "app", Policy{KeepMin: 1}, now)
		if err != nil {
			t.Fatal(err)
		}
		if p.Delete != 3 || len(p.DeleteBaselines) != 0 {
			t.Fatalf("plan: delete %d, markers %v; want 3 segments (the receiver applied through 30)", p.Delete, p.DeleteBaselines)
		}
	})
}
