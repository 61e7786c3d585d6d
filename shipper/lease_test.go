package shipper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

func loadLease(t *testing.T, st store.Swapper) (WriterLease, string) {
	t.Helper()
	data, v, err := st.Load(context.Background(), LeaseKey("app"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseLease(data, "app")
	if err != nil {
		t.Fatal(err)
	}
	return l, v
}

// crash ends sh the way a killed process does: Run stops and the spool's
// lock goes, but the lease is not given up.
func crash(t *testing.T, r *running) {
	t.Helper()
	r.cancel()
	<-r.finished
	r.leases = nil // what a dead process cannot do: release them
	r.spool.Close()
}

// A second shipper (another spool) on the stream is refused while the
// first holds the lease; the error names the holder and the expiry.
func TestLeaseRefusesSecondShipper(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.Site = "primary-a"
	first := startShipper(t, cfg)
	held, _ := loadLease(t, st)
	if held.Site != "primary-a" || held.Spool != cfg.Spool.Dir || held.Generation != 1 || held.Token == "" ||
		!held.Expires.After(time.Now().Add(25*time.Second)) {
		t.Fatalf("lease %+v", held)
	}

	second := shipperConfig(t, Target{Name: "t", Store: st})
	_, err := New(context.Background(), second, quiet)
	if !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second shipper: %v, want ErrLeaseHeld", err)
	}
	for _, want := range []string{"site primary-a", cfg.Spool.Dir, fmt.Sprintf("pid %d", held.PID), held.Expires.UTC().Format(time.RFC3339), "from now"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
	// The refused shipper left the lease and the stream alone.
	if now, _ := loadLease(t, st); now.Token != held.Token {
		t.Fatalf("lease now held by %+v", now)
	}
	if _, err := first.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	drain(t, first.Shipper)
}

// Once a crashed holder's lease expires, another shipper takes it over.
func TestLeaseTakeoverAfterTTL(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = 400 * time.Millisecond
	first := startShipper(t, cfg)
	crash(t, first)

	second := shipperConfig(t, Target{Name: "t", Store: st})
	second.Lease.TTL = cfg.Lease.TTL
	if _, err := New(context.Background(), second, quiet); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("before the TTL: %v, want ErrLeaseHeld", err)
	}
	held, _ := loadLease(t, st)
	time.Sleep(time.Until(held.Expires) + 10*time.Millisecond)
	sh := startShipper(t, second)
	if now, _ := loadLease(t, st); now.Spool != second.Spool.Dir {
		t.Fatalf("lease held by %s, want the new shipper", now.holder())
	}
	if _, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
}

// The same spool restarted after a crash takes its lease over at once:
// the spool's lock proves the old holder gone.
func TestLeaseOwnSpoolRestartTakesOver(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	first := startShipper(t, cfg)
	old, _ := loadLease(t, st)
	crash(t, first)
	startShipper(t, cfg)
	now, _ := loadLease(t, st)
	if now.Token == old.Token || now.Spool != cfg.Spool.Dir {
		t.Fatalf("lease after restart %+v, want a new token for the same spool", now)
	}
}

// A clean Close releases the lease, so a successor on another spool
// starts at once.
func TestLeaseReleasedOnClose(t *testing.T) {
	st := newDirStore(t)
	first := startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if l, _ := loadLease(t, st); !l.Released || l.Expires.After(time.Now()) {
		t.Fatalf("lease after Close: %+v, want released", l)
	}
	startShipper(t, shipperConfig(t, Target{Name: "t", Store: st}))
}

// swapGate is a dir store whose Swaps can be made to fail (a renewal
// that does not get through) and whose segment Puts are recorded.
type swapGate struct {
	*dir.Store
	failSwaps atomic.Bool
	mu        sync.Mutex
	puts      []string
}

func (g *swapGate) Swap(ctx context.Context, name string, data []byte, old string) (string, error) {
	if g.failSwaps.Load() {
		return "", errors.New("connection reset by peer")
	}
	return g.Store.Swap(ctx, name, data, old)
}

func (g *swapGate) Put(ctx context.Context, name string, data []byte) error {
	if _, ok := store.ParseSegmentObject(name); ok {
		g.mu.Lock()
		g.puts = append(g.puts, name)
		g.mu.Unlock()
	}
	return g.Store.Put(ctx, name, data)
}

// steal takes the lease over as another site would once it expired.
// A renewal by the holder between the thief's read and its swap makes the
// swap fail with store.ErrChanged (a loaded machine hits that window with a
// short TTL); the thief then reads again, as a real one would.
func steal(t *testing.T, st store.Swapper, site string) {
	t.Helper()
	for try := 0; ; try++ {
		held, v := loadLease(t, st)
		now := time.Now()
		thief := held
		thief.Site, thief.Host, thief.Spool, thief.Token = site, site+"-host", "/elsewhere", "thief"
		thief.Acquired, thief.Renewed, thief.Expires, thief.Renewals = now, now, now.Add(time.Hour), 0
		data, _ := json.Marshal(thief)
		_, err := st.Swap(context.Background(), LeaseKey("app"), data, v)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrChanged) || try == 50 {
			t.Fatal(err)
		}
	}
}

