package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("put: %w", syscall.ECONNREFUSED), "refused"},
		{errors.New("read tcp: connection reset by peer"), "reset"},
		{errors.New("put x: SlowDown: Please reduce your request rate"), "throttled"},
		{errors.New("put x: HTTP 503 Service Unavailable"), "server_error"},
		{errors.New("something else"), "other"},
	} {
		if got := Reason(c.err); got != c.want {
			t.Errorf("Reason(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// The health endpoint reports every failing check with 503 and recovers.
func TestHealthEndpoint(t *testing.T) {
	r := New(Build{})
	var failing error
	r.addHealth(func() error { return failing })
	r.RetryHook("s")(errors.New("connection reset"))
	r.S3Hook("s")("put")
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthy: %d %q", code, body)
	}
	failing = errors.New("target dr failing for 2m")
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "target dr failing") {
		t.Fatalf("unhealthy: %d %q", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{`ferry_retries_total{reason="reset",stream="s"} 1`, `ferry_s3_requests_total{kind="put",stream="s"} 1`, "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// SetHealth replaces the MaxLag every watcher was started with (a reload
// of health_max_lag); before it, each keeps its own.
func TestSetHealth(t *testing.T) {
	r := New(Build{})
	started := Health{MaxLag: time.Hour}
	if got := r.maxLag(started); got != time.Hour {
		t.Fatalf("before SetHealth: %v, want 1h", got)
	}
	r.SetHealth(Health{MaxLag: 10 * time.Second})
	if got := r.maxLag(started); got != 10*time.Second {
		t.Fatalf("after SetHealth(10s): %v", got)
	}
	r.SetHealth(Health{})
	if got := r.maxLag(started); got != 5*time.Minute {
		t.Fatalf("after SetHealth(0): %v, want the 5m default", got)
	}
}
