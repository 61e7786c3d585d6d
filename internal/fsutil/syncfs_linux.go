package fsutil

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Syncfs is syncfs(2) on f: everything written on f's file system is
// durable, data and metadata. It retries on EINTR.
func Syncfs(f *os.File) error {
	for {
		err := unix.Syncfs(int(f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// SyncfsReportsErrors says whether this kernel's syncfs(2) reports
// write-back errors (SyncfsReportsErrorsOn).
func SyncfsReportsErrors() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return SyncfsReportsErrorsOn(unix.ByteSliceToString(u.Release[:]))
}