// No segment goes to a target while the lease there may have expired by
// this host's clock: renewals that do not get through hold the Puts back.
// A lease taken by another shipper meanwhile stops the old holder before
// its next Put: it renews first, finds the new holder, and halts naming
// it.
func TestLeaseStolenStopsBeforeNextPut(t *testing.T) {
	g := &swapGate{Store: newDirStore(t)}
	cfg := shipperConfig(t, Target{Name: "t", Store: g})
	cfg.Lease.TTL = 300 * time.Millisecond
	sh := startShipper(t, cfg)
	if err := sh.AppendBatch(context.Background(), batchtest.Records("a", 10), nil); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	g.failSwaps.Store(true)
	held, _ := loadLease(t, g)
	time.Sleep(time.Until(held.Expires) + 10*time.Millisecond)
	if err := sh.AppendBatch(context.Background(), batchtest.Records("b", 10), nil); err != nil {
		t.Fatal(err)
	}
	first := []string{batch.SegmentKey("app", batch.SegmentName(1, 1, 10))}
	time.Sleep(200 * time.Millisecond)
	g.mu.Lock()
	puts := slices.Clone(g.puts)
	g.mu.Unlock()
	if !slices.Equal(puts, first) {
		t.Fatalf("segment puts %v with the lease expired, want only the one before", puts)
	}
	if err := sh.Failed(); err != nil {
		t.Fatalf("failed renewals stopped Run: %v", err)
	}

	steal(t, g.Store, "dr-b")
	g.failSwaps.Store(false)
	err := sh.wait(t)
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "site dr-b") {
		t.Fatalf("Run: %v, want ErrLeaseLost naming site dr-b", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Equal(g.puts, first) {
		t.Fatalf("segment puts %v, want only the one before the lease was lost", g.puts)
	}
	// The thief's lease is left alone by the loser's Close.
	sh.Close()
	if l, _ := loadLease(t, g); l.Token != "thief" || l.Released {
		t.Fatalf("lease after the loser closed: %+v", l)
	}
}

// A lease stolen while the holder renews it is noticed at the next
// renewal, with nothing to send.
func TestLeaseStolenNoticedByRenewal(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = 300 * time.Millisecond
	sh := startShipper(t, cfg)
	steal(t, st, "dr-b")
	if err := sh.wait(t); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Run: %v, want ErrLeaseLost", err)
	}
}

// A promoted site takes over at once the lease of the generation its
// promotion fenced, and the old holder stops.
func TestLeaseOfFencedGenerationTakenOver(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = time.Hour
	cfg.Lease.Site = "old-primary"
	old := startShipper(t, cfg)
	promote(t, st, 2, nil, "dr-b")

	cfg2 := shipperConfig(t, Target{Name: "t", Store: st})
	cfg2.Lease.Site = "dr-b"
	sh := startShipper(t, cfg2)
	if l, _ := loadLease(t, st); l.Site != "dr-b" || l.Generation != 2 {
		t.Fatalf("lease %+v, want dr-b's in generation 2", l)
	}
	if err := old.AppendBatch(context.Background(), batchtest.Records("late", 10), nil); err != nil {
		t.Fatal(err)
	}
	if err := old.wait(t); !errors.Is(err, batch.ErrFenced) && !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("old primary's Run: %v, want it fenced", err)
	}
	if _, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	drain(t, sh.Shipper)
	if got := batchtest.SeqRanges(storeSegments(t, st, "app")); !slices.Equal(got, [][2]uint64{{1, 1}}) {
		t.Fatalf("store holds %v, want only generation 2's segment", got)
	}
}

// The judgement itself, case by case.
func TestJudgeLease(t *testing.T) {
	now := time.Now()
	me := WriterLease{Stream: "app", Host: "h1", Spool: "/s1", Generation: 2}
	live := WriterLease{Stream: "app", Site: "a", Host: "h2", Spool: "/s2", PID: 7, Generation: 2, Renewed: now, Expires: now.Add(time.Minute)}
	h2, _ := batch.NewHistory("app", []batch.Generation{{Version: 1, Stream: "app", Generation: 2, Parent: 1}})
	for _, tc := range []struct {
		name   string
		held   func(*WriterLease)
		hist   batch.History
		takes  bool
		reason string
	}{
		{"live lease of another", func(*WriterLease) {}, h2, false, ""},
		{"expired", func(l *WriterLease) { l.Expires = now }, h2, true, "expired"},
		{"released", func(l *WriterLease) { l.Released = true }, h2, true, "released"},
		{"same spool, same host", func(l *WriterLease) { l.Host, l.Spool = "h1", "/s1" }, h2, true, "this spool"},
		{"same spool path, other host", func(l *WriterLease) { l.Spool = "/s1" }, h2, false, ""},
		{"fenced generation", func(l *WriterLease) { l.Generation = 1 }, h2, true, "fenced"},
	} {
		held := live
		tc.held(&held)
		why, err := judgeLease(held, me, now, tc.hist)
		if tc.takes != (err == nil) || (tc.takes && !strings.Contains(why, tc.reason)) || (!tc.takes && !errors.Is(err, ErrLeaseHeld)) {
			t.Errorf("%s: why %q, err %v", tc.name, why, err)
		}
	}
}

