//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/treetest"
)

// Renames on the wire, with the binary: Maildir flag changes, folder moves
// and renames over paths written earlier in the same segment ship as
// rename records; the receiver applies a segment of them a second time
// (its checkpoint put back to before the segment, as a kill -9 between the
// apply and the checkpoint leaves it) without a change; then rename churn
// under kill -9 of the receiver; at the end the replica equals the source.
func TestDirTreeRenames(t *testing.T) {
	t.Parallel()
	s := newStream(t, "renames")
	src, dst := filepath.Join(s.dir, "src"), filepath.Join(s.dir, "dst")
	rng := seededRand(t)
	body := func(i int) []byte {
		return []byte(fmt.Sprintf("From: a@example.org\r\nSubject: %d\r\n\r\n%s\r\n", i, strings.Repeat("body ", 200+i%50)))
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(src, rel)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mv := func(a, b string) {
		t.Helper()
		if err := os.Rename(filepath.Join(src, a), filepath.Join(src, b)); err != nil {
			t.Fatal(err)
		}
	}
	flags := map[string]string{} // message base name -> its flags
	folders := []string{"INBOX", "Sent", "Lists/ferry", "Lists/go"}
	for i := range 200 {
		f := folders[i%len(folders)]
		name := fmt.Sprintf("%s/cur/17000%05d.M%dP1.host", f, i, i)
		flags[name] = ""
		write(name+":2,", body(i))
	}
	shipArgs := []string{"ship", "--store", s.store, "--stream", s.name, "--spool", s.spool, "--source", "dir:" + src,
		"--max-bytes", "64MiB", "--max-age", "1h"}
	recvArgs := []string{"receive", "--store", s.store, "--stream", s.name, "--state", s.state, "--apply", "dir:" + dst,
		"--poll-min", "20ms", "--poll-max", "100ms"}
	converged := func(what string) {
		t.Helper()
		want := treeState(t, src)
		ferrytest.Eventually(t, 60*time.Second, what, func() (bool, string) {
			got, err := treetest.Walk(dst, treeOptions)
			if err != nil {
				return false, "replica still changing: " + err.Error()
			}
			d := diffTrees(want, got)
			return d == "", d
		})
	}
	segBytes := func() (n int64) {
		for _, seg := range s.segments() {
			if fi, err := os.Stat(filepath.Join(s.streamDir(), seg)); err == nil {
				n += fi.Size()
			}
		}
		return n
	}

	// The tree, in one segment (the shipper seals it on SIGTERM).
	fast := append(shipArgs[:len(shipArgs)-4:len(shipArgs)-4], "--max-bytes", "64KiB", "--max-age", "50ms")
	ship := startFerry(t, nil, fast...)
	recv := startFerry(t, nil, recvArgs...)
	converged("the replica holds the first tree") // so the source has shipped it all
	ship.Terminate(30 * time.Second)
	recv.Terminate(30 * time.Second)
	saved := filepath.Join(s.dir, "state-before")
	if err := os.CopyFS(saved, os.DirFS(s.state)); err != nil {
		t.Fatal(err)
	}
	before := len(s.segments())

	// One segment of renames: flag changes, a folder move, a rename over a
	// file and into a directory the segment made first.
	ship = startFerry(t, nil, shipArgs...)
	time.Sleep(time.Second) // its scan (of an unchanged tree) is done
	sizeBefore := segBytes()
	for name := range flags {
		if !strings.HasPrefix(name, "INBOX/") && !strings.HasPrefix(name, "Lists/ferry/") {
			continue // the folders moved below: their messages' renames would go with them
		}
		mv(name+":2,", name+":2,S")
		flags[name] = "S"
	}
	write("INBOX/cur/over", []byte("a file the rename replaces"))
	mv("Lists/go", "Lists/golang")
	os.Mkdir(filepath.Join(src, "Archive"), 0o700)
	time.Sleep(time.Second) // the put and the mkdir ship before the renames onto them (if not, those two go as del + put)
	mv("Sent", "Archive/Sent")
	for name, fl := range flags {
		if strings.HasPrefix(name, "INBOX/") && fl == "S" {
			mv(name+":2,S", "INBOX/cur/over")
			delete(flags, name)
			break
		}
	}
	time.Sleep(time.Second)
	ship.Terminate(30 * time.Second)
	if got := len(s.segments()); got != before+1 {
		t.Fatalf("the renames went into %d segments, this test wants one", got-before)
	}
	t.Logf("100 flag changes, 2 folder moves, 1 rename over a file: %d bytes of segment", segBytes()-sizeBefore)
	cat := mustFerry(t, nil, "cat", "--store", s.store, "--stream", s.name, "--json")
	if c := strings.Count(cat.Stdout, `"op":"rename"`); c < 101 || !strings.Contains(cat.Stdout, `"data":"from \"Lists/go\" (dir`) {
		t.Fatalf("ferry cat shows %d renames, want at least 101 and the folder move readable (%d puts, %d dels)",
			c, strings.Count(cat.Stdout, `"op":"put"`), strings.Count(cat.Stdout, `"op":"del"`))
	}
	// Without --json a rename (binary data) prints as one readable line.
	if plain := mustFerry(t, nil, "cat", "--store", s.store, "--stream", s.name); !strings.Contains(plain.Stdout, `" from "Lists/go" (dir`) ||
		strings.Count("\n"+plain.Stdout, "\nrename \"") < 101 {
		t.Fatalf("ferry cat shows the renames as:\n%.2000s", plain.Stdout)
	}
	mustFerry(t, nil, append(recvArgs, "--once")...)
	converged("the replica holds the renames")
	_, err := os.Stat(filepath.Join(dst, ".ferry-renamed.tmp"))
	t.Logf("%d renames; a rename the segment could undo on a replay was marked: %v", strings.Count(cat.Stdout, `"op":"rename"`), err == nil)
	// A kill -9 after the apply, before the checkpoint: the segment is
	// applied again over a tree that has it.
	if err := os.RemoveAll(s.state); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(saved, s.state); err != nil {
		t.Fatal(err)
	}
	mustFerry(t, nil, append(recvArgs, "--once")...)
	converged("the segment applied again changed nothing")

	// Rename churn while the receiver is killed -9 again and again.
	ship = startFerry(t, nil, fast...)
	recv = startFerry(t, nil, recvArgs...)
	names := func() []string {
		var out []string
		for name := range flags {
			if strings.HasPrefix(name, "INBOX/") || strings.HasPrefix(name, "Lists/ferry/") {
				out = append(out, name)
			}
		}
		return out
	}()
	for round := range 6 {
		for range 60 {
			name := names[rng.IntN(len(names))]
			if _, ok := flags[name]; !ok {
				continue
			}
			nf := []string{"", "S", "RS", "FS", "T"}[rng.IntN(5)]
			if nf != flags[name] {
				mv(name+":2,"+flags[name], name+":2,"+nf)
				flags[name] = nf
			}
		}
		if round%2 == 1 { // a folder and back, with a new message in between
			mv("Lists/ferry", "Lists/ferry-old")
			write(fmt.Sprintf("Lists/ferry-old/new/r%d", round), body(round))
			mv("Lists/ferry-old", "Lists/ferry")
		}
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		recv.Kill9()
		recv = startFerry(t, nil, recvArgs...)
	}
	converged("the replica equals the source after rename churn and kill -9")
	if ship.Exited() || recv.Exited() {
		t.Fatalf("a process exited:\n%s\n%s", ship, recv)
	}
	ship.Terminate(30 * time.Second)
	recv.Terminate(30 * time.Second)
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
}
