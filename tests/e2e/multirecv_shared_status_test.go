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

// A receiver of many streams publishes its running streams' status in
// one file, STATE/streams-status.json, rewritten by one writer every 5 s:
// a stream's own status.json is written as it starts and not again while
// it runs, yet ferry status --state (all streams, and one) shows each
// stream running with its stored seq; once the receiver stops, the shared
// file is gone and each stream's own status.json holds its last word.
func TestReceiveManySharedStatus(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	st, state, replicas := filepath.Join(root, "store"), filepath.Join(root, "state"), filepath.Join(root, "replica")
	if err := os.MkdirAll(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	streams := []string{"s-a", "s-b", "s-c"}
	seqs := map[string]uint64{}
	for i, name := range streams {
		n := 10 * (i + 1)
		mustFerry(t, bytes.NewReader(logLines(uint64(i), 0, n)), "ship", "--store", st, "--stream", name, "--spool", filepath.Join(root, "spool-"+name))
		seqs[name] = uint64(n)
	}
	recv := startFerry(t, nil, "receive", "--store", st, "--stream", "s-*", "--state", state,
		"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--poll-min", "50ms", "--poll-max", "200ms")

	type streamStatus struct {
		Stream     string    `json:"stream"`
		Running    bool      `json:"running"`
		PID        int       `json:"pid"`
		UpdatedAt  time.Time `json:"updated_at"`
		AppliedSeq uint64    `json:"applied_seq"`
		StoredSeq  *uint64   `json:"stored_seq"`
	}
	var all struct {
		Running bool           `json:"running"`
		Streams []streamStatus `json:"streams"`
	}
	ready := func(s streamStatus) bool {
		return s.Running && s.PID == recv.Pid() && s.AppliedSeq == seqs[s.Stream] && s.StoredSeq != nil && *s.StoredSeq == seqs[s.Stream]
	}
	ferrytest.Eventually(t, 60*time.Second, "ferry status --state: every stream running, applied and stored", func() (bool, string) {
		if recv.Exited() {
			t.Fatalf("ferry receive exited %d:\n%s", recv.Code(), recv)
		}
		r := ferry(t, nil, "status", "--state", state, "--json") // fails until the receiver makes the state dir
		all.Streams = nil
		if err := json.Unmarshal([]byte(r.Stdout), &all); r.Code != 0 || err != nil || len(all.Streams) != len(streams) {
			return false, r.Output()
		}
		for _, s := range all.Streams {
			if !ready(s) {
				return false, r.Stdout
			}
		}
		return all.Running, r.Stdout
	})
	var one streamStatus
	if err := json.Unmarshal([]byte(mustFerry(t, nil, "status", "--state", filepath.Join(state, "s-b"), "--json").Stdout), &one); err != nil || !ready(one) {
		t.Errorf("ferry status --state STATE/s-b: %+v (%v), want running, applied and stored 20", one, err)
	}

	// The shared file holds every stream; each stream's own status.json
	// is the one it wrote as it started, not rewritten since.
	type shared struct {
		PID       int                     `json:"pid"`
		UpdatedAt time.Time               `json:"updated_at"`
		Streams   map[string]streamStatus `json:"streams"`
	}
	readShared := func() (shared, error) {
		var s shared
		raw, err := os.ReadFile(filepath.Join(state, "streams-status.json"))
		if err == nil {
			err = json.Unmarshal(raw, &s)
		}
		return s, err
	}
	own := func(name string) streamStatus {
		t.Helper()
		var s streamStatus
		raw, err := os.ReadFile(filepath.Join(state, name, "status.json"))
		if err != nil || json.Unmarshal(raw, &s) != nil {
			t.Fatalf("stream %s's own status.json: %s (%v)", name, raw, err)
		}
		return s
	}
	started := map[string]time.Time{}
	var newest time.Time
	for _, n := range streams {
		started[n] = own(n).UpdatedAt
		if started[n].After(newest) {
			newest = started[n]
		}
	}
	ferrytest.Eventually(t, 30*time.Second, "the shared file rewritten 5 s after the streams started", func() (bool, string) {
		s, err := readShared()
		if err != nil {
			return false, err.Error()
		}
		if s.PID != recv.Pid() || len(s.Streams) != len(streams) {
			t.Fatalf("shared file: pid %d (receiver's %d), streams %v", s.PID, recv.Pid(), s.Streams)
		}
		return s.UpdatedAt.Sub(newest) >= 5*time.Second, s.UpdatedAt.String()
	})
	for _, n := range streams {
		if got := own(n).UpdatedAt; !got.Equal(started[n]) {
			t.Errorf("stream %s's own status.json rewritten while it runs (%s, written first at %s): want only the shared file", n, got, started[n])
		}
	}

	if code := recv.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ferry receive exited %d:\n%s", code, recv)
	}
	if _, err := os.Stat(filepath.Join(state, "streams-status.json")); !os.IsNotExist(err) {
		t.Errorf("the shared file outlives the receiver: %v", err)
	}
	for _, n := range streams {
		if s := own(n); s.Running || !s.UpdatedAt.After(started[n]) {
			t.Errorf("stream %s's last word: %+v, want running false, written as it stopped", n, s)
		}
	}
	r := mustFerry(t, nil, "status", "--state", state, "--json")
	all.Streams = nil
	if err := json.Unmarshal([]byte(r.Stdout), &all); err != nil || all.Running || len(all.Streams) != len(streams) {
		t.Fatalf("ferry status --state after the receiver stopped:\n%s", r.Stdout)
	}
	for _, s := range all.Streams {
		if s.Running || s.AppliedSeq != seqs[s.Stream] {
			t.Errorf("stream %s after the receiver stopped: %+v, want not running, applied %d", s.Stream, s, seqs[s.Stream])
		}
	}
	if table := mustFerry(t, nil, "status", "--state", state).Stdout; !strings.Contains(table, "not running, many streams (s-*)") {
		t.Errorf("ferry status --state after the receiver stopped:\n%s", table)
	}
}

