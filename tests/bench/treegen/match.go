//go:build linux

package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// entry is what one path of a tree must be: a directory, or a regular file
// of a size and SHA-256.
type entry struct {
	path string
	dir  bool
	size int64
	sum  [32]byte
}

// ignored reports names a tool keeps for itself in the replica: ferry's
// staging directory and temporary files. rsync's temporary files are not
// ignored: while one is there, the replica does not match.
func ignored(name string) bool { return strings.HasPrefix(name, ".ferry-") }

// cacheEntry remembers a replica file's hash by its identity: a file that
// was replaced (new inode) or written (new ctime) is hashed again.
type cacheEntry struct {
	ino, dev     uint64
	size         int64
	mtime, ctime int64
	sum          [32]byte
}

// matcher compares a replica with the expected tree, hashing each replica
// file once per identity, so that a poll near the end mostly only stats.
type matcher struct {
	root  string
	cache map[string]cacheEntry
}

// wait compares every interval until the writes are done (done yields
// their result) and the replica matches, or the deadline passes. It returns
// the time the comparison that matched finished (zero if none did), the
// number of comparisons and, when none matched, why.
func (m *matcher) wait(exp []entry, done <-chan error, deadline time.Time, interval time.Duration) (time.Time, int, string) {
	polls, writing := 0, true
	want := make(map[string]*entry, len(exp))
	for i := range exp {
		want[exp[i].path] = &exp[i]
	}
	for {
		start := time.Now()
		if writing {
			select {
			case err := <-done:
				if err != nil {
					return time.Time{}, polls, "writing the source: " + err.Error()
				}
				writing = false
			default:
			}
		}
		polls++
		diff := m.check(exp, want)
		if diff == "" && !writing {
			return time.Now(), polls, ""
		}
		if time.Now().After(deadline) {
			if writing {
				return time.Time{}, polls, "the writes to the source did not finish before -timeout"
			}
			return time.Time{}, polls, fmt.Sprintf("%s does not match within -timeout: %s", m.root, diff)
		}
		time.Sleep(time.Until(start.Add(interval)))
	}
}

// check returns "" when the replica holds exactly exp (ignoring ignored
// names), or a description of the differences. It is cheap while the
// replica is far from matching: a walk that only reads directories finds
// missing and extra names, and hashes the files that appeared since the
// last comparison (once each, so the hashing is spread over the wait).
// Only when every name is there does it stat every file and hash those
// that changed.
func (m *matcher) check(exp []entry, want map[string]*entry) string {
	var first string
	bad, seen := 0, 0
	note := func(format string, a ...any) {
		if bad == 0 {
			first = fmt.Sprintf(format, a...)
		}
		bad++
	}
	err := walkTree(m.root, func(rel string, d fs.DirEntry) error {
		e := want[rel]
		switch {
		case e == nil:
			note("%s: not in the source", rel)
		case e.dir != d.IsDir() || !e.dir && !d.Type().IsRegular():
			note("%s: type %s", rel, d.Type())
		default:
			seen++
			if _, ok := m.cache[rel]; !ok && !e.dir {
				m.refresh(e)
			}
		}
		return nil
	})
	if err != nil {
		return err.Error()
	}
	if seen < len(exp) {
		note("%d paths missing", len(exp)-seen)
	}
	if bad > 0 {
		return fmt.Sprintf("%d differences, first: %s", bad, first)
	}
	for i := range exp {
		e := &exp[i]
		if e.dir {
			continue
		}
		c, err := m.refresh(e)
		switch {
		case err != nil:
			note("%s: %v", e.path, err)
		case c.size != e.size:
			note("%s: size %d, want %d", e.path, c.size, e.size)
		case c.sum != e.sum:
			note("%s: content differs (same size)", e.path)
		}
	}
	if bad > 0 {
		return fmt.Sprintf("%d differences, first: %s", bad, first)
	}
	return ""
}

// refresh stats a replica file and hashes it if its identity changed
// since it was last hashed and its size is the expected one.
func (m *matcher) refresh(e *entry) (cacheEntry, error) {
	name := filepath.Join(m.root, e.path)
	fi, err := os.Lstat(name)
	if err != nil {
		return cacheEntry{}, err
	}
	if !fi.Mode().IsRegular() {
		return cacheEntry{}, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	key := identity(fi)
	c, ok := m.cache[e.path]
	if ok && c.ino == key.ino && c.dev == key.dev && c.size == key.size && c.mtime == key.mtime && c.ctime == key.ctime {
		return c, nil
	}
	if key.size != e.size {
		return key, nil // not the final content: not worth hashing
	}
	if key.sum, err = hashFile(name); err != nil {
		return cacheEntry{}, err
	}
	m.cache[e.path] = key
	return key, nil
}

func identity(fi fs.FileInfo) cacheEntry {
	st := fi.Sys().(*syscall.Stat_t)
	return cacheEntry{ino: st.Ino, dev: uint64(st.Dev), size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

func hashFile(name string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(name)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// walkTree calls fn for every path under root, relative and /-separated,
// parents first, skipping ignored names (and everything under them).
func walkTree(root string, fn func(rel string, d fs.DirEntry) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking: the next comparison sees it
			}
			return err
		}
		if p == root {
			return nil
		}
		if ignored(d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		return fn(filepath.ToSlash(rel), d)
	})
}

// snapshot reads a whole tree: every path with its type, size and content
// hash (a symlink's target for a link).
func snapshot(root string) (map[string]string, int, int, int64, error) {
	out := map[string]string{}
	var files, dirs int
	var bytes int64
	err := walkTree(root, func(rel string, d fs.DirEntry) error {
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			dirs++
			out[rel] = "dir"
		case fi.Mode().IsRegular():
			sum, err := hashFile(filepath.Join(root, rel))
			if err != nil {
				return err
			}
			files++
			bytes += fi.Size()
			out[rel] = fmt.Sprintf("file %d %x", fi.Size(), sum)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(root, rel))
			if err != nil {
				return err
			}
			out[rel] = "symlink " + target
		default:
			out[rel] = fi.Mode().Type().String()
		}
		return nil
	})
	return out, files, dirs, bytes, err
}

// runCmp compares two trees by paths, types, sizes and SHA-256 of every
// file (ignoring ferry's .ferry-* names in both), and prints a summary.
func runCmp(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: treegen cmp TREE-A TREE-B")
	}
	a, files, dirs, bytes, err := snapshot(args[0])
	if err != nil {
		return err
	}
	b, _, _, _, err := snapshot(args[1])
	if err != nil {
		return err
	}
	var diffs []string
	for _, p := range sortedKeys(a) {
		if bv, ok := b[p]; !ok {
			diffs = append(diffs, p+": only in "+args[0])
		} else if bv != a[p] {
			diffs = append(diffs, fmt.Sprintf("%s: %s in %s, %s in %s", p, a[p], args[0], bv, args[1]))
		}
	}
	for _, p := range sortedKeys(b) {
		if _, ok := a[p]; !ok {
			diffs = append(diffs, p+": only in "+args[1])
		}
	}
	if len(diffs) > 0 {
		for _, d := range diffs[:min(len(diffs), 10)] {
			fmt.Println("  " + d)
		}
		return fmt.Errorf("%s and %s differ in %d paths", args[0], args[1], len(diffs))
	}
	fmt.Printf("equal: %d files, %d directories, %d bytes (paths, types, sizes, SHA-256)\n", files, dirs, bytes)
	return nil
}
