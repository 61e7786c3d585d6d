//go:build !linux

package apply

import (
	"fmt"

	"github.com/ferry-dr/ferry/receiver"
)

// parseDir: the dir: applier resolves every path beneath its root with
// Linux-only calls (openat2, O_PATH), so other systems refuse it.
func parseDir(spec string) (receiver.Applier, error) {
	return nil, fmt.Errorf("apply %q: the dir: applier needs Linux", spec)
}