// Two fleet members share one state dir: each publishes its streams in
// its own shared file, STATE/streams-status.MEMBER.json, so neither
// overwrites the other's; ferry status --state shows every stream
// running under the member that applies it, with its stored seq, for as
// long as they run (past the 10 s a stream's own status.json, written as
// it started, stays fresh); once both stop, their files are gone.
func TestFleetMembersSharedStatus(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	st, state, replicas := filepath.Join(root, "store"), filepath.Join(root, "state"), filepath.Join(root, "replica")
	if err := os.MkdirAll(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	streams := []string{"f-a", "f-b", "f-c", "f-d"}
	for i, name := range streams {
		mustFerry(t, bytes.NewReader(logLines(uint64(i), 0, 10)), "ship", "--store", st, "--stream", name, "--spool", filepath.Join(root, "spool-"+name))
	}
	member := func(id string) *ferrytest.Process {
		return startFerry(t, nil, "receive", "--store", st, "--stream", "f-*", "--state", state,
			"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--fleet", "dr", "--fleet-member", id,
			"--fleet-ttl", "3s", "--poll-max", "300ms")
	}
	m1, m2 := member("m1"), member("m2")
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(m1.Stderr(), "took stream") || !strings.Contains(m2.Stderr(), "took stream"); {
		if time.Now().After(deadline) {
			t.Fatalf("the streams are not shared:\nm1:\n%s\nm2:\n%s", m1.Stderr(), m2.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	type streamStatus struct {
		Stream     string  `json:"stream"`
		Running    bool    `json:"running"`
		PID        int     `json:"pid"`
		AppliedSeq uint64  `json:"applied_seq"`
		StoredSeq  *uint64 `json:"stored_seq"`
	}
	check := func() (bool, string) {
		r := ferry(t, nil, "status", "--state", state, "--json")
		var all struct {
			Streams []streamStatus `json:"streams"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &all); r.Code != 0 || err != nil || len(all.Streams) != len(streams) {
			return false, r.Output()
		}
		pids := map[int]bool{}
		for _, s := range all.Streams {
			if !s.Running || s.AppliedSeq != 10 || s.StoredSeq == nil || *s.StoredSeq != 10 || (s.PID != m1.Pid() && s.PID != m2.Pid()) {
				return false, r.Stdout
			}
			pids[s.PID] = true
		}
		return len(pids) == 2, r.Stdout
	}
	ferrytest.Eventually(t, 60*time.Second, "every stream running under a member, with its stored seq", check)
	for _, id := range []string{"m1", "m2"} {
		ferrytest.Eventually(t, 20*time.Second, "member "+id+"'s shared file", func() (bool, string) {
			_, err := os.Stat(filepath.Join(state, "streams-status."+id+".json"))
			return err == nil, fmt.Sprint(err)
		})
	}
	// Past 10 s after the streams started, for two of the members' 5 s
	// rounds, every read shows every stream with its stored seq.
	time.Sleep(10 * time.Second)
	for end := time.Now().Add(11 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if ok, out := check(); !ok {
			t.Fatalf("ferry status --state while both members run:\n%s", out)
		}
	}
	for _, p := range []*ferrytest.Process{m1, m2} {
		if code := p.Terminate(30 * time.Second); code != 0 {
			t.Errorf("member exited %d:\n%s", code, p.Stderr())
		}
	}
	for _, id := range []string{"m1", "m2"} {
		if _, err := os.Stat(filepath.Join(state, "streams-status."+id+".json")); !os.IsNotExist(err) {
			t.Errorf("member %s's shared file outlives it: %v", id, err)
		}
	}
}
