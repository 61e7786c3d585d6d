package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

var fast = RetryPolicy{Min: time.Millisecond, Max: 4 * time.Millisecond, Jitter: 0.5}

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

func TestRetryUntilSuccess(t *testing.T) {
	errFlaky := errors.New("connection reset")
	attempts := 0
	err := Retry(t.Context(), fast, nil, "put s/a", func(context.Context) error {
		if attempts++; attempts < 5 {
			return errFlaky
		}
		return nil
	})
	if err != nil || attempts != 5 {
		t.Errorf("Retry = %v after %d attempts, want nil after 5", err, attempts)
	}
}

func TestRetryGivesUp(t *testing.T) {
	for _, sentinel := range []error{ErrConflict, ErrChanged, ErrNotFound, ErrPermanent} {
		want := fmt.Errorf("put s/a: %w", sentinel)
		attempts := 0
		err := Retry(t.Context(), fast, nil, "put s/a", func(context.Context) error {
			attempts++
			return want
		})
		if err != want || attempts != 1 {
			t.Errorf("%v: Retry = %v after %d attempts, want the error itself after 1", sentinel, err, attempts)
		}
	}
}

func TestRetryStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	errFlaky := errors.New("timeout")
	attempts := 0
	err := Retry(ctx, fast, nil, "list s/", func(context.Context) error {
		if attempts++; attempts == 3 {
			cancel()
		}
		return errFlaky
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errFlaky) || attempts != 3 {
		t.Errorf("Retry = %v after %d attempts, want Canceled wrapping the last error after 3", err, attempts)
	}

	// A long wait is cut short too.
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Retry(ctx, RetryPolicy{Min: time.Hour}, nil, "get s/a", func(context.Context) error { return errFlaky })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("Retry = %v after %v, want DeadlineExceeded promptly", err, time.Since(start))
	}

	// Done before the first attempt: fn is never called.
	err = Retry(ctx, fast, nil, "get s/a", func(context.Context) error {
		t.Error("fn called with a done context")
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Retry with a done context = %v, want DeadlineExceeded", err)
	}
}

func TestRetryLogsRateLimited(t *testing.T) {
	rec := &recorder{}
	attempts := 0
	err := Retry(t.Context(), fast, slog.New(rec), "put s/a", func(context.Context) error {
		if attempts++; attempts <= 10 {
			return errors.New("flaky")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Ten failures within far less than 30s: only the first three are logged.
	if len(rec.records) != 3 {
		t.Fatalf("logged %d records, want 3", len(rec.records))
	}
	for i, r := range rec.records {
		attrs := map[string]slog.Value{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value
			return true
		})
		if r.Level != slog.LevelWarn {
			t.Errorf("record %d level %v, want WARN", i, r.Level)
		}
		if attrs["op"].String() != "put s/a" || attrs["attempt"].Int64() != int64(i+1) ||
			attrs["err"].String() != "flaky" || attrs["retry_in"].Kind() != slog.KindDuration {
			t.Errorf("record %d attrs %v", i, attrs)
		}
	}
}

func TestBackoff(t *testing.T) {
	p := RetryPolicy{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	for attempt, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 50, 100: 50} {
		if got := p.Backoff(attempt); got != want*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want %v", attempt, got, want*time.Millisecond)
		}
	}
	p.Jitter = 0.5
	for range 1000 {
		if got := p.Backoff(2); got < 10*time.Millisecond || got > 30*time.Millisecond {
			t.Fatalf("backoff(2) with jitter 0.5 = %v, want within [10ms, 30ms]", got)
		}
		if got := p.Backoff(10); got < 25*time.Millisecond || got > 50*time.Millisecond {
			t.Fatalf("backoff(10) with jitter 0.5 = %v, want within [25ms, 50ms]", got)
		}
	}
	huge := RetryPolicy{Min: time.Second, Max: 1<<63 - 1}
	if got := huge.Backoff(200); got <= 0 {
		t.Errorf("backoff overflowed to %v", got)
	}
	if got := (RetryPolicy{}).withDefaults(); got.Min != 100*time.Millisecond || got.Max != 30*time.Second {
		t.Errorf("zero policy defaults to %+v", got)
	}
}

func TestIsRetryable(t *testing.T) {
	cases := map[error]bool{
		nil:                                  false,
		errors.New("connection reset"):       true,
		fmt.Errorf("put a: %w", ErrConflict): false,
		fmt.Errorf("get a: %w", ErrNotFound): false,
		fmt.Errorf("swap a: %w", ErrChanged): false,
		fmt.Errorf("put a: %w: %w", ErrPermanent, errors.New("permission denied")): false,
	}
	for err, want := range cases {
		if got := IsRetryable(err); got != want {
			t.Errorf("IsRetryable(%v) = %v, want %v", err, got, want)
		}
	}
}

// Stop ends the retries on errors the caller knows are final, returning
// them unchanged after one attempt; other errors are still retried.
func TestRetryStopHook(t *testing.T) {
	final := errors.New("segment is corrupt")
	p := fast
	p.Stop = func(err error) bool { return errors.Is(err, final) }
	calls := 0
	err := Retry(context.Background(), p, nil, "apply", func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("transient")
		}
		return fmt.Errorf("wrapped: %w", final)
	})
	if !errors.Is(err, final) || calls != 3 {
		t.Fatalf("err %v after %d calls; want the final error after 3 calls", err, calls)
	}
}

// GiveUpAfter ends a run of failures that lasted that long with the last
// error, wrapped in ErrGaveUp, without waiting past it.
func TestRetryGiveUpAfter(t *testing.T) {
	errDown := errors.New("connection refused")
	p := RetryPolicy{Min: 20 * time.Millisecond, Max: time.Hour, GiveUpAfter: 300 * time.Millisecond}
	attempts := 0
	start := time.Now()
	err := Retry(t.Context(), p, nil, "list s/", func(context.Context) error {
		attempts++
		return errDown
	})
	took := time.Since(start)
	if !errors.Is(err, ErrGaveUp) || !errors.Is(err, errDown) {
		t.Fatalf("Retry = %v, want ErrGaveUp wrapping the last error", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("gave up after %s, want just past 300ms", took)
	}
	if attempts < 3 {
		t.Errorf("%d attempts, want the retries up to the budget", attempts)
	}
	// A success resets nothing here: each Retry call has its own budget.
	attempts = 0
	err = Retry(t.Context(), p, nil, "list s/", func(context.Context) error {
		if attempts++; attempts < 3 {
			return errDown
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Retry that succeeds within its budget = %v", err)
	}
}
