//go:build linux

package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/treetest"
)

// treeOptions is what a comparison of a source and a replica looks at:
// per path below the root its type, permissions, content or link target,
// leaving out the applier's own .ferry-* files.
var treeOptions = treetest.Options{
	Mode:   0o777,
	NoRoot: true,
	Skip:   func(_ string, d fs.DirEntry) bool { return strings.HasPrefix(d.Name(), ".ferry-") },
}

// treeState reads the tree at root as treeOptions say, failing the test on
// an error.
func treeState(t *testing.T, root string) treetest.Tree {
	t.Helper()
	return treetest.Read(t, root, treeOptions)
}

// diffTrees is "" when the replica equals the source, else how it differs.
func diffTrees(source, replica treetest.Tree) string {
	return treetest.Diff("source", source, "replica", replica)
}

// A directory tree replicated by the binary: dir: source, S3-less directory
// store, dir: applier. The tree keeps changing (new files, rewrites,
// deletes, renames, a symlink out of the tree) while the shipper and then
// the receiver are killed -9; at the end the replica equals the source.
func TestDirTreeSurvivesKill9(t *testing.T) {
	t.Parallel()
	s := newStream(t, "tree")
	src, dst := filepath.Join(s.dir, "src"), filepath.Join(s.dir, "dst")
	rng := seededRand(t)
	write := func(rel string, n int) {
		p := filepath.Join(src, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 400 {
		write(fmt.Sprintf("d%d/sub%d/f%03d.bin", i%8, i%3, i), 10+rng.IntN(5000))
	}
	write("big/blob", 3<<20+123) // several chunks
	os.Symlink("/etc/hostname", filepath.Join(src, "outside-link"))
	shipArgs := []string{"ship", "--store", s.store, "--stream", s.name, "--spool", s.spool, "--source", "dir:" + src,
		"--max-bytes", "256KiB", "--max-age", "50ms"}
	recvArgs := []string{"receive", "--store", s.store, "--stream", s.name, "--state", s.state, "--apply", "dir:" + dst,
		"--poll-min", "20ms", "--poll-max", "100ms"}
	ship := startFerry(t, nil, shipArgs...)
	recv := startFerry(t, nil, recvArgs...)
	mutate := func(round int) {
		for i := range 40 {
			switch rng.IntN(4) {
			case 0:
				write(fmt.Sprintf("new%d/n%03d", round, i), rng.IntN(3000))
			case 1:
				write(fmt.Sprintf("d%d/sub%d/f%03d.bin", i%8, i%3, i*7%400), rng.IntN(4000)) // rewrite
			case 2:
				os.Remove(filepath.Join(src, fmt.Sprintf("d%d/sub%d/f%03d.bin", i%8, i%3, (i*13+round)%400)))
			default:
				from := filepath.Join(src, fmt.Sprintf("d%d/sub%d/f%03d.bin", i%8, i%3, (i*17+round)%400))
				os.Rename(from, from+".renamed")
			}
		}
	}
	for round := range 3 {
		mutate(round)
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		ship.Kill9()
		ship = startFerry(t, nil, shipArgs...)
		mutate(round + 10)
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		recv.Kill9()
		recv = startFerry(t, nil, recvArgs...)
	}
	want := treeState(t, src)
	ferrytest.Eventually(t, 60*time.Second, "replica equals the source", func() (bool, string) {
		if ship.Exited() || recv.Exited() {
			t.Fatalf("a process exited:\n%s\n%s", ship, recv)
		}
		got, err := treetest.Walk(dst, treeOptions) // the receiver may still be changing it
		if err != nil {
			return false, "replica still changing: " + err.Error()
		}
		d := diffTrees(want, got)
		return d == "", d
	})
	if target, err := os.Readlink(filepath.Join(dst, "outside-link")); err != nil || target != "/etc/hostname" {
		t.Fatalf("symlink replicated as %q (%v), want a link to /etc/hostname", target, err)
	}
	ship.Terminate(30 * time.Second)
	recv.Terminate(30 * time.Second)
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
}
