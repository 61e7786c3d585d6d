package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// TestShipManyStreams runs one ferry ship with three [[streams]] tables
// and a glob table (docs/STREAMS.md) while writers append to every file:
// a glob file rotated while it runs, one created while it runs, one
// created while it is dead, one removed (its stream finishes and ends),
// and the shipper killed with -9 several times. Every stream's replica,
// made by today's ferry receive --stream NAME, is then exactly what was
// written to its file: nothing lost or repeated in any stream.
func TestShipManyStreams(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	dir := t.TempDir()
	logs, appLogs := filepath.Join(dir, "logs"), filepath.Join(dir, "logs", "app")
	if err := os.MkdirAll(appLogs, 0o755); err != nil {
		t.Fatal(err)
	}
	store, spool := filepath.Join(dir, "store"), filepath.Join(dir, "spool")
	if err := os.Mkdir(filepath.Join(dir, "replica"), 0o755); err != nil {
		t.Fatal(err)
	}
	maddr := ferrytest.FreeAddr(t)
	cfg := filepath.Join(dir, "ship.toml")
	conf := fmt.Sprintf(`store = %q
metrics_addr = %q
[ship]
spool = %q
max_age = "100ms"
lease_ttl = "3s"
`, store, maddr, spool)
	for _, n := range []string{"orders", "users", "audit"} {
		conf += fmt.Sprintf("[[streams]]\nname = %q\nsource = \"tail:%s\"\n", n, filepath.Join(logs, n+".log"))
	}
	conf += fmt.Sprintf("[[streams]]\nname = \"app-{base}\"\nsource = \"tail:%s\"\nscan_interval = \"100ms\"\nmax_bytes = \"16KiB\"\n",
		filepath.Join(appLogs, "*.log"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	writers := map[string]*logWriter{} // by stream
	addWriter := func(stream, path string) *logWriter {
		w := newLogWriter(t, path, rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
		mu.Lock()
		writers[stream] = w
		mu.Unlock()
		return w
	}
	for _, n := range []string{"orders", "users", "audit"} {
		addWriter(n, filepath.Join(logs, n+".log"))
	}
	web := addWriter("app-web", filepath.Join(appLogs, "web.log"))
	tmp := addWriter("app-tmp", filepath.Join(appLogs, "tmp.log"))
	removed := false // tmp.log: no more bursts once set
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				writerDone <- nil
				return
			case <-time.After(5 * time.Millisecond):
			}
			mu.Lock()
			for n, w := range writers {
				if n == "app-tmp" && removed {
					continue
				}
				if err := w.burst(); err != nil {
					mu.Unlock()
					writerDone <- fmt.Errorf("%s: %w", n, err)
					return
				}
			}
			mu.Unlock()
		}
	}()
	stopWriters := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(stopWriters)

	var procs []*ferrytest.Process
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range procs {
				t.Logf("shipper #%d stderr:\n%s", i+1, ferrytest.Clip(p.Stderr()))
			}
		}
	})
	ship := func() *ferrytest.Process {
		p := startFerry(t, nil, "ship", "--config", cfg)
		procs = append(procs, p)
		return p
	}
	streamOf := func(name string) *stream {
		return &stream{t: t, dir: dir, name: name, store: store, state: filepath.Join(dir, "state", name),
			replica: filepath.Join(dir, "replica", name+".log")}
	}
	alive := func(p *ferrytest.Process) {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
	}
	p := ship()
	ferrytest.Eventually(t, 30*time.Second, "a segment of every stream", func() (bool, string) {
		alive(p)
		for _, n := range []string{"orders", "users", "audit", "app-web", "app-tmp"} {
			if len(streamOf(n).segments()) == 0 {
				return false, n + " has none"
			}
		}
		return true, ""
	})
	// Metrics: one process, every stream by its label.
	ferrytest.Eventually(t, 30*time.Second, "every stream in /metrics", func() (bool, string) {
		m, err := scrape(t, maddr)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range []string{"orders", "users", "audit", "app-web", "app-tmp"} {
			if m[fmt.Sprintf(`ferry_ship_last_seq{stream=%q}`, n)] == 0 {
				return false, n + " has no ferry_ship_last_seq"
			}
		}
		return true, ""
	})

	// Each stream publishes its status in its own spool.
	ferrytest.Eventually(t, 30*time.Second, "ferry status of a stream", func() (bool, string) {
		r := ferry(t, nil, "status", "--spool", filepath.Join(spool, "app-web"))
		return strings.Contains(r.Stdout, "stream app-web (generation 1)  running (pid "), r.Output()
	})

	// A glob file rotated and one created while the shipper runs.
	if _, err := web.rotate(); err != nil {
		t.Fatal(err)
	}
	addWriter("app-db", filepath.Join(appLogs, "db.log"))
	time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
	p.Kill9()
	t.Log("kill -9 #1")
	addWriter("app-cache", filepath.Join(appLogs, "cache.log")) // created while it is dead
	p = ship()
	// tmp.log removed while the shipper runs (and follows it: a file
	// removed while ferry is down cannot be finished): its stream ships
	// every line and ends.
	ferrytest.Eventually(t, 30*time.Second, "app-tmp following tmp.log again", func() (bool, string) {
		alive(p)
		return strings.Contains(p.Stderr(), `msg="stream started" stream=app-tmp path=`+tmp.path), "not yet"
	})
	time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
	mu.Lock()
	removed = true
	tmpAll, tmpN := tmp.written()
	if err := os.Remove(tmp.path); err != nil {
		t.Fatal(err)
	}
	mu.Unlock()
	ferrytest.Eventually(t, 60*time.Second, "app-tmp finished", func() (bool, string) {
		alive(p)
		return strings.Contains(p.Stderr(), `msg="stream finished: its input ended and everything read is shipped" stream=app-tmp`), "not yet"
	})
	t.Logf("tmp.log removed after %d lines", tmpN)
	// A finished stream leaves /metrics.
	ferrytest.Eventually(t, 30*time.Second, "app-tmp gone from /metrics", func() (bool, string) {
		m, err := scrape(t, maddr)
		if err != nil {
			return false, err.Error()
		}
		_, there := m[`ferry_ship_last_seq{stream="app-tmp"}`]
		return !there && m[`ferry_ship_last_seq{stream="app-web"}`] > 0, "app-tmp still there, or app-web not"
	})
	for k := 2; k <= 3; k++ {
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		p.Kill9()
		t.Logf("kill -9 #%d", k)
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
		p = ship()
	}
	time.Sleep(time.Duration(200+rng.IntN(300)) * time.Millisecond)
	stopWriters()
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}

	want := map[string][]byte{"app-tmp": tmpAll}
	mu.Lock()
	for n, w := range writers {
		if n != "app-tmp" {
			want[n], _ = w.written()
		}
	}
	mu.Unlock()
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := streamOf(n)
		ferrytest.Eventually(t, 60*time.Second, n+" replica holds every line", func() (bool, string) {
			alive(p)
			s.pollReceiveOnce()
			got := s.readReplica()
			if !bytes.HasPrefix(want[n], got) {
				t.Fatalf("%s: replica is not a prefix of the lines written: %s", n, describeDiff(want[n], got))
			}
			return len(got) == len(want[n]), fmt.Sprintf("replica has %d of %d bytes", len(got), len(want[n]))
		})
	}
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
	// app-tmp finished before the last starts: its spool holds nothing,
	// and is not drained again.
	if strings.Contains(p.Stderr(), "spool of a stream no table runs now") {
		t.Fatalf("the last shipper drained a finished stream's spool as a leftover:\n%s", p)
	}
	for _, n := range names {
		s := streamOf(n)
		s.receiveOnce()
		total := bytes.Count(want[n], []byte("\n"))
		if msg := checkNumbered(s.readReplica(), total); msg != "" {
			t.Fatalf("%s: %s", n, msg)
		}
		s.wantReplica(want[n], n+" after 3 kills")
		if r := s.verify(); r.Code != 0 {
			t.Fatalf("%s: verify: want exit 0:\n%s", n, r)
		}
		t.Logf("%s: %d lines exact", n, total)
	}
	// Every stream has its own spool directory.
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(spool, n, "state.json")); err != nil {
			t.Errorf("stream %s: own spool: %v", n, err)
		}
	}
}

