// Package fsutil holds the durable-write primitives shared by the spool,
// the directory store and the receiver's checkpoint: write a temp file,
// fsync it, rename it into place, fsync the directory.
package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it survive a crash.
func SyncDir(dir string) error { return SyncPath(dir) }

// SyncPath fsyncs the file or directory at path, opening it read-only: a
// directory, or a file another writer (or an earlier attempt) left
// unsynced.
func SyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open for fsync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// SyncWithDir runs syncFile, the fsync of a file just created (or linked)
// in dir, and the fsync of dir at the same time, and returns the error of
// each. Both must succeed before the entry counts as durable; neither
// order is needed by the callers (a crash before both leaves a torn file
// that recovery removes), and overlapped the two cost one journal commit.
// On this project's ext4 test VM, a 1 KB file's fsync followed by its
// directory's took 564 µs (p50) against 424-429 µs run together: the
// directory's fsync, after the file's commit, still cost a device cache
// flush of its own.
func SyncWithDir(syncFile func() error, dir string) (fileErr, dirErr error) {
	dirc := make(chan error, 1)
	go func() { dirc <- SyncDir(dir) }()
	fileErr = syncFile()
	return fileErr, <-dirc
}

// WriteFileAtomic replaces path with data: temp file in the same directory,
// fsync, rename, fsync the directory. A reader sees the old or the new
// content, never a mix; after a crash the file holds one of the two.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	ok = true
	return SyncDir(dir)
}

// Lock takes an exclusive, non-blocking flock on dir/LOCK and records the
// pid in it. The lock is released when the returned file is closed or the
// process dies (including kill -9), so a crash never leaves a stale lock.
func Lock(dir, what string) (*os.File, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, fmt.Errorf("%s %s is in use by another ferry process (pid %s); stop it first or use another directory", what, dir, trimPid(holder))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%d\n", os.Getpid())
	}
	return f, nil
}

// Locked reports whether a process holds dir/LOCK (Lock's flock); a
// missing LOCK is not held. It leaves the file as it is: a probe takes
// the lock and drops it at once.
func Locked(dir string) (bool, error) {
	f, err := os.Open(filepath.Join(dir, "LOCK"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close() // releases the probe's lock
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case err == nil:
		return false, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	default:
		return false, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
}

func trimPid(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if s == "" {
		return "unknown"
	}
	return s
}

// CheckWritableDir makes sure dir exists (creating it) and is a writable
// directory, with an error naming it otherwise.
func CheckWritableDir(dir, what string) error {
	if dir == "" {
		return fmt.Errorf("%s directory not set", what)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s directory %s is not a directory", what, dir)
	}
	f, err := os.CreateTemp(dir, ".probe.*.tmp")
	if err != nil {
		return fmt.Errorf("%s directory %s is not writable: %w", what, dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// OpenRegular opens path for reading if it is a regular file (following
// symlinks) and returns it with its FileInfo. Anything else (a named
// pipe, a device, a socket, a directory) is an error naming what it is.
// The open does not block: a plain open of a FIFO waits for a writer,
// forever if none comes, so it is opened with O_NONBLOCK (which reads of
// a regular file ignore) and judged by fstat, which also sees a file
// swapped for a FIFO after a first check.
func OpenRegular(path string) (*os.File, os.FileInfo, error) {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is %s, not a regular file", path, FileKind(fi.Mode()))
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is %s, not a regular file", path, FileKind(fi.Mode()))
	}
	return f, fi, nil
}

// FileKind names the type of a file, with its article, for messages:
// "a named pipe (FIFO)", "a symbolic link", "a regular file", ...
func FileKind(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "a unix socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	}
	return "not a regular file (mode " + m.String() + ")"
}
