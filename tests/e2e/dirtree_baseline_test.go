//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// baselineMarkers reads the stream's baseline markers, oldest first.
func baselineMarkers(t *testing.T, s *stream) []batch.Baseline {
	t.Helper()
	dir := filepath.Join(s.streamDir(), "baselines")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []batch.Baseline
	for _, e := range ents {
		if _, _, _, ok := batch.ParseBaselineName(e.Name()); !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := batch.ParseBaseline(e.Name(), data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BeginSeq < out[j].BeginSeq })
	return out
}

// baselineTree makes a source tree with many small files, a chunked file
// and a symlink, and the config of a shipper with a baseline schedule.
func baselineTree(t *testing.T, s *stream, schedule string) (src, config string) {
	t.Helper()
	src = filepath.Join(s.dir, "src")
	rng := seededRand(t)
	for i := range 120 {
		p := filepath.Join(src, fmt.Sprintf("d%d/f%03d", i%6, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := make([]byte, 10+rng.IntN(3000))
		for j := range data {
			data[j] = byte(rng.IntN(256))
		}
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 2<<20+77)
	for j := range big {
		big[j] = byte(j * 7)
	}
	os.WriteFile(filepath.Join(src, "big"), big, 0o600)
	os.Symlink("d0/f000", filepath.Join(src, "link"))
	config = filepath.Join(s.dir, "ship.toml")
	toml := fmt.Sprintf("stream = %q\nstore = %q\n[ship]\nspool = %q\nsource = %q\nbaseline = %q\nmax_bytes = \"64KiB\"\nmax_age = \"50ms\"\n",
		s.name, s.store, s.spool, "dir:"+src, schedule)
	if err := os.WriteFile(config, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return src, config
}

// A dir: shipper with ship.baseline = "@every 1s" ships baselines and
// writes their markers; prune then drops every segment before the newest
// baseline (and the older markers); a restore into a new target starts at
// that baseline and gives exactly the source tree; a restore to a boundary
// the pruned archive cannot serve fails and says so.
func TestDirTreeBaselinePruneRestore(t *testing.T) {
	t.Parallel()
	s := newStream(t, "btree")
	src, config := baselineTree(t, s, "@every 1s")
	ship := startFerry(t, nil, "ship", "--config", config)
	ferrytest.Eventually(t, 30*time.Second, "a first baseline marker", func() (bool, string) {
		return len(baselineMarkers(t, s)) >= 1, ship.Stderr()
	})
	// Changes between and during baselines.
	for round := range 3 {
		for i := range 20 {
			os.WriteFile(filepath.Join(src, fmt.Sprintf("d%d/f%03d", i%6, (i*5+round)%120)), []byte(fmt.Sprintf("round %d %d\n", round, i)), 0o644)
		}
		os.Remove(filepath.Join(src, fmt.Sprintf("d1/f%03d", 1+round*6)))
		os.MkdirAll(filepath.Join(src, fmt.Sprintf("new%d/deep", round)), 0o755)
		os.WriteFile(filepath.Join(src, fmt.Sprintf("new%d/deep/file", round)), []byte("new\n"), 0o644)
		time.Sleep(400 * time.Millisecond)
	}
	quiet := time.Now()
	ferrytest.Eventually(t, 30*time.Second, "a baseline begun after the last change", func() (bool, string) {
		ms := baselineMarkers(t, s)
		return len(ms) >= 3 && ms[len(ms)-1].BeginTime.After(quiet), fmt.Sprint(ms)
	})
	if code := ship.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ship exited %d:\n%s", code, ship)
	}
	want := treeState(t, src)
	markers := baselineMarkers(t, s)
	newest := markers[len(markers)-1]

	// The whole history, applied by a receiver, is the tree too.
	full := filepath.Join(s.dir, "full")
	mustFerry(t, nil, "receive", "--store", s.store, "--stream", s.name, "--state", filepath.Join(s.dir, "full.state"),
		"--apply", "dir:"+full, "--once")
	if d := diffTrees(want, treeState(t, full)); d != "" {
		t.Fatalf("receiver's replica differs from the source:\n%s", d)
	}
	// ferry cat shows the markers readably.
	cat := mustFerry(t, nil, "cat", "--json", "--store", s.store, "--stream", s.name,
		"--from", fmt.Sprint(newest.EndSeq), "--to", fmt.Sprint(newest.EndSeq))
	if !strings.Contains(cat.Stdout, `"op":"baseline-end"`) || !strings.Contains(cat.Stdout, fmt.Sprintf(`\"begin_seq\":%d`, newest.BeginSeq)) {
		t.Fatalf("ferry cat of the baseline-end record:\n%s", cat.Stdout)
	}

	prune := mustFerry(t, nil, "prune", "--store", s.store, "--stream", s.name, "--keep-min", "1")
	t.Logf("prune: %s", prune.Stdout)
	if !strings.Contains(prune.Stdout, fmt.Sprintf("begin (seq %d) of baseline", newest.BeginSeq)) {
		t.Fatalf("prune summary does not name the baseline it keeps from:\n%s", prune.Stdout)
	}
	segs := s.segments()
	first, _ := segmentSeqs(t, segs[0])
	if _, last := segmentSeqs(t, segs[0]); first > newest.BeginSeq || last < newest.BeginSeq || first == 1 {
		t.Fatalf("first segment after prune is %s; want the one holding seq %d", segs[0], newest.BeginSeq)
	}
	if ms := baselineMarkers(t, s); len(ms) != 1 || ms[0] != newest {
		t.Fatalf("markers after prune: %+v, want only %+v", ms, newest)
	}

	dst := filepath.Join(s.dir, "restored")
	res := mustFerry(t, nil, "restore", "--store", s.store, "--stream", s.name, "--state", filepath.Join(s.dir, "restore.state"),
		"--apply", "dir:"+dst)
	if !strings.Contains(res.Stderr, "restore starts at a baseline") {
		t.Fatalf("restore did not start at the baseline:\n%s", res.Stderr)
	}
	if d := diffTrees(want, treeState(t, dst)); d != "" {
		t.Fatalf("restored tree differs from the source:\n%s", d)
	}
	// Again with the same state: nothing left to do, same tree.
	mustFerry(t, nil, "restore", "--store", s.store, "--stream", s.name, "--state", filepath.Join(s.dir, "restore.state"),
		"--apply", "dir:"+dst)

	failFerry(t, nil, []string{"were pruned", "no complete baseline"}, "restore", "--store", s.store, "--stream", s.name,
		"--state", filepath.Join(s.dir, "early.state"), "--apply", "dir:"+filepath.Join(s.dir, "early"),
		"--until", fmt.Sprint(newest.EndSeq-1))
}

// kill -9 of the shipper in the middle of a baseline (one that cannot end:
// a file keeps changing, so it is never read consistently) leaves no
// marker; a restore ignores the incomplete baseline, starts at the last
// complete one and gives exactly what the whole history gives.
func TestDirTreeBaselineKilledMidway(t *testing.T) {
	t.Parallel()
	s := newStream(t, "bkill")
	src, config := baselineTree(t, s, "@every 1h")
	ship := startFerry(t, nil, "ship", "--config", config)
	ferrytest.Eventually(t, 30*time.Second, "the start-up baseline's marker", func() (bool, string) {
		return len(baselineMarkers(t, s)) == 1, ship.Stderr()
	})
	first := baselineMarkers(t, s)[0]
	if first.BeginSeq != 1 {
		t.Fatalf("a new spool's first baseline begins at seq %d, want 1", first.BeginSeq)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		big := strings.Repeat("x", 256<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Rewritten back to back: a read of it almost never sees one
			// version from start to end, so the baseline cannot end.
			os.WriteFile(filepath.Join(src, "hot"), []byte(fmt.Sprintf("%d %s", i, big[:i%len(big)])), 0o644)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(300 * time.Millisecond)
	if err := ship.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// ops returns the seq of every record with op after first's end.
	ops := func(op string) []uint64 {
		r := ferry(t, nil, "cat", "--json", "--store", s.store, "--stream", s.name, "--from", fmt.Sprint(first.EndSeq+1))
		var seqs []uint64
		for _, line := range strings.Split(r.Stdout, "\n") {
			var rec struct {
				Seq uint64
				Op  string
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Op == op {
				seqs = append(seqs, rec.Seq)
			}
		}
		return seqs
	}
	ferrytest.Eventually(t, 30*time.Second, "a second baseline-begin record in the store", func() (bool, string) {
		return len(ops("baseline-begin")) > 0, ship.Stderr()
	})
	ship.Kill9()
	ms := baselineMarkers(t, s)
	ends := ops("baseline-end")
	// A marker is only ever written for a baseline whose end record the
	// store holds; a baseline the kill cut short has none.
	for _, m := range ms[1:] {
		if !slices.Contains(ends, m.EndSeq) {
			t.Fatalf("marker %+v names a baseline whose end record the store does not hold (ends %v)", m, ends)
		}
	}
	if len(ends) == 0 && len(ms) != 1 {
		t.Fatalf("markers after a kill mid-baseline: %+v; want only the complete one", ms)
	}
	if len(ends) > 0 {
		t.Logf("the second baseline ended before the kill (end records %v); checking the restore only", ends)
	}
	newest := ms[len(ms)-1]

	full := filepath.Join(s.dir, "full")
	mustFerry(t, nil, "receive", "--store", s.store, "--stream", s.name, "--state", filepath.Join(s.dir, "full.state"),
		"--apply", "dir:"+full, "--once")
	dst := filepath.Join(s.dir, "restored")
	res := mustFerry(t, nil, "restore", "--store", s.store, "--stream", s.name, "--state", filepath.Join(s.dir, "restore.state"),
		"--apply", "dir:"+dst)
	if !strings.Contains(res.Stderr, fmt.Sprintf("begin_seq=%d end_seq=%d", newest.BeginSeq, newest.EndSeq)) {
		t.Fatalf("restore did not start at the last complete baseline (seq %d..%d):\n%s", newest.BeginSeq, newest.EndSeq, res.Stderr)
	}
	if d := diffTrees(treeState(t, full), treeState(t, dst)); d != "" {
		t.Fatalf("restored tree differs from the whole history's:\n%s", d)
	}
}
