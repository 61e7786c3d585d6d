// Package chaos runs ferry's shipper and receiver as separate processes
// under continuous load and, at random moments, kills either with SIGKILL,
// restarts the S3 server, and cuts or stalls the direct link. After each
// run an invariant checker proves that the replica equals the accepted
// input — every accepted record present, none twice, in order — and
// `ferry verify` is clean.
//
// The amount of chaos is a parameter: FERRY_CHAOS_KILLS and
// FERRY_CHAOS_FAULTS per scenario (CI runs a short round; run.sh runs the
// published one), FERRY_CHAOS_SEED replays a run, and FERRY_CHAOS_REPORT
// names a file each scenario appends its figures to (JSON lines).
package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/versitygw"
)

var ferryBin string

func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m, &ferryBin)) }

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a whole number", name, v)
	}
	return n
}

// run is one scenario's parameters, counters and report.
type run struct {
	t        *testing.T
	name     string
	dir      string
	rng      *rand.Rand
	kills    int // wanted
	faults   int
	killed   atomic.Int64
	faulted  atomic.Int64
	started  time.Time
	cmd      ferrytest.Cmd
	outputMu sync.Mutex
	outputs  []func() string
}

func newRun(t *testing.T, name string, env []string) *run {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FERRY_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FERRY_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("%s: seed %d (replay with FERRY_CHAOS_SEED=%d)", name, seed, seed)
	r := &run{t: t, name: name, dir: t.TempDir(), rng: rand.New(rand.NewPCG(seed, seed^0x5bd1e995)),
		kills: envInt(t, "FERRY_CHAOS_KILLS", 8), faults: envInt(t, "FERRY_CHAOS_FAULTS", 4), started: time.Now()}
	r.cmd = ferrytest.Cmd{Bin: ferryBin, Env: env, RecordOutput: func(f func() string) {
		r.outputMu.Lock()
		r.outputs = append(r.outputs, f)
		r.outputMu.Unlock()
	}}
	return r
}

// pause sleeps a random 50-400 ms: the moment of the next blow.
func (r *run) pause() { time.Sleep(time.Duration(50+r.rng.IntN(350)) * time.Millisecond) }

// proc is a restartable ferry process.
type proc struct {
	r    *run
	args []string
	p    *ferrytest.Process
}

func (r *run) start(args ...string) *proc {
	pr := &proc{r: r, args: args}
	pr.p = r.cmd.Start(r.t, nil, args...)
	return pr
}

// kill9 kills the process and starts it again.
func (pr *proc) kill9() {
	if pr.p.Exited() {
		pr.r.t.Fatalf("%s exited on its own (code %d):\n%s", pr.args[0], pr.p.Code(), pr.p)
	}
	pr.p.Kill9()
	pr.r.killed.Add(1)
	pr.p = pr.r.cmd.Start(pr.r.t, nil, pr.args...)
}

// writer appends numbered log lines to path until stopped: the accepted
// input of a tail: source is the whole file.
type writer struct {
	path  string
	stop  chan struct{}
	done  chan struct{}
	lines atomic.Int64
}

