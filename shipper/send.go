package shipper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
)

// One sender per target (send) takes the spool's sealed segments to it in
// order; deliver makes sure the target has each one, retrying.

// inflight is a segment sent to a pipelining target and not yet answered.
type inflight struct {
	seg     spool.SealedSegment
	key     string
	data    []byte
	started time.Time
	wait    func() error
}

// send delivers the spool's segments to t in order, for as long as Run
// runs. A target that can pipeline (store.Pipeliner, such as a tcp://
// link) gets up to its MaxInFlight segments before the first is answered;
// any other gets one Put at a time. Either way each segment is confirmed
// in order, and a failed one is retried before anything after it counts.
func (s *Shipper) send(ctx context.Context, t Target) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	if err := s.prepareTarget(ctx, t); err != nil || ctx.Err() != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var cursor uint64 // last seq t has durably
	pace := s.newPacer(t)
	pipe, _ := t.Store.(store.Pipeliner)
	window := 1
	if pipe != nil {
		window = max(pipe.MaxInFlight(), 1)
	}
	var queue []inflight // sent, answers outstanding, oldest first
	// Segments are read into buffers kept from one segment to the next:
	// a fresh 2-3 MB slice per segment cost the garbage collector and
	// the kernel's first touch of its pages on every send. A buffer
	// comes back here once its segment is delivered, never while a Put
	// or an answer may still read it.
	var spare [][]byte
	defer func() {
		for _, f := range queue {
			if f.wait != nil {
				f.wait() // ctx is done: these return at once
			}
		}
	}()
	for {
		ch := s.spool.Changed()
		partsPut, partCh := s.partState(t.Name)
		if err := s.spool.Err(); err != nil {
			return err
		}
		sentTo := cursor
		if len(queue) > 0 {
			sentTo = queue[len(queue)-1].seg.LastSeq
		}
		checked := false
		for _, seg := range s.spool.Pending(sentTo) {
			if len(queue) >= window {
				break
			}
			if seg.IsPart() {
				// Its bundle is the Bundler's to put: once it is in t,
				// the part is confirmed here, in order.
				if len(queue) > 0 || partsPut < seg.LastSeq {
					break
				}
				cursor = seg.LastSeq
				s.mu.Lock()
				st := s.targets[t.Name]
				st.SentSeq, st.LastError, st.LastSent = cursor, "", time.Now()
				st.Segments++
				st.BytesSent += seg.Size
				s.ackChangedLocked()
				s.mu.Unlock()
				if s.cfg.OnSent != nil {
					s.cfg.OnSent(t.Name, int(seg.Size), 0) // its put was the bundle's
				}
				s.spool.Confirm(t.Name, cursor)
				continue
			}
			// Outside the sending windows segments wait in the spool; a
			// window closing lets the segments being sent finish. A
			// window's bandwidth cap paces them (pace.go).
			if len(queue) == 0 && !pace.wait(ctx, seg.Size) {
				return nil
			}
			if len(queue) > 0 && !pace.ready() {
				break // the queue's answers come first
			}
			if !checked {
				// Once per round: the stream may have been promoted away.
				if err := s.checkFence(ctx, t); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				checked = true
			}
			var buf []byte
			if n := len(spare); n > 0 {
				buf, spare = spare[n-1], spare[:n-1]
			}
			data, err := s.spool.ReadSealedInto(seg.Name, buf)
			if err != nil {
				return fmt.Errorf("read sealed/%s from spool: %w", seg.Name, err)
			}
			f := inflight{seg: seg, key: batch.SegmentKey(s.cfg.Spool.Stream, seg.Name), data: data, started: time.Now()}
			if err := s.haltErr(); err != nil {
				return err
			}
			if pipe != nil {
				f.wait = pipe.PutAsync(ctx, f.key, data)
			}
			queue = append(queue, f)
		}
		if len(queue) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-ch:
			case <-partCh:
			}
			continue
		}
		head := queue[0]
		err := s.deliver(ctx, t, head, func() {
			// The head failed: the ones behind it were sent on a link
			// that must resend from the head, so their answers no longer
			// count.
			for _, f := range queue[1:] {
				f.wait()
			}
			queue = queue[:1]
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		queue[0] = inflight{}
		queue = queue[1:]
		cursor = head.seg.LastSeq
		// Status first: once Confirm empties the spool, Drain returns
		// and the caller reads the status for its summary.
		s.mu.Lock()
		st := s.targets[t.Name]
		st.SentSeq, st.LastError, st.LastSent = cursor, "", time.Now()
		st.Segments++
		st.BytesSent += int64(len(head.data))
		s.noteSegmentLocked(head.data)
		s.ackChangedLocked()
		s.mu.Unlock()
		if s.cfg.OnSent != nil {
			s.cfg.OnSent(t.Name, len(head.data), time.Since(head.started))
		}
		s.spool.Confirm(t.Name, cursor)
		if len(spare) < keepSendBuffers {
			spare = append(spare, head.data[:0])
		}
	}
}

