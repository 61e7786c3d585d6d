package spool

import (
	"context"
	"errors"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// The ingest side: Append writes records to the journal and fills the open
// batch, WaitDurable and SyncLoop commit the journal, and Seal, SealIfDue
// and a due Append hand the batch to the sealer (seal.go).

// Append assigns the next sequence numbers to recs (setting Seq, and Time
// when zero), writes them with cursor (nil: keep the previous cursor) as one
// journal entry, and hands the batch to the sealer whenever the flush
// policy says so (waiting for the seal before it, if that is still in
// flight). It blocks while the spool is over its limit (backpressure). It
// returns the journal position to pass to WaitDurable; under fsync
// "always" the records are already durable.
func (s *Spool) Append(ctx context.Context, recs []batch.Record, cursor []byte) (uint64, error) {
	for i := range recs {
		if err := recs[i].CheckSize(s.cfg.MaxRecordSize); err != nil {
			return 0, err
		}
		if err := batch.CheckTime(recs[i].Time); err != nil {
			return 0, err
		}
	}
	if err := s.waitRoom(ctx); err != nil {
		return 0, err
	}
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	now := s.cfg.Now()
	for i := range recs {
		recs[i].Seq = s.lastSeq + uint64(i) + 1
		if recs[i].Time.IsZero() {
			recs[i].Time = now
		}
	}
	callerCursor := cursor != nil
	if callerCursor {
		cursor = append([]byte(nil), cursor...)
	} else {
		cursor = s.cursor
	}
	// A replayable source's records go to the batch only: the source
	// gives them again from the cursor of the newest sealed segment
	// (SetReplayable). A held spool journals them all the same.
	journaled := !s.replayable || s.provisional
	if journaled {
		s.jbuf = appendEntry(s.jbuf[:0], recs, cursor)
		if err := s.writeJournal(s.jbuf); err != nil {
			return 0, err // ErrNoSpace: nothing accepted, the cursor unchanged
		}
	}
	s.cursor = cursor
	if s.cfg.Fsync == FsyncAlways {
		if err := s.syncLocked(); err != nil {
			return 0, err
		}
	}
	if s.provisional {
		// Held: nothing is sealed before Continue numbers the records.
		for i := range recs {
			s.lastSeq = recs[i].Seq
			s.stats.RecordsIn++
			s.stats.BytesIn += int64(recs[i].FramedSize())
			s.provBytes += int64(recs[i].FramedSize())
		}
		if err := s.queueCommitLocked(); err != nil {
			return 0, err
		}
		s.notify()
		return s.written, nil
	}
	for i := range recs {
		if s.builder.Records() == 0 {
			s.firstAt = now
		}
		if err := s.builder.Add(&recs[i]); err != nil {
			return 0, s.fail(err)
		}
		s.lastSeq = recs[i].Seq
		s.stats.RecordsIn++
		s.stats.BytesIn += int64(recs[i].FramedSize())
		if !journaled {
			continue // sealed after the whole entry, below
		}
		if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
			// Sealing mid-entry records this entry's cursor in the segment
			// (and so in state.json), which also covers the records after
			// the seal point: they are written to the new journal file, and
			// the sealer makes them durable before the segment, or a crash
			// would skip them.
			if err := s.handOff(why, cursor, recs[i+1:], callerCursor); err != nil {
				return 0, err
			}
		}
	}
	if !journaled && len(recs) > 0 {
		// Without a journal a segment ends only where an entry does: its
		// cursor must be where the source resumes after its last record,
		// and the source names one per entry, not per record.
		if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
			if err := s.handOff(why, cursor, nil, false); err != nil {
				return 0, err
			}
		}
	}
	if cap(s.jbuf) > 8<<20 {
		s.jbuf = nil // don't pin one huge entry's buffer
	}
	s.stats.LastSeq = s.lastSeq
	if s.cfg.Fsync == FsyncAlways && s.synced < s.written {
		if err := s.syncLocked(); err != nil { // a leftover a seal rewrote
			return 0, err
		}
	}
	if err := s.queueCommitLocked(); err != nil {
		return 0, err
	}
	s.notify()
	// The entry's end, or the leftover's new place: a waiter must cover it.
	return s.written, nil
}

// queueCommitLocked queues what the journal holds unsynced (the entry, a
// leftover a seal wrote again) for the Committer, if the spool has one:
// durable with the other spools' within its Interval. mu held.
func (s *Spool) queueCommitLocked() error {
	if s.commitFS == nil || s.commitQueued || s.written <= s.synced {
		return nil
	}
	if err := s.cfg.Committer.enqueue(s, false); err != nil {
		return s.fail(err)
	}
	return nil
}

