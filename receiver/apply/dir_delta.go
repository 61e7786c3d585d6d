//go:build linux

package apply

import (
	"bufio"
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// Append and delta records (docs/DIRTREE.md, "Appends and block deltas")
// change a file the replica holds. Each is checked against its base (the
// replica's file must be BaseSize bytes with BaseSHA256) and its result
// against the new whole-file SHA-256 before anything is published.
//
// An append is written in place: a reader of the replica can see the file
// grow, as a reader of the source did. A crash midway leaves the head
// intact and part of the tail; the segment is applied again from the
// checkpoint, finds the head (the first BaseSize bytes) still matching and
// writes the whole tail again. A file already past the append (re-applied
// after the crash) hashes to the new SHA-256 over the same check, so the
// redo is a no-op rewrite of the same bytes.
//
// A delta is copy-on-write: the replica's file is copied into a temp file
// beside it with the blocks patched, hashed on the way, fsynced and
// renamed over the file, so readers see the old or the new file, as with a
// put. Re-applied after a crash, it finds the new content and does nothing.

// dirAppendCacheMax bounds the files whose last append this applier remembers.
const dirAppendCacheMax = 4096

// dirAppended is what this applier left in a file by its last append: the
// identity of the file as it was after the fsync, and the SHA-256 state
// of its content. The next append to the same file, finding it unchanged
// (same inode, size, mtime and ctime: any write, chmod or replacement
// moves the ctime), skips hashing the head again.
type dirAppended struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
	ctime    unix.Timespec
	state    []byte
}

func (c *dirAppended) matches(st *unix.Stat_t) bool {
	return c.dev == uint64(st.Dev) && c.ino == st.Ino && c.size == st.Size && c.mtime == st.Mtim && c.ctime == st.Ctim
}

// applyDelta applies an append or delta record (op) to key.
func (a *Dir) applyDelta(recs batch.Records, i int, key, op string, data []byte) error {
	d, err := dirtree.ParseDelta(op, data)
	if err != nil {
		return fmt.Errorf("%v: %w", err, receiver.ErrFatal)
	}
	dir, base, skip, err := a.parent(recs, i, key, false)
	if err != nil {
		return err
	}
	if skip {
		return dirSkipIfSuperseded(recs, i, key, dirFatal("the replica has no %q to %s to", key, op))
	}
	defer dir.Close()
	mode := unix.O_RDWR
	if op == dirtree.OpDelta {
		mode = unix.O_RDONLY
	}
	f, st, err := dirOpenFile(dir, base, key, mode)
	if err != nil {
		return dirSkipIfSuperseded(recs, i, key, err)
	}
	defer f.Close()
	if op == dirtree.OpAppend {
		return a.appendTo(recs, i, key, d, f, st)
	}
	return a.patchCopy(recs, i, key, d, dir, base, f, st)
}

// dirSkipIfSuperseded returns nil when a later record of the segment names
// key (a segment applied again after a crash: the replica holds its end
// state already), else err.
func dirSkipIfSuperseded(recs batch.Records, i int, key string, err error) error {
	if errors.Is(err, receiver.ErrFatal) && dirSuperseded(recs, i, key) {
		return nil
	}
	return err
}

// dirOpenFile opens the regular file base in dir, never through a
// symlink. A file whose mode denies its owner the access (a receiver not
// running as root) gets the owner's read and write bits for the open and
// its own mode back once open: the descriptor keeps the access, and a
// record refused after the open leaves the file as it found it (one
// applied sets the record's mode anyway).
func dirOpenFile(dir *os.File, base, key string, mode int) (*os.File, *unix.Stat_t, error) {
	dfd := int(dir.Fd())
	open := func() (int, error) {
		return unix.Openat(dfd, base, mode|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	fd, err := open()
	if errors.Is(err, unix.EACCES) {
		if pfd, perr := unix.Openat(dfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); perr == nil {
			var st unix.Stat_t
			if unix.Fstat(pfd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
				proc := "/proc/self/fd/" + strconv.Itoa(pfd)
				if unix.Fchmodat(unix.AT_FDCWD, proc, uint32(st.Mode&0o7777)|0o600, 0) == nil {
					fd, err = open()
					unix.Fchmodat(unix.AT_FDCWD, proc, uint32(st.Mode&0o7777), 0)
				}
			}
			unix.Close(pfd)
		}
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, nil, dirFatal("%q is a symlink in the replica; refusing to write through it", key)
	case errors.Is(err, unix.ENOENT):
		return nil, nil, dirFatal("the replica has no %q to change", key)
	case errors.Is(err, unix.EISDIR):
		return nil, nil, dirFatal("%q is not a regular file in the replica", key)
	case err != nil:
		return nil, nil, fmt.Errorf("open %q: %w", key, err)
	}
	f := os.NewFile(uintptr(fd), key)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, nil, dirFatal("%q is not a regular file in the replica", key)
	}
	return f, &st, nil
}

// dirNotBase is the error of a replica file that is not the base of a record.
func dirNotBase(key, op string, size int64, d *dirtree.Delta) error {
	return dirFatal("replica file %q (%d bytes) is not the content this %s was made against (%d bytes, sha256 %x); it changed outside ferry: rebuild the replica",
		key, size, op, d.BaseSize, d.BaseSHA256[:8])
}

// appendTo writes an append's tail in place after checking the head.
func (a *Dir) appendTo(recs batch.Records, i int, key string, d *dirtree.Delta, f *os.File, st *unix.Stat_t) error {
	if st.Size < d.BaseSize || st.Size > d.Size {
		return dirSkipIfSuperseded(recs, i, key, dirNotBase(key, dirtree.OpAppend, st.Size, d))
	}
	h := sha256.New()
	if c := a.appended[key]; c != nil && c.matches(st) && st.Size == d.BaseSize {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(c.state); err != nil {
			return err
		}
	} else if n, err := io.Copy(h, io.NewSectionReader(f, 0, d.BaseSize)); err != nil {
		return fmt.Errorf("read %q: %w", key, err)
	} else if n != d.BaseSize {
		return dirSkipIfSuperseded(recs, i, key, dirNotBase(key, dirtree.OpAppend, n, d))
	}
	if [32]byte(h.Sum(nil)) != d.BaseSHA256 {
		return dirSkipIfSuperseded(recs, i, key, dirNotBase(key, dirtree.OpAppend, st.Size, d))
	}
	h.Write(d.Tail)
	if sum := [32]byte(h.Sum(nil)); sum != d.SHA256 {
		return dirFatal("the append to %q makes content with sha256 %x, the record says %x", key, sum[:8], d.SHA256[:8])
	}
	delete(a.appended, key)
	if _, err := f.WriteAt(d.Tail, d.BaseSize); err != nil {
		return fmt.Errorf("append to %q: %w", key, err)
	}
	// The file is fsynced before Apply returns, with the segment's other
	// appends and its directories, several at a time (flushSyncs): one
	// fsync after another cost a journal commit per append.
	if err := dirWriteMeta(f, nil, dirtree.Header{Mode: d.Mode, Mtime: d.Mtime}); err != nil {
		return err
	}
	if err := a.syncLater(f); err != nil {
		return err
	}
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil || after.Size != d.Size {
		return nil // nothing to remember; the next append hashes the head
	}
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil
	}
	if a.appended == nil || len(a.appended) >= dirAppendCacheMax {
		a.appended = map[string]*dirAppended{}
	}
	a.appended[key] = &dirAppended{dev: uint64(after.Dev), ino: after.Ino, size: after.Size, mtime: after.Mtim, ctime: after.Ctim, state: state}
	return nil
}

