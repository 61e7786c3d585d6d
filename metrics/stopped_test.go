package metrics

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

func TestStopReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("segment x is damaged: %w", batch.ErrCorrupt), "corrupt"},
		{fmt.Errorf("segment x: %w", batch.ErrSegmentTooLarge), "corrupt"},
		{fmt.Errorf("segment x format 9 is newer than this ferry reads (2); %w", batch.ErrNewerFormat), "format"},
		{fmt.Errorf("starts at seq 9: %w", receiver.ErrChain), "chain"},
		{fmt.Errorf("x: %w", receiver.ErrOverlap), "chain"},
		{fmt.Errorf("x: %w", receiver.ErrHistory), "history"},
		{fmt.Errorf("x: %w", batch.ErrDiverged), "history"},
		{fmt.Errorf("x: %w", receiver.ErrGap), "gap"},
		{fmt.Errorf("x: %w", receiver.ErrFatal), "apply"},
		{errors.New("listen: address in use"), "other"},
	} {
		if got := StopReason(c.err); got != c.want {
			t.Errorf("StopReason(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A receiver that stopped on a damaged segment says so in
// ferry_receive_stopped{reason="corrupt"}, and Serve's stop keeps serving
// until a scrape has seen it: the process exits right after.
func TestReceiverStoppedOnCorruptSegment(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 2, 3)
	bad := append([]byte(nil), segs[1].Data...)
	bad[len(bad)-10] ^= 0xff // in the compressed payload, past the metadata frame
	receivertest.Put(t, st, segs[0])
	receivertest.PutAs(t, st, segs[1].Name, bad)
	rc := receivertest.Open(t, receivertest.Config(t, st, &apply.Writer{W: io.Discard, Name: "discard"}))

	r := New(Build{})
	r.StopGrace = 20 * time.Second
	var failed error
	r.WatchReceiver(rc, receivertest.Stream, func() error { return failed }, Health{})
	addr := ferrytest.FreeAddr(t)
	stop, err := r.Serve(t.Context(), addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	stoppedLine := func(reason string, v int) string {
		return fmt.Sprintf(`ferry_receive_stopped{reason=%q,stream=%q} %d`, reason, receivertest.Stream, v)
	}
	body := get(t, "http://"+addr+"/metrics")
	for _, reason := range stopReasons {
		if !strings.Contains(body, stoppedLine(reason, 0)) {
			t.Errorf("while running, /metrics lacks %s", stoppedLine(reason, 0))
		}
	}

	failed = receivertest.Run(t, rc)
	if !batch.IsUnreadable(failed) {
		t.Fatalf("Run: %v, want a corrupt segment error", failed)
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned before any scrape saw the receiver stopped")
	case <-time.After(300 * time.Millisecond):
	}
	body = get(t, "http://"+addr+"/metrics")
	if !strings.Contains(body, stoppedLine("corrupt", 1)) || !strings.Contains(body, stoppedLine("gap", 0)) {
		t.Errorf("after the stop, /metrics lacks %s and %s:\n%s", stoppedLine("corrupt", 1), stoppedLine("gap", 0), body)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("stop still waiting 10s after a scrape")
	}
}

// Without a stopped receiver, stop does not wait.
func TestStopWithoutStoppedReceiverIsPrompt(t *testing.T) {
	r := New(Build{})
	r.StopGrace = time.Minute
	stop, err := r.Serve(t.Context(), ferrytest.FreeAddr(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stop took %s with nothing stopped", took)
	}
}

// ferry_build_info carries the build, and a stream's retry and S3 request
// counters exist at 0 for every reason and kind before the first one.
func TestBuildInfoAndZeroCounters(t *testing.T) {
	r := New(Build{Version: "1.2.3", Commit: "abcdef123456", GoVersion: "go1.99"})
	r.RetryHook("app")
	r.S3Hook("app")
	addr := ferrytest.FreeAddr(t)
	stop, err := r.Serve(t.Context(), addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	body := get(t, "http://"+addr+"/metrics")
	want := []string{`ferry_build_info{commit="abcdef123456",go_version="go1.99",version="1.2.3"} 1`}
	for _, reason := range retryReasons {
		want = append(want, fmt.Sprintf(`ferry_retries_total{reason=%q,stream="app"} 0`, reason))
	}
	for _, kind := range s3Kinds {
		want = append(want, fmt.Sprintf(`ferry_s3_requests_total{kind=%q,stream="app"} 0`, kind))
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// A scrape that showed the stop before stop was called (the receiver's
// failure is visible at once; the process calls stop a moment later) is
// the scrape stop waits for: it does not wait for another one.
func TestStopAfterAScrapeSawIt(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	rc := receivertest.Open(t, receivertest.Config(t, st, &apply.Writer{W: io.Discard, Name: "discard"}))
	r := New(Build{})
	r.StopGrace = 20 * time.Second
	failed := fmt.Errorf("segment x: %w", batch.ErrCorrupt)
	r.WatchReceiver(rc, receivertest.Stream, func() error { return failed }, Health{})
	addr := ferrytest.FreeAddr(t)
	stop, err := r.Serve(t.Context(), addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if body := get(t, "http://"+addr+"/metrics"); !strings.Contains(body, `ferry_receive_stopped{reason="corrupt"`) {
		t.Fatalf("the scrape lacks the stop:\n%s", body)
	}
	start := time.Now()
	stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop waited %s for another scrape after one had shown the stop", d)
	}
}
