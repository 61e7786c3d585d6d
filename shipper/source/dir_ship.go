//go:build linux

package source

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/shipper"
)

// What one path becomes: mkdir, symlink, put, chunks or attr, del or
// rmdir, read through descriptors opened beneath the root (openIn) and
// checked against the index, so what the replica has already is not sent.

// dirFileAttempts is how often a file that changes while it is read is read
// again before it is put back to wait for the next quiet moment.
const dirFileAttempts = 5

// process ships the current state of one path, if the replica does not
// have it already.
func (r *dirRun) process(ctx context.Context, sink shipper.Sink, p string) error {
	if r.src.Ledger != nil {
		defer func() {
			r.mu.Lock()
			delete(r.appeared, p)
			delete(r.listed, p)
			r.mu.Unlock()
		}()
	}
	if p != "." && r.skip(p) {
		return r.gone(ctx, sink, p)
	}
	f, err := r.openIn(p, unix.O_PATH)
	var fi os.FileInfo
	if err == nil {
		fi, err = f.Stat()
		defer f.Close()
	}
	if err != nil {
		if p == "." {
			return fmt.Errorf("dir source: the root %s is gone: %w", r.root, err)
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
			return r.gone(ctx, sink, p)
		}
		r.warnOnce(p, "cannot stat; left as it was shipped", err)
		return nil
	}
	switch m := fi.Mode(); {
	case m.IsDir():
		return r.shipDir(ctx, sink, p, fi)
	case p == ".":
		return fmt.Errorf("dir source: the root %s is no longer a directory", r.root)
	case m.IsRegular():
		return r.shipFile(ctx, sink, p)
	case m&os.ModeSymlink != 0:
		return r.shipLink(ctx, sink, p, f, fi)
	}
	r.warnOnce(p, "not a regular file, directory or symlink; not replicated", nil)
	return r.gone(ctx, sink, p)
}

// gone ships the removal of a path the index has, or (ferry sync) of a
// peer's path the index never had: one the applier put in the tree and
// something here removed before the source looked at it (peerGone).
func (r *dirRun) gone(ctx context.Context, sink shipper.Sink, p string) error {
	e := r.idx.get(p)
	if p == "." {
		return nil
	}
	if e == nil {
		if r.base != nil && r.src.Ledger != nil {
			// A baseline ships this site's delete of p again, still its
			// newest version: a replica built from the baseline on meets
			// a peer's older version of p there (a baseline of the peer's
			// stream taken before the delete), which without it it would
			// take for the newest.
			if ok, dir := r.src.Ledger.Tombstone(p); ok {
				return r.shipRemoval(ctx, sink, p, delOp(dir))
			}
		}
		return r.peerGone(ctx, sink, p)
	}
	op := dirtree.OpDel
	if e.Kind == dirKindDir {
		op = dirtree.OpRmdir
	}
	foreign, _ := r.syncForeign(p, dirsync.Absent)
	r.idx.removeTree(p)
	r.unwatchTree(p)
	if foreign {
		return nil
	}
	if err := r.syncVersion(ctx, sink, p, dirsync.Absent, nil); err != nil {
		return err
	}
	return r.emit(ctx, sink, batch.Record{Op: op, Key: []byte(p)})
}

// shipRemoval ships (ferry sync) the removal of p, this site's change:
// its version, then op (del, or rmdir for a directory).
func (r *dirRun) shipRemoval(ctx context.Context, sink shipper.Sink, p, op string) error {
	if err := r.syncVersion(ctx, sink, p, dirsync.Absent, nil); err != nil {
		return err
	}
	return r.emit(ctx, sink, batch.Record{Op: op, Key: []byte(p)})
}

// delOp is the op that removes a path: rmdir for a directory, else del.
func delOp(dir bool) string {
	if dir {
		return dirtree.OpRmdir
	}
	return dirtree.OpDel
}

