package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/metrics"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store/dir"
)

// scrape returns what the registry's /metrics serves.
func scrape(t *testing.T, reg *metrics.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A stream that stopped on an error is shown stopped and makes /healthz
// unhealthy; once the Multi says it is gone (another fleet member holds
// it), it leaves both, as a stream handed over while running does.
func TestMultiRecvWatchFailedStreamGone(t *testing.T) {
	tmp := t.TempDir()
	st, err := dir.New(filepath.Join(tmp, "store"))
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(tmp, "state")
	if err := os.MkdirAll(filepath.Join(state, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := receiver.Open(receiver.Config{Stream: "app", StateDir: filepath.Join(state, "app"), Store: st,
		Applier: &apply.File{Path: filepath.Join(tmp, "app.log")}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	reg := metrics.New(readBuildInfo().metrics())
	w := newMultiRecvWatch(state, reg, metrics.Health{}, multiRecvPublished{Fleet: "dr"})
	w.started("app", r)
	if err := reg.Check(); err != nil {
		t.Fatalf("healthy stream: %v", err)
	}
	w.stopped("app", r, errors.New("segment damaged"), false)
	if err := reg.Check(); err == nil || !strings.Contains(err.Error(), "app") {
		t.Fatalf("a stream stopped on an error: health %v, want unhealthy naming it", err)
	}
	if m := scrape(t, reg); !strings.Contains(m, `ferry_receive_stopped{`) || !strings.Contains(m, `stream="app"`) {
		t.Fatalf("a stream stopped on an error is not shown stopped:\n%s", m)
	}
	w.gone("app")
	if err := reg.Check(); err != nil {
		t.Fatalf("a failed stream this process no longer holds keeps /healthz unhealthy: %v", err)
	}
	if m := scrape(t, reg); strings.Contains(m, `stream="app"`) {
		t.Fatalf("a failed stream this process no longer holds is still in /metrics:\n%s", m)
	}
}
