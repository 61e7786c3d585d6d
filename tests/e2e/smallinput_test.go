//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runBounded runs ferry with its own deadline, killing it when the
// deadline passes: for inputs that used to make ferry block forever.
func runBounded(t *testing.T, limit time.Duration, args ...string) (out string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ferry %s did not finish within %s (killed):\n%s", strings.Join(args, " "), limit, buf.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return buf.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.String(), 0
}

// ferry push of a named pipe, or of a device, is refused at once with a
// message saying what the path is; it used to wait forever in open(2)
// for a writer to the pipe.
func TestPushRefusesFIFOAndDevices(t *testing.T) {
	t.Parallel()
	s := newStream(t, "fifo")
	fifo := filepath.Join(s.dir, "wal.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{fifo: "named pipe (FIFO)", "/dev/null": "character device", s.dir: "directory"} {
		out, code := runBounded(t, 10*time.Second, s.pushArgs(path, "wal")...)
		if code == 0 || !strings.Contains(out, path) || !strings.Contains(out, want) || !strings.Contains(out, "not a regular file") {
			t.Errorf("push %s: exit %d, want non-zero naming it as %s:\n%s", path, code, want, out)
		}
	}
	if n := len(s.segments()); n != 0 {
		t.Fatalf("%d segments shipped", n)
	}
}

// Push names with control characters (a newline, an escape, a tab, DEL,
// a C1 control) are refused before anything is shipped, and the message
// shows them escaped.
func TestPushRefusesControlCharacterNames(t *testing.T) {
	t.Parallel()
	s := newStream(t, "ctlname")
	file := filepath.Join(s.dir, "f")
	if err := os.WriteFile(file, []byte("data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a\nforged log line", "red\x1b[31m", "tab\there", "del\x7f", "c1\u0085"} {
		r := ferry(t, nil, s.pushArgs(file, name)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "control character") || strings.ContainsAny(r.Output(), "\x1b\x7f\t") {
			t.Errorf("push as %q: exit %d, want 2 and the name escaped in a message about control characters:\n%s", name, r.Code, r)
		}
	}
	if n := len(s.segments()); n != 0 {
		t.Fatalf("%d segments shipped", n)
	}
}

// --generation out of range (negative, above uint32, not a number) says
// what a generation may be; so does the config key.
func TestGenerationOutOfRange(t *testing.T) {
	t.Parallel()
	s := newStream(t, "gen")
	for _, g := range []string{"-1", "4294967296", "99999999999999999999", "two"} {
		r := ferry(t, nil, "ls", "--store", s.store, "--stream", s.name, "--generation", g)
		if r.Code != 2 || !strings.Contains(r.Stderr, "--generation") || !strings.Contains(r.Stderr, "0 to 4294967295") ||
			!strings.Contains(r.Stderr, "0 follows the stream's history") {
			t.Errorf("--generation %s: exit %d, want 2 and the range:\n%s", g, r.Code, r)
		}
	}
	for _, g := range []string{"-1", "4294967296"} {
		cfg := writeFile(t, "gen.toml", "generation = "+g+"\n")
		r := ferry(t, nil, "ls", "--config", cfg, "--store", s.store, "--stream", s.name)
		if r.Code == 0 || !strings.Contains(r.Stderr, "gen.toml:1: generation") || !strings.Contains(r.Stderr, "1 to 4294967295, or 0 (the default) to follow the stream's history") {
			t.Errorf("generation = %s in the config: exit %d, want the range:\n%s", g, r.Code, r)
		}
	}
}

// receive --help lists every applier kind, dir: among them.
func TestReceiveHelpListsAppliers(t *testing.T) {
	t.Parallel()
	r := ferry(t, nil, "receive", "--help")
	for _, kind := range []string{"file:PATH", "exec:CMD", "dir:DIR", "stdout"} {
		if !strings.Contains(r.Output(), kind) {
			t.Errorf("receive --help does not list %s:\n%s", kind, r)
		}
	}
}
