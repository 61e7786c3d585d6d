package shipper

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store/dir"
)

// TestSealDeadlineTick: with Config.SealTick (a Bundler's next tick),
// SealDeadline is the earlier of the open segment's age seal and the
// tick; with nothing open it is the tick only when no age seal starts
// with the next record (max_age 0: the tick seals it), so a tail reads a
// first line at once when max_age would start counting on it.
func TestSealDeadlineTick(t *testing.T) {
	ctx := context.Background()
	var tick time.Time
	open := func(maxAge time.Duration) *Shipper {
		root := t.TempDir()
		st, err := dir.New(filepath.Join(root, "store"))
		if err != nil {
			t.Fatal(err)
		}
		sh, err := New(ctx, Config{
			Spool:    spool.Config{Dir: filepath.Join(root, "spool"), Stream: "s", Fsync: spool.FsyncOff, Policy: batch.FlushPolicy{MaxAge: maxAge}},
			Targets:  []Target{{Name: "t", Store: st}},
			Lease:    LeaseConfig{TTL: -1},
			SealTick: func() time.Time { return tick },
		}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sh.Close() })
		return sh
	}
	add := func(sh *Shipper) {
		if err := sh.AppendBatch(ctx, []batch.Record{{Data: []byte("x\n")}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	near, far := time.Now().Add(time.Second), time.Now().Add(time.Hour)

	// Bundled, no max_age: the tick, open or not; none without a tick.
	sh := open(0)
	tick = near
	if got := sh.SealDeadline(); !got.Equal(near) {
		t.Errorf("no max_age, nothing open: SealDeadline %v, want the tick %v", got, near)
	}
	add(sh)
	if got := sh.SealDeadline(); !got.Equal(near) {
		t.Errorf("no max_age, a segment open: SealDeadline %v, want the tick %v", got, near)
	}
	tick = time.Time{}
	if got := sh.SealDeadline(); !got.IsZero() {
		t.Errorf("no max_age, no tick: SealDeadline %v, want zero", got)
	}

	// max_age 10 minutes: nothing open is zero; open, the earlier.
	sh = open(10 * time.Minute)
	tick = near
	if got := sh.SealDeadline(); !got.IsZero() {
		t.Errorf("max_age, nothing open: SealDeadline %v, want zero (the next record starts its age)", got)
	}
	add(sh)
	if got := sh.SealDeadline(); !got.Equal(near) {
		t.Errorf("max_age 10m, tick in 1s: SealDeadline %v, want the tick %v", got, near)
	}
	tick = far
	age := sh.Spool().Deadline()
	if got := sh.SealDeadline(); age.IsZero() || !got.Equal(age) {
		t.Errorf("max_age 10m, tick in 1h: SealDeadline %v, want the age seal %v", got, age)
	}
}
