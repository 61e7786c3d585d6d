package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store"
)

// fastRetry keeps retry tests quick.
var fastRetry = store.RetryPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.2}

func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// checkRetryable fails unless err is a transient error: non-nil, not one of
// the sentinels, not a context error.
func checkRetryable(t *testing.T, what string, err error) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	switch {
	case err == nil:
		t.Errorf("%s: nil error, want a retryable one", what)
	case !store.IsRetryable(err):
		t.Errorf("%s: %v is not retryable", what, err)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		t.Errorf("%s: %v wraps a context error; callers would mistake it for their own cancellation", what, err)
	}
}

// putWithRetry is how the shipper writes: Put under store.Retry.
func putWithRetry(t *testing.T, s *Store, name string, data []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return store.Retry(ctx, fastRetry, testLog(t), "put "+name, func(ctx context.Context) error {
		return s.Put(ctx, name, data)
	})
}

// checkSingleObject verifies the store holds exactly name with data under dir.
func checkSingleObject(t *testing.T, s *Store, dir, name string, data []byte) {
	t.Helper()
	if got := listAll(t, s, dir, ""); len(got) != 1 || got[0] != name {
		t.Errorf("List(%s) = %v, want just %s", dir, got, name)
	}
	if got := readAll(t, s, name); !bytes.Equal(got, data) {
		t.Errorf("%s holds %d bytes that differ from the %d put", name, len(got), len(data))
	}
}

// checkBodies verifies every complete PUT body the proxy saw for key is data.
func checkBodies(t *testing.T, p *versitygw.FaultProxy, bucketKey string, data []byte, wantN int) {
	t.Helper()
	bodies := p.Bodies(bucketKey)
	if len(bodies) != wantN {
		t.Errorf("proxy saw %d complete PUT bodies for %s, want %d", len(bodies), bucketKey, wantN)
	}
	for i, b := range bodies {
		if !bytes.Equal(b, data) {
			t.Errorf("PUT attempt %d sent %d bytes that differ from the %d of the data", i+1, len(b), len(data))
		}
	}
}

// TestServerErrorRetried: a 500 on the first PUT fails that Put with a
// retryable error; store.Retry resends the identical body and ends with
// exactly one object.
func TestServerErrorRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "e500")
	data := randomData(256<<10, 1)

	f.proxy.Inject(versitygw.Put, 1, versitygw.Status(http.StatusInternalServerError, ""))
	checkRetryable(t, "Put answered 500", s.Put(t.Context(), "s/seg", data))
	if n := f.proxy.Count(versitygw.Put); n != 1 {
		t.Errorf("one Put sent %d PUT requests, want 1 (minio-go must not retry on its own)", n)
	}

	f.proxy.ResetCounts()
	f.proxy.Inject(versitygw.Put, 1, versitygw.Status(http.StatusInternalServerError, ""))
	if err := putWithRetry(t, s, "s/seg", data); err != nil {
		t.Fatalf("Put under Retry: %v", err)
	}
	checkBodies(t, f.proxy, "ferry-test/e500/s/seg", data, 2)
	checkSingleObject(t, s, "s/", "s/seg", data)
}

// TestThrottlingRetried: 503 SlowDown and 429 are transient, on every
// operation.
func TestThrottlingRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "slow")
	ctx := t.Context()
	data := randomData(64<<10, 2)

	f.proxy.Inject(versitygw.Put, 2, versitygw.SlowDown())
	err := s.Put(ctx, "s/seg", data)
	checkRetryable(t, "Put answered SlowDown", err)
	if err != nil && !strings.Contains(err.Error(), "SlowDown") {
		t.Errorf("error %q does not mention SlowDown", err)
	}
	if err := putWithRetry(t, s, "s/seg", data); err != nil {
		t.Fatalf("Put under Retry: %v", err)
	}
	checkBodies(t, f.proxy, "ferry-test/slow/s/seg", data, 3)

	f.proxy.Inject(versitygw.List, 1, versitygw.Status(http.StatusTooManyRequests, ""))
	checkRetryable(t, "List answered 429", s.List(ctx, "s/", "", func(store.Object) error { return nil }))
	f.proxy.Inject(versitygw.Get, 1, versitygw.SlowDown())
	_, err = s.Get(ctx, "s/seg")
	checkRetryable(t, "Get answered SlowDown", err)
	f.proxy.Inject(versitygw.Delete, 1, versitygw.Status(http.StatusServiceUnavailable, ""))
	checkRetryable(t, "Delete answered 503", s.Delete(ctx, "s/seg"))
	checkSingleObject(t, s, "s/", "s/seg", data)
}

