//go:build linux

package receiver

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync makes f's data durable without its timestamps: a checkpoint
// save overwrites allocated blocks of a file that keeps its size, so no
// metadata needs a journal commit. EINTR means the call did not run.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// syncfs makes everything written on f's file system durable.
func syncfs(f *os.File) error {
	for {
		err := unix.Syncfs(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// syncfsReportsErrors says whether this kernel's syncfs(2) reports
// write-back errors: Linux 5.8 and later.
func syncfsReportsErrors() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return releaseReportsErrors(unix.ByteSliceToString(u.Release[:]))
}
