package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A ship with [[streams]] publishes the status of all its streams in one
// file, SPOOL/streams-status.json, rewritten by one writer: no stream's
// spool gets a status.json of its own while it runs, yet ferry status
// --spool SPOOL/NAME shows each stream running, with its records; once
// the ship stops, each stream's own status.json holds its last word and
// ferry status says it is not running.
func TestShipStreamsSharedStatus(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"s-a", "s-b", "s-c"}
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(logs, strings.TrimPrefix(n, "s-")+".log"), logLines(1, 1, 10*(i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	store, spool := filepath.Join(dir, "store"), filepath.Join(dir, "spool")
	cfg := filepath.Join(dir, "ship.toml")
	conf := fmt.Sprintf("store = %q\n[ship]\nspool = %q\nmax_age = \"100ms\"\nlease_ttl = \"3s\"\n[[streams]]\nname = \"s-{base}\"\nsource = \"tail:%s\"\n",
		store, spool, filepath.Join(logs, "*.log"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startFerry(t, nil, "ship", "--config", cfg)
	type status struct {
		Running bool   `json:"running"`
		PID     int    `json:"pid"`
		LastSeq uint64 `json:"last_seq"`
	}
	for i, n := range names {
		ferrytest.Eventually(t, 30*time.Second, "ferry status of "+n, func() (bool, string) {
			if p.Exited() {
				t.Fatalf("ferry ship exited %d:\n%s", p.Code(), p)
			}
			r := ferry(t, nil, "status", "--spool", filepath.Join(spool, n), "--json")
			var s status
			if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &s) != nil {
				return false, r.Output()
			}
			return s.Running && s.PID == p.Pid() && s.LastSeq == uint64(10*(i+1)), r.Stdout
		})
	}
	if !strings.Contains(mustFerry(t, nil, "status", "--spool", filepath.Join(spool, "s-b")).Stdout, "stream s-b (generation 1)  running (pid ") {
		t.Error("ferry status --spool SPOOL/s-b does not show the stream running")
	}
	// One file for all: none in the streams' spools while they run.
	if _, err := os.Stat(filepath.Join(spool, "streams-status.json")); err != nil {
		t.Errorf("no shared status file: %v", err)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(spool, n, "status.json")); err == nil {
			t.Errorf("stream %s has a status.json of its own while it runs: want only the shared file", n)
		}
	}

	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ferry ship exited %d:\n%s", code, p)
	}
	for i, n := range names {
		raw, err := os.ReadFile(filepath.Join(spool, n, "status.json"))
		if err != nil {
			t.Fatalf("stream %s left no last word: %v", n, err)
		}
		var own status
		if err := json.Unmarshal(raw, &own); err != nil || own.Running || own.LastSeq != uint64(10*(i+1)) {
			t.Errorf("stream %s's last word: %s (%v), want running false at seq %d", n, raw, err, 10*(i+1))
		}
		out := mustFerry(t, nil, "status", "--spool", filepath.Join(spool, n)).Stdout
		if !strings.Contains(out, "stream "+n+" (generation 1)  not running") {
			t.Errorf("ferry status of %s after the ship stopped:\n%s", n, out)
		}
	}
}
