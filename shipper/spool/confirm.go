package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// The sending side: senders read sealed segments (Pending, ReadSealed)
// and Confirm what each target holds; segments every target holds leave
// the spool once state.json covers them (SaveState, StateLoop).

// Pending lists the sealed segments with LastSeq > after, oldest first.
func (s *Spool) Pending(after uint64) []SealedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingLocked(after)
}

// pendingLocked is Pending with mu held.
func (s *Spool) pendingLocked(after uint64) []SealedSegment {
	return append([]SealedSegment(nil), s.sealed[s.afterLocked(after):]...)
}

// afterLocked is the index of the first sealed segment with records after
// seq. mu held.
func (s *Spool) afterLocked(seq uint64) int {
	return sort.Search(len(s.sealed), func(i int) bool { return s.sealed[i].LastSeq > seq })
}

// Unconfirmed returns the sealed segments some target has not confirmed
// (Pending lists the confirmed ones state.json does not cover yet too).
func (s *Spool) Unconfirmed() []SealedSegment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pendingLocked(s.confirmedLocked())
}

// ReadSealed returns the bytes of a sealed segment, read from its file
// (or its bundle) into a new slice.
func (s *Spool) ReadSealed(name string) ([]byte, error) {
	s.mu.Lock()
	part, isPart := s.partLocked(name)
	s.mu.Unlock()
	if isPart {
		return readPart(part.Bundle, part.Offset, part.Size)
	}
	return fsutil.ReadFileBounced(s.path("sealed", name))
}

// ReadSealedInto is ReadSealed reading a segment file into buf when it
// fits (fsutil.ReadFileInto), for a caller that keeps buf from segment to
// segment; the result aliases buf then, and the caller must not reuse
// buf while it uses the result. A bundle part is read as ReadSealed reads
// it. Either way the result is the caller's alone.
func (s *Spool) ReadSealedInto(name string, buf []byte) ([]byte, error) {
	s.mu.Lock()
	_, isPart := s.partLocked(name)
	s.mu.Unlock()
	if isPart {
		return s.ReadSealed(name)
	}
	return fsutil.ReadFileInto(s.path("sealed", name), buf)
}

// Confirm records that target holds every segment up to lastSeq. Segments
// every target holds leave the spool once state.json covers them; it is
// rewritten for that at most every StateEvery (and by Close), in the
// background when the spool has a Committer (Close waits for it).
func (s *Spool) Confirm(target string, lastSeq uint64) {
	s.mu.Lock()
	if lastSeq > s.confirmed[target] {
		s.confirmed[target] = lastSeq
		s.notify() // Drain counts what is confirmed
	}
	gone := s.retireLocked()
	due := s.retiringLocked() && time.Since(s.stateAt) >= s.cfg.StateEvery && !s.stateSaving
	// With a Committer the save waits for two of its group syncs (up to
	// two of its intervals): the caller, a sender, goes on meanwhile.
	background := due && s.cfg.Committer != nil
	if background {
		s.stateSaving = true // the goroutine below clears it
	}
	s.mu.Unlock()
	s.removeRetired(gone)
	switch {
	case background:
		s.retiring.Go(func() {
			s.SaveState()
			s.mu.Lock()
			s.stateSaving = false
			s.mu.Unlock()
		})
	case due:
		s.SaveState()
	}
}

// confirmedLocked is the seq through which every target holds the
// stream: the spool may let go of segments up to it. mu held.
func (s *Spool) confirmedLocked() uint64 {
	if len(s.confirmed) == 0 {
		return 0 // no target: nothing may go
	}
	low := uint64(1<<64 - 1)
	for _, c := range s.confirmed {
		low = min(low, c)
	}
	return low
}

// retiringLocked reports whether confirmed segments wait for state.json
// to cover them. mu held.
func (s *Spool) retiringLocked() bool {
	return len(s.sealed) > 0 && s.sealed[0].LastSeq <= s.confirmedLocked() && s.sealed[0].LastSeq > s.stateSealed
}

// retireLocked takes the segments every target confirmed and state.json
// covers out of the spool and returns their files, which the caller
// removes with removeRetired once mu is released: a second's worth of
// unlinks under mu stalled appends and seals by tens of milliseconds.
// mu held.
func (s *Spool) retireLocked() []string {
	low := min(s.confirmedLocked(), s.stateSealed)
	n := 0
	var gone []string
	for n < len(s.sealed) && s.sealed[n].LastSeq <= low {
		if !s.sealed[n].IsPart() { // its bundle file is the Bundler's
			gone = append(gone, s.path("sealed", s.sealed[n].Name))
		}
		s.sealedBytes -= s.sealed[n].Size
		n++
	}
	if n > 0 {
		s.sealed = append(s.sealed[:0], s.sealed[n:]...)
		s.notify()
	}
	return gone
}