func startWriter(t *testing.T, path string, rng *rand.Rand) *writer {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{path: path, stop: make(chan struct{}), done: make(chan struct{})}
	pad := strings.Repeat("x", 60)
	seed := rng.Uint64()
	go func() {
		defer close(w.done)
		defer f.Close()
		lr := rand.New(rand.NewPCG(seed, 1))
		var buf []byte
		for n := int64(1); ; n++ {
			select {
			case <-w.stop:
				return
			default:
			}
			buf = fmt.Appendf(buf[:0], "line %09d level=info msg=%q pad=%s\n", n, "event", pad[:lr.IntN(len(pad))])
			if _, err := f.Write(buf); err != nil {
				return
			}
			w.lines.Store(n)
			if n%100 == 0 {
				// At most ~20,000 lines a second: a long run's backlog
				// must stay something the receiver can catch up with.
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return w
}

func (w *writer) finish() int64 {
	close(w.stop)
	<-w.done
	return w.lines.Load()
}

// figures is one scenario's outcome, as reported.
type figures struct {
	Scenario  string  `json:"scenario"`
	Kills     int64   `json:"kills"`
	Faults    int64   `json:"faults"`
	Records   int64   `json:"records"`
	Lost      int64   `json:"lost"`
	Duplicate int64   `json:"duplicated"`
	Reordered int64   `json:"reordered"`
	Seconds   float64 `json:"seconds"`
}

// checkNumbered compares a replica of numbered lines ("line %09d ...") with
// the input: every line 1..want present once, in order.
func checkNumbered(t *testing.T, replica []byte, want int64) (lost, dup, reordered int64) {
	seen := make([]uint8, want+1)
	var prev int64
	sc := bufio.NewScanner(bytes.NewReader(replica))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var n int64
		if _, err := fmt.Sscanf(sc.Text(), "line %d", &n); err != nil || n < 1 || n > want {
			t.Errorf("replica line %q is not an input line", sc.Text())
			continue
		}
		if seen[n] > 0 {
			dup++
		}
		seen[n]++
		if n != prev+1 && seen[n] == 1 {
			reordered++
		}
		prev = n
	}
	for n := int64(1); n <= want; n++ {
		if seen[n] == 0 {
			lost++
		}
	}
	return lost, dup, reordered
}

func (r *run) report(f figures) {
	f.Scenario, f.Kills, f.Faults, f.Seconds = r.name, r.killed.Load(), r.faulted.Load(), time.Since(r.started).Seconds()
	r.t.Logf("CHAOS %s: %d kills, %d faults, %d records: lost %d, duplicated %d, reordered %d (%.0fs)",
		f.Scenario, f.Kills, f.Faults, f.Records, f.Lost, f.Duplicate, f.Reordered, f.Seconds)
	if path := os.Getenv("FERRY_CHAOS_REPORT"); path != "" {
		b, _ := json.Marshal(f)
		fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fh.Write(append(b, '\n'))
			fh.Close()
		}
	}
	if f.Lost+f.Duplicate+f.Reordered > 0 {
		r.t.Errorf("%s: invariant broken: lost %d, duplicated %d, reordered %d", r.name, f.Lost, f.Duplicate, f.Reordered)
	}
}

func (r *run) mustFerry(args ...string) ferrytest.Result {
	res := r.cmd.Run(r.t, nil, args...)
	if res.Code != 0 {
		r.t.Fatalf("want exit 0:\n%s", res)
	}
	return res
}

// settle waits until the replica holds want lines, or fails.
func (r *run) settle(replica string, want int64, procs ...*proc) []byte {
	var data []byte
	// A minute, plus a second per 10,000 lines to catch up on.
	timeout := time.Minute + time.Duration(want/10000)*time.Second
	ferrytest.Eventually(r.t, timeout, "replica complete", func() (bool, string) {
		for _, p := range procs {
			if p.p.Exited() {
				r.t.Fatalf("%s exited (code %d):\n%s", p.args[0], p.p.Code(), p.p)
			}
		}
		data, _ = os.ReadFile(replica)
		n := int64(bytes.Count(data, []byte("\n")))
		return n >= want, fmt.Sprintf("%d of %d lines", n, want)
	})
	return data
}

// Tail source into a directory store, applied to a file: the shipper and
// the receiver are killed -9 at random moments while a writer keeps
// appending.
func TestChaosTailDirectory(t *testing.T) {
	t.Parallel()
	r := newRun(t, "tail-dir", nil)
	log, store, replica := filepath.Join(r.dir, "app.log"), filepath.Join(r.dir, "store"), filepath.Join(r.dir, "replica")
	w := startWriter(t, log, r.rng)
	ship := r.start("ship", "--store", store, "--stream", "app", "--spool", filepath.Join(r.dir, "spool"),
		"--source", "tail:"+log, "--max-bytes", "32KiB", "--max-age", "50ms")
	recv := r.start("receive", "--store", store, "--stream", "app", "--state", filepath.Join(r.dir, "state"),
		"--apply", "file:"+replica, "--poll-min", "10ms", "--poll-max", "50ms")
	for i := 0; i < r.kills; i++ {
		r.pause()
		if r.rng.IntN(2) == 0 {
			ship.kill9()
		} else {
			recv.kill9()
		}
	}
	want := w.finish()
	data := r.settle(replica, want, ship, recv)
	lost, dup, reo := checkNumbered(t, data, want)
	in, _ := os.ReadFile(log)
	if !bytes.Equal(in, data) && lost+dup+reo == 0 {
		t.Errorf("replica differs from the input in content (%d vs %d bytes)", len(data), len(in))
	}
	r.mustFerry("verify", "--store", store, "--stream", "app")
	r.report(figures{Records: want, Lost: lost, Duplicate: dup, Reordered: reo})
}

// Tail source into S3 (versitygw): kills of both sides plus restarts of
// the S3 server.
func TestChaosTailS3(t *testing.T) {
	t.Parallel()
	srv := versitygw.Start(t)
	srv.CreateBucket(t, "chaos")
	env := append(os.Environ(), "AWS_ENDPOINT_URL_S3="+srv.Endpoint, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey,
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null")
	r := newRun(t, "tail-s3", env)
	log, replica := filepath.Join(r.dir, "app.log"), filepath.Join(r.dir, "replica")
	store := "s3://chaos/run"
	w := startWriter(t, log, r.rng)
	ship := r.start("ship", "--store", store, "--stream", "app", "--spool", filepath.Join(r.dir, "spool"),
		"--source", "tail:"+log, "--max-bytes", "64KiB", "--max-age", "100ms")
	recv := r.start("receive", "--store", store, "--stream", "app", "--state", filepath.Join(r.dir, "state"),
		"--apply", "file:"+replica, "--poll-min", "20ms", "--poll-max", "100ms")
	kills, faults := r.kills, r.faults
	for kills+faults > 0 {
		r.pause()
		switch {
		case faults > 0 && (kills == 0 || r.rng.IntN(kills+faults) < faults):
			srv.Restart(t)
			r.faulted.Add(1)
			faults--
		case r.rng.IntN(2) == 0:
			ship.kill9()
			kills--
		default:
			recv.kill9()
			kills--
		}
	}
	want := w.finish()
	data := r.settle(replica, want, ship, recv)
	lost, dup, reo := checkNumbered(t, data, want)
	r.mustFerry("verify", "--store", store, "--stream", "app")
	r.report(figures{Records: want, Lost: lost, Duplicate: dup, Reordered: reo})
}

var (
	appenderOnce sync.Once
	appenderBin  string
)

// The Go API over the direct link with ack "received": the appender
// (tests/bench/appender, 16 concurrent appenders) and the receiver are
// killed -9, and the link through a fault proxy is cut or stalled. Every
// record whose Append returned must be applied exactly once, at the seq it
// was acknowledged with.
func TestChaosAPILink(t *testing.T) {
	t.Parallel()
	appenderOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-chaos-appender-")
		if err != nil {
			t.Fatal(err)
		}
		appenderBin = ferrytest.Build(t, "./tests/bench/appender", dir)
	})
	r := newRun(t, "api-link", nil)
	addr := ferrytest.FreeAddr(t)
	replica, state, spool := filepath.Join(r.dir, "replica"), filepath.Join(r.dir, "state"), filepath.Join(r.dir, "spool")
	recv := r.start("receive", "--listen", addr, "--insecure", "--token", "chaos-link-token-1234", "--stream", "api", "--state", state,
		"--apply", "file:"+replica, "--poll-min", "10ms", "--poll-max", "50ms")
	proxy := ferrytest.StartProxy(t, addr)
	app := ferrytest.Cmd{Bin: appenderBin}
	appArgs := func(n string) []string {
		return []string{"-store", "tcp://" + proxy.Addr(), "-insecure", "-token", "chaos-link-token-1234", "-stream", "api", "-spool", spool,
			"-ack", "received", "-c", "16", "-size", "80", "-print-acks", "-max-age", "20ms", "-n", n}
	}
	acked := map[string]uint64{}
	collect := func(out string) {
		for line := range strings.Lines(out) {
			if !strings.HasSuffix(line, "\n") {
				break // the kill cut this print short: its Append had returned, but
				// the test cannot know the record; it is checked like any other
			}
			var seq uint64
			var rec string
			if _, err := fmt.Sscanf(line, "acked %d %s", &seq, &rec); err != nil {
				t.Fatalf("appender printed %q", line)
			}
			acked[rec] = seq
		}
	}
	a := app.Start(t, nil, appArgs("0")...)
	kills, faults := r.kills, r.faults
	for kills+faults > 0 {
		r.pause()
		switch {
		case faults > 0 && (kills == 0 || r.rng.IntN(kills+faults) < faults):
			proxy.WaitConn(3 * time.Second)
			if r.rng.IntN(2) == 0 {
				proxy.CutAll()
			} else {
				proxy.Stall(time.Duration(100+r.rng.IntN(400)) * time.Millisecond)
				proxy.CutAll()
				time.AfterFunc(time.Second, func() { proxy.Stall(0) })
			}
			r.faulted.Add(1)
			faults--
		case r.rng.IntN(2) == 0:
			if a.Exited() {
				t.Fatalf("appender exited (code %d):\n%s", a.Code(), a)
			}
			a.Kill9()
			r.killed.Add(1)
			collect(a.Stdout())
			a = app.Start(t, nil, appArgs("0")...)
			kills--
		default:
			recv.kill9()
			kills--
		}
	}
	a.Kill9()
	r.killed.Add(1)
	collect(a.Stdout())
	proxy.Stall(0)
	last := app.Start(t, nil, appArgs("100")...)
	if code, ok := last.Wait(120 * time.Second); !ok || code != 0 {
		t.Fatalf("last appender run: exit %d (finished %t):\n%s", code, ok, last)
	}
	collect(last.Stdout())
	var maxSeq uint64
	for _, s := range acked {
		maxSeq = max(maxSeq, s)
	}
	data := r.settle(replica, int64(maxSeq), recv)
	var lost, dup, reo int64
	seen := map[string]int{}
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, l := range lines {
		if len(l) == 0 {
			continue
		}
		rec := strings.Fields(string(l))[0]
		if _, ok := seen[rec]; ok {
			dup++
		}
		seen[rec] = i
	}
	for rec, seq := range acked {
		i, ok := seen[rec]
		switch {
		case !ok:
			lost++
		case uint64(i+1) != seq:
			reo++
		}
	}
	r.mustFerry("verify", "--store", filepath.Join(state, "inbox"), "--stream", "api")
	r.report(figures{Records: int64(len(acked)), Lost: lost, Duplicate: dup, Reordered: reo})
	t.Logf("proxy cut %d connections", proxy.Cuts())
	if r.faults > 0 && proxy.Cuts() == 0 {
		t.Error("the proxy never cut a live connection: the link faults did not happen")
	}
}
