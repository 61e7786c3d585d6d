package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A receiver of many streams serves metrics_addr with one set of
// ferry_receive_* series per stream, publishes each stream's status.json,
// and ferry status --state shows each stream's applied and stored seq and
// its lag: a stream waiting on a missing segment shows the records it
// lacks, the others none; once stopped, nothing is shown running.
func TestReceiveManyStreamsMetricsAndStatus(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	st, state, replicas := filepath.Join(root, "store"), filepath.Join(root, "state"), filepath.Join(root, "replica")
	if err := os.MkdirAll(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	streams := []string{"app-a", "app-b", "app-c"}
	want := map[string][]byte{}
	for i, name := range streams {
		for round := range 3 { // three segments each
			data := logLines(uint64(i), round*10, 10)
			want[name] = append(want[name], data...)
			mustFerry(t, bytes.NewReader(data), "ship", "--store", st, "--stream", name, "--spool", filepath.Join(root, "spool-"+name))
		}
	}
	// app-c's middle segment goes missing: its receiver applies the
	// first and waits on the gap, 20 records short of the store.
	segs, err := filepath.Glob(filepath.Join(st, "app-c", "0*.seg.zst"))
	if err != nil || len(segs) != 3 {
		t.Fatalf("app-c segments %v (%v), want 3", segs, err)
	}
	gapSeg, err := os.ReadFile(segs[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	maddr := ferrytest.FreeAddr(t)
	recv := startFerry(t, nil, "receive", "--store", st, "--stream", "app-*", "--state", state,
		"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--poll-min", "50ms", "--poll-max", "200ms",
		"--metrics-addr", maddr)
	replica := func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(replicas, name+".log"))
		return b
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if bytes.Equal(replica("app-a"), want["app-a"]) && bytes.Equal(replica("app-b"), want["app-b"]) &&
			len(replica("app-c")) == len(logLines(2, 0, 10)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not applied after 60s:\n%s", recv.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// /metrics: every stream by its label.
	var m map[string]float64
	for deadline := time.Now().Add(20 * time.Second); ; {
		m, err = scrape(t, maddr)
		if err == nil && m[`ferry_receive_applied_seq{stream="app-c"}`] == 10 && m[`ferry_receive_applied_seq{stream="app-a"}`] == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics %v (%v), want applied seq 30, 30, 10:\n%s", m, err, recv.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, seq := range map[string]float64{"app-a": 30, "app-b": 30, "app-c": 10} {
		if got := m[fmt.Sprintf(`ferry_receive_applied_seq{stream=%q}`, name)]; got != seq {
			t.Errorf("ferry_receive_applied_seq of %s = %v, want %v", name, got, seq)
		}
		if got := m[fmt.Sprintf(`ferry_receive_records_applied_total{stream=%q}`, name)]; got != seq {
			t.Errorf("ferry_receive_records_applied_total of %s = %v, want %v", name, got, seq)
		}
	}
	if m[`ferry_receive_gap_wait_seconds{stream="app-c"}`] <= 0 || m[`ferry_receive_gap_wait_seconds{stream="app-a"}`] != 0 {
		t.Errorf("gap wait: app-c %v (want > 0), app-a %v (want 0)", m[`ferry_receive_gap_wait_seconds{stream="app-c"}`], m[`ferry_receive_gap_wait_seconds{stream="app-a"}`])
	}

	// ferry status --state: each stream's applied and stored seq, lag.
	type streamStatus struct {
		Stream     string   `json:"stream"`
		Running    bool     `json:"running"`
		AppliedSeq uint64   `json:"applied_seq"`
		StoredSeq  *uint64  `json:"stored_seq"`
		LagRecords *uint64  `json:"lag_records"`
		LagSeconds *float64 `json:"lag_seconds"`
	}
	var status struct {
		Multi    bool           `json:"multi"`
		Running  bool           `json:"running"`
		PID      int            `json:"pid"`
		Patterns []string       `json:"patterns"`
		Streams  []streamStatus `json:"streams"`
	}
	show := func() map[string]string {
		t.Helper()
		r := mustFerry(t, nil, "status", "--state", state, "--json")
		status.Streams = nil
		if err := json.Unmarshal([]byte(r.Stdout), &status); err != nil {
			t.Fatalf("%v:\n%s", err, r)
		}
		got := map[string]string{}
		for _, s := range status.Streams {
			v := fmt.Sprintf("running=%v applied=%d", s.Running, s.AppliedSeq)
			if s.StoredSeq != nil && s.LagRecords != nil && s.LagSeconds != nil {
				v += fmt.Sprintf(" stored=%d lag=%d lagged=%v", *s.StoredSeq, *s.LagRecords, *s.LagSeconds > 0)
			}
			got[s.Stream] = v
		}
		return got
	}
	wantRunning := map[string]string{
		"app-a": "running=true applied=30 stored=30 lag=0 lagged=false",
		"app-b": "running=true applied=30 stored=30 lag=0 lagged=false",
		"app-c": "running=true applied=10 stored=30 lag=20 lagged=true",
	}
	var got map[string]string
	for deadline := time.Now().Add(20 * time.Second); ; { // the status loop's next round
		if got = show(); fmt.Sprint(got) == fmt.Sprint(wantRunning) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status streams %v, want %v", got, wantRunning)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !status.Multi || !status.Running || status.PID != recv.Pid() || fmt.Sprint(status.Patterns) != "[app-*]" {
		t.Errorf("status: multi %v running %v pid %d (receiver's %d) patterns %v", status.Multi, status.Running, status.PID, recv.Pid(), status.Patterns)
	}
	table := mustFerry(t, nil, "status", "--state", state).Stdout
	for _, w := range []string{"many streams (app-*)", "STREAM", "LAG RECORDS", "app-c", "waiting on a gap"} {
		if !strings.Contains(table, w) {
			t.Errorf("ferry status lacks %q:\n%s", w, table)
		}
	}

	// The missing segment back: app-c catches up, its lag gone.
	if err := os.WriteFile(segs[1], gapSeg, 0o644); err != nil {
		t.Fatal(err)
	}
	wantRunning["app-c"] = "running=true applied=30 stored=30 lag=0 lagged=false"
	for deadline := time.Now().Add(30 * time.Second); ; {
		if got = show(); fmt.Sprint(got) == fmt.Sprint(wantRunning) && bytes.Equal(replica("app-c"), want["app-c"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the gap filled: status streams %v, want %v", got, wantRunning)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if code := recv.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("receive exited %d:\n%s", code, recv.Stderr())
	}
	got = show()
	if status.Running {
		t.Errorf("stopped receiver shown running")
	}
	for name, v := range got {
		if !strings.HasPrefix(v, "running=false applied=30") {
			t.Errorf("stopped receiver's %s: %s", name, v)
		}
	}
}
