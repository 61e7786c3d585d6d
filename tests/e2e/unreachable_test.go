package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A shipper on a fresh spool whose link receiver is down at start serves
// /healthz (503) at once, says in status that its target is unreachable,
// spools stdin and exits on EOF within shutdown_timeout keeping the
// records. Once the receiver is back, the next run continues the stream
// after what the receiver holds (sent by another spool before): the
// replica has every record once, in order.
func TestShipStartsWithLinkDown(t *testing.T) {
	t.Parallel()
	s := newStream(t, "linkdown")
	addr := ferrytest.FreeAddr(t)
	link := []string{"--store", "tcp://" + addr, "--insecure", "--token", linkToken, "--stream", s.name}
	first, second, third := logLines(71, 1, 400), logLines(71, 401, 1500), logLines(71, 1901, 300)
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	mustFerry(t, bytes.NewReader(first), append([]string{"ship", "--spool", s.spool}, link...)...)
	waitReplica(t, s, recv, first)
	recv.Terminate(10 * time.Second)

	spool := filepath.Join(s.dir, "spool-b")
	maddr := ferrytest.FreeAddr(t)
	const shutdown = 3 * time.Second
	args := append([]string{"ship", "--spool", spool, "--max-bytes", "16KiB", "--metrics-addr", maddr,
		"--shutdown-timeout", shutdown.String()}, link...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	p := startFerry(t, r, args...)
	r.Close()
	ferrytest.Eventually(t, 10*time.Second, "healthz 503", func() (bool, string) {
		code, body := health(maddr)
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
	var st struct {
		Running     bool   `json:"running"`
		Unreachable string `json:"unreachable"`
		Spool       struct {
			HeldRecords uint64 `json:"held_records"`
		} `json:"spool"`
	}
	ferrytest.Eventually(t, 20*time.Second, "status: running, target unreachable, records held", func() (bool, string) {
		out := mustFerry(t, nil, "status", "--spool", spool, "--json").Stdout
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return st.Running && strings.Contains(st.Unreachable, "connection refused") && st.Spool.HeldRecords == 1500, out
	})
	text := mustFerry(t, nil, "status", "--spool", spool).Stdout
	if !strings.Contains(text, "running (pid") || !strings.Contains(text, "target unreachable: ") {
		t.Errorf("status does not say running with the target unreachable:\n%s", text)
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

	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	mustFerry(t, bytes.NewReader(third), append([]string{"ship", "--spool", spool, "--max-bytes", "16KiB"}, link...)...)
	waitReplica(t, s, recv, append(append(append([]byte(nil), first...), second...), third...))
	recv.Terminate(10 * time.Second)
	mustFerry(t, nil, "verify", "--store", filepath.Join(s.state, "inbox"), "--stream", s.name)
}

// A receiver whose S3 endpoint is down at start serves /healthz 503,
// saying it waits for its store, not 200 until health_max_lag passes.
func TestReceiveStartsWithStoreDown(t *testing.T) {
	t.Parallel()
	s := newStream(t, "recvdown")
	maddr := ferrytest.FreeAddr(t)
	cfg := retryConfig(t, fmt.Sprintf("[s3]\nendpoint = \"http://%s\"\nregion = \"us-east-1\"\npath_style = true\n", ferrytest.FreeAddr(t)))
	env := append(os.Environ(), "AWS_ACCESS_KEY_ID=ferrytest", "AWS_SECRET_ACCESS_KEY=ferrytest-secret", "AWS_EC2_METADATA_DISABLED=true")
	p := ferrytest.Cmd{Bin: ferryBin, Env: env}.Start(t, nil, "receive", "--config", cfg, "--store", "s3://bucket/prefix",
		"--stream", s.name, "--state", s.state, "--apply", "file:"+s.replica, "--metrics-addr", maddr)
	ferrytest.Eventually(t, 10*time.Second, "healthz 503 waiting for the store", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("receiver exited:\n%s", p)
		}
		code, body := health(maddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "waiting for its store") &&
			strings.Contains(body, "connection refused"), fmt.Sprintf("%d %s", code, body)
	})
	// ferry status says so too, from what the receiver publishes in its
	// state dir.
	want := fmt.Sprintf("running (pid %d), waiting for its store: ", p.Pid())
	ferrytest.Eventually(t, 10*time.Second, "status: running, waiting for its store", func() (bool, string) {
		out := mustFerry(t, nil, "status", "--state", s.state).Stdout
		return strings.Contains(out, want) && strings.Contains(out, "connection refused"), out
	})
	var st struct {
		Running bool   `json:"running"`
		PID     int    `json:"pid"`
		Waiting string `json:"waiting"`
	}
	out := mustFerry(t, nil, "status", "--state", s.state, "--json").Stdout
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Running || st.PID != p.Pid() || !strings.Contains(st.Waiting, "connection refused") {
		t.Errorf("status --json: want running, pid %d, waiting with the store's error (%v):\n%s", p.Pid(), err, out)
	}
	published := string(readFile(t, filepath.Join(s.state, "status.json")))
	if code := p.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver stopped by SIGTERM: exit %d, want 0:\n%s", code, p)
	}
	if strings.Contains(p.Stderr(), "ferrytest-secret") || strings.Contains(published, "ferrytest-secret") || strings.Contains(published, "ferrytest") {
		t.Fatalf("the access or secret key is in the receiver's output or status:\n%s\n%s", p.Stderr(), published)
	}
	if out := mustFerry(t, nil, "status", "--state", s.state).Stdout; !strings.Contains(out, "not running") || strings.Contains(out, "waiting") {
		t.Errorf("status after SIGTERM, want not running and no waiting:\n%s", out)
	}
}

// A running receiver that applies normally: status says running with its
// pid and the seq applied, and nothing about waiting or failing.
func TestReceiveStatusRunning(t *testing.T) {
	t.Parallel()
	s := newStream(t, "recvstatus")
	s.ship(logLines(93, 1, 50))
	p := startFerry(t, nil, s.receiveArgs("--poll-max", "200ms")...)
	waitReplica(t, s, p, logLines(93, 1, 50))
	ferrytest.Eventually(t, 10*time.Second, "status: running, seq 50 applied", func() (bool, string) {
		out := mustFerry(t, nil, "status", "--state", s.state).Stdout
		return strings.Contains(out, fmt.Sprintf("  running (pid %d)\n", p.Pid())) && strings.Contains(out, "applied   seq 50"), out
	})
	out := mustFerry(t, nil, "status", "--state", s.state, "--json").Stdout
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st["updated_at"] == nil || st["waiting"] != nil || st["last_error"] != nil {
		t.Errorf("status --json of a receiver applying normally: want updated_at, no waiting nor last_error:\n%s", out)
	}
	if code := p.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p)
	}
}
