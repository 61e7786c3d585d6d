package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// siteConfig writes the config file of a site that can be either role:
// it ships its log (tail) as a primary and applies into it as a secondary.
func siteConfig(t *testing.T, s *site, store string) string {
	t.Helper()
	path := filepath.Join(s.dir, "ferry.toml")
	cfg := fmt.Sprintf(`store = %q
stream = "app"

[site]
id = %q

[ship]
spool = %q
source = "tail:%s"
max_records = 64
max_age = "50ms"
lease_ttl = "5s"
shutdown_timeout = "20s"

[receive]
state = %q
apply = "file:%s"
poll_min = "20ms"
poll_max = "100ms"
`, store, s.name, s.spool, s.log, s.state, s.log)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// app appends numbered lines ("s0000001\n", ...) to whichever log is the
// primary's, about 1000 a second, one numbering across all of them.
type app struct {
	t    *testing.T
	mu   sync.Mutex
	n    int
	stop chan struct{}
	done chan struct{}
}

// start writes to path until pause.
func (a *app) start(path string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatal(err)
	}
	a.stop, a.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(a.done)
		defer f.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
			a.mu.Lock()
			var buf []byte
			for range 2 {
				a.n++
				buf = fmt.Appendf(buf, "s%07d\n", a.n)
			}
			a.mu.Unlock()
			if _, err := f.Write(buf); err != nil {
				a.t.Error(err)
				return
			}
		}
	}()
}

// pause stops the writes and returns how many lines were written so far.
func (a *app) pause() int {
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

type switchoverJSON struct {
	LastSeq          uint64  `json:"last_seq"`
	Generation       uint32  `json:"generation"`
	Report           string  `json:"report"`
	DivergentRecords int     `json:"divergent_records"`
	CutBytes         int64   `json:"cut_bytes"`
	DrainSeconds     float64 `json:"drain_seconds"`
	CatchUpSeconds   float64 `json:"catchup_seconds"`
	PromoteSeconds   float64 `json:"promote_seconds"`
	RejoinSeconds    float64 `json:"rejoin_seconds"`
	TotalSeconds     float64 `json:"total_seconds"`
}

// Ten planned switchovers back and forth under a live stream of about
// 1000 records a second: no record is lost or doubled, both logs end
// byte-identical, every rejoin report is empty, and the stream's history
// holds the 11 generations.
func TestSwitchoverBackAndForth(t *testing.T) {
	t.Parallel()
	const rounds = 10
	base := t.TempDir()
	store := filepath.Join(base, "store")
	a, b := newSite(t, base, "a"), newSite(t, base, "b")
	cfgs := map[*site]string{a: siteConfig(t, a, store), b: siteConfig(t, b, store)}
	cur, other := a, b

	w := &app{t: t}
	w.start(cur.log)
	ship := startFerry(t, nil, "ship", "--config", cfgs[cur])
	recv := startFerry(t, nil, "receive", "--config", cfgs[other])
	waitSpoolLock(t, cur.spool, ship)
	var results []switchoverJSON
	for round := 1; round <= rounds; round++ {
		time.Sleep(700 * time.Millisecond)
		// The application is stopped; the switchover waits until the
		// shipper has read its last lines.
		n := w.pause()
		r := ferry(t, nil, "switchover", "--primary", cfgs[cur], "--secondary", cfgs[other], "--json", "--timeout", "30s")
		if r.Code != 0 {
			t.Fatalf("round %d: switchover %s -> %s:\n%s\nshipper:\n%s\nreceiver:\n%s", round, cur.name, other.name, r, ship, recv)
		}
		var res switchoverJSON
		if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
			t.Fatalf("round %d: switchover --json: %v\n%s", round, err, r)
		}
		if res.LastSeq != uint64(n) || res.Generation != uint32(round+1) || res.DivergentRecords != 0 || res.CutBytes != 0 {
			t.Fatalf("round %d: switchover %+v; want generation %d forked at the app's %d lines, no divergence", round, res, round+1, n)
		}
		if sum := ferrytest.ReadDivergenceReport(t, res.Report); sum.Records != 0 || len(sum.Lines) != 0 || sum.ForkSeq != uint64(n) {
			t.Fatalf("round %d: report %s: %+v with %d records; want empty at seq %d", round, res.Report, sum, len(sum.Lines), n)
		}
		results = append(results, res)
		for _, p := range []*ferrytest.Process{ship, recv} {
			if code, ok := p.Wait(10 * time.Second); !ok || code != 0 {
				t.Fatalf("round %d: a daemon stopped by switchover exited %d (exited: %v):\n%s", round, code, ok, p)
			}
		}
		cur, other = other, cur
		ship = startFerry(t, nil, "ship", "--config", cfgs[cur])
		recv = startFerry(t, nil, "receive", "--config", cfgs[other])
		// A switchover before the shipper holds its spool would find none
		// running (under load its start took over the 700ms of a round).
		waitSpoolLock(t, cur.spool, ship)
		w.start(cur.log)
	}
	time.Sleep(500 * time.Millisecond)
	n := w.pause()
	waitApplied(t, other.state, uint64(n), 30*time.Second)
	want := numberedSwitchLines(n)
	for _, s := range []*site{a, b} {
		if got := readFile(t, s.log); !bytes.Equal(got, want) {
			t.Fatalf("log of %s: %s", s.name, describeDiff(want, got))
		}
	}
	for _, p := range []*ferrytest.Process{ship, recv} {
		if code := p.Terminate(20 * time.Second); code != 0 {
			t.Fatalf("exit %d:\n%s", code, p)
		}
	}
	v := mustFerry(t, nil, "verify", "--store", store, "--stream", "app")
	if !strings.Contains(v.Stdout, fmt.Sprintf("history: %d generations", rounds+1)) || strings.Contains(v.Stdout, "DIVERGENT") {
		t.Fatalf("verify: want %d generations, nothing divergent:\n%s", rounds+1, v)
	}
	t.Logf("%d lines over %d switchovers; median seconds: total %.3f, drain %.3f, catch-up %.3f, promote %.3f, rejoin %.3f; max total %.3f",
		n, rounds, median(results, func(r switchoverJSON) float64 { return r.TotalSeconds }),
		median(results, func(r switchoverJSON) float64 { return r.DrainSeconds }),
		median(results, func(r switchoverJSON) float64 { return r.CatchUpSeconds }),
		median(results, func(r switchoverJSON) float64 { return r.PromoteSeconds }),
		median(results, func(r switchoverJSON) float64 { return r.RejoinSeconds }),
		slices.Max(collect(results, func(r switchoverJSON) float64 { return r.TotalSeconds })))
}

