//go:build !linux

package versitygw

import "os/exec"

// setProcAttr is a no-op where the kernel offers no parent-death signal;
// t.Cleanup still kills the gateway on a normal exit.
func setProcAttr(cmd *exec.Cmd) {}
