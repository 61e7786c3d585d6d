package s3

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store"
)

const claim = "s/claims/writer.json"

// swapWithRetry is how a lease is renewed: Swap under store.Retry.
func swapWithRetry(t *testing.T, s *Store, data []byte, old string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var v string
	err := store.Retry(ctx, fastRetry, testLog(t), "swap", func(ctx context.Context) error {
		var err error
		v, err = s.Swap(ctx, claim, data, old)
		return err
	})
	return v, err
}

func checkClaim(t *testing.T, s *Store, data []byte, version string) {
	t.Helper()
	got, v, err := s.Load(t.Context(), claim)
	if err != nil || !bytes.Equal(got, data) || v != version {
		t.Errorf("Load = %q, %q, %v; want %q, %q", got, v, err, data, version)
	}
}

// TestSwapUnanswered: a Swap whose answer is lost finds its content in
// place and succeeds; one cut off before the server saw it fails
// retryably, and succeeds when retried.
func TestSwapUnanswered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "swap")
	v1, err := s.Swap(t.Context(), claim, []byte("a1"), "")
	if err != nil {
		t.Fatal(err)
	}

	f.proxy.ResetCounts()
	f.proxy.Inject(versitygw.Put, 1, versitygw.LoseResponse())
	v2, err := s.Swap(t.Context(), claim, []byte("a2"), v1)
	if err != nil {
		t.Fatalf("Swap with its answer lost: %v, want nil (it was stored)", err)
	}
	if c := f.proxy.Counts(); c[versitygw.Put] != 1 || c[versitygw.Get] != 1 {
		t.Errorf("Swap with its answer lost made requests %v, want 1 PUT and 1 GET", c)
	}
	checkClaim(t, s, []byte("a2"), v2)

	f.proxy.Inject(versitygw.Put, 1, versitygw.DropRequest(0))
	checkRetryable(t, "Swap cut off", func() error { _, err := s.Swap(t.Context(), claim, []byte("a3"), v2); return err }())
	checkClaim(t, s, []byte("a2"), v2)
	f.proxy.Inject(versitygw.Put, 1, versitygw.DropRequest(0))
	v3, err := swapWithRetry(t, s, []byte("a3"), v2)
	if err != nil {
		t.Fatalf("Swap under Retry after a cut-off attempt: %v", err)
	}
	checkClaim(t, s, []byte("a3"), v3)

	// A 500 means not stored: Retry resends the same condition.
	f.proxy.Inject(versitygw.Put, 1, versitygw.Status(http.StatusInternalServerError, ""))
	v4, err := swapWithRetry(t, s, []byte("a4"), v3)
	if err != nil {
		t.Fatalf("Swap under Retry after a 500: %v", err)
	}
	checkClaim(t, s, []byte("a4"), v4)
}

// TestSwapRefusals: each way a server refuses a conditional PUT is
// ErrChanged, checked with one GET, and leaves the object alone.
func TestSwapRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "refuse")
	v1, err := s.Swap(t.Context(), claim, []byte("a1"), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, fault := range []versitygw.Fault{
		versitygw.Status(http.StatusPreconditionFailed, "PreconditionFailed"),
		versitygw.Status(http.StatusConflict, "ConditionalRequestConflict"),
		versitygw.Status(http.StatusNotFound, "NoSuchKey"),
	} {
		f.proxy.ResetCounts()
		f.proxy.Inject(versitygw.Put, 1, fault)
		_, err := s.Swap(t.Context(), claim, []byte("b1"), v1)
		if !errors.Is(err, store.ErrChanged) {
			t.Errorf("Swap answered %v: %v, want ErrChanged", fault, err)
		}
		if c := f.proxy.Counts(); c[versitygw.Put] != 1 || c[versitygw.Get] != 1 {
			t.Errorf("Swap answered %v made requests %v, want 1 PUT and 1 GET", fault, c)
		}
		checkClaim(t, s, []byte("a1"), v1)
	}

	f.proxy.ResetCounts()
	f.proxy.Inject(versitygw.Put, 1, versitygw.Status(http.StatusInternalServerError, ""))
	_, err = s.Swap(t.Context(), claim, []byte("b1"), v1)
	checkRetryable(t, "Swap answered 500", err)
	if c := f.proxy.Counts(); c[versitygw.Get] != 0 {
		t.Errorf("Swap answered 500 made requests %v, want no GET", c)
	}
	checkClaim(t, s, []byte("a1"), v1)
}
