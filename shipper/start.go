package shipper

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Before it sends anything, a shipper reads the stream's history, picks
// its generation and takes the writer leases (prepare), and a fresh spool
// learns where the stream stands (continueStream). New tries it once, so
// a fenced or second shipper is refused at once. If a target does not
// answer (a bucket or a receiver down at boot), New does not wait: the
// spool takes records while Run's guard prepares, waiting out the errors
// under the retry policy, and nothing is sent until it has (ready). A
// fresh spool is Held meanwhile: its records get their seqs once the
// stream's newest is known (spool.Hold). A permanent error, a fence or a
// live lease of another shipper fails New, or Run once the target
// answers.

// storeDown is the error of a store operation tried once (prepare without
// waiting) that failed in a way a retry might fix.
type storeDown struct{ err error }

func (e *storeDown) Error() string { return e.err.Error() }
func (e *storeDown) Unwrap() error { return e.err }

// try runs the store operation op on st: under the retry policy if wait
// is set, else once, a retryable failure then being a *storeDown. While
// the shipper is not ready, a failure is what Unreachable reports.
func (s *Shipper) try(ctx context.Context, wait bool, st store.Store, op string, fn func(context.Context) error) error {
	noted := func(ctx context.Context) error {
		err := fn(ctx)
		s.noteStart(st, err)
		return err
	}
	if wait {
		return store.Retry(ctx, s.retry, s.log.With("store", st.String()), op, noted)
	}
	err := noted(ctx)
	if store.IsRetryable(err) && !s.retry.Stop(err) && ctx.Err() == nil {
		return &storeDown{err}
	}
	return err
}

// noteStart records the outcome of a store operation of the start-up:
// a retryable failure as the target's last error and what Unreachable
// reports, a success as the stores answering.
func (s *Shipper) noteStart(st store.Store, err error) {
	if s.isReady() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.startErr = ""
		return
	}
	if !store.IsRetryable(err) || s.retry.Stop(err) {
		return
	}
	s.startErr = fmt.Sprintf("%s: %v", st, err)
	for _, t := range s.cfg.Targets {
		if t.Store == st {
			s.targets[t.Name].LastError = err.Error()
			s.targets[t.Name].Failures++
		}
	}
}

// isReady reports whether the start-up work is done (ready is closed).
func (s *Shipper) isReady() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Unreachable is non-nil while the shipper cannot send because a target
// it must consult before sending does not answer: it waits for the
// target to say where the stream stands (its history, the writer lease,
// the newest segment). The spool takes records meanwhile.
func (s *Shipper) Unreachable() error {
	if s.isReady() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.startErr == "" {
		return nil
	}
	return fmt.Errorf("target unreachable: %s", s.startErr)
}

// waitPlaced waits while the spool is held (its records have no seqs
// yet): appenders that use a record's seq (the dir source's baselines,
// pushes, acks) wait for the stream's place.
func (s *Shipper) waitPlaced(ctx context.Context) error {
	for {
		ch := s.spool.Changed()
		if !s.spool.Held() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// start is New's work on the stores.
func (s *Shipper) start(ctx context.Context) error {
	fresh := s.spool.Fresh()
	gen, hist, err := s.prepare(ctx, false)
	if err == nil && fresh {
		err = s.continueStream(ctx, gen, hist, false)
	}
	if err == nil {
		err = s.planBackfill(ctx)
	}
	var down *storeDown
	switch {
	case err == nil:
		close(s.ready)
		return nil
	case errors.As(err, &down):
	default:
		return err
	}
	if fresh {
		if err := s.spool.Hold(); err != nil {
			return err
		}
	}
	s.log.Warn("a target did not answer: the spool takes records, and nothing is sent until the target says where the stream stands (history, writer lease, newest segment)",
		"stream", s.cfg.Spool.Stream, "err", err)
	s.deferred = true
	return nil
}

// prepare reads the history, picks the generation (refusing a fenced one)
// and takes the writer leases, waiting out transient store errors if wait
// is set.
func (s *Shipper) prepare(ctx context.Context, wait bool) (gen uint32, hist batch.History, err error) {
	s.hist, s.leases = nil, nil
	hist, err = s.loadHistory(ctx, wait)
	if err != nil {
		return 0, hist, err
	}
	if gen, err = s.pickGeneration(hist); err != nil {
		return 0, hist, err
	}
	s.mu.Lock()
	s.history = hist
	s.mu.Unlock()
	return gen, hist, s.acquireLeases(ctx, wait, gen, hist)
}

// guard runs beside the senders: it prepares the shipper if New could not
// reach the targets, then keeps the writer leases renewed and watches the
// history, until ctx ends or one of them halts the shipper.
func (s *Shipper) guard(ctx context.Context) error {
	if s.deferred {
		gen, hist, err := s.prepare(ctx, true)
		if err == nil && s.spool.Fresh() {
			err = s.continueStream(ctx, gen, hist, true)
		}
		if err == nil {
			err = s.planBackfill(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.deferred = false
		s.log.Info("the targets answered: history read, writer lease taken; sending", "stream", s.cfg.Spool.Stream)
		close(s.ready)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(s.leases) + len(s.hist)
	errc := make(chan error, n)
	for _, l := range s.leases {
		go func() { errc <- s.leaseLoop(ctx, l) }()
	}
	for _, ht := range s.hist {
		go func() { errc <- s.watchHistory(ctx, ht, s.watchEvery()) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}