// patchCopy applies a delta: the replica's file src, hashed as it is
// read, copied to a temp file with the delta's blocks in place of its own,
// and renamed over it once both hashes match.
func (a *Dir) patchCopy(recs batch.Records, i int, key string, d *dirtree.Delta, dir *os.File, base string, src *os.File, st *unix.Stat_t) error {
	fd := int(dir.Fd())
	tmp := dirtree.TempName(recs.Seq(i))
	already := false
	err := dirKeepMtime(fd, func() error {
		out, err := a.createTemp(dir, tmp)
		if err != nil {
			return err
		}
		defer func() {
			if out != nil {
				out.Close()
				unix.Unlinkat(fd, tmp, 0)
			}
		}()
		baseH, newH := sha256.New(), sha256.New()
		if err := dirPatch(src, st.Size, d, bufio.NewWriterSize(out, 256<<10), baseH, newH); err != nil {
			return fmt.Errorf("delta of %q: %w", key, err)
		}
		if got := [32]byte(baseH.Sum(nil)); st.Size != d.BaseSize || got != d.BaseSHA256 {
			if st.Size == d.Size && got == d.SHA256 {
				already = true // applied before a crash, not checkpointed
				return nil
			}
			return dirSkipIfSuperseded(recs, i, key, dirNotBase(key, dirtree.OpDelta, st.Size, d))
		}
		if sum := [32]byte(newH.Sum(nil)); sum != d.SHA256 {
			return dirFatal("the delta to %q makes content with sha256 %x, the record says %x", key, sum[:8], d.SHA256[:8])
		}
		if err := a.writeOut(out, nil, dirtree.Header{Mode: d.Mode, Mtime: d.Mtime}); err != nil {
			return err
		}
		out.Close()
		out = nil
		return dirReplace(fd, tmp, fd, base)
	})
	if err != nil || already {
		return err
	}
	return a.syncLater(dir)
}

// dirPatch writes to w the d.Size bytes of the patched file: block by
// block, the delta's block where it carries one, else the base's. Every
// byte of the base (size bytes of src) goes through baseH, every byte
// written through newH.
func dirPatch(src *os.File, size int64, d *dirtree.Delta, w *bufio.Writer, baseH, newH hash.Hash) error {
	bs := int64(d.BlockSize)
	buf := make([]byte, bs)
	nOld, nNew := (size+bs-1)/bs, (d.Size+bs-1)/bs
	next := 0
	for k := int64(0); k < max(nOld, nNew); k++ {
		var rb []byte
		if k < nOld {
			n, err := src.ReadAt(buf[:min(bs, size-k*bs)], k*bs)
			if err != nil && !(errors.Is(err, io.EOF) && int64(n) == min(bs, size-k*bs)) {
				return err
			}
			rb = buf[:n]
			baseH.Write(rb)
		}
		if k >= nNew {
			continue
		}
		ob := rb[:min(int64(len(rb)), d.Size-k*bs)]
		if next < len(d.Blocks) && int64(d.Blocks[next]) == k {
			_, ob = d.Block(next)
			next++
		}
		newH.Write(ob)
		if _, err := w.Write(ob); err != nil {
			return err
		}
	}
	return w.Flush()
}
