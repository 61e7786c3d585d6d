package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// Bad input to a many-stream or fleet receive is refused before anything
// starts, naming the flag or key.
func TestFleetBadInput(t *testing.T) {
	t.Parallel()
	s := newStream(t, "app")
	s.ship([]byte("one\n"))
	base := []string{"receive", "--store", s.store, "--state", s.state}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--stream", "app*", "--apply", "file:" + s.replica}, []string{"receive.apply", "has no {stream}"}},
		{[]string{"--stream", "a/b,app", "--apply", "file:/x/{stream}"}, []string{"stream", `"a/b" is not a stream name or glob`}},
		{[]string{"--stream", "app", "--fleet", "dr", "--fleet-member", "../h", "--apply", "file:/x/{stream}"}, []string{"fleet.member", `"../h"`}},
		{[]string{"--stream", "app", "--fleet", "d/r", "--apply", "file:/x/{stream}"}, []string{"fleet.name", `"d/r"`}},
		{[]string{"--stream", "app", "--fleet", "dr", "--fleet-ttl", "1s", "--apply", "file:/x/{stream}"}, []string{"fleet.lease_ttl", "minimum 3s"}},
		{[]string{"--stream", "app*", "--once", "--apply", "file:/x/{stream}"}, []string{"--once", "one stream"}},
	} {
		failFerry(t, nil, c.want, append(base, c.args...)...)
	}
}

// A fleet member stopped (SIGSTOP) past its lease ttl on a directory
// store: the other member takes its leases but cannot open its streams
// while it holds their state locks; woken, the stopped member is fenced
// by its own clock before it applies anything more, and every replica
// ends exact: nothing lost, nothing applied twice.
func TestFleetStaleOwnerFenced(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	st, state, replicas := filepath.Join(root, "store"), filepath.Join(root, "state"), filepath.Join(root, "replica")
	if err := os.MkdirAll(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 8
	want := make([][]byte, n)
	ship := func(round int) {
		for i := range n {
			data := logLines(uint64(round*100+i), round*1000, 30)
			want[i] = append(want[i], data...)
			mustFerry(t, bytes.NewReader(data), "ship", "--store", st, "--stream", fmt.Sprintf("s%d", i),
				"--spool", filepath.Join(root, fmt.Sprintf("spool%d", i)))
		}
	}
	member := func(id string) *ferrytest.Process {
		return startFerry(t, nil, "receive", "--store", st, "--stream", "s*", "--state", state,
			"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--fleet", "dr", "--fleet-member", id,
			"--fleet-ttl", "3s", "--poll-max", "300ms")
	}
	exact := func(what string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			done := true
			for i := range n {
				got, _ := os.ReadFile(filepath.Join(replicas, fmt.Sprintf("s%d.log", i)))
				if !bytes.HasPrefix(want[i], got) {
					t.Fatalf("%s: replica s%d is not a prefix of what was shipped (%d bytes, want %d)", what, i, len(got), len(want[i]))
				}
				done = done && len(got) == len(want[i])
			}
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: replicas not complete after %v", what, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ship(1)
	m1, m2 := member("m1"), member("m2")
	exact("two members", 60*time.Second)
	// m1 may have taken every stream before m2 joined: then it hands m2's
	// share over once it sees m2.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(m1.Stderr(), "took stream") || !strings.Contains(m2.Stderr(), "took stream"); {
		if time.Now().After(deadline) {
			t.Fatalf("the streams are not shared:\nm1:\n%s\nm2:\n%s", m1.Stderr(), m2.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	exact("two members, after the rebalance", 60*time.Second)
	// m1 opens the streams it took at its next poll: stop it only once it
	// applies them, holding their state locks.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(m1.Stderr(), "applying stream"); {
		if time.Now().After(deadline) {
			t.Fatalf("m1 applies no stream:\n%s", m1.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // the rest of its share: it opens them together
	if err := m1.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took := strings.Count(m2.Stderr(), "took stream")
	ship(2)
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(m2.Stderr(), "took stream") == took && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Count(m2.Stderr(), "took stream") == took {
		t.Fatalf("m2 took none of the stopped m1's leases:\n%s", m2.Stderr())
	}
	// m2 tries to open the streams it took at its next poll, and cannot:
	// the stopped m1 still locks their state.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(m2.Stderr(), "in use by another ferry process"); {
		if time.Now().After(deadline) {
			t.Fatalf("m2 never found the state of a stream it took locked by the stopped m1:\n%s", m2.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // well past m1's ttl
	if err := m1.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	exact("after m1 woke", 60*time.Second)
	if !strings.Contains(m1.Stderr(), "fenced") && !strings.Contains(m1.Stderr(), "lost the lease") {
		t.Errorf("m1 woke and was not fenced:\n%s", m1.Stderr())
	}
	ship(3)
	exact("after m1 rejoined", 60*time.Second)
	for _, p := range []*ferrytest.Process{m1, m2} {
		if code := p.Terminate(30 * time.Second); code != 0 {
			t.Errorf("member exited %d:\n%s", code, p.Stderr())
		}
	}
}

// ferry status --fleet on a directory store, read from the store alone:
// a stream's live lease names its owner, a damaged lease is shown as
// damaged, not as an owner, and a stream without a lease has none.
func TestFleetStatusLeases(t *testing.T) {
	t.Parallel()
	s := newStream(t, "app")
	s.ship([]byte("one\ntwo\n"))
	for _, name := range []string{"b", "c"} {
		mustFerry(t, strings.NewReader("x\n"), "ship", "--store", s.store, "--stream", name, "--spool", filepath.Join(s.dir, "spool-"+name))
	}
	leases := filepath.Join(s.store, "_fleet", "dr", "leases")
	if err := os.MkdirAll(leases, 0o755); err != nil {
		t.Fatal(err)
	}
	live := `{"version":1,"fleet":"dr","stream":"app","member":"m1","token":"t","renewed":"2100-01-01T00:00:00Z","expires":"2100-01-01T00:00:30Z"}`
	if err := os.WriteFile(filepath.Join(leases, "app"), []byte(live), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leases, "b"), []byte("not a lease"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mustFerry(t, nil, "status", "--fleet", "dr", "--store", s.store, "--json")
	var st struct {
		Streams []struct {
			Stream  string `json:"stream"`
			Owner   string `json:"owner"`
			Stored  uint64 `json:"stored_seq"`
			Damaged string `json:"damaged"`
		} `json:"streams"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("%v:\n%s", err, r)
	}
	got := map[string]string{}
	for _, x := range st.Streams {
		got[x.Stream] = fmt.Sprintf("owner=%q stored=%d damaged=%v", x.Owner, x.Stored, x.Damaged != "")
	}
	want := map[string]string{
		"app": `owner="m1" stored=2 damaged=false`,
		"b":   `owner="" stored=1 damaged=true`,
		"c":   `owner="" stored=1 damaged=false`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("streams %v, want %v:\n%s", got, want, r)
	}
}
