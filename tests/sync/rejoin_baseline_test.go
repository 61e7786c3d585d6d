//go:build linux

package sync_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// withBaselines adds ship.baseline to a site's config: its new spool's
// first scan is a baseline, and SIGUSR1 asks for one more.
func (s *site) withBaselines(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile(s.conf)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(raw), "[ship]\n", "[ship]\nbaseline = \"@every 24h\"\n", 1)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// markers lists the baseline markers of a site's stream in the store.
func markers(t *testing.T, where streams, id string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(where(id), "mail@"+id, "baselines"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// baseline asks a running site for a baseline and waits for its marker.
func (s *site) baseline(t *testing.T, where streams) {
	t.Helper()
	n := len(markers(t, where, s.id))
	if err := s.proc.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 60*time.Second, "site "+s.id+"'s baseline marker", func() (bool, string) {
		return len(markers(t, where, s.id)) > n, s.proc.Stderr()
	})
}

// firstSeq is the first seq a site's stream still holds in the store.
func firstSeq(t *testing.T, where streams, id string) uint64 {
	t.Helper()
	first := uint64(0)
	eachRecord(t, where, "mail@"+id, func(_ string, r batch.Record) {
		if first == 0 || r.Seq < first {
			first = r.Seq
		}
	})
	return first
}

// TestSyncRejoinFromBaseline: both sites ship baselines (ship.baseline),
// and retention drops every segment before each stream's newest one. Site
// b, whose tree, spool and state are then lost, re-joins with --rejoin: it
// reads each stream from its newest baseline (seq 1 is gone), ends with the
// same tree as a, and ships nothing. The deletes are the hard part: b's
// baseline, taken before a deleted some of b's files, holds them, and a's
// stream from its baseline on holds the deletes only because a sync
// baseline ships its site's deletes again. A baseline b takes after the
// rejoin ships b's own versions again (the rejoin read them back from the
// store), so the next prune leaves b's stream whole from it.
func TestSyncRejoinFromBaseline(t *testing.T) {
	where, a, b := newPair(t)
	a.withBaselines(t)
	b.withBaselines(t)
	for i := range 200 {
		write(t, filepath.Join(a.tree, fmt.Sprintf("a-box%d/m%d", i%10, i)), []byte(fmt.Sprintf("a's message %d\n", i)))
	}
	for i := range 40 {
		write(t, filepath.Join(b.tree, fmt.Sprintf("b-box%d/m%d", i%4, i)), []byte(fmt.Sprintf("b's message %d\n", i)))
	}
	a.start(t)
	b.start(t)
	waitIdentical(t, a, b, 90*time.Second)
	for i := range 10 { // b's versions of a's paths
		write(t, filepath.Join(b.tree, fmt.Sprintf("a-box%d/m%d", i%10, i)), []byte(fmt.Sprintf("rewritten by b %d\n", i)))
	}
	os.Remove(filepath.Join(b.tree, "a-box5/m15")) // b's delete of a's file
	waitIdentical(t, a, b, 60*time.Second)
	b.baseline(t, where)        // holds b-box0/m0 ... below: b's own files
	for i := 0; i < 8; i += 4 { // a's deletes of b's files, after b's baseline
		os.Remove(filepath.Join(a.tree, fmt.Sprintf("b-box0/m%d", i)))
	}
	os.RemoveAll(filepath.Join(a.tree, "b-box3")) // and of b's directory
	write(t, filepath.Join(a.tree, "a-box1/m1"), []byte("a again, after b's rewrite\n"))
	waitIdentical(t, a, b, 60*time.Second)
	a.baseline(t, where)
	write(t, filepath.Join(a.tree, "a-new/after-baseline"), []byte("a, after its baseline\n"))
	waitIdentical(t, a, b, 60*time.Second)
	b.stop(t)
	want := snapshot(t, a.tree)
	for _, id := range []string{"a", "b"} {
		p := ferrytest.Cmd{Bin: ferryBin}.Run(t, nil, "prune", "--store", where(id), "--stream", "mail@"+id, "--keep-min", "1")
		if p.Code != 0 {
			t.Fatalf("prune mail@%s: %s", id, p)
		}
		if f := firstSeq(t, where, id); f <= 1 {
			t.Fatalf("mail@%s still starts at seq %d after prune:\n%s", id, f, p)
		}
	}
	beforeRecs, _ := streamRecords(t, where, "b")

	b.destroy(t)
	b.proc = ferrytest.Cmd{Bin: ferryBin}.Start(t, nil, "sync", "--config", b.conf, "--rejoin")
	ferrytest.Eventually(t, 90*time.Second, "the rejoin from the baselines", func() (bool, string) {
		if b.proc.Exited() {
			t.Fatalf("ferry sync --rejoin exited %d:\n%s", b.proc.Code(), b.proc)
		}
		return strings.Contains(b.proc.Stderr(), "rejoin: done"), b.proc.Stderr()
	})
	for _, id := range []string{"a", "b"} {
		if !logHas(b.proc.Stderr(), "read from its newest baseline", "stream=mail@"+id+" ") {
			t.Fatalf("the rejoin did not read mail@%s from its baseline:\n%s", id, b.proc.Stderr())
		}
	}
	snap := waitIdentical(t, a, b, 60*time.Second)
	if d := diff(want, snap); d != "" {
		t.Fatalf("after the rejoin from baselines the trees are not what a held (a vs b):\n%s", d)
	}
	for _, gone := range []string{"b-box0/m0", "b-box0/m4", "b-box3", "a-box5/m15"} {
		if _, ok := snap[gone]; ok {
			t.Fatalf("%s, deleted before the baselines the rejoin started at, is back", gone)
		}
	}
	if got := snap["a-box2/m2"]; !strings.Contains(got, sig([]byte("rewritten by b 2\n"))) {
		t.Fatalf("a-box2/m2 after the rejoin: %s; want b's rewrite", got)
	}
	time.Sleep(2 * time.Second) // what b would ship, it has had time to
	rejoinRecs, vers := streamRecords(t, where, "b")
	if rejoinRecs != beforeRecs {
		t.Fatalf("b shipped %d records re-joining from the baselines (versions of %q...); want none",
			rejoinRecs-beforeRecs, vers[len(vers)-min(len(vers), rejoinRecs-beforeRecs, 5):])
	}

	// A baseline after the rejoin ships b's own versions (read back from
	// the store by the rejoin) again, so its stream stays whole from it.
	b.baseline(t, where)
	inBaseline := map[string]bool{}
	var begun bool
	eachRecord(t, where, "mail@b", func(_ string, r batch.Record) {
		switch {
		case r.Op == dirtree.OpBaselineBegin:
			begun = true
			clear(inBaseline) // only the newest baseline counts
		case begun && r.Op == dirtree.OpVersion:
			inBaseline[string(r.Key)] = true
		}
	})
	for _, k := range []string{"a-box2/m2", "b-box1/m1", "b-box0/m8"} {
		if !inBaseline[k] {
			t.Fatalf("b's baseline after its rejoin does not ship %s, b's own version read back by the rejoin", k)
		}
	}
	if inBaseline["a-box1/m11"] || inBaseline["a-new/after-baseline"] {
		t.Fatal("b's baseline ships a's versions")
	}
	b.stop(t)
	a.stop(t)
	t.Logf("rejoin from baselines: %d paths, b's stream %d records before and after", len(snap), beforeRecs)
}

// logHas reports whether one line of log holds every part.
func logHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