// waitSpoolLock waits until shipper p holds the LOCK of spool: from then
// on ferry switchover finds it running (before, it finds no shipper, and
// judges the spool as it is).
func waitSpoolLock(t *testing.T, spool string, p *ferrytest.Process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if pid, err := os.ReadFile(filepath.Join(spool, "LOCK")); err == nil && strings.TrimSpace(string(pid)) == strconv.Itoa(p.Pid()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shipper did not take the LOCK of spool %s within 30s:\n%s", spool, p)
		}
		time.Sleep(time.Millisecond)
	}
}

func numberedSwitchLines(n int) []byte {
	var b []byte
	for i := 1; i <= n; i++ {
		b = fmt.Appendf(b, "s%07d\n", i)
	}
	return b
}

func collect(rs []switchoverJSON, f func(switchoverJSON) float64) []float64 {
	var v []float64
	for _, r := range rs {
		v = append(v, f(r))
	}
	return v
}

func median(rs []switchoverJSON, f func(switchoverJSON) float64) float64 {
	v := collect(rs, f)
	slices.Sort(v)
	return v[len(v)/2]
}

// A switchover run while the primary's shipper is still reading a backlog
// in its tail (it just started, the application already stopped) waits
// until the shipper has read the file to its end, by the progress it
// publishes in status.json, and only then stops it: nothing is refused,
// and the fork is the file's last line.
func TestSwitchoverWaitsForTheShipperToReadItsTail(t *testing.T) {
	t.Parallel()
	const lines = 20_000
	base := t.TempDir()
	store := filepath.Join(base, "store")
	a, b := newSite(t, base, "a"), newSite(t, base, "b")
	cfgA, cfgB := siteConfig(t, a, store), siteConfig(t, b, store)
	if err := os.WriteFile(a.log, numberedSwitchLines(100), 0o644); err != nil {
		t.Fatal(err)
	}
	recv := startFerry(t, nil, "receive", "--config", cfgB)
	ship := startFerry(t, nil, "ship", "--config", cfgA)
	waitApplied(t, b.state, 100, 30*time.Second)
	if code := ship.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, ship)
	}
	// The application writes a backlog while the shipper is down.
	if err := os.WriteFile(a.log, numberedSwitchLines(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	// With no shipper running, nothing reads the backlog: refused, and
	// nothing is changed.
	failFerry(t, nil, []string{"no shipper was running on spool " + a.spool, "did not drain", "stopped at byte 900 of " + a.log},
		"switchover", "--primary", cfgA, "--secondary", cfgB, "--timeout", "60s")
	ship = startFerry(t, nil, "ship", "--config", cfgA)
	// The switchover begins as soon as the restarted shipper holds its
	// spool, which is held still (SIGSTOP, as a process starved under load
	// is) for a second: it is still starting, and has read nothing new.
	waitSpoolLock(t, a.spool, ship)
	if err := ship.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	sw := startFerry(t, nil, "switchover", "--primary", cfgA, "--secondary", cfgB, "--json", "--timeout", "60s")
	time.Sleep(time.Second)
	if err := ship.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if code, ok := sw.Wait(90 * time.Second); !ok || code != 0 {
		t.Fatalf("switchover while the shipper starts exited %d (exited: %v):\n%s\nshipper:\n%s", code, ok, sw, ship)
	}
	var res switchoverJSON
	if err := json.Unmarshal([]byte(sw.Stdout()), &res); err != nil {
		t.Fatalf("switchover --json: %v\n%s", err, sw)
	}
	if res.LastSeq != lines || res.Generation != 2 || res.DivergentRecords != 0 {
		t.Fatalf("switchover %+v; want generation 2 forked at the file's %d lines, no divergence", res, lines)
	}
	for _, p := range []*ferrytest.Process{ship, recv} {
		if code, ok := p.Wait(10 * time.Second); !ok || code != 0 {
			t.Fatalf("a daemon stopped by switchover exited %d (exited: %v):\n%s", code, ok, p)
		}
	}
	if got := readFile(t, b.log); !bytes.Equal(got, numberedSwitchLines(lines)) {
		t.Fatalf("replica on b: %s", describeDiff(numberedSwitchLines(lines), got))
	}
	t.Logf("drain %.2fs, catch-up %.2fs", res.DrainSeconds, res.CatchUpSeconds)
}
