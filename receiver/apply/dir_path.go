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
	"github.com/ferry-dr/ferry/receiver"
)

// Paths in the replica are resolved from the root one element at a time
// with O_NOFOLLOW, and every change to a directory's entries puts its
// mtime back: only mkdir records set a directory's time.

// dirNotDirError is a path element that is not a directory in the replica.
type dirNotDirError struct {
	path   string
	target string // set when it is a symlink
	link   bool
}

func (e *dirNotDirError) Error() string {
	if e.link {
		return fmt.Sprintf("%q is a symlink in the replica (to %q); refusing to write through it", e.path, e.target)
	}
	return fmt.Sprintf("%q is not a directory in the replica", e.path)
}

var errDirNoParent = errors.New("parent directory missing")

// openParent resolves the directory holding key's last element from the
// root, one element at a time, never following a symlink. With create,
// missing directories are made (0755; a later mkdir record sets their mode
// and time); without, a missing one is errDirNoParent.
func (a *Dir) openParent(key string, create bool) (*os.File, string, error) {
	elems := strings.Split(key, "/")
	fd, err := unix.Dup(int(a.root.Fd()))
	if err != nil {
		return nil, "", err
	}
	unix.CloseOnExec(fd)
	for i, e := range elems[:len(elems)-1] {
		next, err := dirOpenAt(fd, e)
		if errors.Is(err, unix.ENOENT) && create {
			err = dirMkdirKeepMtime(fd, e, 0o755)
			if err == nil {
				next, err = dirOpenAt(fd, e)
			}
		}
		if err != nil {
			p := strings.Join(elems[:i+1], "/")
			var st unix.Stat_t
			switch {
			case errors.Is(err, unix.ENOENT):
				err = errDirNoParent
			case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
				if unix.Fstatat(fd, e, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					buf := make([]byte, 4096)
					n, _ := unix.Readlinkat(fd, e, buf)
					err = &dirNotDirError{path: p, link: true, target: string(buf[:max(n, 0)])}
				} else {
					err = &dirNotDirError{path: p}
				}
			default:
				err = fmt.Errorf("open %s: %w", p, err)
			}
			unix.Close(fd)
			return nil, "", err
		}
		unix.Close(fd)
		fd = next
	}
	dir := strings.Join(elems[:len(elems)-1], "/")
	if dir == "" {
		dir = "."
	}
	return os.NewFile(uintptr(fd), a.Root+"/"+dir), elems[len(elems)-1], nil
}

func dirOpenAt(fd int, name string) (int, error) {
	return unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// dirSuperseded reports whether a record after recs[i] names p or one of its
// ancestors: then what recs[i] would do to p is undone anyway, which is how
// a segment applied again after a crash meets the state it left behind.
func dirSuperseded(recs batch.Records, i int, p string) bool {
	for j := i + 1; j < recs.Len(); j++ {
		k := string(recs.At(j).Key)
		if k == p || strings.HasPrefix(p, k+"/") {
			return true
		}
	}
	return false
}

// parent resolves key's directory for a record, turning a path through a
// symlink or file into a fatal error unless a later record supersedes it
// (skip is then true).
func (a *Dir) parent(recs batch.Records, i int, key string, create bool) (dir *os.File, base string, skip bool, err error) {
	dir, base, err = a.openParent(key, create)
	var nd *dirNotDirError
	switch {
	case err == nil:
		return dir, base, false, nil
	case errors.As(err, &nd):
		if dirSuperseded(recs, i, nd.path) {
			return nil, "", true, nil
		}
		return nil, "", false, fmt.Errorf("%v: %w", err, receiver.ErrFatal)
	case errors.Is(err, errDirNoParent):
		return nil, "", true, nil
	}
	return nil, "", false, err
}

// dirMkdirKeepMtime makes directory name in fd (mode perm) unless it
// exists, leaving fd's mtime as it was.
func dirMkdirKeepMtime(fd int, name string, perm uint32) error {
	return dirKeepMtime(fd, func() error {
		if err := unix.Mkdirat(fd, name, perm); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		return nil
	})
}

// dirKeepMtime runs fn, which changes entries of directory fd, and puts the
// directory's mtime back: only mkdir records set a directory's time.
func dirKeepMtime(fd int, fn func() error) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	err := fn()
	if terr := dirSetMtime(fd, st.Mtim); terr != nil && err == nil {
		err = terr
	}
	return err
}

// dirSetMtime sets the mtime of the file open as fd (any kind of fd,
// O_PATH included), leaving its atime.
func dirSetMtime(fd int, mtime unix.Timespec) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, mtime}
	return unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0)
}

func dirNsec(t int64) unix.Timespec { return unix.NsecToTimespec(t) }

// dirRemoveAll removes name in directory dfd and, if it is a directory,
// everything under it, never following a symlink. Missing is success.
func dirRemoveAll(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, oerr := dirOpenAt(dfd, name)
	if oerr != nil {
		if errors.Is(oerr, unix.ENOENT) {
			return nil
		}
		if errors.Is(oerr, unix.ENOTDIR) || errors.Is(oerr, unix.ELOOP) {
			return err // not a directory after all: the unlink error stands
		}
		return oerr
	}
	d := os.NewFile(uintptr(fd), name)
	names, err := d.Readdirnames(-1)
	if err != nil {
		d.Close()
		return err
	}
	for _, n := range names {
		if err := dirRemoveAll(fd, n); err != nil {
			d.Close()
			return err
		}
	}
	d.Close()
	if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// dirReplace renames oldName in odir to newName in ndir, removing a
// directory tree that stands at newName first (a type change).
func dirReplace(odir int, oldName string, ndir int, newName string) error {
	err := unix.Renameat(odir, oldName, ndir, newName)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTDIR) {
		if err := dirRemoveAll(ndir, newName); err != nil {
			return err
		}
		err = unix.Renameat(odir, oldName, ndir, newName)
	}
	return err
}
