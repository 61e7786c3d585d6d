package ferrytest

import (
	"os"
	"sync/atomic"
	"syscall"
)

// FullDisk is a spool WriteFile that fails with ENOSPC while Full is set,
// after writing half of what it was given (a partial write, as a real full
// disk can leave). Failed counts the writes it failed.
type FullDisk struct {
	Full   atomic.Bool
	Failed atomic.Int64
}

// Write writes b to f, or half of it and ENOSPC while d is full.
func (d *FullDisk) Write(f *os.File, b []byte) (int, error) {
	if d.Full.Load() {
		d.Failed.Add(1)
		n, _ := f.Write(b[:len(b)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.Write(b)
}
