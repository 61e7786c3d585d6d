//go:build linux

package source

import (
	"context"
	"crypto/sha256"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/shipper"
)

// Renames: inotify reports a move within the tree as IN_MOVED_FROM of the
// old name and IN_MOVED_TO of the new one with the same cookie; fsnotify
// pairs them and names the old path in the new one's Create event. Such a
// pair ships as one rename record (for a directory: one record, not its
// subtree) when the replica certainly holds at the old path what is now
// at the new one: the index has the old path, shipped and not pending, and
// the new path is the same inode with (for a file) the same mode, mtime,
// size and content. Anything else (a move in from outside or out of the
// tree, a lost cookie, an overflow, a path never shipped, content changed
// since) is shipped as before: del of the old path, put (or mkdir and the
// tree below it) of the new one. Renames are off under ferry sync (changes
// are versioned per key there) and during a baseline (which never holds
// renames).

// dirRenamePair is a move seen by inotify, waiting to be shipped.
type dirRenamePair struct {
	old, new string
	n        uint64 // event order
}

// dirRenamedFrom is the old path fsnotify paired with a Create event, or
// "". fsnotify keeps it unexported and shows it only in String ("CREATE
// "new" ← "old"", each name quoted with %q, so the separator cannot occur
// inside one); TestDirRenamedFromParsesFsnotify pins the form.
func dirRenamedFrom(ev fsnotify.Event) string {
	if !ev.Has(fsnotify.Create) {
		return ""
	}
	s := ev.String()
	i := strings.Index(s, "\" ← \"")
	if i < 0 {
		return ""
	}
	old, err := strconv.Unquote(s[i+len("\" ← "):])
	if err != nil {
		return ""
	}
	return old
}

