package shipper

import (
	"context"
	"errors"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Before it sends anything, a shipper reads the stream's history, picks
// its generation and takes the writer leases (prepare). New does it, so a
// fenced or second shipper is refused at once. A fresh spool must also
// learn where the stream stands before it numbers a record, so New waits
// out transient store errors. A spool that knows its stream need not: if
// a target does not answer (a bucket down at boot), New lets the spool
// take records while Run prepares, waiting out the errors, and nothing is
// sent until it has (ready). A permanent error, a fence or a live lease
// of another shipper fails New either way.

// storeDown is the error of a store operation tried once (prepare without
// waiting) that failed in a way a retry might fix.
type storeDown struct{ err error }

func (e *storeDown) Error() string { return e.err.Error() }
func (e *storeDown) Unwrap() error { return e.err }

// try runs the store operation op on st: under the retry policy if wait
// is set, else once, a retryable failure then being a *storeDown.
func (s *Shipper) try(ctx context.Context, wait bool, st store.Store, op string, fn func(context.Context) error) error {
	if wait {
		return store.Retry(ctx, s.retry, s.log.With("store", st.String()), op, fn)
	}
	err := fn(ctx)
	if store.IsRetryable(err) && !isHalt(err) && ctx.Err() == nil {
		return &storeDown{err}
	}
	return err
}

// start is New's work on the stores.
func (s *Shipper) start(ctx context.Context) error {
	fresh := s.spool.Fresh()
	gen, hist, err := s.prepare(ctx, fresh)
	var down *storeDown
	switch {
	case err == nil:
		close(s.ready)
	case !fresh && errors.As(err, &down):
		s.log.Warn("a target did not answer: the spool takes records, and nothing is sent until the stream's history and writer lease are checked",
			"stream", s.cfg.Spool.Stream, "err", err)
		s.deferred = true
		return nil
	default:
		return err
	}
	if fresh {
		if err := s.continueStream(ctx, gen, hist); err != nil {
			return err
		}
	}
	return s.planBackfill(ctx)
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
		if _, _, err := s.prepare(ctx, true); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := s.planBackfill(ctx); err != nil {
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
