//go:build linux

package sync_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
)

// waitQuiet waits until every site's receiver of every other site's
// stream has applied it to its end, twice in a row with no stream growing
// in between: nothing is left in flight.
func waitQuiet(t *testing.T, where streams, timeout time.Duration, sites ...*site) {
	t.Helper()
	lastSeq := func(id string) uint64 {
		var n uint64
		eachRecord(t, where, "mail@"+id, func(_ string, r batch.Record) { n = max(n, r.Seq) })
		return n
	}
	prev := ""
	ferrytest.Eventually(t, timeout, "every site applied every other's stream to its end", func() (bool, string) {
		var ends, lag []string
		for _, s := range sites {
			ends = append(ends, fmt.Sprint(lastSeq(s.id)))
		}
		for _, s := range sites {
			for j, p := range sites {
				if p == s {
					continue
				}
				cp, _, err := receiver.LoadCheckpoint(filepath.Join(s.dir, "state", "peer-"+p.id))
				if err != nil {
					t.Fatal(err)
				}
				if want := ends[j]; fmt.Sprint(cp.LastSeq) != want {
					lag = append(lag, fmt.Sprintf("%s applied %s's stream to seq %d of %s", s.id, p.id, cp.LastSeq, want))
				}
			}
		}
		now := strings.Join(ends, ",")
		quiet := len(lag) == 0 && now == prev
		prev = now
		time.Sleep(2 * time.Second)
		return quiet, strings.Join(lag, "; ")
	})
}

// streamRecords counts the records of a site's stream, and lists the
// keys its version records name.
func streamRecords(t *testing.T, where streams, id string) (n int, versions []string) {
	t.Helper()
	eachRecord(t, where, "mail@"+id, func(_ string, r batch.Record) {
		n++
		if r.Op == dirtree.OpVersion {
			versions = append(versions, string(r.Key))
		}
	})
	return n, versions
}

