//go:build linux

package apply

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver"
)

// applyRecord applies recs[i] on its own: it checks the key and the data
// (dirtree), then hands the record to its op below.
func (a *Dir) applyRecord(recs batch.Records, i int) error {
	return a.applyRecordAs(recs, i, string(recs.At(i).Key))
}

// applyRecordAs applies recs[i] to key instead of the record's own key
// (ferry sync keeps a conflict's loser under another name).
func (a *Dir) applyRecordAs(recs batch.Records, i int, key string) error {
	rec := recs.At(i)
	if rec.Op == dirtree.OpBaselineBegin || rec.Op == dirtree.OpBaselineEnd {
		if err := dirtree.CheckBaseline(rec.Op, rec.Key, rec.Data); err != nil {
			return fmt.Errorf("%v: %w", err, receiver.ErrFatal)
		}
		return nil
	}
	if err := dirtree.CheckKey(key, rec.Op); err != nil {
		return fmt.Errorf("refused: %v: %w", err, receiver.ErrFatal)
	}
	if rec.Op == dirtree.OpVersion && a.Ledger == nil {
		return fmt.Errorf("a version record: this is a ferry sync stream (docs/SYNC.md), which only ferry sync applies: %w", receiver.ErrFatal)
	}
	if a.partial != nil && !a.continues(&rec, key) {
		if err := a.dropPartial(); err != nil {
			return err
		}
	}
	bad := func(err error) error { return fmt.Errorf("%v: %w", err, receiver.ErrFatal) }
	switch rec.Op {
	case dirtree.OpDel, dirtree.OpRmdir:
		if len(rec.Data) != 0 {
			return bad(fmt.Errorf("malformed record: %s carries %d bytes of data, want none", rec.Op, len(rec.Data)))
		}
		return a.remove(recs, i, key)
	case dirtree.OpAppend, dirtree.OpDelta:
		return a.applyDelta(recs, i, key, rec.Op, rec.Data)
	case dirtree.OpRename:
		return a.rename(recs, i, key, rec.Data)
	case dirtree.OpPut, dirtree.OpChunk, dirtree.OpAttr, dirtree.OpMkdir, dirtree.OpSymlink:
	default:
		return bad(fmt.Errorf("unknown op %q (this ferry applies %s; upgrade ferry?)", rec.Op, strings.Join(dirtree.Ops, ", ")))
	}
	h, payload, err := dirtree.ParseHeader(rec.Data)
	if err == nil {
		err = dirtree.CheckPayload(rec.Op, h, payload)
	}
	if err != nil {
		return bad(err)
	}
	switch rec.Op {
	case dirtree.OpPut:
		return a.put(recs, i, key, h, payload)
	case dirtree.OpChunk:
		return a.chunk(recs, i, key, h, payload)
	case dirtree.OpAttr:
		return a.attr(recs, i, key, h)
	case dirtree.OpMkdir:
		return a.mkdir(recs, i, key, h)
	default: // symlink
		return a.symlink(recs, i, key, h, string(payload))
	}
}

func (a *Dir) remove(recs batch.Records, i int, key string) error {
	dir, base, skip, err := a.parent(recs, i, key, false)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	if err := dirKeepMtime(fd, func() error { return dirRemoveAll(fd, base) }); err != nil {
		return err
	}
	return a.syncLater(dir)
}

func (a *Dir) put(recs batch.Records, i int, key string, h dirtree.Header, payload []byte) error {
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	tmp := dirtree.TempName(recs.Seq(i))
	err = dirKeepMtime(fd, func() error {
		f, err := a.createTemp(dir, tmp)
		if err != nil {
			return err
		}
		if err := a.writeOut(f, payload, h); err != nil {
			f.Close()
			unix.Unlinkat(fd, tmp, 0)
			return err
		}
		f.Close()
		return dirReplace(fd, tmp, fd, base)
	})
	if err != nil {
		return err
	}
	return a.syncLater(dir)
}

// writeOut writes payload (if any) to f, sets its mode and mtime and
// fsyncs it. A failed fsync is fatal.
func (a *Dir) writeOut(f *os.File, payload []byte, h dirtree.Header) error {
	if err := dirWriteMeta(f, payload, h); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %v: %w", f.Name(), err, receiver.ErrFatal)
	}
	return nil
}