// TestDroppedConnection: a connection cut mid-upload, and a response lost
// after the server stored the object, both end with one intact object.
func TestDroppedConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "drop")
	data := randomData(1<<20, 3)

	f.proxy.Inject(versitygw.Put, 1, versitygw.DropRequest(100<<10))
	checkRetryable(t, "Put cut mid-body", s.Put(t.Context(), "s/a", data))
	if err := putWithRetry(t, s, "s/a", data); err != nil {
		t.Fatalf("Put under Retry after a cut upload: %v", err)
	}
	checkBodies(t, f.proxy, "ferry-test/drop/s/a", data, 1) // the cut attempt is incomplete
	checkSingleObject(t, s, "s/", "s/a", data)

	// The server stores the object but the answer is lost: Put finds its
	// own data in place and succeeds without sending it again.
	f.proxy.ResetCounts()
	f.proxy.Inject(versitygw.Put, 1, versitygw.LoseResponse())
	if err := s.Put(t.Context(), "s/b", data); err != nil {
		t.Fatalf("Put with its response lost: %v, want nil (the object is stored)", err)
	}
	if c := f.proxy.Counts(); c[versitygw.Put] != 1 || c[versitygw.Head] != 1 {
		t.Errorf("Put with its response lost made requests %v, want 1 PUT and 1 HEAD", c)
	}
	if got := readAll(t, s, "s/b"); !bytes.Equal(got, data) {
		t.Errorf("s/b differs from the data put")
	}

	// The same with different data stored by another writer: a conflict,
	// not a success.
	f.proxy.Inject(versitygw.Put, 1, versitygw.LoseResponse())
	if err := s.Put(t.Context(), "s/c", data); err != nil {
		t.Fatal(err)
	}
	other := f.store(t, "drop")
	f.proxy.Inject(versitygw.Put, 1, versitygw.DropRequest(0))
	if err := other.Put(t.Context(), "s/c", randomData(len(data), 99)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put cut off, over different data: %v, want ErrConflict", err)
	}

	// A GET body cut short must be an error, never a short object.
	f.proxy.Inject(versitygw.Get, 1, versitygw.DropResponse(300<<10))
	rc, err := s.Get(t.Context(), "s/a")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	checkRetryable(t, "reading a truncated body", err)
	if len(got) != 300<<10 {
		t.Errorf("read %d bytes before the error, want %d", len(got), 300<<10)
	}
	if err != nil && !strings.Contains(err.Error(), "s3://ferry-test/drop/s/a") {
		t.Errorf("read error %q does not name the key", err)
	}
}

// TestCallTimeout: a stalled server fails the call after CallTimeout with a
// retryable error, not a context error.
func TestCallTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "stall", func(c *Config) { c.CallTimeout = 300 * time.Millisecond })
	ctx := t.Context()
	if err := s.Put(ctx, "s/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind versitygw.Kind
		call func() error
	}{
		{versitygw.Put, func() error { return s.Put(ctx, "s/b", []byte("b")) }},
		{versitygw.Get, func() error {
			rc, err := s.Get(ctx, "s/a")
			if err == nil {
				rc.Close()
			}
			return err
		}},
		{versitygw.List, func() error { return s.List(ctx, "s/", "", func(store.Object) error { return nil }) }},
		{versitygw.Delete, func() error { return s.Delete(ctx, "s/a") }},
	} {
		f.proxy.Inject(tc.kind, 1, versitygw.Stall(5*time.Second))
		start := time.Now()
		err := tc.call()
		elapsed := time.Since(start)
		checkRetryable(t, string(tc.kind)+" to a stalled server", err)
		if elapsed > 2*time.Second {
			t.Errorf("%s took %v with CallTimeout 300ms", tc.kind, elapsed)
		}
		if err != nil && !strings.Contains(err.Error(), "no answer") {
			t.Errorf("%s: error %q does not say the server did not answer", tc.kind, err)
		}
	}
}

// TestServerRestart: while the server is down calls fail with retryable
// errors; a Put retried across the outage succeeds once it is back.
func TestServerRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	s := f.store(t, "restart")
	ctx := t.Context()
	if err := s.Put(ctx, "s/before", []byte("before")); err != nil {
		t.Fatal(err)
	}

	f.srv.Stop()
	checkRetryable(t, "Put to a stopped server", s.Put(ctx, "s/during", []byte("x")))
	_, err := s.Get(ctx, "s/before")
	checkRetryable(t, "Get from a stopped server", err)
	checkRetryable(t, "List on a stopped server", s.List(ctx, "s/", "", func(store.Object) error { return nil }))

	data := randomData(128<<10, 4)
	done := make(chan error, 1)
	go func() { done <- putWithRetry(t, s, "s/across", data) }()
	time.Sleep(300 * time.Millisecond) // let a few attempts fail
	select {
	case err := <-done:
		t.Fatalf("Put returned %v while the server was down", err)
	default:
	}
	f.srv.Restart(t)
	if err := <-done; err != nil {
		t.Fatalf("Put retried across the restart: %v", err)
	}
	if err := s.Put(ctx, "s/after", []byte("after")); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	want := []string{"s/across", "s/after", "s/before"}
	if got := listAll(t, s, "s/", ""); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after restart List = %v, want %v", got, want)
	}
	if got := readAll(t, s, "s/across"); !bytes.Equal(got, data) {
		t.Error("object put across the restart differs from the data")
	}
}
