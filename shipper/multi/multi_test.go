package multi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// rig is a Runner over real shippers, tail sources and a dir store.
type rig struct {
	root, spool string
	st          store.Store
	maxAge      time.Duration

	mu       sync.Mutex
	shippers map[string]*shipper.Shipper // the newest of each stream
}

func newRig(t *testing.T) *rig {
	root := t.TempDir()
	st, err := dir.New(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	return &rig{root: root, spool: filepath.Join(root, "spool"), st: st, maxAge: 50 * time.Millisecond, shippers: map[string]*shipper.Shipper{}}
}

func (g *rig) runner(tables []Table) *Runner {
	return &Runner{Tables: tables, SpoolRoot: g.spool, Log: quiet, ShutdownTimeout: 10 * time.Second,
		Start: func(ctx context.Context, table int, name, file string) (*shipper.Shipper, shipper.Source, error) {
			sh, err := shipper.New(ctx, shipper.Config{
				Spool: spool.Config{Dir: filepath.Join(g.spool, name), Stream: name, Fsync: spool.FsyncOff,
					Policy: batch.FlushPolicy{MaxBytes: 1 << 20, MaxAge: g.maxAge}},
				Targets: []shipper.Target{{Name: "store", Store: g.st}},
				Retry:   store.RetryPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond},
				Lease:   shipper.LeaseConfig{TTL: -1},
			}, quiet)
			if err != nil {
				return nil, nil, err
			}
			g.mu.Lock()
			g.shippers[name] = sh
			g.mu.Unlock()
			if table < 0 {
				return sh, nil, nil
			}
			src := &source.Tail{Path: file, Format: source.FormatLine, Cursor: sh.Spool().Cursor(), Log: quiet, Poll: 10 * time.Millisecond}
			if tables[table].Glob {
				src.EndWhenGone = 300 * time.Millisecond
			}
			return sh, src, nil
		}}
}

// started counts the streams the rig has started a shipper for.
func (g *rig) started() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.shippers)
}

func (g *rig) shipperOf(name string) *shipper.Shipper {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shippers[name]
}

