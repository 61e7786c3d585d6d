package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// scrape returns the samples of /metrics as "name{labels}" -> value.
func scrape(t *testing.T, addr string) (map[string]float64, error) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

func health(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A shipper following a file over a direct link serves metrics that match
// what it shipped and the receiver applied, ferry status sees it running,
// and /healthz turns unhealthy when the receiver is stopped and healthy
// again once it is back.
func TestMetricsStatusAndHealth(t *testing.T) {
	t.Parallel()
	s := newStream(t, "metrics")
	addr, maddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	log := filepath.Join(s.dir, "app.log")
	if err := os.WriteFile(log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(s.dir, "ship.toml")
	os.WriteFile(cfg, []byte("health_max_lag = \"1s\"\n"), 0o644)
	ship := startFerry(t, nil, "ship", "--config", cfg, "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--source", "tail:"+log, "--max-age", "50ms", "--metrics-addr", maddr)
	appendLines := func(from, n int) {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(logLines(41, from, n))
		f.Close()
	}
	appendLines(1, 1000)
	key := func(name string, labels ...string) string {
		return name + "{" + strings.Join(append([]string{`stream="metrics"`}, labels...), ",") + "}"
	}
	ferrytest.Eventually(t, 30*time.Second, "metrics show 1000 records applied", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("shipper exited:\n%s", ship)
		}
		m, err := scrape(t, maddr)
		if err != nil {
			return false, err.Error()
		}
		ok := m[key("ferry_ship_records_in_total")] == 1000 &&
			m[key("ferry_ship_target_received_seq", `target="store"`)] == 1000 &&
			m[key("ferry_ship_target_applied_seq", `target="store"`)] == 1000 &&
			m[key("ferry_ship_target_lag_records", `target="store"`)] == 0 &&
			m[key("ferry_ship_target_up", `target="store"`)] == 1 &&
			m[key("ferry_ship_generation")] == 1 && m[key("ferry_ship_fenced")] == 0
		return ok, fmt.Sprintf("records_in %v received %v applied %v", m[key("ferry_ship_records_in_total")],
			m[key("ferry_ship_target_received_seq", `target="store"`)], m[key("ferry_ship_target_applied_seq", `target="store"`)])
	})
	m, _ := scrape(t, maddr)
	if m[key("ferry_ship_bytes_in_total")] <= 0 || m[key("ferry_ship_compression_ratio")] <= 1 ||
		m[key("ferry_ship_segments_sealed_total")] < 1 || m[key("ferry_ship_send_seconds_count", `target="store"`)] < 1 {
		t.Errorf("metrics missing or implausible: bytes_in %v ratio %v sealed %v send_seconds_count %v",
			m[key("ferry_ship_bytes_in_total")], m[key("ferry_ship_compression_ratio")],
			m[key("ferry_ship_segments_sealed_total")], m[key("ferry_ship_send_seconds_count", `target="store"`)])
	}
	if code, body := health(maddr); code != 200 {
		t.Fatalf("healthz %d while all is well: %s", code, body)
	}

	// status --json sees the running shipper.
	var st struct {
		Running bool
		PID     int
		LastSeq uint64 `json:"last_seq"`
	}
	ferrytest.Eventually(t, 10*time.Second, "status shows the running shipper", func() (bool, string) {
		out := ferry(t, nil, "status", "--spool", s.spool, "--json")
		if err := json.Unmarshal([]byte(out.Stdout), &st); err != nil {
			return false, out.String()
		}
		return st.Running && st.PID > 0 && st.LastSeq == 1000, fmt.Sprintf("%+v", st)
	})

	// The receiver stops: the link fails and lag grows past 1s.
	recv.Kill9()
	appendLines(1001, 100)
	ferrytest.Eventually(t, 20*time.Second, "healthz unhealthy with the receiver down", func() (bool, string) {
		code, body := health(maddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "target store"), fmt.Sprintf("%d %s", code, body)
	})
	m, _ = scrape(t, maddr)
	if m[key("ferry_ship_target_up", `target="store"`)] != 0 || m[key("ferry_ship_target_send_failures_total", `target="store"`)] < 1 {
		t.Errorf("target_up %v failures %v with the receiver down", m[key("ferry_ship_target_up", `target="store"`)],
			m[key("ferry_ship_target_send_failures_total", `target="store"`)])
	}

	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	ferrytest.Eventually(t, 60*time.Second, "healthz healthy again", func() (bool, string) {
		code, body := health(maddr)
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
	if code := ship.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d:\n%s", code, ship)
	}
	recv.Terminate(10 * time.Second)
}

// A receiver's /metrics show its applied seq, and /healthz turns 503 while
// its applier keeps failing for longer than health_max_lag.
func TestReceiverMetricsAndHealth(t *testing.T) {
	t.Parallel()
	s := newStream(t, "rmetrics")
	s.ship(logLines(42, 1, 500), "--max-bytes", "16KiB")
	cfg := filepath.Join(s.dir, "recv.toml")
	os.WriteFile(cfg, []byte("health_max_lag = \"1s\"\n"), 0o644)

	good, maddr := newStream(t, s.name), ferrytest.FreeAddr(t)
	good.store = s.store
	recv := startFerry(t, nil, good.receiveArgs("--config", cfg, "--metrics-addr", maddr, "--poll-min", "20ms")...)
	ferrytest.Eventually(t, 30*time.Second, "receiver metrics show seq 500 applied", func() (bool, string) {
		m, err := scrape(t, maddr)
		if err != nil {
			return false, err.Error()
		}
		ok := m[`ferry_receive_applied_seq{stream="rmetrics"}`] == 500 && m[`ferry_receive_records_applied_total{stream="rmetrics"}`] == 500 &&
			m[`ferry_receive_generation{stream="rmetrics"}`] == 1
		return ok, fmt.Sprintf("applied %v", m[`ferry_receive_applied_seq{stream="rmetrics"}`])
	})
	if code, body := health(maddr); code != 200 {
		t.Fatalf("healthy receiver: %d %s", code, body)
	}
	recv.Terminate(10 * time.Second)

	bad, baddr := newStream(t, s.name), ferrytest.FreeAddr(t)
	bad.store = s.store
	failing := startFerry(t, nil, "receive", "--config", cfg, "--store", s.store, "--stream", s.name, "--state", bad.state,
		"--apply", "exec:false", "--metrics-addr", baddr, "--poll-min", "20ms")
	ferrytest.Eventually(t, 30*time.Second, "healthz 503 while the applier fails", func() (bool, string) {
		code, body := health(baddr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "failing"), fmt.Sprintf("%d %s", code, body)
	})
	failing.Terminate(10 * time.Second)
}
