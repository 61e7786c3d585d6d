//go:build linux

package source

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/dirsync"
)

// Scanning: the tree is compared with the index, without reading any
// file, and every path that may differ is marked dirty. A scan runs when
// a watcher starts (at start and after lost events) and for a baseline.

// scan walks the tree, watching every directory, and marks dirty every
// path whose state differs from the index or that the index has and the
// tree does not. Marks from a scan are due at once.
func (r *dirRun) scan() error {
	r.mu.Lock()
	r.status.Scans++
	r.mu.Unlock()
	seen := make(map[string]struct{}, len(r.idx.entries)+1)
	unreadable := map[string]bool{}
	fi, err := os.Lstat(r.root)
	if err != nil {
		return fmt.Errorf("dir source: %w", err)
	}
	seen["."] = struct{}{}
	if r.differs(".", fi) {
		r.markDirty(".", time.Time{})
	}
	if err := r.walk(".", seen, unreadable); err != nil {
		return err
	}
	for p := range r.idx.entries {
		if _, ok := seen[p]; ok {
			continue
		}
		under := false
		for a := dirParent(p); a != "" && !under; a = dirParent(a) {
			under = unreadable[a]
		}
		if !under {
			r.markDirty(p, time.Time{})
		}
	}
	return nil
}

func (r *dirRun) walk(rel string, seen map[string]struct{}, unreadable map[string]bool) error {
	if err := r.watch(rel); err != nil {
		if errors.Is(err, errDirWatchLimit) {
			return err
		}
		if !errors.Is(err, os.ErrNotExist) {
			r.warnOnce(rel, "cannot watch directory; changes in it are not seen until a rescan", err)
		}
	}
	ents, err := os.ReadDir(r.abs(rel))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			unreadable[rel] = true
			r.warnOnce(rel, "cannot list directory; what is under it is left as it was shipped", err)
		}
		return nil
	}
	for _, e := range ents {
		c := dirJoin(rel, e.Name())
		if r.skip(c) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // vanished; its event follows
		}
		seen[c] = struct{}{}
		if r.differs(c, fi) {
			r.markDirty(c, time.Time{})
			if r.src.Ledger != nil && fi.Mode().IsRegular() && r.idx.get(c) == nil {
				st := dirStatOf(fi)
				r.mu.Lock()
				if r.listed == nil {
					r.listed = map[string]dirsync.State{}
				}
				r.listed[c] = dirsync.State{Kind: dirsync.KindFile, Mode: st.mode, Mtime: st.mtime, Size: st.size}
				r.mu.Unlock()
			}
		}
		if fi.IsDir() {
			if err := r.walk(c, seen, unreadable); err != nil {
				return err
			}
		}
	}
	return nil
}

// dirStat is what the source compares of a path.
type dirStat struct {
	mode         uint32
	mtime, ctime int64
	size         int64
	ino          uint64
}

func dirStatOf(fi os.FileInfo) dirStat {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return dirStat{mode: uint32(fi.Mode().Perm()), mtime: fi.ModTime().UnixNano(), size: fi.Size()}
	}
	return dirStat{
		mode:  uint32(st.Mode & 0o7777),
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
		size:  st.Size,
		ino:   st.Ino,
	}
}

// differs is the scan's quick check: could rel's state differ from what
// the index says the replica has? No file is read.
func (r *dirRun) differs(rel string, fi os.FileInfo) bool {
	e := r.idx.get(rel)
	if e == nil || e.Pending {
		return true
	}
	st := dirStatOf(fi)
	switch m := fi.Mode(); {
	case m.IsDir():
		return e.Kind != dirKindDir || e.Mode != st.mode || e.Mtime != st.mtime
	case m.IsRegular():
		return e.Kind != dirKindFile || e.Mode != st.mode || e.Mtime != st.mtime || e.Size != st.size || e.Ino != st.ino || e.Ctime != st.ctime
	case m&os.ModeSymlink != 0:
		return e.Kind != dirKindLink || e.Mtime != st.mtime || e.Ino != st.ino || e.Ctime != st.ctime
	}
	return true // a special file: gone as far as the replica is concerned
}
