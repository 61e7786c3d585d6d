package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// clock is a settable time shared by the members of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newStore(t *testing.T) *dir.Store {
	t.Helper()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newMember(t *testing.T, st store.Swapper, id string, c *clock) *Member {
	t.Helper()
	m, err := New(Config{Name: "f", Member: id, TTL: 3 * time.Second, Store: st, Now: c.now}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Join(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

func streams(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("s%04d", i))
	}
	return out
}

// Rendezvous spreads streams evenly and moves only the joining member's
// share when one joins.
func TestOwnerBalanceAndStability(t *testing.T) {
	members := []string{"a", "b", "c"}
	all := streams(3000)
	count := map[string]int{}
	before := map[string]string{}
	for _, s := range all {
		o := Owner(s, members)
		count[o]++
		before[s] = o
	}
	for _, m := range members {
		if c := count[m]; c < 850 || c > 1150 {
			t.Errorf("member %s owns %d of 3000 streams, want about 1000: %v", m, c, count)
		}
	}
	moved := 0
	for _, s := range all {
		o := Owner(s, append(members, "d"))
		if o != before[s] {
			moved++
			if o != "d" {
				t.Fatalf("stream %s moved from %s to %s, not to the new member", s, before[s], o)
			}
		}
	}
	if moved < 600 || moved > 900 {
		t.Errorf("%d of 3000 streams moved to a fourth member, want about 750", moved)
	}
	if Owner("x", nil) != "" {
		t.Error("no members: want no owner")
	}
}

// Two members racing for one lease: exactly one wins, every time.
func TestLeaseRaceOneWinner(t *testing.T) {
	for round := range 20 {
		st := newStore(t)
		c := &clock{t: time.Unix(1e9, 0)}
		a, b := newMember(t, st, "a", c), newMember(t, st, "b", c)
		stream := fmt.Sprintf("r%d", round)
		var wg sync.WaitGroup
		for _, m := range []*Member{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); m.take(context.Background(), stream) }()
		}
		wg.Wait()
		ha, hb := a.Fence(stream)() == nil, b.Fence(stream)() == nil
		if ha == hb {
			t.Fatalf("round %d: a holds %v, b holds %v: want exactly one", round, ha, hb)
		}
	}
}

// A stale owner: a member paused past its TTL is fenced by its own clock
// before it renews, its lease is taken by another, and its renewal then
// finds it lost: it never gets the stream back by renewing.
func TestStaleOwnerFenced(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	a, b := newMember(t, st, "a", c), newMember(t, st, "b", c)
	ctx := context.Background()
	a.take(ctx, "s")
	if err := a.Fence("s")(); err != nil {
		t.Fatalf("a just took s: %v", err)
	}
	c.add(2*time.Second + time.Millisecond) // past TTL - TTL/3 without renewal
	if err := a.Fence("s")(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a did not renew for 2/3 of the TTL: want its fence to refuse, got %v", err)
	}
	b.take(ctx, "s")
	if b.Fence("s")() == nil {
		t.Fatal("b took a lease that had not expired")
	}
	c.add(time.Second)
	b.take(ctx, "s")
	if err := b.Fence("s")(); err != nil {
		t.Fatalf("b after a's lease expired: %v", err)
	}
	a.renew(ctx, "s") // a wakes
	if err := a.Fence("s")(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a renewed after b took the lease: want lost, got %v", err)
	}
	if got := a.Claim(context.Background(), []string{"s"}, nil); len(got) != 0 {
		t.Fatalf("a still claims %v", got)
	}
}

