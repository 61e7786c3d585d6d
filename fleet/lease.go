package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/store"
)

func (m *Member) leaseKey(stream string) string { return LeasesDir(m.cfg.Name) + stream }

// take tries to take stream's lease: created if missing; taken over if
// released, expired by this host's clock, unchanged for a TTL (a dead or
// forged holder), damaged (or too large to be a lease) and unchanged for
// a TTL, or already this process's. A live lease of another member is
// left alone: that member hands it over when it sees the stream hash to
// this one.
func (m *Member) take(ctx context.Context, stream string) {
	key := m.leaseKey(stream)
	data, ver, err := m.cfg.Store.Load(ctx, key)
	now := m.cfg.Now().UTC()
	switch {
	case errors.Is(err, store.ErrNotFound):
		ver = ""
	case errors.Is(err, store.ErrPermanent) && data == nil && ver == "":
		// Too large to be a lease, from a store that cannot version it
		// without reading it whole: it stays until someone removes it.
		m.warnOnce(key, "", "a fleet lease object too large to be a lease: the stream is not applied until it is deleted", err)
		return
	case errors.Is(err, store.ErrPermanent) && data == nil:
		// Too large to be a lease: damaged, as one that does not parse.
		// Once unchanged for a TTL it is taken over by a Swap from its
		// version, which fails if anyone replaced it meanwhile (a valid
		// lease written since is never overwritten).
		m.warnDamaged(key, ver, err)
		if !m.stale(key, ver, now) {
			return
		}
	case err != nil:
		m.log.Warn("read fleet lease", "stream", stream, "err", err)
		return
	default:
		old, perr := parseLease(data, m.cfg.Name, key)
		switch {
		case perr != nil:
			m.warnDamaged(key, ver, perr)
			if !m.stale(key, ver, now) {
				return
			}
		case old.Token == m.me.Token && !old.Released && now.Before(old.Renewed.Add(m.cfg.TTL-m.cfg.TTL/3)):
			// Ours already (a Swap whose answer was lost): adopt it, as
			// renewed when it was written (by this host's clock), so the
			// fence keeps its margin. One of ours that is released or
			// past the fence (a Release whose Swap failed) another member
			// may be taking now: it is taken again by Swap, below.
			m.mu.Lock()
			m.held[stream] = &held{rec: old, version: ver, renewedAt: old.Renewed}
			m.mu.Unlock()
			return
		case old.Token == m.me.Token:
		case !old.Released && old.Expires.After(now) && !m.stale(key, ver, now):
			return // live, another member's
		}
	}
	rec := LeaseRecord{Version: Version, Fleet: m.cfg.Name, Stream: stream, Member: m.cfg.Member, Token: m.me.Token,
		Acquired: now, Renewed: now, Expires: now.Add(m.cfg.TTL)}
	v, err := m.swap(ctx, key, rec, ver)
	if err != nil {
		if !errors.Is(err, store.ErrChanged) {
			m.log.Warn("take fleet lease", "stream", stream, "err", err)
		}
		return // another member was faster, or the store failed: next tick
	}
	m.mu.Lock()
	m.held[stream] = &held{rec: rec, version: v, renewedAt: now}
	m.mu.Unlock()
	m.log.Info("took stream", "stream", stream)
}

// swap writes rec by Swap from version old.
func (m *Member) swap(ctx context.Context, key string, rec LeaseRecord, old string) (string, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	return m.cfg.Store.Swap(ctx, key, data, old)
}

// swapHeld writes rec, the next state of a lease this member holds, by
// Swap from version old. A lease changed meanwhile that is still this
// member's and not released (an earlier Swap of ours landed, its answer
// lost) is written again from its version, so the store holds rec and
// its times; any other change is store.ErrChanged: the lease is lost. (A
// retry of this very Swap that finds it landed succeeds in Swap itself.)
func (m *Member) swapHeld(ctx context.Context, key string, rec LeaseRecord, old string) (string, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	return store.SwapOwn(ctx, m.cfg.Store, key, data, old, func(cur []byte) bool {
		l, perr := parseLease(cur, m.cfg.Name, key)
		return perr == nil && l.Token == rec.Token && !l.Released
	})
}

