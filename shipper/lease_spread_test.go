package shipper

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/storetest"
)

// firstSwaps is a Swapper recording when each object was first swapped.
type firstSwaps struct {
	store.Swapper
	mu    sync.Mutex
	first map[string]time.Time
}

func (f *firstSwaps) Swap(ctx context.Context, name string, data []byte, old string) (string, error) {
	f.mu.Lock()
	if _, ok := f.first[name]; !ok {
		f.first[name] = time.Now()
	}
	f.mu.Unlock()
	return f.Swapper.Swap(ctx, name, data, old)
}

// Leases taken together (the streams of one ship start at once) are not
// renewed together: the first renewal of each comes at a random point in
// the second half of TTL/3, and never later than TTL/3.
func TestLeaseRenewalsSpread(t *testing.T) {
	const n = 16
	ttl := 3 * time.Second
	every := ttl / 3
	rec := &firstSwaps{Swapper: newDirStore(t), first: map[string]time.Time{}}
	s := &Shipper{log: slog.New(slog.DiscardHandler), retry: store.RetryPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	t0 := time.Now()
	for i := range n {
		stream := fmt.Sprintf("s%02d", i)
		l := &lease{target: Target{Name: "t", Store: rec}, sw: rec.Swapper, key: LeaseKey(stream), ttl: ttl, margin: ttl / 3}
		r := WriterLease{Version: LeaseVersion, Stream: stream, Token: "tok" + stream, Renewed: t0, Expires: t0.Add(ttl)}
		data, _ := json.Marshal(r)
		v, err := rec.Swapper.Swap(ctx, l.key, data, "")
		if err != nil {
			t.Fatal(err)
		}
		l.rec, l.version, l.sw = r, v, rec
		wg.Add(1)
		go func() { defer wg.Done(); s.leaseLoop(ctx, l) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		got := len(rec.first)
		rec.mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d leases renewed in 10 s", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var offsets []time.Duration
	rec.mu.Lock()
	for _, at := range rec.first {
		offsets = append(offsets, at.Sub(t0))
	}
	rec.mu.Unlock()
	slices.Sort(offsets)
	t.Logf("first renewals after %v .. %v (TTL/3 %v)", offsets[0], offsets[n-1], every)
	if offsets[0] < every/2-50*time.Millisecond {
		t.Errorf("a lease renewed after %v: want no sooner than TTL/6 (%v)", offsets[0], every/2)
	}
	if spread := offsets[n-1] - offsets[0]; spread < every*15/100 {
		t.Errorf("the first renewals of %d leases taken together came within %v of each other: want them spread over the second half of TTL/3 (%v)",
			n, spread, every/2)
	}
	for range 10000 {
		if d := firstRound(every); d < every/2 || d > every {
			t.Fatalf("firstRound(%v) = %v: want within [%v, %v]", every, d, every/2, every)
		}
	}
}

// An idle shipper's looks at its history (watchHistory) are spread the
// same way: the first comes at a random point in the second half of the
// interval after the history was read, so streams started together do
// not list their generations/ together.
func TestIdleFenceChecksSpread(t *testing.T) {
	const n = 8
	var mu sync.Mutex
	lists := map[string][]time.Time{} // by generations/ dir
	st := &storetest.Faulty{Store: newDirStore(t), ListFn: func(_ context.Context, dir, _ string, _ func(store.Object) error) error {
		mu.Lock()
		lists[dir] = append(lists[dir], time.Now())
		mu.Unlock()
		return nil
	}}
	for i := range n {
		cfg := shipperConfig(t, Target{Name: "t", Store: st})
		cfg.Spool.Stream = fmt.Sprintf("s%02d", i)
		cfg.Lease.TTL = 3 * time.Second
		startShipper(t, cfg)
	}
	every := time.Second
	var offsets []time.Duration
	deadline := time.Now().Add(15 * time.Second)
	for len(offsets) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d idle shippers looked at their history again in 15 s", len(offsets), n)
		}
		time.Sleep(50 * time.Millisecond)
		offsets = offsets[:0]
		mu.Lock()
		for i := range n {
			if at := lists[batch.GenerationDir(fmt.Sprintf("s%02d", i))]; len(at) >= 2 {
				offsets = append(offsets, at[1].Sub(at[0]))
			}
		}
		mu.Unlock()
	}
	slices.Sort(offsets)
	t.Logf("first idle looks after %v .. %v (TTL/3 %v)", offsets[0], offsets[n-1], every)
	if spread := offsets[n-1] - offsets[0]; spread < every*15/100 {
		t.Errorf("the first idle looks of %d shippers came within %v of each other: want them spread over the second half of TTL/3", n, spread)
	}
}
