package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readSyscalls is how many read system calls process pid made so far
// (/proc/PID/io syscr: read, pread, readv, ...).
func readSyscalls(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatalf("this test counts the shipper's reads in /proc/PID/io: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/io: %q: %v", pid, line, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/io has no syscr line:\n%s", pid, raw)
	return 0
}

// TestShipBundledTailsReadOnTicks: streams that bundle ticks seal
// (bundle_interval 2s, max_age 2s) have their tails read their busy files
// about twice a tick, just before it and as it comes, not every 100 ms:
// over 4 s of 10 files each written every 10 ms, the ship makes far
// fewer read system calls than the three per tail per 100 ms that reading
// every Poll costs (a read with data, one finding the end, one more after
// it). Every line is stored, once, in order.
func TestShipBundledTailsReadOnTicks(t *testing.T) {
	t.Parallel()
	const streams = 10
	rng := seededRand(t)
	d := t.TempDir()
	logs := filepath.Join(d, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &bundleRig{t: t, dir: d, cfg: filepath.Join(d, "ship.toml"), store: filepath.Join(d, "store"), spool: filepath.Join(d, "spool"),
		writers: map[string]*logWriter{}, rng: rng}
	conf := fmt.Sprintf(`store = %q
[ship]
spool = %q
max_age = "2s"
bundle_interval = "2s"
[[streams]]
name = "{base}"
source = "tail:%s"
`, r.store, r.spool, filepath.Join(logs, "*.log"))
	if err := os.WriteFile(r.cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range streams {
		name := fmt.Sprintf("s-%03d", i)
		r.writers[name] = newLogWriter(t, filepath.Join(logs, name+".log"), rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	}
	r.burst()
	p := startFerry(t, nil, "ship", "--config", r.cfg)
	alive := func() {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
	}
	r.waitStored(alive) // every stream started and bundled
	for range 100 {     // 1 s: every tail busy
		r.burst()
		time.Sleep(10 * time.Millisecond)
	}
	before, start := readSyscalls(t, p.Pid()), time.Now()
	for range 400 {
		r.burst()
		time.Sleep(10 * time.Millisecond)
	}
	reads, took := readSyscalls(t, p.Pid())-before, time.Since(start)
	alive()
	r.waitStored(alive)
	// Every Poll: 3 reads per tail per 100 ms, 300 a second here. On the
	// ticks: about 2 rounds of 3 per tail per 2 s, 30 a second.
	perPoll := float64(3*streams) * took.Seconds() / 0.1
	t.Logf("%d read system calls in %s for %d busy tails (reading every 100 ms: about %.0f)", reads, took.Round(time.Millisecond), streams, perPoll)
	if float64(reads) > perPoll/3 {
		t.Fatalf("the ship made %d read system calls in %s with %d busy tails on 2 s bundle ticks; reading every 100 ms makes about %.0f, on the ticks about a tenth of that",
			reads, took.Round(time.Millisecond), streams, perPoll)
	}
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
}
