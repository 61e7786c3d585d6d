//go:build !linux

package apply

import "os"

// startWriteback is a no-op where sync_file_range does not exist; the
// fsync that ends every Apply writes everything.
func startWriteback(f *os.File, off, n int64) {}