// renew extends a held lease by a TTL. One found changed by someone else
// is lost: Fence refuses it from then on.
func (m *Member) renew(ctx context.Context, stream string) {
	m.mu.Lock()
	h := m.held[stream]
	m.mu.Unlock()
	if h == nil {
		return
	}
	h.swap.Lock()
	defer h.swap.Unlock()
	m.mu.Lock()
	if h.lost || m.held[stream] != h {
		m.mu.Unlock()
		return // lost, or released meanwhile
	}
	rec, ver := h.rec, h.version
	m.mu.Unlock()
	now := m.cfg.Now().UTC()
	rec.Renewals++
	rec.Renewed, rec.Expires = now, now.Add(m.cfg.TTL)
	v, err := m.swapHeld(ctx, m.leaseKey(stream), rec, ver)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		h.rec, h.version, h.renewedAt = rec, v, now
	case errors.Is(err, store.ErrChanged):
		h.lost = true
		m.log.Warn("lost the lease of a stream: another member took it", "stream", stream)
	default:
		m.log.Warn("renew fleet lease failed; the stream stops applying if it cannot be renewed in time", "stream", stream, "err", err)
	}
}

// Fence returns the check a stream's receiver makes before each apply
// and checkpoint (receiver.Config.Fence): the lease is still this
// member's, not lost, and renewed recently enough that no other member
// can have taken it by its clock: within TTL − TTL/3 of the last renewal
// by this host's clock, leaving TTL/3 for clock skew and pauses.
func (m *Member) Fence(stream string) func() error {
	return func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		h := m.held[stream]
		switch {
		case h == nil || h.lost:
			return fmt.Errorf("fleet %s stream %s: %w", m.cfg.Name, stream, ErrLeaseLost)
		case m.cfg.Now().After(h.renewedAt.Add(m.cfg.TTL - m.cfg.TTL/3)):
			return fmt.Errorf("fleet %s stream %s: not renewed since %s: %w", m.cfg.Name, stream, h.renewedAt.Format(time.RFC3339), ErrLeaseLost)
		}
		return nil
	}
}

// Claim records the streams there are (those a receiver of the fleet
// would apply) and returns those this member may apply now: held, not
// lost, not to be handed over. A stream held and no longer returned must
// be stopped, then Released; one to be handed over that is not running
// (its receiver would not open yet) is released here.
func (m *Member) Claim(ctx context.Context, streams, running []string) []string {
	isRunning := make(map[string]bool, len(running))
	for _, s := range running {
		isRunning[s] = true
	}
	m.mu.Lock()
	m.streams = streams
	var idle []string
	for s, h := range m.held {
		switch {
		case h.lost:
			delete(m.held, s) // taken by another: a later tick may take it again
		case h.handover && !isRunning[s]:
			idle = append(idle, s)
		}
	}
	var mine []string
	for _, s := range streams {
		if h := m.held[s]; h != nil && !h.lost && !h.handover {
			mine = append(mine, s)
		}
	}
	m.mu.Unlock()
	for _, s := range idle {
		m.Release(ctx, s)
	}
	return mine
}

// Release gives stream's lease up: its receiver has stopped, with what it
// applied checkpointed. The next owner takes it at once.
func (m *Member) Release(ctx context.Context, stream string) {
	m.mu.Lock()
	h := m.held[stream]
	delete(m.held, stream)
	m.mu.Unlock()
	if h == nil {
		return
	}
	h.swap.Lock()
	defer h.swap.Unlock()
	m.mu.Lock()
	lost := h.lost
	m.mu.Unlock()
	if lost {
		return
	}
	rec := h.rec
	rec.Renewals++
	rec.Released, rec.Expires = true, m.cfg.Now().UTC()
	m.mu.Lock()
	ver := h.version
	m.mu.Unlock()
	if _, err := m.swapHeld(ctx, m.leaseKey(stream), rec, ver); err != nil {
		m.log.Warn("release fleet lease (it expires by itself)", "stream", stream, "err", err)
		return
	}
	m.log.Info("released stream", "stream", stream)
}

// Leave releases every lease still held and marks the member gone, so
// the others take its streams without waiting for the TTL. The receivers
// must have stopped.
func (m *Member) Leave(ctx context.Context) {
	m.mu.Lock()
	var streams []string
	for s := range m.held {
		streams = append(streams, s)
	}
	m.mu.Unlock()
	m.parallel(ctx, streams, m.Release)
	m.mu.Lock()
	m.me.Left = true
	m.mu.Unlock()
	if err := m.beat(ctx); err != nil {
		m.log.Warn("fleet: could not mark this member gone (it expires by itself)", "err", err)
	}
}
