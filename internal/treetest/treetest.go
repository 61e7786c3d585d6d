// Package treetest reads a directory tree into a Tree that tests compare:
// the tree a replica was applied into against the source, a tree against
// a model built from the records shipped, a tree before and after
// something that must not touch it. Each test picks, in Options, which
// attributes its comparison looks at.
package treetest

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Node is one path of a tree as a comparison sees it. Attributes the
// Options leave out are zero, so two Nodes compare with ==.
type Node struct {
	Kind    string // "dir", "file", "symlink", or "other" (a device, fifo, socket)
	Mode    uint32 // chmod bits (permissions, setuid, setgid, sticky) within Options.Mode; 0 for a symlink
	Mtime   int64  // modification time in nanoseconds since the epoch, truncated to Options.Mtime
	Content string // a file's bytes
	Target  string // a symlink's target
}

// longContent is how long a Content is before String shows its size and
// hash instead of its bytes.
const longContent = 64

func (n Node) String() string {
	var b strings.Builder
	b.WriteString(n.Kind)
	if n.Kind != "symlink" {
		fmt.Fprintf(&b, " mode %04o", n.Mode)
	}
	if n.Mtime != 0 {
		fmt.Fprintf(&b, " mtime %d", n.Mtime)
	}
	switch {
	case n.Kind == "symlink":
		fmt.Fprintf(&b, " -> %q", n.Target)
	case len(n.Content) > longContent:
		sum := sha256.Sum256([]byte(n.Content))
		fmt.Fprintf(&b, " %d bytes, sha256 %x...", len(n.Content), sum[:8])
	case n.Kind == "file":
		fmt.Fprintf(&b, " %q", n.Content)
	}
	return b.String()
}

// Tree is every path under a root, slash-separated and relative to it
// (the root itself is ".").
type Tree map[string]Node

// Options are what a Walk compares. The zero value compares kinds,
// contents and link targets only, root included.
type Options struct {
	// Mode is which chmod bits are compared: 0o7777 all of them, 0o777
	// the permissions only, 0 none.
	Mode uint32
	// Mtime is the precision to which modification times are compared:
	// time.Nanosecond all of it, time.Second whole seconds, 0 not at all.
	Mtime time.Duration
	// NoRoot leaves the root itself out.
	NoRoot bool
	// Skip, if set, leaves out a path below the root, and everything
	// under it if it is a directory. rel is as in the Tree.
	Skip func(rel string, d fs.DirEntry) bool
}

// Walk reads the tree at root without following symlinks. The error is
// the first failure to read a path, which a tree that is still changing
// can give (a path removed between listing and reading it).
func Walk(root string, opt Options) (Tree, error) {
	out := Tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." && opt.NoRoot {
			return nil
		}
		if rel != "." && opt.Skip != nil && opt.Skip(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n, err := readNode(p, opt)
		if err != nil {
			return err
		}
		out[rel] = n
		return nil
	})
	return out, err
}

func readNode(p string, opt Options) (Node, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return Node{}, err
	}
	n := Node{Mode: chmodBits(fi.Mode()) & opt.Mode}
	if opt.Mtime > 0 {
		n.Mtime = fi.ModTime().Truncate(opt.Mtime).UnixNano()
	}
	switch {
	case fi.IsDir():
		n.Kind = "dir"
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(p)
		if err != nil {
			return Node{}, err
		}
		n.Kind, n.Content = "file", string(b)
	case fi.Mode()&fs.ModeSymlink != 0:
		n.Kind, n.Mode = "symlink", 0
		if n.Target, err = os.Readlink(p); err != nil {
			return Node{}, err
		}
	default:
		n.Kind = "other"
	}
	return n, nil
}

// chmodBits is m as chmod(2) takes it.
func chmodBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

// Read is Walk failing the test on an error.
func Read(t testing.TB, root string, opt Options) Tree {
	t.Helper()
	tree, err := Walk(root, opt)
	if err != nil {
		t.Fatalf("read the tree at %s: %v", root, err)
	}
	return tree
}

// maxDiffs is how many differences Diff lists before it only counts them.
const maxDiffs = 20

// Diff returns "" when a and b hold the same paths with the same Nodes,
// and otherwise their differences, one a line, sorted, each naming its side
// with aName or bName (e.g. "source" and "replica").
func Diff(aName string, a Tree, bName string, b Tree) string {
	var d []string
	for p, na := range a {
		switch nb, ok := b[p]; {
		case !ok:
			d = append(d, fmt.Sprintf("%q only in the %s: %v", p, aName, na))
		case na != nb:
			d = append(d, fmt.Sprintf("%q differs:\n  %s %v\n  %s %v", p, aName, na, bName, nb))
		}
	}
	for p, nb := range b {
		if _, ok := a[p]; !ok {
			d = append(d, fmt.Sprintf("%q only in the %s: %v", p, bName, nb))
		}
	}
	slices.Sort(d)
	if len(d) > maxDiffs {
		d = append(d[:maxDiffs], fmt.Sprintf("... and %d more", len(d)-maxDiffs))
	}
	return strings.Join(d, "\n")
}