// removeRetired deletes the files of retired segments in the background,
// one every retirePace, and Close waits for them. A state.json save retires
// a second's worth of segments at once, and deleting them back to back on
// the sender's goroutine stalled sending by 30-80 ms a second (measured at
// 140 segments/s: 0.2 ms per unlink, more where the file system discards
// freed blocks at each journal commit, which then also delays every fsync
// behind it). Spread out, each commit frees a few files.
//
// One that cannot be deleted is only logged, as before: every target has
// it, so the next start, which finds it in sealed/, sends it again (an
// identical copy each target accepts) and retires it then.
func (s *Spool) removeRetired(paths []string) {
	if len(paths) <= retireInline {
		s.remove(paths) // beside a background batch, if any: never wait for it
		return
	}
	s.retiring.Go(func() {
		s.retireMu.Lock()
		defer s.retireMu.Unlock()
		for i := range paths {
			if i > 0 {
				time.Sleep(retirePace)
			}
			s.remove(paths[i : i+1])
		}
	})
}

// remove deletes retired segment files, logging the ones it cannot.
func (s *Spool) remove(paths []string) {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("cannot remove confirmed segment from spool", "segment", filepath.Base(p), "err", err)
		}
	}
}

// retirePace spaces the deletions of retired segments (removeRetired);
// up to retireInline of them are deleted at once by the caller (one
// Confirm after state.json covers its segment).
const retirePace = time.Millisecond

const retireInline = 4

// SaveState writes state.json for the newest sealed segment, then lets
// the confirmed segments it covers go. An fsync failure fails the spool
// (Err). Confirm and the loops call it at most every StateEvery; a caller
// that wants the confirmed segments gone now (a drained shutdown) calls it.
func (s *Spool) SaveState() {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.mu.Lock()
	if s.fatal != nil || s.state.SealedSeq <= s.stateSealed {
		s.mu.Unlock()
		return
	}
	st := s.state // of a durable segment: commitLocked sets it
	s.mu.Unlock()
	err := s.replaceState(st, true) // with a Committer: through its group syncs
	s.mu.Lock()
	s.stateAt = time.Now()
	if err != nil {
		s.fail(fmt.Errorf("write state.json: %w", err))
		s.mu.Unlock()
		return
	}
	s.stateSealed = max(s.stateSealed, st.SealedSeq)
	gone := s.retireLocked()
	s.mu.Unlock()
	s.removeRetired(gone)
}

// StateLoop is SyncLoop without the journal commits (fsync "always" and
// "off", or appends that wait for targets' acks): it only lets confirmed
// segments go. It returns when ctx ends or the spool fails.
func (s *Spool) StateLoop(ctx context.Context) error {
	for {
		s.mu.Lock()
		ch, fatal := s.changed, s.fatal
		s.mu.Unlock()
		if fatal != nil {
			return fatal
		}
		if !s.waitIdle(ctx, ch) {
			return nil
		}
	}
}

// waitIdle waits for ch (the next change) or ctx; meanwhile confirmed
// segments waiting for state.json go within StateEvery even if no further
// Confirm comes. It returns false when ctx ended.
func (s *Spool) waitIdle(ctx context.Context, ch <-chan struct{}) bool {
	var save <-chan time.Time
	s.mu.Lock()
	if s.retiringLocked() {
		save = time.After(max(s.cfg.StateEvery-time.Since(s.stateAt), 0))
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return false
	case <-ch:
	case <-save:
		s.SaveState()
	}
	return true
}

// Base returns where the spool's segments continue the stream: the seq
// before its oldest sealed segment and the hash that segment chains to,
// or, with none, the newest sealed seq and its segment's hash (0 and
// batch.ZeroHash for a new stream). A target must hold the stream
// through Base for the spool's segments to continue it there: what came
// before has left the spool.
func (s *Spool) Base() (seq uint64, hash string, err error) {
	s.mu.Lock()
	if len(s.sealed) == 0 {
		seq, hash = s.state.SealedSeq, s.state.LastHash
		s.mu.Unlock()
		return seq, hash, nil
	}
	oldest := s.sealed[0]
	s.mu.Unlock()
	data, err := s.ReadSealed(oldest.Name)
	if err != nil {
		return 0, "", fmt.Errorf("read sealed/%s: %w", oldest.Name, err)
	}
	m, _, err := batch.ParseMeta(data)
	if err != nil {
		return 0, "", fmt.Errorf("sealed/%s: %w", oldest.Name, err)
	}
	return oldest.FirstSeq - 1, m.PrevSHA256, nil
}