// stored reads stream's records from the store, in seq order.
func (g *rig) stored(t *testing.T, stream string) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	if err := g.st.List(ctx, stream+"/", "", func(o store.Object) error {
		if strings.HasSuffix(o.Name, ".seg.zst") {
			names = append(names, o.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		rc, err := g.st.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := batch.Decode(data, 1<<30)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		for i := range recs.Len() {
			out = append(out, string(recs.Data(i)))
		}
	}
	return out
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func globTable(pattern string) Table {
	return Table{Path: pattern, Glob: true, Scan: 20 * time.Millisecond, NameOf: func(file string) (string, error) {
		return "g-" + strings.TrimSuffix(filepath.Base(file), ".log"), nil
	}}
}

// TestRunnerGlob checks a glob table: a file there at the start and one
// created later each get a stream; a removed file's stream ships every
// line and ends (its name leaves Active); a file whose stream name is
// taken gets none.
func TestRunnerGlob(t *testing.T) {
	g := newRig(t)
	logs := filepath.Join(g.root, "logs")
	os.Mkdir(logs, 0o755)
	appendLines(t, filepath.Join(logs, "a.log"), "a1\n", "a2\n")
	r := g.runner([]Table{globTable(filepath.Join(logs, "*.log")), {Name: "g-c", Path: filepath.Join(logs, "c.txt")}})
	r.Tables[0].NameOf = func(file string) (string, error) {
		if strings.HasPrefix(filepath.Base(file), "c") {
			return "g-c", nil // taken by the second table
		}
		return "g-" + strings.TrimSuffix(filepath.Base(file), ".log"), nil
	}
	appendLines(t, filepath.Join(logs, "c.txt"), "c1\n")
	appendLines(t, filepath.Join(logs, "c.log"), "not shipped\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, "a shipped", func() bool { return slices.Equal(g.stored(t, "g-a"), []string{"a1\n", "a2\n"}) })
	appendLines(t, filepath.Join(logs, "b.log"), "b1\n")
	eventually(t, "b picked up", func() bool { return slices.Equal(g.stored(t, "g-b"), []string{"b1\n"}) })
	if got := r.Active(); !slices.Equal(got, []string{"g-a", "g-b", "g-c"}) {
		t.Fatalf("active %q", got)
	}
	appendLines(t, filepath.Join(logs, "a.log"), "a3\n", "a4")
	if err := os.Remove(filepath.Join(logs, "a.log")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's stream ended", func() bool { return !slices.Contains(r.Active(), "g-a") })
	if got := g.stored(t, "g-a"); !slices.Equal(got, []string{"a1\n", "a2\n", "a3\n", "a4"}) {
		t.Fatalf("g-a stored %q", got)
	}
	if got := g.stored(t, "g-c"); !slices.Equal(got, []string{"c1\n"}) {
		t.Fatalf("g-c stored %q: the glob's c.log took the name", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil
}

// TestRunnerLeftoverSpool checks a spool whose stream no table starts
// (its file removed while stopped) is drained: its sealed segments are
// shipped.
func TestRunnerLeftoverSpool(t *testing.T) {
	g := newRig(t)
	ctx := context.Background()
	// A spool holding a sealed, unsent segment, as a crash leaves it.
	sp, err := spool.Open(spool.Config{Dir: filepath.Join(g.spool, "gone"), Stream: "gone", Fsync: spool.FsyncOff,
		Policy: batch.FlushPolicy{MaxBytes: 1 << 20}}, []string{"store"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Append(ctx, []batch.Record{{Data: []byte("x1\n")}, {Data: []byte("x2\n")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.SaveState()
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	r := g.runner(nil)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	eventually(t, "leftover shipped", func() bool { return slices.Equal(g.stored(t, "gone"), []string{"x1\n", "x2\n"}) })
	eventually(t, "leftover closed", func() bool { return len(r.Active()) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRunnerLeftoverBadName checks a directory under the spool root whose
// name no stream can have (an operator's copy, "orders backup") is passed
// over with an error in the log, not opened as a stream: opening it fails,
// and one stream's failure stops every stream.
func TestRunnerLeftoverBadName(t *testing.T) {
	g := newRig(t)
	bad := filepath.Join(g.spool, "orders backup")
	if err := os.MkdirAll(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "state.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(g.root, "in.log")
	appendLines(t, log, "a1\n")
	r := g.runner([]Table{{Name: "app", Path: log}})
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	eventually(t, "app shipped", func() bool { return slices.Equal(g.stored(t, "app"), []string{"a1\n"}) })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRunnerFairness runs one stream appending as fast as it can beside
// nine appending 10 lines/s each, and measures the nine's latency from
// the append to the store's confirmation: its p99 must stay bounded (the
// flood's appends wait for its own seals and spool, not the others').
// The same nine alone give the baseline, logged beside it.
func TestRunnerFairness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	run := func(flood bool) (p99, p50 time.Duration, flooded int) {
		g := newRig(t)
		g.maxAge = 100 * time.Millisecond
		logs := filepath.Join(g.root, "logs")
		os.Mkdir(logs, 0o755)
		var tables []Table
		for i := range 9 {
			p := filepath.Join(logs, fmt.Sprintf("s%d.log", i))
			appendLines(t, p)
			tables = append(tables, Table{Name: fmt.Sprintf("s%d", i), Path: p})
		}
		fp := filepath.Join(logs, "flood.log")
		appendLines(t, fp)
		tables = append(tables, Table{Name: "flood", Path: fp})
		r := g.runner(tables)
		r.ShutdownTimeout = 2 * time.Second
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		eventually(t, "every stream started", func() bool { return len(r.Active()) == 10 && g.started() == 10 })

		stop := make(chan struct{})
		var wg sync.WaitGroup
		if flood {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, _ := os.OpenFile(fp, os.O_WRONLY|os.O_APPEND, 0)
				defer f.Close()
				line := strings.Repeat("flood flood flood flood ", 20) + "\n"
				buf := []byte(strings.Repeat(line, 200))
				sh := g.shipperOf("flood")
				written := int64(0)
				for {
					select {
					case <-stop:
						return
					default:
					}
					// As fast as the stream takes it: no more than 8 MiB
					// ahead of what it has read.
					if written-sh.Spool().Stats().BytesIn > 8<<20 {
						time.Sleep(time.Millisecond)
						continue
					}
					f.Write(buf)
					written += int64(len(buf))
					flooded += 200
				}
			}()
		}
		const perStream = 30 // 3 s at 10/s
		var lat []time.Duration
		var lmu sync.Mutex
		for i := range 9 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := filepath.Join(logs, fmt.Sprintf("s%d.log", i))
				sh := g.shipperOf(fmt.Sprintf("s%d", i))
				for n := 1; n <= perStream; n++ {
					appendLines(t, p, fmt.Sprintf("s%d line %d\n", i, n))
					at := time.Now()
					for sh.Targets()[0].SentSeq < uint64(n) {
						time.Sleep(2 * time.Millisecond)
						if time.Since(at) > 30*time.Second {
							t.Errorf("s%d: line %d not shipped in 30s", i, n)
							return
						}
					}
					lmu.Lock()
					lat = append(lat, time.Since(at))
					lmu.Unlock()
					time.Sleep(100*time.Millisecond - min(time.Since(at), 100*time.Millisecond))
				}
			}()
		}
		time.Sleep(3 * time.Second)
		close(stop)
		wg.Wait()
		cancel()
		// The flood's backlog need not drain within the shutdown timeout.
		if err := <-done; err != nil && !strings.HasPrefix(err.Error(), "stream flood: shutdown timeout") {
			t.Fatalf("Run: %v", err)
		}
		slices.Sort(lat)
		if len(lat) == 0 {
			t.Fatal("no latencies")
		}
		return lat[len(lat)*99/100], lat[len(lat)/2], flooded
	}
	base99, base50, _ := run(false)
	p99, p50, flooded := run(true)
	t.Logf("append->stored latency of 9 streams at 10 lines/s: alone p50 %v p99 %v; beside a flood of %d lines: p50 %v p99 %v",
		base50, base99, flooded, p50, p99)
	// max_age 100ms, a 10ms tail poll: about 0.15 s unloaded. The bound
	// is generous for a loaded 2-core machine.
	if p99 > 3*time.Second {
		t.Fatalf("p99 %v beside the flood, over 3s (alone: %v)", p99, base99)
	}
	if flooded < 10000 {
		t.Fatalf("the flood wrote only %d lines: not a flood", flooded)
	}
}

// TestRunnerFailureStopsAll checks one stream's fatal error (here its
// start) stops every stream, each drained, and Run returns the error
// naming the stream.
func TestRunnerFailureStopsAll(t *testing.T) {
	g := newRig(t)
	logs := filepath.Join(g.root, "logs")
	os.Mkdir(logs, 0o755)
	appendLines(t, filepath.Join(logs, "ok.log"), "o1\n")
	r := g.runner([]Table{{Name: "ok", Path: filepath.Join(logs, "ok.log")}, {Name: "bad", Path: filepath.Join(logs, "bad.log")}})
	start := r.Start
	okStarted := make(chan struct{})
	r.Start = func(ctx context.Context, table int, name, file string) (*shipper.Shipper, shipper.Source, error) {
		if name == "bad" {
			<-okStarted
			// Fail once the good stream has read its line, unsealed.
			eventually(t, "ok read its line", func() bool { return g.shipperOf("ok").Spool().Stats().RecordsIn == 1 })
			return nil, nil, fmt.Errorf("no such thing")
		}
		defer close(okStarted)
		return start(ctx, table, name, file)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || err.Error() != "stream bad: no such thing" {
			t.Fatalf("Run: %v, want the bad stream's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop on a stream's failure")
	}
	// The good stream sealed and shipped its line before Run returned.
	if got := g.stored(t, "ok"); !slices.Equal(got, []string{"o1\n"}) {
		t.Fatalf("ok stored %q", got)
	}
}

// TestRunnerScanSkipsRunningFiles: a glob table's scan stats only the
// files whose stream does not run yet, not every file every scan (issue
// 23: 100 streams, 100 stats a second).
func TestRunnerScanSkipsRunningFiles(t *testing.T) {
	g := newRig(t)
	logs := filepath.Join(g.root, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		appendLines(t, filepath.Join(logs, n+".log"), n+"1")
	}
	tab := globTable(filepath.Join(logs, "*.log"))
	tab.Scan = 10 * time.Millisecond
	r := g.runner([]Table{tab})
	var mu sync.Mutex
	stats := map[string]int{}
	r.stat = func(p string) (os.FileInfo, error) {
		mu.Lock()
		stats[filepath.Base(p)]++
		mu.Unlock()
		return os.Stat(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	eventually(t, "three streams", func() bool { return len(r.Active()) == 3 })
	time.Sleep(300 * time.Millisecond) // about 30 scans
	appendLines(t, filepath.Join(logs, "d.log"), "d1")
	eventually(t, "the new file's stream", func() bool { return len(r.Active()) == 4 })
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range []string{"a.log", "b.log", "c.log", "d.log"} {
		if stats[n] < 1 || stats[n] > 3 {
			t.Errorf("%s stat'ed %d times over about 40 scans; want once or so, before its stream started", n, stats[n])
		}
	}
}

// TestRunnerFinishedStreamNotDrainedAgain checks a glob stream that
// finished (its file removed, every line shipped) is not started again as
// a leftover at the next Run: its spool holds nothing to ship. Its file
// created again starts it again, continuing its sequence.
func TestRunnerFinishedStreamNotDrainedAgain(t *testing.T) {
	g := newRig(t)
	logs := filepath.Join(g.root, "logs")
	os.Mkdir(logs, 0o755)
	appendLines(t, filepath.Join(logs, "a.log"), "a1\n", "a2\n")
	r := g.runner([]Table{globTable(filepath.Join(logs, "*.log"))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	eventually(t, "a shipped", func() bool { return slices.Equal(g.stored(t, "g-a"), []string{"a1\n", "a2\n"}) })
	if err := os.Remove(filepath.Join(logs, "a.log")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's stream ended", func() bool { return len(r.Active()) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	g.shippers = map[string]*shipper.Shipper{}
	r = g.runner([]Table{globTable(filepath.Join(logs, "*.log"))})
	ctx, cancel = context.WithCancel(context.Background())
	go func() { done <- r.Run(ctx) }()
	time.Sleep(200 * time.Millisecond)
	if n, active := g.started(), r.Active(); n != 0 || len(active) != 0 {
		cancel()
		<-done
		t.Fatalf("second Run started %d streams (active %q): the finished stream's empty spool was drained again", n, active)
	}
	// The file created again: its stream starts again, continuing its
	// sequence in the store.
	appendLines(t, filepath.Join(logs, "a.log"), "a3\n")
	eventually(t, "a3 shipped", func() bool { return slices.Equal(g.stored(t, "g-a"), []string{"a1\n", "a2\n", "a3\n"}) })
	if last := g.shipperOf("g-a").Spool().Stats().LastSeq; last != 3 {
		t.Errorf("g-a's stream started again at last seq %d, want 3", last)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("second Run: %v", err)
	}
}
