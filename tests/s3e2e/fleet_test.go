package s3e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// Fleet mode with the built binary on versitygw: 30 streams, each shipped
// by its own ferry ship, applied by 3 receivers of one fleet sharing a
// state dir and a replica dir. One is killed with -9: its streams resume
// on the others; a fourth joins: streams move to it. Every replica is
// compared byte for byte after each step, so a record lost or applied
// twice fails the test.
func TestFleetReceiveS3(t *testing.T) {
	h := newHarness(t)
	const n = 30
	var streams []*stream
	for i := range n {
		streams = append(streams, h.newStream("fleet", fmt.Sprintf("s%02d", i)))
	}
	shared := t.TempDir()
	state, replicas := filepath.Join(shared, "state"), filepath.Join(shared, "replica")
	if err := os.MkdirAll(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	want := make([][]byte, n)
	shipRound := func(round int) {
		t.Helper()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for i, s := range streams {
			data := numbered(round*1000+1, 20+i)
			want[i] = append(want[i], data...)
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if r := h.run(nil, bytes.NewReader(data), s.shipArgs()...); r.Code != 0 {
					t.Errorf("ship %s: %s", s.name, r)
				}
			}()
		}
		wg.Wait()
	}
	member := func(id string) *ferrytest.Process {
		return h.start(nil, nil, "receive", "--store", streams[0].url(), "--stream", "s*", "--state", state,
			"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--fleet", "dr", "--fleet-member", id,
			"--fleet-ttl", "3s", "--poll-max", "500ms")
	}
	var m []*ferrytest.Process
	// about says what the members logged of stream, for a failure.
	about := func(stream string) string {
		var b strings.Builder
		for i, p := range m {
			fmt.Fprintf(&b, "--- m%d:\n", i+1)
			for _, line := range strings.Split(p.Stderr(), "\n") {
				if strings.Contains(line, "stream="+stream) && !strings.Contains(line, "level=DEBUG") || strings.Contains(line, "level=ERROR") {
					fmt.Fprintln(&b, line)
				}
			}
		}
		return b.String()
	}
	waitExact := func(what string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			bad := ""
			for i, s := range streams {
				got, _ := os.ReadFile(filepath.Join(replicas, s.name+".log"))
				if !bytes.Equal(got, want[i]) {
					bad = fmt.Sprintf("%s: %s", s.name, describeDiff(want[i], got))
					if len(got) > len(want[i]) || !bytes.HasPrefix(want[i], got) {
						t.Fatalf("%s: replica is not a prefix of what was shipped (duplicate or foreign record): %s", what, bad)
					}
					break
				}
			}
			if bad == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: replicas not exact after %v: %s\n%s", what, within, bad, about(bad[:3]))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	shipRound(1)
	m = []*ferrytest.Process{member("m1"), member("m2"), member("m3")}
	waitExact("three members", 90*time.Second)
	took := func(p *ferrytest.Process) int { return strings.Count(p.Stderr(), "took stream") }
	// The first member may take every stream before the others join; it
	// hands their shares over once it sees them.
	for i, p := range m {
		for deadline := time.Now().Add(30 * time.Second); took(p) == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("member m%d took no stream: the streams are not shared:\n%s", i+1, p.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second) // the handovers open on the new owners
	waitExact("three members, after the rebalance", 60*time.Second)

	// kill -9 one member: the others take its streams after the TTL.
	killed := took(m[0]) - strings.Count(m[0].Stderr(), "released stream")
	m[0].Kill9()
	killedAt := time.Now()
	before := took(m[1]) + took(m[2])
	shipRound(2)
	waitExact("after kill -9 of m1", 60*time.Second)
	t.Logf("every replica exact %v after kill -9 of m1 (lease ttl 3s; round 2 shipped meanwhile)", time.Since(killedAt).Round(100*time.Millisecond))
	if got := took(m[1]) + took(m[2]) - before; got < killed {
		t.Errorf("m2 and m3 took %d streams after m1 died, want at least the %d it held", got, killed)
	}

	// A fourth member joins: streams move to it without a gap or a
	// duplicate.
	m = append(m, member("m4"))
	shipRound(3)
	waitExact("after m4 joined", 60*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for took(m[3]) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if took(m[3]) == 0 {
		t.Fatalf("m4 took no stream:\n%s", m[3].Stderr())
	}
	shipRound(4)
	waitExact("after the rebalance", 60*time.Second)

	r := h.ferry(nil, "status", "--store", streams[0].url(), "--fleet", "dr")
	for _, w := range []string{"m2", "m3", "m4", "s00", "s29"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("status --fleet does not name %s:\n%s", w, r)
		}
	}
	for _, p := range m[1:] {
		if code := p.Terminate(30 * time.Second); code != 0 {
			t.Errorf("member exited %d:\n%s", code, p.Stderr())
		}
	}
}