// Damaged and forged objects: a garbage lease and a lease with a far
// expiry whose holder never renews are taken over once unchanged for a
// TTL; a forged member that never beats stops counting as live; a member
// id with path characters is refused.
func TestHostileFleetObjects(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	ctx := context.Background()
	if _, err := st.Swap(ctx, LeasesDir("f")+"g", []byte("not json{"), ""); err != nil {
		t.Fatal(err)
	}
	forged := fmt.Sprintf(`{"version":1,"fleet":"f","stream":"h","member":"ghost","token":"x","expires":"2100-01-01T00:00:00Z"}`)
	if _, err := st.Swap(ctx, LeasesDir("f")+"h", []byte(forged), ""); err != nil {
		t.Fatal(err)
	}
	ghost := `{"version":1,"fleet":"f","member":"ghost","token":"y","expires":"2100-01-01T00:00:00Z"}`
	if _, err := st.Swap(ctx, MembersDir("f")+"ghost", []byte(ghost), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Swap(ctx, MembersDir("f")+"junk", []byte("\x00\x01garbage"), ""); err != nil {
		t.Fatal(err)
	}
	a := newMember(t, st, "a", c)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if live := a.Live(); len(live) != 2 || live[0] != "a" || live[1] != "ghost" {
		t.Fatalf("live members at first sight = %v, want [a ghost]", live)
	}
	a.take(ctx, "g")
	a.take(ctx, "h")
	if a.Fence("g")() == nil || a.Fence("h")() == nil {
		t.Fatal("took a damaged or forged lease at first sight")
	}
	c.add(3 * time.Second)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if live := a.Live(); len(live) != 1 || live[0] != "a" {
		t.Fatalf("a forged member unchanged for a TTL still counts as live: %v", live)
	}
	a.take(ctx, "g")
	a.take(ctx, "h")
	for _, s := range []string{"g", "h"} {
		if err := a.Fence(s)(); err != nil {
			t.Errorf("lease %s unchanged for a TTL was not taken over: %v", s, err)
		}
	}
	for _, bad := range []string{"a/b", "..", "x\x01", "", "../../etc"} {
		_, err := New(Config{Name: "f", Member: bad, Store: st}, slog.Default())
		if err == nil || !strings.Contains(err.Error(), "member id") {
			t.Errorf("member id %q: want a refusal naming it, got %v", bad, err)
		}
	}
	if _, _, err := st.Load(ctx, MembersDir("f")+"junk"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a damaged member object unchanged for a TTL was not removed: %v", err)
	}
	if _, err := st.Swap(ctx, MembersDir("f")+"junk2", []byte("[]"), ""); err != nil {
		t.Fatal(err)
	}
	members, leases, err := ReadStatus(ctx, st, "f", c.now())
	if err != nil {
		t.Fatal(err)
	}
	var damaged int
	for _, l := range leases {
		if l.Token != "" {
			t.Errorf("status shows lease %s's token", l.Stream)
		}
	}
	for _, m := range members {
		if m.Token != "" {
			t.Errorf("status shows member %s's token", m.Member)
		}
		if m.Damaged != "" {
			damaged++
		}
	}
	if damaged != 1 || len(leases) != 2 {
		t.Errorf("status: %d damaged members (want 1), %d leases (want 2): %+v %+v", damaged, len(leases), members, leases)
	}
}

// A member hands a stream over when a new member wins it, and takes it
// once released; a released lease is taken at once.
func TestHandover(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	ctx := context.Background()
	a := newMember(t, st, "a", c)
	all := streams(40)
	a.Claim(ctx, all, all)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.Claim(ctx, all, all); len(got) != 40 {
		t.Fatalf("a alone holds %d of 40", len(got))
	}
	b := newMember(t, st, "b", c)
	b.Claim(ctx, all, nil)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	mine := a.Claim(ctx, all, all)
	var moving []string
	for _, s := range all {
		if !contains(mine, s) {
			moving = append(moving, s)
			if Owner(s, []string{"a", "b"}) != "b" {
				t.Fatalf("a gives up %s, which hashes to a", s)
			}
			a.Release(ctx, s) // its receiver stopped
		}
	}
	if len(moving) == 0 {
		t.Fatal("nothing moved to b")
	}
	if err := b.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.Claim(ctx, all, nil); len(got) != len(moving) {
		t.Fatalf("b holds %v, want the %d released: %v", got, len(moving), moving)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A stream to be handed over whose receiver is not running (it had not
// opened yet) is released by Claim itself: otherwise its lease would be
// renewed for ever and the new owner never get it.
func TestHandoverOfIdleStream(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	ctx := context.Background()
	a := newMember(t, st, "a", c)
	all := streams(40)
	a.Claim(ctx, all, nil)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	b := newMember(t, st, "b", c)
	b.Claim(ctx, all, nil)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	mine := a.Claim(ctx, all, nil) // nothing running
	if err := b.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	got := b.Claim(ctx, all, nil)
	if len(got) == 0 || len(got)+len(mine) != len(all) {
		t.Fatalf("a keeps %d, b took %d of %d: the idle streams were not handed over", len(mine), len(got), len(all))
	}
}

// A lease that still names this process but that it no longer holds (a
// Release whose Swap failed, then the stream back after a membership
// change) is not adopted as it stands: expired or released, another member
// may take it at the same moment, so it is taken again by Swap, and of two
// members racing for it exactly one holds it.
func TestOwnLeaseNotAdoptedExpiredOrReleased(t *testing.T) {
	for _, released := range []bool{false, true} {
		t.Run(fmt.Sprintf("released=%v", released), func(t *testing.T) {
			st := newStore(t)
			c := &clock{t: time.Unix(1e9, 0)}
			a, b := newMember(t, st, "a", c), newMember(t, st, "b", c)
			ctx := context.Background()
			a.take(ctx, "s")
			if released {
				a.Release(ctx, "s")
			} else {
				a.mu.Lock()
				delete(a.held, "s") // a Release whose Swap failed
				a.mu.Unlock()
				c.add(3*time.Second + time.Millisecond) // the lease expires
			}
			a.take(ctx, "s")
			b.take(ctx, "s")
			ha, hb := a.Fence("s")() == nil, b.Fence("s")() == nil
			if ha == hb {
				t.Fatalf("a holds %v, b holds %v: want exactly one", ha, hb)
			}
		})
	}
}

// A lease of this process whose Swap answer was lost is adopted with the
// renewal time it carries, not the time it was read: the fence keeps its
// margin before another member may take it.
func TestOwnLeaseAdoptedKeepsFenceMargin(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	a := newMember(t, st, "a", c)
	ctx := context.Background()
	a.take(ctx, "s")
	a.mu.Lock()
	delete(a.held, "s") // the Swap landed, its answer was lost
	a.mu.Unlock()
	c.add(time.Second)
	a.take(ctx, "s")
	if err := a.Fence("s")(); err != nil {
		t.Fatalf("a adopted its own live lease: %v", err)
	}
	c.add(time.Second + time.Millisecond) // 2/3 TTL after the lease was written
	if err := a.Fence("s")(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("2/3 of the TTL after the lease was written, without renewal: want the fence to refuse, got %v", err)
	}
}

// A member object whose host holds control characters (a terminal escape
// that ferry status --fleet would print) or is longer than a host name can
// be is damaged: it never reaches the status as a host.
func TestMemberHostRefused(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	for id, host := range map[string]string{"esc": "\x1b]2;owned\x07h1", "long": strings.Repeat("h", 300)} {
		h, _ := json.Marshal(host)
		rec := fmt.Sprintf(`{"version":1,"fleet":"f","member":%q,"host":%s,"token":"y","expires":"2100-01-01T00:00:00Z"}`, id, h)
		if _, err := st.Swap(ctx, MembersDir("f")+id, []byte(rec), ""); err != nil {
			t.Fatal(err)
		}
	}
	members, _, err := ReadStatus(ctx, st, "f", time.Unix(1e9, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 2 {
		t.Fatalf("members %+v", members)
	}
	for _, m := range members {
		if m.Damaged == "" || m.Host != "" || strings.ContainsRune(m.Damaged, 0x1b) {
			t.Errorf("member %s: host %q, damaged %q: want it damaged, its host not shown raw", m.Member, m.Host, m.Damaged)
		}
	}
}

// lossy is a store whose next Swap lands but answers with an error, as a
// request whose answer the network lost.
type lossy struct {
	*dir.Store
	lose bool
}

func (l *lossy) Swap(ctx context.Context, name string, data []byte, old string) (string, error) {
	v, err := l.Store.Swap(ctx, name, data, old)
	if err == nil && l.lose {
		l.lose = false
		return "", errors.New("connection reset (the Swap landed)")
	}
	return v, err
}

// A renewal whose Swap landed with its answer lost leaves the lease this
// member's: a later Release still releases it, so the next owner takes it
// at once instead of after the TTL.
func TestReleaseAfterLostRenewalAnswer(t *testing.T) {
	st := &lossy{Store: newStore(t)}
	c := &clock{t: time.Unix(1e9, 0)}
	a := newMember(t, st, "a", c)
	ctx := context.Background()
	a.take(ctx, "s")
	c.add(time.Second)
	st.lose = true
	a.renew(ctx, "s")
	if err := a.Fence("s")(); err != nil {
		t.Fatalf("a renewal that failed within the margin: want the fence to pass, got %v", err)
	}
	a.Release(ctx, "s")
	data, _, err := st.Load(ctx, a.leaseKey("s"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseLease(data, "f", a.leaseKey("s"))
	if err != nil {
		t.Fatal(err)
	}
	if !l.Released {
		t.Fatalf("lease after Release: %+v; want it released", l)
	}
}

// A renewal after one whose Swap landed with its answer lost writes the
// lease again: the lease in the store expires a TTL after the renewal the
// fence counts from, so the fence keeps its TTL/3 margin.
func TestRenewAfterLostAnswerRewritesLease(t *testing.T) {
	st := &lossy{Store: newStore(t)}
	c := &clock{t: time.Unix(1e9, 0)}
	a := newMember(t, st, "a", c)
	ctx := context.Background()
	a.take(ctx, "s")
	c.add(time.Second)
	st.lose = true
	a.renew(ctx, "s") // lands, renewed at +1s; a does not know
	c.add(time.Second)
	a.renew(ctx, "s")
	data, _, err := st.Load(ctx, a.leaseKey("s"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseLease(data, "f", a.leaseKey("s"))
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	h := a.held["s"]
	a.mu.Unlock()
	if h == nil || h.lost {
		t.Fatalf("a lost its own lease: %+v", h)
	}
	if !l.Renewed.Equal(h.renewedAt) || l.Expires.Before(h.renewedAt.Add(a.cfg.TTL)) {
		t.Fatalf("the fence counts from %s, the stored lease was renewed at %s and expires at %s", h.renewedAt, l.Renewed, l.Expires)
	}
}

// An oversize lease object (damaged: no Swap writes one) is warned about
// once and, unchanged for a TTL, taken over by a Swap from its version,
// as a lease that does not parse is.
func TestOversizeLeaseTakenOverWhenStale(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	ctx := context.Background()
	key := LeasesDir("f") + "big"
	if err := st.Put(ctx, key, make([]byte, store.MaxSwapSize+1)); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	a, err := New(Config{Name: "f", Member: "a", TTL: 3 * time.Second, Store: st, Now: c.now}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a.take(ctx, "big")
	if a.Fence("big")() == nil {
		t.Fatal("took an oversize lease object at first sight")
	}
	c.add(2 * time.Second)
	a.take(ctx, "big")
	if a.Fence("big")() == nil {
		t.Fatal("took an oversize lease object unchanged for less than a TTL")
	}
	c.add(2 * time.Second)
	a.take(ctx, "big")
	if err := a.Fence("big")(); err != nil {
		t.Fatalf("an oversize lease object unchanged for a TTL was not taken over: %v\n%s", err, logs.String())
	}
	data, _, err := st.Load(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := parseLease(data, "f", key); err != nil || l.Member != "a" {
		t.Fatalf("the store holds %v (%v), want a's lease", l, err)
	}
	if n := strings.Count(logs.String(), "larger than the"); n != 1 || !strings.Contains(logs.String(), key) {
		t.Fatalf("want one warning naming %s, got %d:\n%s", key, n, logs.String())
	}
}

// racer replaces the object at key with a valid lease of another member
// right after the first Load shows it oversize: the taker's Swap from the
// oversize object's version must fail, and the valid lease stay.
type racer struct {
	*dir.Store
	key, other []byte
	done       bool
}

func (r *racer) Load(ctx context.Context, name string) ([]byte, string, error) {
	data, ver, err := r.Store.Load(ctx, name)
	if name == string(r.key) && errors.Is(err, store.ErrPermanent) && ver != "" && r.done {
		if _, serr := r.Store.Swap(ctx, name, r.other, ver); serr != nil {
			return nil, "", serr
		}
	}
	r.done = true
	return data, ver, err
}

// A valid lease written over an oversize one after the taker read it is
// not overwritten: the takeover is a Swap from the oversize object's
// version, not a delete.
func TestOversizeLeaseTakeoverLosesToAValidLease(t *testing.T) {
	raw := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	ctx := context.Background()
	key := LeasesDir("f") + "big"
	if err := raw.Put(ctx, key, make([]byte, store.MaxSwapSize+1)); err != nil {
		t.Fatal(err)
	}
	now := c.now().UTC()
	b, err := json.Marshal(LeaseRecord{Version: Version, Fleet: "f", Stream: "big", Member: "b", Token: "b-token",
		Acquired: now, Renewed: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	st := &racer{Store: raw, key: []byte(key), other: b}
	a, err := New(Config{Name: "f", Member: "a", TTL: 3 * time.Second, Store: st, Now: c.now}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a.take(ctx, "big") // first sight: not taken
	c.add(4 * time.Second)
	a.take(ctx, "big") // stale by a's clock; b's lease lands right after this Load
	if a.Fence("big")() == nil {
		t.Fatal("a took the stream over b's lease")
	}
	data, _, err := raw.Load(ctx, key)
	if err != nil || !bytes.Equal(data, b) {
		t.Fatalf("the store holds %q (%v), want b's lease untouched", data, err)
	}
}

// A long-lived member forgets the objects it no longer sees: 50 damaged
// member objects, deleted once abandoned for a TTL, leave nothing in its
// seen and warned maps a few TTLs later.
func TestMemberForgetsGoneObjects(t *testing.T) {
	st := newStore(t)
	c := &clock{t: time.Unix(1e9, 0)}
	ctx := context.Background()
	for i := range 50 {
		if err := st.Put(ctx, MembersDir("f")+fmt.Sprintf("ghost%02d", i), []byte("not a member")); err != nil {
			t.Fatal(err)
		}
	}
	a := newMember(t, st, "a", c)
	tick := func() {
		t.Helper()
		if err := a.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		c.add(time.Second) // TTL/3
	}
	tick()
	a.seenMu.Lock()
	seen, warned := len(a.seen), len(a.warned)
	a.seenMu.Unlock()
	if seen < 50 || warned < 50 {
		t.Fatalf("after the first tick: %d seen, %d warned; want the 50 damaged members in both", seen, warned)
	}
	for range 20 { // well past the TTL that deletes them and 3 TTLs more
		tick()
	}
	var left []string
	err := st.List(ctx, MembersDir("f"), "", func(o store.Object) error { left = append(left, o.Name); return nil })
	if err != nil || len(left) != 1 {
		t.Fatalf("member objects left %v (%v), want only a's", left, err)
	}
	a.seenMu.Lock()
	defer a.seenMu.Unlock()
	for k := range a.seen {
		if strings.Contains(k, "ghost") {
			t.Errorf("seen still holds %s", k)
		}
	}
	for k := range a.warned {
		if strings.Contains(k, "ghost") {
			t.Errorf("warned still holds %s", k)
		}
	}
	if len(a.seen) > 2 || len(a.warned) > 2 {
		t.Errorf("%d seen, %d warned entries left", len(a.seen), len(a.warned))
	}
}

// An object too large to be a member record at a member's own key is
// damaged: the member writes its heartbeat over it (as over one that does
// not parse) instead of failing to join.
func TestOversizeMemberObjectReplaced(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	key := MembersDir("f") + "a"
	if err := st.Put(ctx, key, make([]byte, store.MaxSwapSize+1)); err != nil {
		t.Fatal(err)
	}
	newMember(t, st, "a", &clock{t: time.Unix(1e9, 0)})
	data, _, err := st.Load(ctx, key)
	if err != nil {
		t.Fatalf("after the join the member object is still unreadable: %v", err)
	}
	if rec, err := parseMember(data, "f", key); err != nil || rec.Member != "a" {
		t.Fatalf("the store holds %+v (%v), want member a's record", rec, err)
	}
}
