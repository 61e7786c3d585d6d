package retention

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

// archive writes n segments of 10 records each into a dir store, the i-th
// stored (mtime) age(i) before now, and returns the store and its root.
func archive(t *testing.T, n int, now time.Time, age func(i int) time.Duration) (*dir.Store, string) {
	t.Helper()
	root := t.TempDir()
	st, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	prev := batch.ZeroHash
	for i := range n {
		b.Reset("app", 1, prev)
		for j := range 10 {
			seq := uint64(i*10 + j + 1)
			if err := b.Add(&batch.Record{Seq: seq, Time: now, Data: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
		data, m, err := b.Seal(now)
		if err != nil {
			t.Fatal(err)
		}
		prev = batch.Hash(data)
		if err := st.Put(context.Background(), batch.SegmentKey("app", m.Name()), data); err != nil {
			t.Fatal(err)
		}
		at := now.Add(-age(i))
		if err := os.Chtimes(filepath.Join(root, "app", m.Name()), at, at); err != nil {
			t.Fatal(err)
		}
	}
	return st, root
}

func register(t *testing.T, st store.Store, id string, gen uint32, applied uint64) {
	t.Helper()
	ctx := context.Background()
	if err := st.Put(ctx, "app/watermarks/"+id+".id", []byte(id)); err != nil && !errors.Is(err, store.ErrConflict) {
		t.Fatal(err)
	}
	if applied == 0 {
		return
	}
	b, _ := json.Marshal(catalog.Watermark{Format: 1, Receiver: id, Stream: "app", Generation: gen, AppliedSeq: applied,
		PublishedAt: time.Now()})
	if err := st.Put(ctx, catalog.WatermarkDir("app", id)+"0000000000000001.json", b); err != nil {
		t.Fatal(err)
	}
}

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// Segment i of 10 is (10-i) days old: 0 is the oldest.
func daysOld(i int) time.Duration { return time.Duration(10-i) * 24 * time.Hour }

func TestKeepFor(t *testing.T) {
	st, _ := archive(t, 10, now, daysOld)
	register(t, st, "dr", 1, 100) // applied everything
	p, err := Compute(context.Background(), st, "app", Policy{KeepFor: 7*24*time.Hour + time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	// Ages 10, 9, 8 days go; 7 days (+1h margin) stays.
	if p.Delete != 3 || !strings.Contains(p.Reason, "keep_for") {
		t.Fatalf("delete %d (%s), want 3 by keep_for", p.Delete, p.Reason)
	}
	n, err := p.Apply(context.Background(), st, nil)
	if err != nil || n != 3 {
		t.Fatalf("Apply: %d, %v", n, err)
	}
	again, err := Compute(context.Background(), st, "app", Policy{KeepFor: 7*24*time.Hour + time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Segments) != 7 || again.Segments[0].First != 31 || again.Delete != 0 {
		t.Fatalf("after pruning: %d segments from seq %d, delete %d", len(again.Segments), again.Segments[0].First, again.Delete)
	}
}

func TestKeepMinAndNewest(t *testing.T) {
	st, _ := archive(t, 10, now, daysOld)
	register(t, st, "dr", 1, 100)
	p, err := Compute(context.Background(), st, "app", Policy{KeepFor: time.Hour, KeepMin: 4}, now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Delete != 6 || !strings.Contains(p.Reason, "keep_min = 4") {
		t.Fatalf("delete %d (%s), want 6 by keep_min", p.Delete, p.Reason)
	}
	// With only an age rule that covers everything, the newest still stays.
	p, err = Compute(context.Background(), st, "app", Policy{KeepFor: time.Minute}, now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if p.Delete != 9 || !strings.Contains(p.Reason, "always kept") {
		t.Fatalf("delete %d (%s), want all but the newest", p.Delete, p.Reason)
	}
}

// A lagging receiver holds back everything it has not applied; a receiver
// that registered but applied nothing holds back everything.
func TestLaggingReceiver(t *testing.T) {
	st, _ := archive(t, 10, now, daysOld)
	register(t, st, "fast", 1, 100)
	register(t, st, "slow", 1, 25) // applied segments 1..2 (seq 1..20) and half of 3
	pol := Policy{KeepFor: time.Hour}
	p, err := Compute(context.Background(), st, "app", pol, now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Delete != 2 || !strings.Contains(p.Reason, "receiver slow has applied only through generation 1 seq 25") {
		t.Fatalf("delete %d (%s), want 2: the slow receiver has not applied seq 21..30", p.Delete, p.Reason)
	}
	register(t, st, "new", 0, 0)
	p, err = Compute(context.Background(), st, "app", pol, now)
	if err != nil {
		t.Fatal(err)
	}
	if p.Delete != 0 || !strings.Contains(p.Reason, "receiver new has registered but applied nothing") {
		t.Fatalf("delete %d (%s), want nothing while a registered receiver applied nothing", p.Delete, p.Reason)
	}
	if s := p.Summary(true); !strings.Contains(s, "would delete nothing") || !strings.Contains(s, "receiver new") {
		t.Fatalf("summary:\n%s", s)
	}
}

// A watermark that cannot be read stops retention: it never guesses.
func TestDamagedWatermarkStops(t *testing.T) {
	st, root := archive(t, 5, now, daysOld)
	register(t, st, "dr", 1, 30)
	os.WriteFile(filepath.Join(root, "app", "watermarks", "dr", "0000000000000002.json"), []byte("{not json"), 0o644)
	if _, err := Compute(context.Background(), st, "app", Policy{KeepFor: time.Hour}, now); err == nil ||
		!strings.Contains(err.Error(), "0000000000000002.json") {
		t.Fatalf("Compute with a damaged watermark: %v", err)
	}
}

// A failed delete stops pruning there: what remains stays contiguous.
func TestApplyStopsAtFailure(t *testing.T) {
	inner, _ := archive(t, 6, now, daysOld)
	register(t, inner, "dr", 1, 60)
	calls := 0
	st := &storetest.Faulty{Store: inner, DeleteFn: func(ctx context.Context, name string) error {
		calls++
		if calls == 3 {
			return errors.New("injected: access denied")
		}
		return inner.Delete(ctx, name)
	}}
	p, err := Compute(context.Background(), st, "app", Policy{KeepFor: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.Apply(context.Background(), st, nil)
	if err == nil || n != 2 || !strings.Contains(err.Error(), p.Segments[2].Key) {
		t.Fatalf("Apply: deleted %d, %v; want 2 and an error naming %s", n, err, p.Segments[2].Key)
	}
	left, err := Compute(context.Background(), inner, "app", Policy{KeepMin: 100}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Segments) != 4 || left.Segments[0].First != 21 {
		t.Fatalf("left %d segments from seq %d, want 4 from 21", len(left.Segments), left.Segments[0].First)
	}
}

func TestPolicyChecked(t *testing.T) {
	st, _ := archive(t, 1, now, daysOld)
	for _, pol := range []Policy{{}, {KeepFor: -time.Hour}, {KeepMin: -1}} {
		if _, err := Compute(context.Background(), st, "app", pol, now); err == nil {
			t.Errorf("policy %+v accepted", pol)
		}
	}
}