// keepSendBuffers is how many read buffers a target's sender keeps
// between segments: one for a target that takes a Put at a time, and a
// spare while a link pipelines.
const keepSendBuffers = 2

// deliver makes sure t has f durably: it waits for f's answer if f was
// started (f.wait), and otherwise, or if that failed, Puts it with retries
// under the retry policy. abandon runs once before the first retry. No
// Put starts once the shipper is halted, nor while t's writer lease may
// have expired.
func (s *Shipper) deliver(ctx context.Context, t Target, f inflight, abandon func()) error {
	first := f.wait
	l := s.leaseOf(t)
	err := store.Retry(ctx, s.retry, s.log.With("store", t.Store.String()), "put "+f.key, func(ctx context.Context) error {
		var err error
		if first != nil {
			err, first = first(), nil
		} else {
			if abandon != nil {
				abandon()
				abandon = nil
			}
			if err := s.haltErr(); err != nil {
				return err
			}
			if l != nil {
				if err := l.ensure(ctx); err != nil {
					if !isHalt(err) {
						s.setTargetError(t.Name, err)
					}
					return err
				}
			}
			err = t.Store.Put(ctx, f.key, f.data)
		}
		if err != nil && !isHalt(err) {
			s.setTargetError(t.Name, err)
		}
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	switch {
	case errors.Is(err, batch.ErrFenced):
		// From a link, whose receiver knows the newer generation.
		return s.halt(fmt.Errorf("target %s: %w", t.Name, err))
	case isHalt(err):
		return s.halt(err)
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("target %s: %s: another writer ships stream %q (split brain?); stopping: %w",
			t.Name, s.describeConflict(ctx, t, f), s.cfg.Spool.Stream, err)
	case err != nil:
		return fmt.Errorf("target %s: put %s: %w", t.Name, f.key, err)
	}
	return nil
}

// describeConflict says what kind of conflict refused f: another segment
// under the same name, or (the name being free) a stored segment of the
// same generation whose seqs overlap f's, which the store's error names.
// It reads the name once, on this fatal path only.
func (s *Shipper) describeConflict(ctx context.Context, t Target, f inflight) string {
	if !store.IsSegmentsOnly(t.Store) {
		rc, err := t.Store.Get(ctx, f.key)
		if err == nil {
			rc.Close()
			return fmt.Sprintf("segment %s exists there with different content", f.key)
		}
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Sprintf("segment %s (seq %d..%d) overlaps a different segment stored there", f.key, f.seg.FirstSeq, f.seg.LastSeq)
		}
	}
	return fmt.Sprintf("segment %s was refused as a conflict", f.key)
}

func (s *Shipper) setTargetError(name string, err error) {
	s.mu.Lock()
	s.targets[name].LastError = err.Error()
	s.targets[name].Failures++
	s.mu.Unlock()
}
