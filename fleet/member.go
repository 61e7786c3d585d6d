package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// DefaultTTL is Config.TTL when it is zero; MinTTL is the least allowed.
const (
	DefaultTTL = 30 * time.Second
	MinTTL     = 3 * time.Second
)

// ErrLeaseLost marks a stream whose lease this member no longer holds, or
// may no longer hold by its own clock: it must not apply the stream.
var ErrLeaseLost = errors.New("fleet lease lost")

// Config configures a Member.
type Config struct {
	Name   string        // the fleet
	Member string        // this member's id, unique in the fleet
	TTL    time.Duration // how long a heartbeat or lease lasts unless renewed; default DefaultTTL
	Store  store.Swapper
	// Host names the host in the member object; default os.Hostname.
	Host string
	Now  func() time.Time
	// Parallel is how many lease Swaps run at once (default 64): a member
	// renews every lease it holds each TTL/3, and a slow store must not
	// stretch the round past the fences' margin.
	Parallel int
}

// Member is one receiver process in a fleet. Run keeps its heartbeat and
// its leases; Claim tells it which streams exist and answers which it may
// apply now; Release gives one up after it stopped applying it.
type Member struct {
	cfg Config
	log *slog.Logger
	me  MemberRecord
	ver string // of the member object

	mu      sync.Mutex
	streams []string // the streams the last Claim named
	held    map[string]*held
	live    []string // member ids, sorted, as the last tick saw them

	// seen and warned remember objects this member judged; an entry not
	// looked at for forgetAfter (the object deleted, or no longer this
	// member's concern) is dropped at the next tick (forget), so a
	// long-lived member does not grow with every object it ever saw.
	seenMu sync.Mutex
	seen   map[string]seenState // object key: its version and when first seen so (staleness)
	warned map[string]warnState // object key: the damaged version warned about
}

// forgetAfter is how long seen and warned keep an object's entry after it
// was last looked at, in TTLs. Every object a member still judges is looked
// at each tick (TTL/3), so only objects it stopped looking at are dropped.
const forgetAfter = 3

// held is this member's hold on one stream's lease.
type held struct {
	swap sync.Mutex // one Swap of this lease at a time: a release never races a renewal

	rec       LeaseRecord
	version   string
	renewedAt time.Time // this host's clock before the last successful Swap
	lost      bool
	handover  bool // the stream hashes to another live member: give it up
}

type seenState struct {
	version string
	since   time.Time
	looked  time.Time // when last looked at
}

type warnState struct {
	version string
	looked  time.Time
}

