package shipper

import (
	"context"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// AckMode says when Append (and a source's AppendBatch) counts records as
// accepted.
type AckMode string

// Ack modes (config "ship.ack").
const (
	// AckLocal: durable in the local spool under the fsync mode.
	AckLocal AckMode = "local"
	// AckReceived: every target that takes part in acks (not Async) has
	// stored the segment holding the record durably.
	AckReceived AckMode = "received"
	// AckApplied: the receiver behind every such target has applied it.
	AckApplied AckMode = "applied"
)

// Watermarker is a target that learns the receiver's watermarks from the
// link itself (a tcp:// client): received is the newest seq durable on the
// receiving side, applied the newest seq its receiver applied; ok is false
// while the link has not told it yet.
type Watermarker interface {
	LinkWatermarks() (received, applied uint64, ok bool)
}

// WatermarkNotifier is a Watermarker that also says when its watermarks
// change: the channel is closed on the next change. The shipper then waits
// on it instead of polling while appenders wait for "applied".
type WatermarkNotifier interface {
	Watermarker
	WatermarksChanged() <-chan struct{}
}

// AppliedReader reads the applied watermark of a store target's receivers
// (the lowest over every registered receiver; ok is false while none has
// published one). The shipper uses it for ack "applied" on targets that are
// not Watermarkers; the default, readApplied, reads the receivers'
// watermark objects.
type AppliedReader func(ctx context.Context, st store.Store, stream string) (applied uint64, ok bool, err error)

// readApplied is the default AppliedReader: the lowest applied seq over
// the receivers registered for stream in st (catalog.ReadWatermarks).
func readApplied(ctx context.Context, st store.Store, stream string) (uint64, bool, error) {
	wms, err := catalog.ReadWatermarks(ctx, st, stream)
	if err != nil || len(wms) == 0 {
		return 0, false, err
	}
	lo := wms[0].AppliedSeq
	for _, w := range wms[1:] {
		lo = min(lo, w.AppliedSeq)
	}
	return lo, true, nil
}

// appliedPoll bounds how often applied watermarks are read: fast while an
// appender waits for them, slowly otherwise (status and lag only; store
// targets are not polled then, to keep requests down).
const (
	appliedPollBusy = 5 * time.Millisecond
	appliedPollIdle = time.Second
)

// maxLinger bounds how long the ack sealer waits for the appenders of
// the last round to append again (ackSealer).
const maxLinger = time.Millisecond

// ackPipeline is how many segments the ack sealer lets be on their way to
// the targets at once: while one is sent, the next gathers and seals. One:
// a second segment on its way splits the appenders of a round into smaller
// segments (339 of 3,345 held one record), and each costs the targets
// an fsync, so on a link whose round trip is short beside an fsync
// (measured: 64 appenders over loopback, alternating runs, 10-12k
// records/s at 1, 6.1k at 2) more is slower. Sealed segments are still
// pipelined to a tcp:// target (tcp.max_in_flight) when a backlog has
// them waiting.
const ackPipeline = 1

// ackChangedLocked wakes everything waiting on target watermarks. s.mu held.
func (s *Shipper) ackChangedLocked() {
	close(s.ackCh)
	s.ackCh = make(chan struct{})
}

// waiterArrivedLocked wakes the ack sealer and the watermark pollers: an
// appender started waiting. The appenders already waiting do not need it:
// waking all of them at each arrival cost 64 appenders about 64 wake-ups
// each per round. s.mu held.
func (s *Shipper) waiterArrivedLocked() {
	close(s.waitCh)
	s.waitCh = make(chan struct{})
}

// ackedLocked reports whether seq is acknowledged under the ack mode by
// every target that takes part in acks. s.mu held.
func (s *Shipper) ackedLocked(seq uint64) bool {
	for _, t := range s.cfg.Targets {
		if t.Async {
			continue
		}
		st := s.targets[t.Name]
		switch s.cfg.Ack {
		case AckApplied:
			if st.AppliedSeq < seq {
				return false
			}
		default:
			if st.SentSeq < seq {
				return false
			}
		}
	}
	return true
}

// waitAck blocks until seq is acknowledged under the ack mode (at once for
// "local"), Run fails, or ctx ends. While it waits, the ack sealer seals the
// open batch as soon as the targets are idle, so concurrent appenders share
// one segment and one round trip (group commit).
func (s *Shipper) waitAck(ctx context.Context, seq uint64) error {
	if s.cfg.Ack == AckLocal { // New makes "" local
		return nil
	}
	s.mu.Lock()
	s.waiters++
	s.waitSeqs[seq]++
	s.waiterArrivedLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters--
		if s.waitSeqs[seq]--; s.waitSeqs[seq] <= 0 {
			delete(s.waitSeqs, seq)
		}
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		ok, ch, err := s.ackedLocked(seq), s.ackCh, s.runErr
		s.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return fmt.Errorf("record %d not acknowledged (ack %q): %w", seq, s.cfg.Ack, err)
		}
		if err := s.spool.Err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-s.runFail:
		}
	}
}

