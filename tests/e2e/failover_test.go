package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// site is one of the two sites of a failover test: each has its own
// directories; the store is shared, as a bucket both sites reach.
type site struct {
	name  string
	dir   string
	log   string // the application's log: tailed on the primary, the replica on a secondary
	spool string
	state string
}

func newSite(t *testing.T, base, name string) *site {
	d := filepath.Join(base, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return &site{name: name, dir: d, log: filepath.Join(d, "app.log"), spool: filepath.Join(d, "spool"), state: filepath.Join(d, "state")}
}

// appLines appends numbered lines ("a000001\n", ...) to path every few
// milliseconds until stop is closed, and returns how many it wrote.
func appLines(t *testing.T, path, prefix string, stop <-chan struct{}) func() int {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var buf []byte
			mu.Lock()
			for range 5 {
				n++
				buf = fmt.Appendf(buf, "%s%06d\n", prefix, n)
			}
			mu.Unlock()
			if _, err := f.Write(buf); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	return func() int {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

func numberedLines(prefix string, first, last int) []byte {
	var b []byte
	for i := first; i <= last; i++ {
		b = fmt.Appendf(b, "%s%06d\n", prefix, i)
	}
	return b
}

// waitApplied waits until the receiver state dir's checkpoint reaches seq.
func waitApplied(t *testing.T, state string, seq uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cp, ok := tryCheckpoint(t, state); ok && cp.LastSeq >= seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver at %s did not reach seq %d within %s", state, seq, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An unplanned failover on a directory store: the primary dies mid-stream
// having shipped past what the secondary applied, the secondary is
// promoted, the old primary comes back fenced, rejoins with a report of
// exactly the records it had past the fork, and then follows the new
// primary until both hold the same history.
func TestFailoverUnplanned(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	store := filepath.Join(base, "store")
	a, b := newSite(t, base, "a"), newSite(t, base, "b")
	common := []string{"--store", store, "--stream", "app"}

	stopApp := make(chan struct{})
	written := appLines(t, a.log, "a", stopApp)
	shipA := startFerry(t, nil, append([]string{"ship", "--spool", a.spool, "--source", "tail:" + a.log,
		"--max-records", "40", "--max-age", "50ms", "--lease-ttl", "5s"}, common...)...)
	// Each site's receiver has its own id, as on two hosts.
	recvB := startFerry(t, nil, append([]string{"receive", "--id", "b", "--state", b.state, "--apply", "file:" + b.log}, common...)...)
	waitApplied(t, b.state, 400, 30*time.Second)
	// The secondary stops while the primary goes on shipping, so the store
	// holds generation-1 segments past what the secondary applied.
	if code := recvB.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exited %d:\n%s", code, recvB)
	}
	time.Sleep(400 * time.Millisecond)
	shipA.Kill9()
	close(stopApp)
	written()

	// Promote the secondary at what it applied.
	// Its spool is seeded so that a tail of the replica, where the
	// application now writes, starts right after the applied bytes.
	r := mustFerry(t, nil, append([]string{"promote", "--id", "b", "--state", b.state, "--site", "b", "--json",
		"--spool", b.spool, "--source", "tail:" + b.log}, common...)...)
	var p struct {
		Generation  uint32 `json:"generation"`
		ForkSeq     uint64 `json:"fork_seq"`
		LostRecords uint64 `json:"lost_records"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &p); err != nil {
		t.Fatalf("promote --json: %v\n%s", err, r)
	}
	fork := p.ForkSeq
	if p.Generation != 2 || fork < 400 || p.LostRecords == 0 {
		t.Fatalf("promotion %+v: want generation 2 forked at >= 400 with records beyond it in the store", p)
	}
	if got := readFile(t, b.log); !bytes.Equal(got, numberedLines("a", 1, int(fork))) {
		t.Fatalf("secondary's replica at the fork: %s", describeDiff(numberedLines("a", 1, int(fork)), got))
	}
	// The promoted site will not receive its own stream.
	failFerry(t, nil, []string{"promoted", "rejoin"}, append([]string{"receive", "--once", "--state", b.state, "--apply", "file:" + b.log}, common...)...)

	// The application writes on at the new primary, into the replica, and
	// ferry ship there continues generation 2 from fork+1 without being
	// told, tailing the replica from the fork.
	stopB := make(chan struct{})
	writtenB := appLines(t, b.log, "b", stopB)
	shipB := startFerry(t, nil, append([]string{"ship", "--spool", b.spool, "--source", "tail:" + b.log,
		"--max-records", "64", "--max-age", "50ms", "--lease-ttl", "5s"}, common...)...)
	time.Sleep(500 * time.Millisecond)
	close(stopB)
	nb := writtenB()
	waitStored(t, store, "app", 2, fork+uint64(nb), 30*time.Second)
	if code := shipB.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("new primary's shipper exited %d:\n%s", code, shipB)
	}
	newRecs := numberedLines("b", 1, nb)
	if got, want := readFile(t, b.log), append(numberedLines("a", 1, int(fork)), newRecs...); !bytes.Equal(got, want) {
		t.Fatalf("new primary's log: %s", describeDiff(want, got))
	}

	// The old primary comes back: fenced, non-zero, ships nothing.
	before := listDir(t, filepath.Join(store, "app"))
	failFerry(t, nil, []string{"fenced", "generation 2 was promoted at seq " + fmt.Sprint(fork), "rejoin"},
		append([]string{"ship", "--spool", a.spool, "--source", "tail:" + a.log, "--shutdown-timeout", "2s"}, common...)...)
	if after := listDir(t, filepath.Join(store, "app")); !slicesEqual(before, after) {
		t.Fatalf("the fenced shipper changed the store:\nbefore %v\nafter  %v", before, after)
	}

	// Rejoin: the report holds exactly the records accepted past the fork.
	report := filepath.Join(a.dir, "divergence.ndjson")
	mustFerry(t, nil, append([]string{"rejoin", "--spool", a.spool, "--state", a.state, "--apply", "file:" + a.log, "--report", report}, common...)...)
	sum := ferrytest.ReadDivergenceReport(t, report)
	recs := sum.Lines
	if sum.ForkSeq != fork || sum.Records != len(recs) || sum.Records == 0 {
		t.Fatalf("report summary %+v with %d records; want fork %d and the records past it", sum, len(recs), fork)
	}
	for i, rec := range recs {
		want := fork + 1 + uint64(i)
		if rec.Seq != want || rec.Data != fmt.Sprintf("a%06d\n", want) {
			t.Fatalf("report record %d: seq %d data %q; want seq %d, the old primary's line %d", i, rec.Seq, rec.Data, want, want)
		}
	}
	if got := readFile(t, a.log); !bytes.Equal(got, numberedLines("a", 1, int(fork))) {
		t.Fatalf("old primary's file after rejoin: %s", describeDiff(numberedLines("a", 1, int(fork)), got))
	}

	// The old primary follows the new history; nothing divergent was applied.
	mustFerry(t, nil, append([]string{"receive", "--once", "--id", "a", "--state", a.state, "--apply", "file:" + a.log}, common...)...)
	want := append(numberedLines("a", 1, int(fork)), newRecs...)
	if got := readFile(t, a.log); !bytes.Equal(got, want) {
		t.Fatalf("old primary after following generation 2: %s", describeDiff(want, got))
	}
	// A restore to a new target follows the history across the switch,
	// and one that stops inside generation 1 gets only what it owns.
	restored := filepath.Join(base, "restored.log")
	mustFerry(t, nil, append([]string{"restore", "--state", filepath.Join(base, "restore-state"), "--apply", "file:" + restored}, common...)...)
	if got := readFile(t, restored); !bytes.Equal(got, want) {
		t.Fatalf("restore across the generation switch: %s", describeDiff(want, got))
	}
	early := filepath.Join(base, "early.log")
	mustFerry(t, nil, append([]string{"restore", "--state", filepath.Join(base, "early-state"), "--apply", "file:" + early, "--until", fmt.Sprint(fork - 10)}, common...)...)
	if got := readFile(t, early); !bytes.Equal(got, numberedLines("a", 1, int(fork)-10)) {
		t.Fatalf("restore until seq %d: %s", fork-10, describeDiff(numberedLines("a", 1, int(fork)-10), got))
	}
	v := mustFerry(t, nil, append([]string{"verify"}, common...)...)
	if !strings.Contains(v.Stdout, "DIVERGENT") || !strings.Contains(v.Stdout, "chain ok") {
		t.Fatalf("verify should pass and report the divergent segments:\n%s", v)
	}

	// Retention across the switch: the promoted site's watermark is gone,
	// so pruning follows the old primary, now the receiver, up to what it
	// applied in generation 2; what is left still verifies.
	pr := mustFerry(t, nil, append([]string{"prune", "--keep-min", "1"}, common...)...)
	if strings.Contains(pr.Stdout, "applied only through generation 1") {
		t.Fatalf("prune is held back by the promoted site's old watermark:\n%s", pr)
	}
	segs := listDir(t, filepath.Join(store, "app"))
	if n := len(slicesFilter(segs, ".seg.zst")); n != 1 {
		t.Fatalf("after prune --keep-min 1 the store holds %d segments, want 1: %v\n%s", n, segs, pr)
	}
	mustFerry(t, nil, append([]string{"verify"}, common...)...)
}

// Of two secondaries promoted at once, exactly one wins and the other is
// told who did.
func TestConcurrentPromotesOneWins(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	store := filepath.Join(base, "store")
	common := []string{"--store", store, "--stream", "app"}
	mustFerry(t, bytes.NewReader(numberedLines("x", 1, 500)), append([]string{"ship", "--spool", filepath.Join(base, "spool"), "--max-records", "50"}, common...)...)
	var states []string
	for _, n := range []string{"b", "c"} {
		st := filepath.Join(base, n)
		mustFerry(t, nil, append([]string{"receive", "--once", "--state", st, "--apply", "file:" + filepath.Join(base, n+".log")}, common...)...)
		states = append(states, st)
	}
	procs := make([]*procResult, len(states))
	var wg sync.WaitGroup
	for i, st := range states {
		wg.Go(func() {
			r := ferry(t, nil, append([]string{"promote", "--state", st, "--site", fmt.Sprint("site", i)}, common...)...)
			procs[i] = &procResult{code: r.Code, out: r.Output()}
		})
	}
	wg.Wait()
	won := 0
	for _, p := range procs {
		if p.code == 0 {
			won++
		} else if !strings.Contains(p.out, "already promoted") || !strings.Contains(p.out, "promoted at seq 500 on site") {
			t.Errorf("losing promote should name the winner:\n%s", p.out)
		}
	}
	if won != 1 {
		t.Fatalf("%d of 2 concurrent promotes won; want exactly 1", won)
	}
}

// waitStored waits until the store holds a segment of generation gen
// ending at seq last.
func waitStored(t *testing.T, store, stream string, gen uint32, last uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := mustFerry(t, nil, "ls", "--json", "--store", store, "--stream", stream)
		dec := json.NewDecoder(strings.NewReader(r.Stdout))
		for dec.More() {
			var s segInfo
			if err := dec.Decode(&s); err != nil {
				t.Fatal(err)
			}
			if s.Generation == gen && s.LastSeq >= last {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no segment of generation %d reached seq %d within %s:\n%s", gen, last, within, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type procResult struct {
	code int
	out  string
}

// A stray segment overlapping the stream, written past the store's checks:
// the receiver stops naming both and never exits 0 while it exists, and
// verify reports it.
func TestStrayOverlappingSegment(t *testing.T) {
	t.Parallel()
	s := newStream(t, "app")
	input := numberedLines("r", 1, 600)
	s.ship(input, "--max-records", "100")
	// The same records cut at other boundaries, by another writer.
	other := newStream(t, "app")
	other.ship(input, "--max-records", "150")
	var stray string
	for _, name := range other.segments() {
		if first, _ := segmentSeqs(t, name); first == 151 {
			stray = name
		}
	}
	data := readFile(t, other.segmentPath(stray))
	if err := os.WriteFile(s.segmentPath(stray), data, 0o644); err != nil {
		t.Fatal(err)
	}
	failFerry(t, nil, []string{stray, "overlap"}, s.receiveArgs("--once")...)
	failFerry(t, nil, []string{"DEFECT", stray, "overlaps"}, "verify", "--store", s.store, "--stream", s.name)
	// Gone again, the stream applies.
	if err := os.Remove(s.segmentPath(stray)); err != nil {
		t.Fatal(err)
	}
	s.receiveOnce()
	s.wantReplica(input, "after the stray segment was removed")
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

// listDir lists the names in dir that are not temp or lock files.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".tmp") {
			out = append(out, e.Name())
		}
	}
	return out
}

// slicesFilter keeps the names ending in suffix.
func slicesFilter(names []string, suffix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			out = append(out, n)
		}
	}
	return out
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}