// peerGone ships the removal of p, which the index does not have, when
// an event showed p coming into the tree since p was last processed, the
// ledger says a peer's change left something there, and p's directory is
// still there: the applier put it there (the ledger entry is written before the tree is touched, and
// the event proves the tree was), and it is gone now, so this site
// removed it. Without the event the ledger alone is no proof (an apply
// that failed after its ledger entry never touched the tree), and nothing
// is shipped.
func (r *dirRun) peerGone(ctx context.Context, sink shipper.Sink, p string) error {
	l := r.src.Ledger
	if l == nil {
		return nil
	}
	r.mu.Lock()
	_, appeared := r.appeared[p]
	listed, wasListed := r.listed[p]
	r.mu.Unlock()
	kind, ok := l.Present(p)
	if wasListed && !ok {
		// Listed by the scan, gone before it was read: a delete (or a
		// rename away) of this site, of a file it never read.
		r.log.Debug("a listed file was removed before it was read: shipping its removal", "path", p)
		ver, ship, err := l.LocalUnread(p, listed)
		if err != nil || !ship {
			return err
		}
		if err := r.emit(ctx, sink, batch.Record{Op: dirtree.OpVersion, Key: []byte(p), Data: ver}); err != nil {
			return err
		}
		return r.emit(ctx, sink, batch.Record{Op: dirtree.OpDel, Key: []byte(p)})
	}
	if !appeared || !ok {
		return nil
	}
	if par := dirParent(p); par != "." {
		// Gone with its directory: a peer's delete of the directory, or
		// this site's, shipped as the directory's removal. Either way not
		// this path's own.
		if fi, err := os.Lstat(r.abs(par)); err != nil || !fi.IsDir() {
			return nil
		}
	}
	r.log.Debug("a peer's path was removed here before it was indexed: shipping its removal", "path", p)
	return r.shipRemoval(ctx, sink, p, delOp(kind == dirsync.KindDir))
}

func (r *dirRun) shipDir(ctx context.Context, sink shipper.Sink, p string, fi os.FileInfo) error {
	st := dirStatOf(fi)
	e := r.idx.get(p)
	if e != nil && e.Kind == dirKindDir && e.Ino != 0 && e.Ino != st.ino {
		// Another directory took p's place (one moved over it, as in a
		// swap through a third name): no event names what the index
		// holds under p, and what the new one lacks must go.
		r.markKidsDirty(p, time.Now())
		ne := *e
		ne.Ino = st.ino
		e = &ne
		r.idx.set(p, e)
	}
	if e != nil && e.Kind == dirKindDir && !e.Pending && e.Mode == st.mode && e.Mtime == st.mtime {
		return nil
	}
	// A file or symlink that became a directory has no children to drop;
	// an unknown (pending) entry keeps its children, which are pending too.
	r.idx.set(p, &dirEntry{Kind: dirKindDir, Mode: st.mode, Mtime: st.mtime, Ino: st.ino, Ctime: st.ctime})
	sst := dirsync.State{Kind: dirsync.KindDir, Mode: st.mode, Mtime: st.mtime}
	if foreign, _ := r.syncForeign(p, sst); !foreign {
		if err := r.syncVersion(ctx, sink, p, sst, nil); err != nil {
			return err
		}
		if err := r.emit(ctx, sink, batch.Record{Op: dirtree.OpMkdir, Key: []byte(p),
			Data: dirtree.AppendHeader(make([]byte, 0, dirtree.HeaderLen), st.mode, st.mtime, 0, 0, nil)}); err != nil {
			return err
		}
	}
	if !r.isWatched(p) {
		r.addTree(p, time.Now())
	}
	return nil
}

// markKidsDirty marks every path the index has below directory p dirty.
func (r *dirRun) markKidsDirty(p string, now time.Time) {
	for c := range r.idx.kids[p] {
		r.markDirty(c, now)
		r.markKidsDirty(c, now)
	}
}

func (r *dirRun) shipLink(ctx context.Context, sink shipper.Sink, p string, f *os.File, fi os.FileInfo) error {
	// The descriptor is the link itself: readlink on it cannot race a
	// replacement of the path.
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(int(f.Fd()), "", buf)
	if err != nil {
		r.warnOnce(p, "cannot read symlink; left as it was shipped", err)
		return nil
	}
	target := string(buf[:n])
	st := dirStatOf(fi)
	e := r.idx.get(p)
	if e != nil && e.Kind == dirKindLink && !e.Pending && e.Target == target && e.Mtime == st.mtime {
		e.Ino, e.Ctime = st.ino, st.ctime
		return nil
	}
	if e != nil {
		r.idx.removeTree(p) // whatever was there, the symlink replaces it
	}
	r.idx.set(p, &dirEntry{Kind: dirKindLink, Mode: st.mode, Mtime: st.mtime, Size: int64(len(target)), Ino: st.ino, Ctime: st.ctime, Target: target})
	sst := dirsync.State{Kind: dirsync.KindLink, Mode: st.mode, Mtime: st.mtime, Size: int64(len(target)), Target: target}
	if foreign, _ := r.syncForeign(p, sst); foreign {
		return nil
	}
	if err := r.syncVersion(ctx, sink, p, sst, nil); err != nil {
		return err
	}
	data := dirtree.AppendHeader(make([]byte, 0, dirtree.HeaderLen+len(target)), st.mode, st.mtime, int64(len(target)), 0, nil)
	return r.emit(ctx, sink, batch.Record{Op: dirtree.OpSymlink, Key: []byte(p), Data: append(data, target...)})
}

