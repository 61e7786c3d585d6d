//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// mountTmpfs mounts a tmpfs of size bytes at dir for the test. Mounting
// needs root with CAP_SYS_ADMIN; without it the test skips, saying so: the
// same code paths are covered by shipper's unit tests with an injected
// full disk (TestSpoolJournalDiskFull, TestSpoolSealDiskFull).
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs at %s (%v): the disk-full paths are covered by the shipper's unit tests", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// A spool on a small file system that fills up while the link is down:
// the shipper stays up, pauses its input and says why; when the receiver
// comes back the spool drains, input resumes, and the replica ends
// byte-identical.
func TestSpoolDiskFullRecovers(t *testing.T) {
	t.Parallel()
	s := newStream(t, "full")
	mountTmpfs(t, s.spool, 1<<20)
	addr := ferrytest.FreeAddr(t)
	log := filepath.Join(s.dir, "app.log")
	data := logLines(51, 1, 60000) // ~10 MiB: ~2 MiB of segments, more than the spool holds
	first := prefixLines(data, 100)
	if err := os.WriteFile(log, first, 0o644); err != nil {
		t.Fatal(err)
	}
	// The link is up at first (a fresh spool must learn where the stream
	// stands), then the receiver goes away and the rest of the log comes.
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	ship := startFerry(t, nil, "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken, "--stream", s.name,
		"--spool", s.spool, "--source", "tail:"+log, "--max-bytes", "64KiB", "--max-age", "50ms")
	ferrytest.Eventually(t, 30*time.Second, "first lines applied", func() (bool, string) {
		return bytes.Equal(s.readReplica(), first), fmt.Sprintf("%d bytes", len(s.readReplica()))
	})
	recv.Kill9()
	f, err := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data[len(first):])
	f.Close()
	ferrytest.Eventually(t, 60*time.Second, "the shipper reports the full spool", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("the shipper exited on a full spool:\n%s", ship)
		}
		return strings.Contains(ship.Stderr(), "spool disk full"), "no disk-full message yet"
	})
	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	ferrytest.Eventually(t, 120*time.Second, "replica complete after the spool drained", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("the shipper exited:\n%s", ship)
		}
		got := s.readReplica()
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("replica is not a prefix of the input: %s", describeDiff(data, got))
		}
		return bytes.Equal(got, data), fmt.Sprintf("%d of %d bytes", len(got), len(data))
	})
	ship.Terminate(30 * time.Second)
	recv.Terminate(10 * time.Second)
	mustFerry(t, nil, "verify", "--store", filepath.Join(s.state, "inbox"), "--stream", s.name)
}

// The receiver's target fills up: the file applier fails, the receiver
// keeps retrying without advancing its checkpoint, and once the file
// system grows the replica completes byte-identical.
func TestReceiverTargetDiskFullRecovers(t *testing.T) {
	t.Parallel()
	s := newStream(t, "rfull")
	target := filepath.Join(s.dir, "target")
	mountTmpfs(t, target, 1<<20)
	s.replica = filepath.Join(target, "replica.out")
	data := logLines(52, 1, 20000) // ~3.5 MiB
	s.ship(data, "--max-bytes", "64KiB")
	recv := startFerry(t, nil, s.receiveArgs("--poll-min", "20ms", "--poll-max", "100ms")...)
	ferrytest.Eventually(t, 60*time.Second, "the receiver reports the full target", func() (bool, string) {
		if recv.Exited() {
			t.Fatalf("the receiver exited on a full target:\n%s", recv)
		}
		return strings.Contains(recv.Stderr(), "no space left"), "no disk-full message yet"
	})
	applied := s.checkpointSeq()
	if got := s.readReplica(); !bytes.HasPrefix(data, got) {
		t.Fatalf("replica on the full disk is not a prefix of the input: %s", describeDiff(data, got))
	}
	if err := syscall.Mount("tmpfs", target, "tmpfs", syscall.MS_REMOUNT, "size=16m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	ferrytest.Eventually(t, 60*time.Second, "replica complete once there is room", func() (bool, string) {
		got := s.readReplica()
		return bytes.Equal(got, data), fmt.Sprintf("%d of %d bytes (checkpoint was %d when full)", len(got), len(data), applied)
	})
	recv.Terminate(10 * time.Second)
}