// waitRoom blocks while the spool is over its limit.
func (s *Spool) waitRoom(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.usable() == nil && s.size() >= s.cfg.Limit {
		if s.retiringLocked() {
			// Confirmed segments wait for state.json: write it now.
			s.mu.Unlock()
			s.SaveState()
			s.mu.Lock()
			continue
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			return ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
	}
	return nil
}

// WaitDurable blocks until the journal is durable up to pos (as returned by
// Append) under the configured fsync mode. With fsync "off" it returns at
// once. With "batch" one fsync serves every waiter (group commit).
func (s *Spool) WaitDurable(ctx context.Context, pos uint64) error {
	return s.waitDurable(ctx, pos, true)
}

// waitDurable is WaitDurable. With preferSeal, a position that needs the
// journal file of the batch being sealed waits for the seal rather than
// fsync that file: the seal makes those records durable in far fewer bytes.
// The sealer itself must not wait for its own seal.
func (s *Spool) waitDurable(ctx context.Context, pos uint64, preferSeal bool) error {
	if s.cfg.Fsync == FsyncOff {
		return nil
	}
	s.mu.Lock()
	if s.replayable && !s.provisional && preferSeal {
		// No journal: a record is durable once it is in a sealed segment.
		s.mu.Unlock()
		return s.Seal("durable")
	}
	for {
		if s.fatal != nil {
			err := s.fatal
			s.mu.Unlock()
			return err
		}
		if s.synced >= pos {
			s.mu.Unlock()
			return nil
		}
		if s.closed {
			s.mu.Unlock()
			return errClosed
		}
		sealFirst := preferSeal && s.sealing != nil && s.sealing.old != nil && s.sealing.old.synced < s.sealing.old.end
		if s.commitFS != nil && !s.syncing && !sealFirst {
			// Committed with the other spools, at once.
			if err := s.cfg.Committer.enqueue(s, true); err != nil {
				s.fail(err)
				continue
			}
		} else if !s.syncing && !sealFirst {
			s.syncing = true
			target, todo := s.written, s.pendingSyncsLocked()
			s.mu.Unlock()
			n, err := s.syncJournals(todo)
			s.mu.Lock()
			s.syncing = false
			s.finishSyncsLocked(todo, n, err, target)
			s.notify()
			continue
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
		s.mu.Lock()
	}
}

// SyncLoop is the background committer for fsync "batch": it fsyncs the
// journal when something unsynced is there, at most once per
// CommitInterval, so sources that do not wait still become durable within
// that interval, while a seal (which makes its records durable in the
// segment) usually gets there first and the journal bytes never have to
// reach the disk. Appenders that wait (WaitDurable) are committed at once,
// sharing one fsync. It returns when ctx ends or the spool fails.
func (s *Spool) SyncLoop(ctx context.Context) error {
	if s.cfg.Fsync != FsyncBatch || s.commitFS != nil {
		// With a Committer, Append queues the journal for its commit.
		return s.StateLoop(ctx)
	}
	for {
		s.mu.Lock()
		ch, pending, fatal := s.changed, s.written > s.synced, s.fatal
		s.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if pending {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(s.cfg.CommitInterval):
			}
			s.mu.Lock()
			pos := s.written
			s.mu.Unlock()
			if err := s.WaitDurable(ctx, pos); err != nil {
				if ctx.Err() != nil || errors.Is(err, errClosed) {
					return nil
				}
				return err
			}
			continue
		}
		if !s.waitIdle(ctx, ch) {
			return nil
		}
	}
}

// Deadline is when the open batch must seal by age (zero if nothing is
// open or max_age is off).
func (s *Spool) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.builder.Records() == 0 {
		return time.Time{}
	}
	return s.cfg.Policy.Deadline(s.firstAt)
}

// SealIfDue hands the open batch to the sealer if the flush policy says so
// at now. It does not wait for the seal, only for one still in flight
// before it.
func (s *Spool) SealIfDue(now time.Time) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if due, why := s.cfg.Policy.Due(s.builder.Size(), s.builder.Records(), s.firstAt, now); due {
		return s.handOff(why, s.cursor, nil, false)
	}
	return nil
}

// Seal seals whatever is open (shutdown, EOF, schedules) and returns once
// every record appended before it is in a sealed segment listed by
// Pending, including a seal already in flight.
func (s *Spool) Seal(reason string) error {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if s.builder.Records() > 0 {
		if err := s.handOff(reason, s.cursor, nil, false); err != nil {
			return err
		}
	}
	return s.waitSealLocked()
}