// noteRename records, or forgets, a pending rename to rel on an event for
// rel: a Create paired with an old path in the tree notes one; any other
// event for rel (a write, a chmod, another move) forgets it, so that what
// changed after the move ships as a put.
func (r *dirRun) noteRename(ev fsnotify.Event, rel string) {
	if r.src.Ledger != nil {
		return
	}
	old := ""
	if from := dirRenamedFrom(ev); from != "" {
		if o, ok := r.rel(from); ok && o != "." && o != rel && !r.skip(o) {
			old = o
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if pr, ok := r.renames[rel]; ok && ev.Has(fsnotify.Rename) && !ev.Has(fsnotify.Create) {
		// Moved on before it shipped: a move of it that follows is one
		// from the path the replica has (a flag change, then another).
		if r.renamedAway == nil || len(r.renamedAway) > 4096 {
			r.renamedAway = map[string]string{}
		}
		r.renamedAway[rel] = pr.old
	}
	delete(r.renames, rel)
	if old == "" {
		return
	}
	if o, ok := r.renamedAway[old]; ok {
		delete(r.renamedAway, old)
		if o == rel {
			return // moved back: nothing to ship for rel but what the flush finds
		}
		old = o
	}
	if r.renames == nil {
		r.renames = map[string]dirRenamePair{}
	}
	r.renameSeq++
	r.renames[rel] = dirRenamePair{old: old, new: rel, n: r.renameSeq}
}

// takeRenames returns the pending renames whose old or new path is due, in
// the order they happened, and due with their paths added (a new path
// still waiting for its debounce is taken now).
func (r *dirRun) takeRenames(due []string) ([]dirRenamePair, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.renames) == 0 {
		return nil, due
	}
	set := make(map[string]bool, len(due))
	for _, p := range due {
		set[p] = true
	}
	var pairs []dirRenamePair
	for p, pr := range r.renames {
		if !set[p] && !set[pr.old] {
			continue
		}
		delete(r.renames, p)
		pairs = append(pairs, pr)
		for _, q := range []string{pr.old, pr.new} {
			if !set[q] {
				set[q] = true
				due = append(due, q)
				delete(r.dirty, q)
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].n < pairs[j].n })
	return pairs, due
}

// shipRenames starts a flush part: it logs the part's paths and the
// renames' as pending and ships a rename record for every pair the replica
// can take one for. The others are left to the part's paths (del + put).
func (r *dirRun) shipRenames(ctx context.Context, sink shipper.Sink, paths []string, pairs []dirRenamePair) error {
	if len(pairs) == 0 {
		return nil
	}
	logged := make([]string, 0, len(paths)+2*len(pairs))
	logged = append(logged, paths...)
	for _, pr := range pairs {
		logged = append(logged, pr.old, pr.new)
	}
	r.flushPaths = logged
	for _, pr := range pairs {
		rec, ok := r.renameRecord(pr)
		if !ok {
			continue
		}
		if err := r.emit(ctx, sink, rec); err != nil {
			return err
		}
		r.renamed(pr)
	}
	return nil
}

// renameRecord is the rename record for pr, if the replica holds at the
// old path what the tree now has at the new one (see above).
func (r *dirRun) renameRecord(pr dirRenamePair) (batch.Record, bool) {
	var none batch.Record
	if r.base != nil || r.src.Ledger != nil {
		return none, false
	}
	rn := dirtree.Rename{Old: pr.old}
	if dirtree.CheckKey(pr.new, dirtree.OpRename) != nil || dirtree.CheckRename(pr.new, rn) != nil {
		return none, false
	}
	e := r.idx.get(pr.old)
	if e == nil || e.Pending || (e.Kind != dirKindFile && e.Kind != dirKindDir) {
		return none, false
	}
	// The replica must have the new path's directory, and nothing at the
	// new path that a rename cannot replace.
	if par := dirParent(pr.new); par != "." {
		if pe := r.idx.get(par); pe == nil || pe.Kind != dirKindDir || pe.Pending {
			return none, false
		}
	}
	if ne := r.idx.get(pr.new); ne != nil {
		switch {
		case ne.Pending:
			return none, false
		case e.Kind == dirKindFile && ne.Kind == dirKindDir:
			return none, false
		case e.Kind == dirKindDir && (ne.Kind != dirKindDir || len(r.idx.kids[pr.new]) > 0):
			return none, false
		}
	}
	f, err := r.openIn(pr.new, unix.O_PATH)
	if err != nil {
		return none, false
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return none, false
	}
	st := dirStatOf(fi)
	if st.ino != e.Ino {
		return none, false
	}
	rn.Mode, rn.Mtime = e.Mode, e.Mtime
	switch {
	case e.Kind == dirKindDir && fi.IsDir():
		rn.Kind = dirtree.RenameDir
	case e.Kind == dirKindFile && fi.Mode().IsRegular():
		if st.mode != e.Mode || st.mtime != e.Mtime || st.size != e.Size || !r.sameContent(pr.new, e.Hash) {
			return none, false
		}
		rn.Kind, rn.Size, rn.SHA256 = dirtree.RenameFile, e.Size, e.Hash
	default:
		return none, false
	}
	return batch.Record{Op: dirtree.OpRename, Key: []byte(pr.new), Data: dirtree.AppendRename(nil, rn)}, true
}

// sameContent reports whether file p holds content with hash sum, read
// consistently (the same size, mtime and ctime before and after).
func (r *dirRun) sameContent(p string, sum [32]byte) bool {
	f, err := r.openIn(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return false
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return false
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	after, err := f.Stat()
	if err != nil || dirStatOf(before) != dirStatOf(after) {
		return false
	}
	return [32]byte(h.Sum(nil)) == sum
}

// renamed moves the index entries of pr.old and everything under it to
// pr.new, as the replica has them once it applied the rename, and marks
// every moved path dirty so that what changed below a moved directory
// since (or went away) ships after the rename.
func (r *dirRun) renamed(pr dirRenamePair) {
	moved := map[string]*dirEntry{}
	var walk func(p string)
	walk = func(p string) {
		if e := r.idx.get(p); e != nil {
			moved[pr.new+p[len(pr.old):]] = e
		}
		for c := range r.idx.kids[p] {
			walk(c)
		}
	}
	walk(pr.old)
	r.idx.removeTree(pr.old)
	r.idx.removeTree(pr.new)
	keys := make([]string, 0, len(moved))
	for k := range moved {
		keys = append(keys, k)
	}
	sort.Strings(keys) // parents first, so kids are linked
	now := time.Now()
	for _, k := range keys {
		r.idx.set(k, moved[k])
		if k != pr.new {
			r.markDirty(k, now)
		}
	}
	// The rename changed the new path's ctime: take it, so the next look
	// at the path does not read the file again.
	if f, err := r.openIn(pr.new, unix.O_PATH); err == nil {
		if fi, err := f.Stat(); err == nil {
			if st := dirStatOf(fi); st.ino == moved[pr.new].Ino {
				moved[pr.new].Ctime = st.ctime
			}
		}
		f.Close()
	}
	r.unwatchTree(pr.old)
}
