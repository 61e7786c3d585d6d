package versitygw

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill the gateway if the test binary dies
// without running its cleanups (a panic in another goroutine, a SIGKILL from
// `go test -timeout`), so no gateway outlives its test.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
