package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RetryPolicy shapes the waits between attempts in Retry: the first wait is
// Min, each later one doubles, up to Max. Jitter (0 to 1) scales each wait by
// a random factor in [1-Jitter, 1+Jitter], so stores shared by many shippers
// are not retried in lockstep; the result never exceeds Max. A zero Min means
// 100ms, a zero Max 30s, and a Max below Min is raised to Min.
type RetryPolicy struct {
	Min, Max time.Duration
	Jitter   float64
	// Stop, if set, reports further errors that end the retries, on top of
	// those IsRetryable refuses (a receiver stops on a corrupt segment or
	// a fatal apply error, for example).
	Stop func(error) bool
	// OnRetry, if set, is called with each error that is about to be
	// retried (metrics count retries by reason with it).
	OnRetry func(error)
	// GiveUpAfter, if positive, bounds how long attempts may keep failing:
	// once the first failure is that old, Retry returns the last error,
	// wrapped in ErrGaveUp, instead of waiting again (the last wait is
	// shortened to end there). Zero retries until ctx ends.
	GiveUpAfter time.Duration
}

// ErrGaveUp marks the error Retry returns when attempts kept failing for
// RetryPolicy.GiveUpAfter.
var ErrGaveUp = errors.New("gave up retrying")

// retryLogEvery bounds how often Retry logs once past the first few attempts.
const retryLogEvery = 30 * time.Second

// retryLogFirst is how many failed attempts Retry always logs.
const retryLogFirst = 3

// IsRetryable reports whether another attempt might succeed: false for nil
// and for errors wrapping ErrConflict, ErrChanged, ErrNotFound or
// ErrPermanent, true for everything else.
func IsRetryable(err error) bool {
	return err != nil &&
		!errors.Is(err, ErrConflict) &&
		!errors.Is(err, ErrChanged) &&
		!errors.Is(err, ErrNotFound) &&
		!errors.Is(err, ErrPermanent)
}

// Retry calls fn until it returns nil or an error IsRetryable refuses (or
// p.Stop accepts), which Retry returns unchanged, or until ctx is done. It waits between attempts as
// p says. When ctx ends it returns an error wrapping both ctx's error and
// fn's last error. fn is never called once ctx is done.
//
// Each failed attempt that will be retried is logged at WARN on log (nil
// means no logging) with the keys "op", "attempt", "err" and "retry_in": the
// first three always, later ones at most once per 30 seconds.
func Retry(ctx context.Context, p RetryPolicy, log *slog.Logger, op string, fn func(ctx context.Context) error) error {
	p = p.withDefaults()
	var lastErr error
	var lastLog, firstFail time.Time
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			if lastErr == nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return fmt.Errorf("%s: stopped after %d attempts: %w; last error: %w", op, attempt-1, err, lastErr)
		}
		err := fn(ctx)
		if !IsRetryable(err) || (p.Stop != nil && p.Stop(err)) {
			return err
		}
		lastErr = err
		wait := p.Backoff(attempt)
		if p.GiveUpAfter > 0 {
			if attempt == 1 {
				firstFail = time.Now()
			}
			left := p.GiveUpAfter - time.Since(firstFail)
			if left <= 0 {
				return fmt.Errorf("%s: %w after %d attempts in %s: %w", op, ErrGaveUp, attempt,
					time.Since(firstFail).Round(time.Millisecond), err)
			}
			wait = min(wait, left)
		}
		if p.OnRetry != nil {
			p.OnRetry(err)
		}
		if log != nil && (attempt <= retryLogFirst || time.Since(lastLog) >= retryLogEvery) {
			lastLog = time.Now()
			log.LogAttrs(ctx, slog.LevelWarn, "failed, retrying",
				slog.String("op", op),
				slog.Int("attempt", attempt),
				slog.Any("err", err),
				slog.Duration("retry_in", wait))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Min <= 0 {
		p.Min = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	p.Max = max(p.Max, p.Min)
	p.Jitter = min(max(p.Jitter, 0), 1)
	return p
}

// Backoff returns the wait after the given failed attempt (1-based), for
// callers that pace their own attempts (a link redialling in the
// background, say) rather than loop in Retry. Zero fields take the
// defaults documented on RetryPolicy.
func (p RetryPolicy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.Min
	for i := 1; i < attempt && d < p.Max; i++ {
		if d > p.Max/2 {
			d = p.Max // also keeps d from overflowing
		} else {
			d *= 2
		}
	}
	if p.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + p.Jitter*(2*rand.Float64()-1)))
	}
	return min(d, p.Max)
}