// A lease object that is not a lease of this stream (damaged JSON, one
// naming another stream, one too large to be a lease, however well formed)
// refuses New with an error naming the object and saying what is wrong,
// and is left as it is.
func TestLeaseHostileObjectRefused(t *testing.T) {
	now := time.Now()
	live := WriterLease{Version: LeaseVersion, Stream: "app", Site: "a", Host: "h", Spool: "/s", Token: "tok",
		Renewed: now, Expires: now.Add(time.Hour)}
	other := live
	other.Stream = "other"
	huge := live
	huge.Site = strings.Repeat("x", store.MaxSwapSize) // Swapper.Load refuses it (store.MaxSwapSize)
	enc := func(l WriterLease) []byte { b, _ := json.Marshal(l); return b }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"damaged JSON", []byte(`{"version":1,"stream":"app",`), "damaged: unexpected end of JSON input"},
		{"other stream", enc(other), `damaged: it says stream "other"`},
		{"huge", enc(huge), fmt.Sprintf("larger than the %d a swapped object may hold", store.MaxSwapSize)},
		{"newer version", []byte(`{"version":2,"stream":"app","token":"t"}`), "has version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newDirStore(t)
			// Put, not Swap: a hostile writer need not keep Swap's limits.
			if err := st.Put(context.Background(), LeaseKey("app"), tc.data); err != nil {
				t.Fatal(err)
			}
			_, err := New(context.Background(), shipperConfig(t, Target{Name: "t", Store: st}), quiet)
			if err == nil {
				t.Fatal("New took a hostile lease over")
			}
			for _, want := range []string{LeaseKey("app"), tc.want, "delete it"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if len(err.Error()) > 1000 {
				t.Errorf("error of %d bytes", len(err.Error()))
			}
			if data := readObject(t, st, LeaseKey("app")); string(data) != string(tc.data) {
				t.Errorf("lease object changed")
			}
		})
	}
}

// A lease damaged while its holder runs is lost: the holder cannot tell
// who wrote it, so it stops at its next renewal rather than overwrite it.
func TestLeaseDamagedWhileHeldIsLost(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = 300 * time.Millisecond
	sh := startShipper(t, cfg)
	_, v := loadLease(t, st)
	if _, err := st.Swap(context.Background(), LeaseKey("app"), []byte("{not json"), v); err != nil {
		t.Fatal(err)
	}
	err := sh.wait(t)
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "taken by someone") {
		t.Fatalf("Run: %v, want ErrLeaseLost", err)
	}
	if data, _, _ := st.Load(context.Background(), LeaseKey("app")); string(data) != "{not json" {
		t.Fatalf("damaged lease overwritten: %q", data)
	}
}

// readObject reads a whole object (Load refuses a huge one).
func readObject(t *testing.T, st store.Store, name string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A lease deleted while its holder runs is lost: the holder stops at its
// next renewal, saying the lease was deleted, and does not create it again.
func TestLeaseDeletedWhileHeldIsLost(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = 300 * time.Millisecond
	sh := startShipper(t, cfg)
	if err := st.Delete(context.Background(), LeaseKey("app")); err != nil {
		t.Fatal(err)
	}
	err := sh.wait(t)
	if !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("Run: %v, want ErrLeaseLost saying the lease was deleted", err)
	}
	if _, _, err := st.Load(context.Background(), LeaseKey("app")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a deleted lease was written again: %v", err)
	}
}

// A lease changed to another state of the holder's own (an earlier Swap
// of its that landed, its answer lost) is adopted at the next renewal:
// the holder keeps it and keeps running.
func TestLeaseOwnLandedSwapAdopted(t *testing.T) {
	st := newDirStore(t)
	cfg := shipperConfig(t, Target{Name: "t", Store: st})
	cfg.Lease.TTL = 300 * time.Millisecond
	sh := startShipper(t, cfg)
	held, v := loadLease(t, st)
	held.Renewed = held.Renewed.Add(time.Millisecond) // another renewal of its own
	data, _ := json.Marshal(held)
	if _, err := st.Swap(context.Background(), LeaseKey("app"), data, v); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // several renewals
	if err := sh.Failed(); err != nil {
		t.Fatalf("the holder lost a lease holding its own token: %v", err)
	}
	if l, nv := loadLease(t, st); l.Token != held.Token || nv == v || l.Released {
		t.Fatalf("lease after the renewals: %+v", l)
	}
}
