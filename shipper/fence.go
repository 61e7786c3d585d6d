package shipper

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// A shipper is fenced when its generation is no longer the stream's
// newest: a DR site was promoted, and this site must ship nothing more
// (docs/FENCING.md). It finds out
//
//   - at New, from the history it loads (history.go);
//   - before every send round to a target that holds the history: one
//     LIST of <stream>/generations/ (a GET only for a record created
//     since the last look);
//   - while idle, from watchHistory, at the lease's renewal pace;
//   - from a tcp:// link, whose receiver refuses the segments of a fenced
//     generation with an error wrapping batch.ErrFenced.
//
// Whichever comes first halts the shipper: no segment is Put to any
// target after it, and Run returns the error. Losing a writer lease
// (lease.go) halts it the same way. The spool keeps what was not sent.

// halt records err as the reason the shipper stopped sending, unless one
// is recorded already, and returns the recorded one.
func (s *Shipper) halt(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.halted == nil {
		s.halted = err
		s.log.Error("stopped sending", "stream", s.cfg.Spool.Stream, "err", err)
	}
	return s.halted
}

// haltErr is the reason the shipper stopped sending, nil while it may send.
func (s *Shipper) haltErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halted
}

// isHalt reports whether err stops the shipper rather than being retried.
func isHalt(err error) bool {
	return errors.Is(err, batch.ErrFenced) || errors.Is(err, ErrLeaseLost) || errors.Is(err, batch.ErrUnknownGeneration)
}

// histTargetOf returns the history reader of target t, nil if t holds no
// history (a segments-only link, or no history was loaded).
func (s *Shipper) histTargetOf(t Target) *histTarget {
	for _, ht := range s.hist {
		if ht.t.Name == t.Name {
			return ht
		}
	}
	return nil
}

// checkFence is the check before a send round to t: it fails if the
// shipper is halted, and, if t holds the history, reads it again (waiting
// out transient errors) and halts if it fences the spool's generation.
func (s *Shipper) checkFence(ctx context.Context, t Target) error {
	if err := s.haltErr(); err != nil {
		return err
	}
	ht := s.histTargetOf(t)
	if ht == nil {
		return nil
	}
	return store.Retry(ctx, s.retry, s.log.With("store", t.Store.String()), "list "+batch.GenerationDir(s.cfg.Spool.Stream), func(ctx context.Context) error {
		err := s.readFence(ctx, ht)
		if err != nil && !isHalt(err) {
			s.setTargetError(t.Name, err)
		}
		return err
	})
}

// readFence reads ht's history once and halts the shipper if it fences
// the spool's generation (or has lost its record).
func (s *Shipper) readFence(ctx context.Context, ht *histTarget) error {
	h, err := ht.h.Read(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	ht.checked = time.Now()
	s.mu.Unlock()
	if err := h.Fenced(s.Generation()); err != nil {
		return s.halt(err)
	}
	return nil
}

// watchHistory looks at ht's history every interval in which no send
// round did, so a shipper with nothing to send still learns that it was
// fenced, stops, and gives up its writer lease to the promoted site.
// Errors are logged and the next look tries again; a halt ends it.
func (s *Shipper) watchHistory(ctx context.Context, ht *histTarget, every time.Duration) error {
	log := s.log.With("store", ht.t.Store.String())
	var lastLog time.Time
	for {
		s.mu.Lock()
		wait := every - time.Since(ht.checked)
		s.mu.Unlock()
		if wait <= 0 {
			err := s.readFence(ctx, ht)
			switch {
			case ctx.Err() != nil:
				return nil
			case isHalt(err):
				return err
			case err != nil && time.Since(lastLog) >= retryLogEvery:
				lastLog = time.Now()
				log.LogAttrs(ctx, slog.LevelWarn, "read the stream's generation history", slog.Any("err", err))
			}
			wait = every
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// retryLogEvery bounds how often background loops log a repeated error.
const retryLogEvery = 30 * time.Second
