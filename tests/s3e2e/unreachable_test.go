package s3e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// healthz is the shipper's /healthz answer (code 0 when it does not
// answer at all).
func healthz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// shipStatusJSON is the part of `ferry status --json` these tests read.
type shipStatusJSON struct {
	Running     bool   `json:"running"`
	Unreachable string `json:"unreachable"`
	LastSeq     uint64 `json:"last_seq"`
	Spool       struct {
		HeldRecords uint64 `json:"held_records"`
	} `json:"spool"`
}

func (h *harness) shipStatus(spool string) (shipStatusJSON, string) {
	h.t.Helper()
	r := h.ferry(nil, "status", "--spool", spool, "--json")
	var st shipStatusJSON
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		h.t.Fatalf("status --json: %v\n%s", err, r)
	}
	return st, r.Stdout
}

// A shipper on a fresh spool whose S3 endpoint is down at start serves
// /healthz (503) at once, says in status that it runs with its target
// unreachable, spools stdin, and on EOF gives up after shutdown_timeout
// with the records kept. Started again, with the endpoint coming back
// while it runs, it continues the stream after what the bucket holds
// (written by another shipper before): every record exactly once.
func TestShipStartsWithS3Down(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("down", "app")
	first, second, third := numbered(1, 500), numbered(501, 2000), numbered(2501, 700)
	s.ship(first, "--max-bytes", "16KiB")
	h.srv.Stop()

	spool := filepath.Join(t.TempDir(), "spool-b") // a new machine's spool
	maddr := ferrytest.FreeAddr(t)
	const shutdown = 3 * time.Second
	args := []string{"ship", "--store", s.url(), "--stream", s.name, "--spool", spool, "--max-bytes", "16KiB",
		"--metrics-addr", maddr, "--shutdown-timeout", shutdown.String()}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	p := h.start(nil, r, args...)
	r.Close()
	ferrytest.Eventually(t, 10*time.Second, "healthz 503", func() (bool, string) {
		code, body := healthz(maddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "target unreachable"), fmt.Sprintf("%d %s", code, body)
	})
	took := time.Since(started)
	t.Logf("healthz answered 503 %s after the start", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("healthz took %s to answer, want about 2 s at most", took)
	}
	if _, err := w.Write(second); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "status: running, target unreachable, records held", func() (bool, string) {
		st, raw := h.shipStatus(spool)
		return st.Running && strings.Contains(st.Unreachable, "connection refused") && st.Spool.HeldRecords == 2000, raw
	})
	text := h.ferry(nil, "status", "--spool", spool).Stdout
	if !strings.Contains(text, "running (pid") || !strings.Contains(text, "target unreachable: ") || !strings.Contains(text, "2000 record(s) held") {
		t.Errorf("status does not say running with the target unreachable and the records held:\n%s", text)
	}
	w.Close()
	eof := time.Now()
	code, ok := p.Wait(shutdown + 30*time.Second)
	if !ok {
		t.Fatalf("shipper still running %s after EOF (shutdown_timeout %s):\n%s", time.Since(eof), shutdown, p)
	}
	t.Logf("exit %d %s after EOF (shutdown_timeout %s)", code, time.Since(eof).Round(time.Millisecond), shutdown)
	if code == 0 || !strings.Contains(p.Stderr(), "still in spool") {
		t.Fatalf("want a non-zero exit saying what stays in the spool:\n%s", p)
	}
	if st, raw := h.shipStatus(spool); st.Running || st.Spool.HeldRecords != 2000 {
		t.Fatalf("after the exit: want not running with 2000 records held:\n%s", raw)
	}

	// Again, the endpoint still down at start and back while it runs.
	r, w, err = os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p = h.start(nil, r, args...)
	r.Close()
	if _, err := w.Write(third); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 20*time.Second, "second run holds the third part too", func() (bool, string) {
		st, raw := h.shipStatus(spool)
		return st.Running && st.Spool.HeldRecords == 2700, raw
	})
	h.srv.Restart(t)
	ferrytest.Eventually(t, 60*time.Second, "everything in the bucket", func() (bool, string) {
		return s.lastStoredSeq() == 3200, fmt.Sprintf("bucket ends at seq %d", s.lastStoredSeq())
	})
	code, _ = healthz(maddr)
	if code != http.StatusOK {
		t.Errorf("healthz %d once the target answered, want 200", code)
	}
	w.Close()
	if code, ok := p.Wait(30 * time.Second); !ok || code != 0 {
		t.Fatalf("second run: want exit 0 after EOF:\n%s", p)
	}
	if msg := checkContiguous(s.segments(), 3200); msg != "" {
		t.Fatalf("segments in the bucket: %s", msg)
	}
	s.receiveOnce()
	s.wantReplica(append(append(append([]byte(nil), first...), second...), third...), "after the endpoint came back")
}