// TestShipStreamsConfigErrors checks bad [[streams]] tables stop ship
// before it starts, naming the file, the line and the table's key.
func TestShipStreamsConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{"duplicate", "[[streams]]\nname = \"a\"\nsource = \"tail:/x/a.log\"\n[[streams]]\nname = \"a\"\nsource = \"tail:/x/b.log\"\n",
			[]string{":8: streams[1].name", `"a" is also the name of streams[0]`}},
		{"escape", "[[streams]]\nname = \"../a\"\nsource = \"tail:/x/a.log\"\n", []string{":5: streams[0].name", `"../a"`}},
		{"with top-level source", "[[streams]]\nname = \"a\"\nsource = \"tail:/x/a.log\"\n", []string{"ship.source", "together with [[streams]]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			head := fmt.Sprintf("store = %q\n[ship]\nspool = %q\n", filepath.Join(dir, "store"), filepath.Join(dir, "spool"))
			if tc.name == "with top-level source" {
				head = strings.Replace(head, "[ship]\n", "[ship]\nsource = \"tail:/x/y.log\"\n", 1)
			}
			if err := os.WriteFile(cfg, []byte(head+tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			failFerry(t, nil, append([]string{cfg}, tc.want...), "ship", "--config", cfg)
		})
	}
}

// TestShipStreamsReloadRefused checks SIGHUP on a ship with [[streams]]
// changes nothing and says so, and the ship keeps running.
func TestShipStreamsReloadRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "a.log")
	if err := os.WriteFile(logPath, []byte("a1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ship.toml")
	conf := fmt.Sprintf("store = %q\n[ship]\nspool = %q\nmax_age = \"100ms\"\n[[streams]]\nname = \"a\"\nsource = \"tail:%s\"\n",
		filepath.Join(dir, "store"), filepath.Join(dir, "spool"), logPath)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startFerry(t, nil, "ship", "--config", cfg)
	ferrytest.Eventually(t, 30*time.Second, "stream a started", func() (bool, string) {
		return strings.Contains(p.Stderr(), `msg="stream started" stream=a `), p.Stderr()
	})
	if err := os.WriteFile(cfg, []byte(strings.Replace(conf, `"100ms"`, `"300ms"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 30*time.Second, "reload refused", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("ship exited on SIGHUP:\n%s", p)
		}
		return strings.Contains(p.Stderr(), "a ship with [[streams]] applies no reload yet"), p.Stderr()
	})
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("exit %d on SIGTERM, want 0:\n%s", code, p)
	}
}