// dirWriteMeta writes payload (if any) to f and sets its mode and mtime.
func dirWriteMeta(f *os.File, payload []byte, h dirtree.Header) error {
	if len(payload) > 0 {
		if _, err := f.Write(payload); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(int(f.Fd()), h.Mode); err != nil {
		return err
	}
	return dirSetMtime(int(f.Fd()), dirNsec(h.Mtime))
}

// createTemp creates the temp file tmp in dir, replacing one a crash left.
func (a *Dir) createTemp(dir *os.File, tmp string) (*os.File, error) {
	fd := int(dir.Fd())
	if err := unix.Unlinkat(fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, err
	}
	tfd, err := unix.Openat(fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(tfd), tmp), nil
}

func (a *Dir) mkdir(recs batch.Records, i int, key string, h dirtree.Header) error {
	if key == "." {
		fd := int(a.root.Fd())
		if err := unix.Fchmod(fd, h.Mode); err != nil {
			return err
		}
		if err := dirSetMtime(fd, dirNsec(h.Mtime)); err != nil {
			return err
		}
		return a.syncLater(a.root)
	}
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	var sub int
	err = dirKeepMtime(fd, func() error {
		var st unix.Stat_t
		err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		case err == nil || errors.Is(err, unix.ENOENT):
			if err == nil { // a file or symlink becomes a directory
				if err := unix.Unlinkat(fd, base, 0); err != nil {
					return err
				}
			}
			if err := unix.Mkdirat(fd, base, 0o700); err != nil {
				return err
			}
		default:
			return err
		}
		sub, err = dirOpenAt(fd, base)
		return err
	})
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(sub), a.Root+"/"+key)
	defer d.Close()
	if err := unix.Fchmod(sub, h.Mode); err != nil {
		return err
	}
	if err := dirSetMtime(sub, dirNsec(h.Mtime)); err != nil {
		return err
	}
	if err := a.syncLater(d); err != nil {
		return err
	}
	return a.syncLater(dir)
}

func (a *Dir) symlink(recs batch.Records, i int, key string, h dirtree.Header, target string) error {
	dir, base, skip, err := a.parent(recs, i, key, true)
	if err != nil || skip {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	tmp := dirtree.TempName(recs.Seq(i))
	err = dirKeepMtime(fd, func() error {
		if err := unix.Unlinkat(fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		if err := unix.Symlinkat(target, fd, tmp); err != nil {
			return err
		}
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, dirNsec(h.Mtime)}
		if err := unix.UtimesNanoAt(fd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			unix.Unlinkat(fd, tmp, 0)
			return err
		}
		return dirReplace(fd, tmp, fd, base)
	})
	if err != nil {
		return err
	}
	return a.syncLater(dir)
}

// attr sets the mode and mtime of a file whose content the replica has.
func (a *Dir) attr(recs batch.Records, i int, key string, h dirtree.Header) error {
	dir, base, skip, err := a.parent(recs, i, key, false)
	if err != nil {
		return err
	}
	if skip {
		if dirSuperseded(recs, i, key) {
			return nil
		}
		return fmt.Errorf("the replica has no %q to set the mode and time of: %w", key, receiver.ErrFatal)
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	var st unix.Stat_t
	if err == nil {
		defer unix.Close(fd)
		err = unix.Fstat(fd, &st)
	}
	switch {
	case err != nil && !errors.Is(err, unix.ENOENT):
		return err
	case dirSuperseded(recs, i, key):
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != h.Size {
			return nil
		}
	case err != nil:
		return fmt.Errorf("the replica has no %q to set the mode and time of: %w", key, receiver.ErrFatal)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%q is not a regular file in the replica: %w", key, receiver.ErrFatal)
	case st.Size != h.Size:
		return fmt.Errorf("replica file %q is %d bytes, the record says %d: %w", key, st.Size, h.Size, receiver.ErrFatal)
	}
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Fchmodat(unix.AT_FDCWD, proc, h.Mode, 0); err != nil {
		return err
	}
	if err := dirSetMtime(fd, dirNsec(h.Mtime)); err != nil {
		return err
	}
	// The change is to the file's inode: fsync it (an O_PATH descriptor
	// cannot be fsynced; reopen it for reading, or sync the filesystem).
	if rfd, err := unix.Open(proc, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		err = unix.Fsync(rfd)
		unix.Close(rfd)
		if err != nil {
			return fmt.Errorf("fsync %s: %v: %w", key, err, receiver.ErrFatal)
		}
		return nil
	}
	if err := unix.Syncfs(int(a.root.Fd())); err != nil {
		return fmt.Errorf("syncfs: %v: %w", err, receiver.ErrFatal)
	}
	return nil
}
