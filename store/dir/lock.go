package dir

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Lock files serialise the few steps that must be atomic across goroutines
// and processes sharing a root: a Swap's read-compare-replace, and a segment
// Put's overlap check and publish. Their names have the reserved temp-file
// shape (".*.tmp"), so List skips them and no object can take their names,
// and contain a "-", which writeTemp's random part never does, so no temp
// file can take them either.
//
// Lock files are created on first use and never unlinked. A process may
// have one open and be waiting for its lock; if another process unlinked it
// and a third then created a new file under the same name, the waiter and
// the third would each hold "the" lock, on two different inodes, and
// exclude nothing. An empty file per swapped object and per segment
// directory is the price.

// swapLock is the lock file of the swapped object at path.
func swapLock(path string) string {
	dir, base := filepath.Split(path)
	if len(base) > 64 {
		// Objects sharing a long prefix share a lock: slower, still safe.
		base = strings.ToValidUTF8(base[:64], "")
	}
	return filepath.Join(dir, "."+base+".swap-lock.tmp")
}

// segmentsLock is the lock file of the segments in directory dir.
func segmentsLock(dir string) string {
	return filepath.Join(dir, ".segments-lock.tmp")
}

// lock opens the lock file at path, creating it if create is set, and takes
// an exclusive flock(2) on it. unlock releases it. Without create, a missing
// lock file gives an error wrapping fs.ErrNotExist. If the lock is busy,
// lock waits until it is free or ctx is done; holders keep it only for a
// few small file operations. The file is opened for writing, though nothing
// is written to it: Linux's NFS client grants an exclusive flock only on a
// file open for writing.
func lock(ctx context.Context, path string, create bool) (unlock func(), err error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	err = flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		// Busy: wait in a goroutine so that ctx can end the wait. If it
		// does, the goroutine closes the file (releasing the lock) once
		// it gets it.
		got := make(chan error, 1)
		go func() { got <- flock(fd, syscall.LOCK_EX) }()
		select {
		case err = <-got:
		case <-ctx.Done():
			go func() {
				<-got
				f.Close()
			}()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

func flock(fd, how int) error {
	for {
		if err := syscall.Flock(fd, how); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
