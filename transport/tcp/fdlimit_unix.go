//go:build unix

package tcp

import (
	"os"
	"syscall"
)

// fileLimit returns the process's limit on open file descriptors
// (RLIMIT_NOFILE, the soft limit, which the Go runtime raises to the hard
// one at start) and how many it has open now; ok is false if either is
// unknown.
func fileLimit() (limit, open int, ok bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, false
	}
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		if ents, err := os.ReadDir(dir); err == nil {
			// The listing's own descriptor is closed again.
			return int(min(rl.Cur, 1<<30)), len(ents) - 1, true
		}
	}
	return 0, 0, false
}
