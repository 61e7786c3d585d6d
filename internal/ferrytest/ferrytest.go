// Package ferrytest is the harness ferry's tests share. It runs the real
// ferry binary for the end-to-end suites (tests/e2e, tests/s3e2e): it
// builds ./cmd/ferry once per test binary, runs it to completion or starts
// it as a long-running process that is killed on test cleanup, and waits
// by polling with deadlines rather than by fixed sleeps. It also holds what
// unit tests would otherwise each write again: a Clock moved by hand, a
// LockedBuffer to log into, a fault Proxy and free loopback addresses.
// It imports nothing of ferry's, so any package's tests can use it.
package ferrytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runTimeout bounds one ferry invocation that is expected to finish.
const runTimeout = 90 * time.Second

// Main is a TestMain body: it builds ./cmd/ferry into a temporary
// directory, stores the binary's path in *bin, runs the tests and returns
// the code for os.Exit. A failed build is reported on stderr and returns
// 1, so a suite without a binary fails rather than skips.
func Main(m *testing.M, bin *string) int {
	name := filepath.Base(os.Args[0])
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: FAILED: cannot find the module root: %v\n", name, err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "ferry-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: FAILED: %v\n", name, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	*bin = filepath.Join(tmp, "ferry")
	// The go command of the toolchain that built this test binary, so a
	// test binary run outside `go test` builds ferry with the same one.
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	build := exec.Command(goTool, "build", "-o", *bin, "./cmd/ferry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: FAILED to build ferry (go build -o %s ./cmd/ferry in %s): %v\n%s\n",
			name, *bin, root, err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot walks up from the working directory to ferry's go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/ferry-dr/ferry\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod for github.com/ferry-dr/ferry above the working directory")
		}
		dir = parent
	}
}

// Cmd is how a test runs ferry.
type Cmd struct {
	Bin string   // the binary Main built
	Env []string // nil: this process's environment
	Dir string   // the working directory; "": this process's
	// RecordOutput, if set, is handed a reader of each run's or process's
	// stdout and stderr as soon as the run has ended or the process has
	// started, before anything can fail the test.
	RecordOutput func(output func() string)
}

// Result is the outcome of one finished ferry run.
type Result struct {
	Args    []string
	Stdout  string
	Stderr  string
	Code    int
	Elapsed time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("ferry %s\nexit %d after %s\n--- stdout ---\n%s\n--- stderr ---\n%s",
		strings.Join(r.Args, " "), r.Code, r.Elapsed.Round(time.Millisecond), Clip(r.Stdout), Clip(r.Stderr))
}

// Output is stdout and stderr together, for checking what a user is told.
func (r Result) Output() string { return r.Stdout + r.Stderr }

// Clip shortens s to its first and last 2000 bytes, for failure messages.
func Clip(s string) string {
	const limit = 4000
	if len(s) <= limit {
		return s
	}
	return s[:limit/2] + fmt.Sprintf("\n... (%d bytes elided) ...\n", len(s)-limit) + s[len(s)-limit/2:]
}

// Run runs ferry with args and stdin (nil for none) to completion. A
// non-zero exit is in Result.Code; Run fails the test only if ferry cannot
// be run or does not finish within 90s.
func (c Cmd) Run(t testing.TB, stdin io.Reader, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Env, cmd.Dir = stdin, &stdout, &stderr, c.Env, c.Dir
	start := time.Now()
	err := cmd.Run()
	r := Result{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	if c.RecordOutput != nil {
		c.RecordOutput(r.Output)
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("ferry did not finish within %s:\n%s", runTimeout, r)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run ferry %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// Process is a long-running ferry (ship with a tail source, receive
// without --once). It is killed on test cleanup if still running.
type Process struct {
	t      testing.TB
	args   []string
	cmd    *exec.Cmd
	stdout LockedBuffer
	stderr LockedBuffer
	done   chan struct{}
	code   int // valid once done is closed; -1 when killed by a signal
}

// Start starts ferry with args and stdin (nil for none), failing the test
// if it cannot be started.
func (c Cmd) Start(t testing.TB, stdin io.Reader, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, args: args, done: make(chan struct{})}
	p.cmd = exec.Command(c.Bin, args...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr, p.cmd.Env, p.cmd.Dir = stdin, &p.stdout, &p.stderr, c.Env, c.Dir
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ferry %s: %v", strings.Join(args, " "), err)
	}
	if c.RecordOutput != nil {
		c.RecordOutput(func() string { return p.Stdout() + p.Stderr() })
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *Process) String() string {
	return fmt.Sprintf("ferry %s (pid %d)\n--- stdout ---\n%s\n--- stderr ---\n%s",
		strings.Join(p.args, " "), p.cmd.Process.Pid, Clip(p.Stdout()), Clip(p.Stderr()))
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stdout is what the process has written to stdout so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr is what the process has written to stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Code is the exit code of an exited process, -1 when a signal ended it.
// It panics if the process is still running: check Exited first.
func (p *Process) Code() int {
	if !p.Exited() {
		panic("ferrytest: Code of a running process")
	}
	return p.code
}

// Wait waits up to timeout for the process to exit on its own.
func (p *Process) Wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(timeout):
		return 0, false
	}
}

// Kill9 sends SIGKILL and waits for the process to be gone. It fails the
// test if the process had already exited: a crash test needs it running.
func (p *Process) Kill9() {
	p.t.Helper()
	if p.Exited() {
		p.t.Fatalf("wanted to kill -9 a running process, but it had exited with %d:\n%s", p.code, p)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	if _, ok := p.Wait(10 * time.Second); !ok {
		p.t.Fatalf("process survived SIGKILL for 10s:\n%s", p)
	}
}

// Signal sends sig to the running process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Terminate sends SIGTERM and returns the exit code, failing the test if
// the process had already exited or does not exit within timeout.
func (p *Process) Terminate(timeout time.Duration) int {
	p.t.Helper()
	if p.Exited() {
		p.t.Fatalf("wanted to SIGTERM a running process, but it had exited with %d:\n%s", p.code, p)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	code, ok := p.Wait(timeout)
	if !ok {
		p.t.Fatalf("process did not exit within %s of SIGTERM:\n%s", timeout, p)
	}
	return code
}

// Eventually polls cond until it reports true, failing the test with
// cond's last explanation after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, detail string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %s", what, timeout, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Build builds the main package pkg (a path relative to the module root,
// such as "./tests/bench/appender") into dir and returns the binary's
// path, failing the test if the build fails.
func Build(t testing.TB, pkg, dir string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	build := exec.Command(goTool, "build", "-o", bin, pkg)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s %s: %v\n%s", bin, pkg, err, out)
	}
	return bin
}
