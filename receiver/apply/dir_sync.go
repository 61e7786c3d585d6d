//go:build linux

package apply

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Durability of an Apply: the files a put run writes are fsynced
// together before their renames, and every directory Apply changed and
// every file an append wrote to in place is fsynced before it returns
// (before a rename that needs the marker, too: renamedDurably).
const (
	// dirMaxOpenSyncs caps the directories held open for the fsync at the
	// end of Apply; beyond it they are fsynced early.
	dirMaxOpenSyncs = 256
	// dirSyncWorkers bounds the fsyncs in flight at once.
	dirSyncWorkers = 16
)

// fsyncAll fsyncs files, dirSyncWorkers at a time, and returns each one's
// error. Overlapping fsyncs lets the filesystem's journal commit them
// together.
func fsyncAll(files []*os.File) []error {
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, dirSyncWorkers)
	for n, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[n] = f.Sync()
		}()
	}
	wg.Wait()
	return errs
}

// syncLater notes that directory d (or a file an append wrote in place)
// changed and must be fsynced before Apply returns.
func (a *Dir) syncLater(d *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return err
	}
	k := [2]uint64{uint64(st.Dev), st.Ino}
	if _, ok := a.syncs[k]; ok {
		return nil
	}
	if len(a.syncs) >= dirMaxOpenSyncs {
		if err := a.flushSyncs(); err != nil {
			return err
		}
		a.closeSyncs()
	}
	fd, err := unix.Dup(int(d.Fd()))
	if err != nil {
		return err
	}
	unix.CloseOnExec(fd)
	a.syncs[k] = os.NewFile(uintptr(fd), d.Name())
	return nil
}

// flushSyncs fsyncs the directories noted by syncLater, several at a time.
func (a *Dir) flushSyncs() error {
	dirs := make([]*os.File, 0, len(a.syncs))
	for _, d := range a.syncs {
		dirs = append(dirs, d)
	}
	for n, err := range fsyncAll(dirs) {
		if err != nil {
			return a.fatalf("fsync directory %s: %v", dirs[n].Name(), err)
		}
	}
	return nil
}

func (a *Dir) closeSyncs() {
	for k, d := range a.syncs {
		d.Close()
		delete(a.syncs, k)
	}
}