// payloadMax is the most content bytes a record for key p can carry.
func (r *dirRun) payloadMax(p string) int {
	return min(r.chunk, dirtree.ChunkRoom(p, r.maxRecord))
}

// shipFile ships a regular file, reading it again while it changes under
// the read; after dirFileAttempts it is put back to wait for a quiet moment.
func (r *dirRun) shipFile(ctx context.Context, sink shipper.Sink, p string) error {
	if r.payloadMax(p) < 1 {
		return fmt.Errorf("dir source: path %q is too long for max_record_size %d", p, r.maxRecord)
	}
	for attempt := 0; attempt < dirFileAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(r.settle)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		done, err := r.tryFile(ctx, sink, p)
		if err != nil || done {
			return err
		}
	}
	r.warnOnce(p, "file keeps changing while it is read; it is shipped once it holds still", nil)
	r.markDirty(p, time.Now())
	return nil
}

func dirSameStat(a, b dirStat) bool { return a == b }

// tryFile reads and ships a file once. done is false when the file changed
// while it was read (nothing published; any chunks sent are discarded by
// the applier when the next record arrives).
func (r *dirRun) tryFile(ctx context.Context, sink shipper.Sink, p string) (done bool, err error) {
	readStart := time.Now()
	f, err := r.openIn(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			return true, r.gone(ctx, sink, p)
		case errors.Is(err, syscall.ELOOP):
			r.markDirty(p, time.Now()) // became a symlink (or its directory did): look again
		default:
			r.warnOnce(p, "cannot read file; left as it was shipped", err)
		}
		return true, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		r.markDirty(p, time.Now())
		return true, nil
	}
	st := dirStatOf(fi)
	e := r.idx.get(p)
	if e != nil && e.Kind == dirKindFile && !e.Pending && e.Mode == st.mode && e.Mtime == st.mtime &&
		e.Size == st.size && e.Ino == st.ino && e.Ctime == st.ctime {
		return true, nil
	}
	sst := dirsync.State{Kind: dirsync.KindFile, Mode: st.mode, Mtime: st.mtime, Size: st.size}
	if foreign, hash := r.syncForeign(p, sst); foreign {
		if e != nil && e.Kind != dirKindFile {
			r.idx.removeTree(p)
		}
		ne := &dirEntry{Kind: dirKindFile, Mode: st.mode, Mtime: st.mtime, Size: st.size, Ino: st.ino, Ctime: st.ctime}
		copy(ne.Hash[:], hash)
		r.idx.set(p, ne)
		return true, nil
	}
	if age := time.Since(time.Unix(0, st.ctime)); age >= 0 && age < r.settle {
		return false, nil
	}
	// The stat comparison misses a write that updated the timestamps
	// before the read began and copies data during it (one long write(2)).
	// Its inotify event comes when it completes: a path marked dirty since
	// the read began is left to the next flush instead.
	still := func() bool {
		fi, err := f.Stat()
		return err == nil && dirSameStat(dirStatOf(fi), st) && !r.dirtySince(p, readStart)
	}
	known := e != nil && e.Kind == dirKindFile && !e.Pending && e.Size == st.size
	entry := &dirEntry{Kind: dirKindFile, Mode: st.mode, Mtime: st.mtime, Size: st.size, Ino: st.ino, Ctime: st.ctime}
	if r.src.Ledger == nil && e != nil && e.Kind == dirKindFile && !e.Pending { // ferry sync ships whole files
		if done, handled, err := r.tryIncremental(ctx, sink, p, f, st, e, entry, still, readStart); handled || err != nil {
			return done, err
		}
	}
	limit := r.payloadMax(p)
	if st.size <= int64(limit) {
		data := make([]byte, dirtree.HeaderLen+int(st.size))
		if n, err := f.ReadAt(data[dirtree.HeaderLen:], 0); n != int(st.size) && !errors.Is(err, io.EOF) {
			r.warnOnce(p, "cannot read file; left as it was shipped", err)
			return true, nil
		} else if n != int(st.size) || !still() {
			return r.dirtySince(p, readStart), nil
		}
		entry.Hash = sha256.Sum256(data[dirtree.HeaderLen:])
		dirtree.AppendHeader(data[:0], st.mode, st.mtime, st.size, 0, &entry.Hash)
		r.clearWarned(p)
		if known && e.Hash == entry.Hash {
			r.idx.set(p, entry)
			if e.Mode == st.mode && e.Mtime == st.mtime {
				return true, nil // only the inode or ctime moved
			}
			if err := r.syncVersion(ctx, sink, p, sst, entry.Hash[:]); err != nil {
				return true, err
			}
			return true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpAttr, Key: []byte(p), Data: data[:dirtree.HeaderLen]})
		}
		if e != nil {
			r.idx.removeTree(p)
		}
		r.idx.set(p, entry)
		if err := r.syncVersion(ctx, sink, p, sst, entry.Hash[:]); err != nil {
			return true, err
		}
		r.keepRecentMap(entry.Hash, data[dirtree.HeaderLen:], st.mtime)
		return true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpPut, Key: []byte(p), Data: data})
	}
	if known && e.Mtime == st.mtime {
		// Same size and mtime: most likely a chmod or a copy. Hash first
		// rather than send the content.
		h := sha256.New()
		if n, err := io.Copy(h, io.NewSectionReader(f, 0, st.size)); n != st.size || err != nil || !still() {
			return r.dirtySince(p, readStart), nil
		}
		if sum := [32]byte(h.Sum(nil)); sum == e.Hash {
			entry.Hash = sum
			r.idx.set(p, entry)
			r.clearWarned(p)
			if e.Mode == st.mode {
				return true, nil
			}
			hdr := dirtree.AppendHeader(nil, st.mode, st.mtime, st.size, 0, &sum)
			if err := r.syncVersion(ctx, sink, p, sst, sum[:]); err != nil {
				return true, err
			}
			return true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpAttr, Key: []byte(p), Data: hdr})
		}
	}
	h := sha256.New()
	for off := int64(0); off < st.size; {
		n := min(int64(limit), st.size-off)
		data := make([]byte, dirtree.HeaderLen+int(n))
		if k, err := f.ReadAt(data[dirtree.HeaderLen:], off); int64(k) != n {
			if !errors.Is(err, io.EOF) {
				r.warnOnce(p, "cannot read file; left as it was shipped", err)
				return true, nil
			}
			return false, nil
		}
		if !still() {
			return r.dirtySince(p, readStart), nil
		}
		h.Write(data[dirtree.HeaderLen:])
		var sum *[32]byte
		if off+n == st.size {
			entry.Hash = [32]byte(h.Sum(nil))
			sum = &entry.Hash
		}
		dirtree.AppendHeader(data[:0], st.mode, st.mtime, st.size, off, sum)
		if off == 0 {
			if err := r.syncVersion(ctx, sink, p, sst, nil); err != nil {
				return false, err
			}
		}
		if err := r.emit(ctx, sink, batch.Record{Op: dirtree.OpChunk, Key: []byte(p), Data: data}); err != nil {
			return false, err
		}
		off += n
	}
	r.clearWarned(p)
	if e != nil {
		r.idx.removeTree(p)
	}
	r.idx.set(p, entry)
	return true, nil
}

// syncForeign reports whether p in state st is what a peer's change (or
// the conflict rule) left in the tree (ferry sync): it is not shipped
// back. hash is the content's, as the ledger knows it.
func (r *dirRun) syncForeign(p string, st dirsync.State) (bool, []byte) {
	if r.src.Ledger == nil {
		return false, nil
	}
	return r.src.Ledger.Foreign(p, st)
}

// syncVersion emits the version record of p's new state st, with the
// content hash if any (ferry sync), before the records that make it.
// Without a ledger it costs nothing: not even the copy of the hash.
func (r *dirRun) syncVersion(ctx context.Context, sink shipper.Sink, p string, st dirsync.State, hash []byte) error {
	if r.src.Ledger == nil {
		return nil
	}
	if hash != nil {
		st = st.WithHash(hash)
	}
	ver, ship, err := r.src.Ledger.Local(p, st)
	if err != nil || !ship {
		return err
	}
	return r.emit(ctx, sink, batch.Record{Op: dirtree.OpVersion, Key: []byte(p), Data: ver})
}