// New checks cfg and returns a member that has not joined yet (Join).
func New(cfg Config, log *slog.Logger) (*Member, error) {
	if err := CheckName("fleet name", cfg.Name); err != nil {
		return nil, err
	}
	if err := CheckName("fleet member id", cfg.Member); err != nil {
		return nil, err
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < MinTTL {
		return nil, fmt.Errorf("fleet lease ttl %v is below the minimum %v", cfg.TTL, MinTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 64
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	var tok [16]byte
	rand.Read(tok[:])
	now := cfg.Now().UTC()
	return &Member{cfg: cfg, log: log.With("fleet", cfg.Name, "member", cfg.Member),
		me: MemberRecord{Version: Version, Fleet: cfg.Name, Member: cfg.Member, Host: cfg.Host, PID: os.Getpid(),
			Token: hex.EncodeToString(tok[:]), Started: now},
		held: map[string]*held{}, seen: map[string]seenState{}, warned: map[string]warnState{}}, nil
}

// ID is the member's id.
func (m *Member) ID() string { return m.cfg.Member }

func (m *Member) memberKey() string { return MembersDir(m.cfg.Name) + m.cfg.Member }

// Join writes the member's first heartbeat. If a live member of the same
// id (another process, or this one before a crash) holds it, Join waits
// until that heartbeat expires, saying so, or ctx ends.
func (m *Member) Join(ctx context.Context) error {
	for {
		err := m.beat(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errIDInUse) {
			return err
		}
		m.log.Warn("waiting: another process holds this fleet member id (pick another with [fleet] member if it is alive)", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(m.cfg.TTL / 3):
		}
	}
}

var errIDInUse = errors.New("member id in use")

// beat renews the member object (creating it if missing).
func (m *Member) beat(ctx context.Context) error {
	now := m.cfg.Now().UTC()
	m.mu.Lock()
	rec := m.me
	rec.Beats++
	rec.Renewed, rec.Expires = now, now.Add(m.cfg.TTL)
	rec.Streams = len(m.held)
	m.mu.Unlock()
	data, _ := json.Marshal(rec)
	key := m.memberKey()
	v, err := m.cfg.Store.Swap(ctx, key, data, m.ver)
	if errors.Is(err, store.ErrChanged) {
		old, oldVer, lerr := m.cfg.Store.Load(ctx, key)
		switch {
		case errors.Is(lerr, store.ErrNotFound):
			oldVer = "" // pruned while we were away: create it again
		case errors.Is(lerr, store.ErrPermanent) && old == nil && oldVer != "":
			// Too large to be a member record: damaged, written over
			// as one that does not parse (by a Swap from its version).
			m.log.Warn("fleet member object too large to be a member record: writing ours over it", "key", key, "err", lerr)
		case lerr != nil:
			return fmt.Errorf("fleet heartbeat %s: %w", key, lerr)
		default:
			o, perr := parseMember(old, m.cfg.Name, key)
			if perr == nil && o.Token != m.me.Token && !o.Left && o.Expires.After(now) && !m.stale(key, oldVer, now) {
				return fmt.Errorf("fleet member %s: host %s pid %d beats under this id until %s: %w",
					key, o.Host, o.PID, o.Expires.Format(time.RFC3339), errIDInUse)
			}
			// Ours (a Swap whose answer was lost), expired, left, or
			// damaged: write ours over it.
		}
		v, err = m.cfg.Store.Swap(ctx, key, data, oldVer)
	}
	if err != nil {
		return fmt.Errorf("fleet heartbeat %s: %w", key, err)
	}
	m.mu.Lock()
	m.me, m.ver = rec, v
	m.mu.Unlock()
	return nil
}

// stale reports whether the object at key has kept version for a TTL by
// this host's clock: whatever it claims, its writer has stopped renewing
// it (a dead member, or a forged object with a far expiry).
func (m *Member) stale(key, version string, now time.Time) bool {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	s, ok := m.seen[key]
	if !ok || s.version != version {
		m.seen[key] = seenState{version: version, since: now, looked: now}
		return false
	}
	s.looked = now
	m.seen[key] = s
	return now.Sub(s.since) >= m.cfg.TTL
}

// forget drops the seen and warned entries not looked at for forgetAfter
// TTLs.
func (m *Member) forget(now time.Time) {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	old := now.Add(-forgetAfter * m.cfg.TTL)
	for k, s := range m.seen {
		if s.looked.Before(old) {
			delete(m.seen, k)
		}
	}
	for k, w := range m.warned {
		if w.looked.Before(old) {
			delete(m.warned, k)
		}
	}
}

// warnDamaged logs a damaged object once per version.
func (m *Member) warnDamaged(key, version string, err error) {
	m.warnOnce(key, version, "ignoring a damaged fleet object (it counts as expired once unchanged for a lease ttl)", err)
}

// warnOnce logs msg about the object at key once per version.
func (m *Member) warnOnce(key, version, msg string, err error) {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	w, ok := m.warned[key]
	if !ok || w.version != version {
		m.log.Warn(msg, "object", key, "err", err)
	}
	m.warned[key] = warnState{version: version, looked: m.cfg.Now()}
}

// readMembers reads the fleet's member objects and returns the live
// members' ids, this one's included, sorted. Damaged objects are logged
// and skipped; those unchanged for a TTL, and members gone for 3 TTLs,
// are deleted.
func (m *Member) readMembers(ctx context.Context) ([]string, error) {
	now := m.cfg.Now()
	live := []string{m.cfg.Member}
	err := readAll(ctx, m.cfg.Store, MembersDir(m.cfg.Name), m.memberKey(), func(key string, data []byte, ver string, err error) {
		var rec MemberRecord
		if err == nil {
			rec, err = parseMember(data, m.cfg.Name, key)
		}
		if err != nil {
			m.warnDamaged(key, ver, err)
			if m.stale(key, ver, now) {
				m.cfg.Store.Delete(ctx, key) // damaged and abandoned: a failure leaves it to the next tick
			}
			return
		}
		if !rec.Left && rec.Expires.After(now) && !m.stale(key, ver, now) {
			live = append(live, rec.Member)
		} else if now.Sub(rec.Expires) > 3*m.cfg.TTL {
			m.cfg.Store.Delete(ctx, key) // long gone: keep the listing short
		}
	})
	if err != nil {
		return nil, fmt.Errorf("fleet members: %w", err)
	}
	sort.Strings(live)
	return live, nil
}

// Run keeps the heartbeat and the leases until ctx ends: every TTL/3 it
// beats, reads the members, renews the leases it holds, marks those that
// hash to another live member for handover, and takes those that hash to
// it. It returns an error only if the member id is taken by another live
// process.
func (m *Member) Run(ctx context.Context) error {
	every := m.cfg.TTL / 3
	for {
		next := time.Now().Add(every) // a slow tick shortens the wait, not the renewals
		if err := m.Tick(ctx); err != nil {
			if errors.Is(err, errIDInUse) {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("fleet tick failed; retrying at the next", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// Tick does one round of Run: the leases are renewed first, as the
// fences depend on them.
func (m *Member) Tick(ctx context.Context) error {
	m.mu.Lock()
	var renew []string
	for s := range m.held {
		renew = append(renew, s)
	}
	m.mu.Unlock()
	m.parallel(ctx, renew, m.renew)
	if err := m.beat(ctx); err != nil {
		return err
	}
	live, err := m.readMembers(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.live = live
	streams := m.streams
	listed := make(map[string]bool, len(streams))
	for _, s := range streams {
		listed[s] = true
	}
	var take []string
	for s, h := range m.held {
		if Owner(s, live) != m.cfg.Member || !listed[s] {
			h.handover = true
		}
	}
	for _, s := range streams {
		if _, ok := m.held[s]; !ok && Owner(s, live) == m.cfg.Member {
			take = append(take, s)
		}
	}
	m.mu.Unlock()
	m.parallel(ctx, take, m.take)
	m.forget(m.cfg.Now())
	return nil
}

// parallel runs fn on each stream, Config.Parallel at a time.
func (m *Member) parallel(ctx context.Context, streams []string, fn func(context.Context, string)) {
	sem := make(chan struct{}, m.cfg.Parallel)
	var wg sync.WaitGroup
	for _, s := range streams {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(ctx, s)
		}()
	}
	wg.Wait()
}

// Live is the live members as the last tick saw them.
func (m *Member) Live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.live)
}