// ackSealer seals the open batch when appenders wait for acks and every
// target taking part in acks has everything sealed so far: the records
// gathered while the previous segment was on its way go out together.
//
// Group commit lingers briefly, like PostgreSQL's commit_delay: when the
// targets acknowledge a segment, its appenders return and most append
// again at once. Sealing at the first of them would send a segment with a
// handful of records and leave the rest for the round after, halving
// throughput; so while fewer appenders wait in the open batch than the
// last ack seal carried, or than are waiting at all (some released by the
// last ack have not returned yet), it waits for them: until none has come
// for a quarter of the last round trip (at most maxLinger), and never more
// than 2*maxLinger in all. Each arrival extends the wait, so appenders
// that a loaded machine schedules late still share the segment.
func (s *Shipper) ackSealer(ctx context.Context) error {
	if s.cfg.Ack == AckLocal { // New makes "" local
		return nil
	}
	var (
		lastCarried int           // appenders the last ack seal carried
		sealedAt    time.Time     // when it was sealed
		round       time.Duration // how long the targets took to acknowledge it
		lingerUntil time.Time     // a linger in progress, or zero
		lingerFrom  time.Time     // when it began
		lingerOpen  int           // appenders in the open batch when it was last extended
	)
	for {
		s.mu.Lock()
		ach, wch, waiters := s.ackCh, s.waitCh, s.waiters
		var minSent uint64 = 1<<64 - 1
		for _, t := range s.cfg.Targets {
			if !t.Async {
				minSent = min(minSent, s.targets[t.Name].SentSeq)
			}
		}
		s.mu.Unlock()
		sch := s.spool.Changed()
		var linger <-chan time.Time
		idle := len(s.spool.Pending(minSent)) <= ackPipeline-1
		if idle && !sealedAt.IsZero() {
			round, sealedAt = time.Since(sealedAt), time.Time{}
		}
		if waiters > 0 && idle && s.spool.LastSeq() > minSent {
			open := s.openWaiters(minSent)
			// The round to gather: as many as the last seal carried, or
			// all that wait, counting the ones the last ack released
			// that have not returned yet: after one short seal (the
			// first round takes whoever came first), waiting only for
			// the last seal's count kept every round split in two.
			want := max(lastCarried, waiters)
			now := time.Now()
			if open < want {
				// Until none has come for gap, and 2*maxLinger at most.
				gap := min(round/4, maxLinger)
				switch {
				case lingerUntil.IsZero():
					lingerFrom, lingerUntil, lingerOpen = now, now.Add(gap), open
				case open > lingerOpen:
					lingerUntil, lingerOpen = now.Add(min(gap, lingerFrom.Add(2*maxLinger).Sub(now))), open
				}
			}
			if open < want && now.Before(lingerUntil) {
				linger = time.After(lingerUntil.Sub(now))
			} else {
				// Few sealed segments are on their way and records
				// wait in the open batch: seal them now, so the next
				// segment is ready when the target acknowledges the
				// one in flight.
				if err := s.spool.Seal("ack"); err != nil {
					return err
				}
				lastCarried, sealedAt, lingerUntil = open, time.Now(), time.Time{}
				if len(s.spool.Pending(minSent)) > 0 {
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ach:
		case <-wch:
		case <-sch:
		case <-linger:
		}
	}
}

// openWaiters counts the appenders waiting for records after seq (not
// sealed and sent yet). Only the ack sealer's decision to seal needs it,
// not every wake-up.
func (s *Shipper) openWaiters(seq uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	open := 0
	for ws, n := range s.waitSeqs {
		if ws > seq {
			open += n
		}
	}
	return open
}

// watermarkLoop keeps a target's received and applied seq current: from
// the link for a Watermarker, from the receivers' watermark objects for a
// store when ack "applied" needs them.
func (s *Shipper) watermarkLoop(ctx context.Context, t Target) error {
	wm, isWM := t.Store.(Watermarker)
	readStore := !isWM && s.cfg.Ack == AckApplied && !t.Async
	if !isWM && !readStore {
		return nil
	}
	notifier, _ := t.Store.(WatermarkNotifier)
	backoff := appliedPollBusy
	for {
		var received, applied uint64
		var ok bool
		var err error
		var moved <-chan struct{}
		if notifier != nil {
			moved = notifier.WatermarksChanged() // before reading: no change slips by
		}
		if isWM {
			received, applied, ok = wm.LinkWatermarks()
		} else {
			applied, ok, err = s.cfg.Applied(ctx, t.Store, s.cfg.Spool.Stream)
			if err != nil && ctx.Err() == nil {
				s.setTargetError(t.Name, fmt.Errorf("read applied watermark: %w", err))
			}
		}
		s.mu.Lock()
		st := s.targets[t.Name]
		changed := false
		if ok {
			st.AppliedKnown = true
		}
		if ok && applied > st.AppliedSeq {
			st.AppliedSeq, changed = applied, true
		}
		if received > st.ReceivedSeq {
			st.ReceivedSeq = received
		}
		if changed {
			s.pruneTimesLocked()
			s.ackChangedLocked()
		}
		busy := s.waiters > 0 && s.cfg.Ack == AckApplied
		wch := s.waitCh
		s.mu.Unlock()
		wait := appliedPollIdle
		var wake <-chan struct{}
		switch {
		case !busy:
			wake = wch // an appender starting to wait polls at once
		case moved != nil:
			// The link says when the watermarks move (below); the timer
			// is only a safety net.
		case readStore:
			// Objects in a store: back off while nothing moves.
			if changed {
				backoff = appliedPollBusy
			} else {
				backoff = min(backoff*2, 250*time.Millisecond)
			}
			wait = backoff
		default:
			wait = appliedPollBusy
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-wake:
			timer.Stop()
		case <-moved:
			timer.Stop()
		}
	}
}

// segTime remembers when the first record of a sent segment was written,
// for the age of the oldest record a target has not applied.
type segTime struct {
	first, last uint64
	at          time.Time
}

// noteSegmentLocked records a segment's seq range and first record time.
// s.mu held.
func (s *Shipper) noteSegmentLocked(data []byte) {
	m, _, err := batch.ParseMeta(data)
	if err != nil {
		return
	}
	if n := len(s.segTimes); n > 0 && s.segTimes[n-1].last >= m.FirstSeq {
		return // another target noted it already
	}
	s.segTimes = append(s.segTimes, segTime{first: m.FirstSeq, last: m.LastSeq, at: m.MinTime})
	if len(s.segTimes) > 100000 {
		s.segTimes = s.segTimes[len(s.segTimes)-100000:]
	}
}

// pruneTimesLocked drops segments every target has applied. s.mu held.
func (s *Shipper) pruneTimesLocked() {
	lo := uint64(1<<64 - 1)
	for _, st := range s.targets {
		if st.AppliedKnown {
			lo = min(lo, st.AppliedSeq)
		}
	}
	i := 0
	for i < len(s.segTimes) && s.segTimes[i].last <= lo {
		i++
	}
	s.segTimes = s.segTimes[i:]
}

// oldestUnappliedLocked is the time of the first record the target has not
// applied, if this process sent it. s.mu held.
func (s *Shipper) oldestUnappliedLocked(applied uint64) (time.Time, bool) {
	for _, st := range s.segTimes {
		if st.last > applied {
			return st.at, true
		}
	}
	return time.Time{}, false
}
