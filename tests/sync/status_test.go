//go:build linux

package sync_test

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

// TestSyncStatusAndMetrics: each peer's receiver of a running site
// publishes its status as ferry receive's does, so ferry status --state
// shows the peer's applied seq, how long ago its checkpoint moved and that
// it runs; and /metrics has the shipper's send latency per target beside
// each peer's applied seq, as ferry ship and ferry receive serve them.
func TestSyncStatusAndMetrics(t *testing.T) {
	where, a, b := newPair(t)
	addr := ferrytest.FreeAddr(t)
	raw, err := os.ReadFile(a.conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.conf, append([]byte(fmt.Sprintf("metrics_addr = %q\n", addr)), raw...), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		write(t, filepath.Join(a.tree, fmt.Sprintf("a/m%d", i)), []byte(fmt.Sprintf("a %d\n", i)))
		write(t, filepath.Join(b.tree, fmt.Sprintf("b/m%d", i)), []byte(fmt.Sprintf("b %d\n", i)))
	}
	a.start(t)
	b.start(t)
	waitIdentical(t, a, b, 60*time.Second)
	waitQuiet(t, where, 60*time.Second, a, b)
	n, _ := streamRecords(t, where, "b")
	lastSeq := uint64(n) // b's stream holds its records 1..n, none pruned

	var st struct {
		Running bool `json:"running"`
		Peers   []struct {
			Stream     string    `json:"stream"`
			Running    bool      `json:"running"`
			AppliedSeq uint64    `json:"applied_seq"`
			UpdatedAt  time.Time `json:"updated_at"`
			Age        *float64  `json:"checkpoint_age_seconds"`
		} `json:"peers"`
	}
	ferrytest.Eventually(t, 10*time.Second, "site a's peer receiver published its status", func() (bool, string) {
		r := ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "status", "--state", filepath.Join(a.dir, "state"), "--json")
		if r.Code != 0 {
			t.Fatalf("ferry status --json: %s", r)
		}
		if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
			t.Fatalf("ferry status --json: %v\n%s", err, r.Stdout)
		}
		return len(st.Peers) == 1 && !st.Peers[0].UpdatedAt.IsZero(), r.Stdout
	})
	p := st.Peers[0]
	if !st.Running || !p.Running || p.Stream != "mail@b" || p.AppliedSeq != lastSeq || p.Age == nil {
		t.Fatalf("status of site a's peer: %+v (site running %v); want mail@b running, applied to seq %d, with its checkpoint's age", p, st.Running, lastSeq)
	}
	text := ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "status", "--state", filepath.Join(a.dir, "state"))
	if want := fmt.Sprintf("peer stream mail@b: applied seq %d, checkpoint moved ", lastSeq); !strings.Contains(text.Stdout, want) {
		t.Fatalf("ferry status lacks %q:\n%s", want, text.Stdout)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape site a: %v\n%s", err, a.proc)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sent := metricValue(string(body), `ferry_ship_send_seconds_count{stream="mail@a",target="store"}`)
	if sent == "" || sent == "0" {
		t.Errorf("site a /metrics: ferry_ship_send_seconds_count of mail@a to its store is %q; want the segments it sent", sent)
	}
	for _, want := range []string{
		fmt.Sprintf(`ferry_receive_applied_seq{stream="mail@b"} %d`, lastSeq),
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("site a /metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	b.stop(t)
	a.stop(t)
	r := ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "status", "--state", filepath.Join(a.dir, "state"), "--json")
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.Running || st.Peers[0].Running {
		t.Fatalf("ferry status after the stop: %v\n%s", err, r.Stdout)
	}
}

// metricValue is the value of the series named (with its labels) in a
// scrape, "" when absent.
func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}
