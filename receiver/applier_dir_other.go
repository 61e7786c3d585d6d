//go:build !linux

package receiver

import "fmt"

// parseDirApplier: the dir: applier resolves every path beneath its root
// with Linux-only calls (openat2, O_PATH), so other systems refuse it.
func parseDirApplier(spec string) (Applier, error) {
	return nil, fmt.Errorf("apply %q: the dir: applier needs Linux", spec)
}