// destroy removes everything a site keeps but its config: the tree's
// contents, the spool and the sync state.
func (s *site) destroy(t *testing.T) {
	t.Helper()
	for _, p := range []string{s.tree, filepath.Join(s.dir, "spool"), filepath.Join(s.dir, "state")} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(s.tree, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestSyncRejoinAfterRebuild: two sites converge on a tree of a few
// thousand files (most from a, some from b, some of a's rewritten by b);
// b is stopped and its tree, spool and state destroyed; a changes things
// while b is gone; b is rebuilt from the streams in the store with
// ferry sync --rejoin and re-joins. The trees converge again and b ships
// nothing but its real differences: no record at all for the rebuild, and
// for one file written after it that file and its directory. For comparison,
// the same loss handled without --rejoin (the tree copied back from a,
// new state) ships the whole tree again, and still converges.
func TestSyncRejoinAfterRebuild(t *testing.T) {
	where, a, b := newPair(t)
	const files = 3000
	rng := rand.New(rand.NewPCG(1, 2))
	body := func(n int) []byte { // incompressible, as mail mostly is once stored
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var treeBytes int
	for i := range files {
		data := append([]byte(fmt.Sprintf("a's message %d\n", i)), body(600+i%500)...)
		write(t, filepath.Join(a.tree, fmt.Sprintf("a-box%02d/m%d", i%30, i)), data)
		treeBytes += len(data)
	}
	for i := range 200 {
		data := append([]byte(fmt.Sprintf("b's message %d\n", i)), body(400)...)
		write(t, filepath.Join(b.tree, fmt.Sprintf("b-box%d/m%d", i%5, i)), data)
		treeBytes += len(data)
	}
	a.start(t)
	b.start(t)
	waitIdentical(t, a, b, 90*time.Second)
	for i := range 50 { // b's own versions of a's paths, later than a's
		write(t, filepath.Join(b.tree, fmt.Sprintf("a-box%02d/m%d", i%30, i)), []byte(fmt.Sprintf("rewritten by b %d\n", i)))
	}
	os.Remove(filepath.Join(b.tree, "b-box0/m0"))
	waitIdentical(t, a, b, 60*time.Second)
	b.stop(t)
	beforeRecs, _ := streamRecords(t, where, "b")
	beforeBytes := shippedBytes(t, where, "b")

	// a goes on while b is gone.
	for i := range 10 {
		write(t, filepath.Join(a.tree, fmt.Sprintf("a-new/n%d", i)), []byte(fmt.Sprintf("new at a %d\n", i)))
	}
	os.Remove(filepath.Join(a.tree, "a-box05/m65"))
	write(t, filepath.Join(a.tree, "a-box01/m1"), []byte("a again, after b's rewrite\n"))

	b.destroy(t)
	r := ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "sync", "--config", b.conf, "--rejoin", "--help")
	if r.Code != 0 || !strings.Contains(r.Output(), "--rejoin") {
		t.Fatalf("ferry sync --help does not describe --rejoin:\n%s", r)
	}
	b.proc = ferrytest.Cmd{Bin: ferryBin}.Start(t, nil, "sync", "--config", b.conf, "--rejoin")
	snap := waitIdentical(t, a, b, 120*time.Second)
	if got := snap["a-box01/m1"]; !strings.Contains(got, sig([]byte("a again, after b's rewrite\n"))) {
		t.Fatalf("a-box01/m1 after the rejoin: %s; want a's change made while b was gone", got)
	}
	if got := snap["a-box02/m2"]; !strings.Contains(got, sig([]byte("rewritten by b 2\n"))) {
		t.Fatalf("a-box02/m2 after the rejoin: %s; want b's rewrite (from b's own stream)", got)
	}
	if _, ok := snap["b-box0/m0"]; ok {
		t.Fatal("b-box0/m0, deleted by b before it was lost, is back")
	}
	if _, ok := snap["a-box05/m65"]; ok {
		t.Fatal("a-box05/m65, deleted by a while b was gone, is back")
	}
	if len(snap) < files {
		t.Fatalf("trees hold %d paths; want at least %d", len(snap), files)
	}
	rejoinRecs, vers := streamRecords(t, where, "b")
	rejoinBytes := shippedBytes(t, where, "b") - beforeBytes
	if rejoinRecs != beforeRecs {
		t.Fatalf("b shipped %d records re-joining (versions of %q...); want none: its tree is what the store holds",
			rejoinRecs-beforeRecs, vers[len(vers)-min(len(vers), rejoinRecs-beforeRecs, 5):])
	}
	// A real difference after the rejoin ships as usual, and only it.
	write(t, filepath.Join(b.tree, "b-box1/after-rejoin"), []byte("written at b after its rejoin\n"))
	waitIdentical(t, a, b, 60*time.Second)
	afterRecs, vers := streamRecords(t, where, "b")
	got := strings.Join(vers[len(vers)-min(len(vers), 2):], " ")
	if d := afterRecs - rejoinRecs; d != 4 || (got != "b-box1 b-box1/after-rejoin" && got != "b-box1/after-rejoin b-box1") {
		t.Fatalf("b shipped %d records for one new file after its rejoin (last versions %q); want 4: the file's and its directory's (new mtime) version and put/mkdir", d, got)
	}
	// A second --rejoin over a state that is not a rebuilt one is refused.
	b.stop(t)
	os.RemoveAll(filepath.Join(b.dir, "state", "rejoin"))
	r = ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "sync", "--config", b.conf, "--rejoin")
	if r.Code == 0 || !strings.Contains(r.Output(), "already holds a ledger") {
		t.Fatalf("--rejoin over a live state: exit %d\n%s", r.Code, r)
	}

	// Without --rejoin: the tree copied back from a, new state and spool.
	b.destroy(t)
	if out, err := exec.Command("cp", "-a", a.tree+"/.", b.tree).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	copyBase := shippedBytes(t, where, "b")
	b.start(t)
	ferrytest.Eventually(t, 120*time.Second, "b shipped its copied tree", func() (bool, string) {
		return shippedBytes(t, where, "b")-copyBase > rejoinBytes, ""
	})
	waitQuiet(t, where, 120*time.Second, a, b)
	// A new state over a copied tree is not a rejoin (it ships the whole
	// tree again), but the sites must still end with one tree: the copy's
	// files meet the peer's older versions of them as this site's changes,
	// wherever b's receiver meets them before b's own scan does.
	copied := snapshot(t, b.tree)
	if d := diff(snapshot(t, a.tree), copied); d != "" {
		t.Fatalf("a tree copied back and started with a new state: the sites ended different (a vs b):\n%s", d)
	}
	for i := 2; i < 50; i += 7 {
		k := fmt.Sprintf("a-box%02d/m%d", i%30, i)
		if got := copied[k]; !strings.Contains(got, sig([]byte(fmt.Sprintf("rewritten by b %d\n", i)))) {
			t.Fatalf("%s after the copy: %s; want b's rewrite, the newest version", k, got)
		}
	}
	if c := conflictCopies(copied); len(c) > 0 {
		t.Fatalf("conflict copies %q after the copy; the copy holds every site's newest version", c)
	}
	b.stop(t)
	a.stop(t)
	copyBytes := shippedBytes(t, where, "b") - copyBase
	t.Logf("b re-joining a tree of %d paths (%d bytes of files): with --rejoin shipped %d bytes (0 records); copied back without it, %d bytes", len(snap), treeBytes, rejoinBytes, copyBytes)
	if copyBytes < 100*max(rejoinBytes, 1) {
		t.Fatalf("without --rejoin b shipped %d bytes, with it %d: the comparison does not hold", copyBytes, rejoinBytes)
	}
}
