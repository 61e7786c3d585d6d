package apply_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// live is a receiver running (not Once) into a file: replica, fed one
// segment at a time.
type live struct {
	t       *testing.T
	st      receiver.Config
	r       *receiver.Receiver
	done    chan error
	stopped bool // Run returned (fails)
}

func startLive(t *testing.T, replica string) *live {
	t.Helper()
	st, _ := receivertest.NewStore(t)
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	cfg.Once = false
	r := receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	l := &live{t: t, st: cfg, r: r, done: make(chan error, 1)}
	go func() { l.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if !l.stopped {
			<-l.done
		}
	})
	return l
}

// apply puts seg and waits until it is applied.
func (l *live) apply(seg receivertest.Seg) {
	l.t.Helper()
	receivertest.Put(l.t, l.st.Store, seg)
	l.r.Wake()
	receivertest.Eventually(l.t, "segment "+seg.Name+" applied", func() bool { return l.r.Applied() == seg.Meta.LastSeq })
}

// fails puts seg and wants Run to stop with a fatal error, which it returns.
func (l *live) fails(seg receivertest.Seg) error {
	l.t.Helper()
	receivertest.Put(l.t, l.st.Store, seg)
	l.r.Wake()
	select {
	case err := <-l.done:
		l.stopped = true
		if !errors.Is(err, receiver.ErrFatal) {
			l.t.Fatalf("Run: %v, want a fatal apply error", err)
		}
		if l.r.Applied() >= seg.Meta.LastSeq {
			l.t.Fatalf("segment %s applied, then Run failed: %v", seg.Name, err)
		}
		return err
	case <-time.After(10 * time.Second):
		l.t.Fatalf("Run did not stop within 10s after segment %s", seg.Name)
	}
	return nil
}

func wantMention(t *testing.T, err error, what ...string) {
	t.Helper()
	for _, s := range what {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func appendFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A replica truncated under a running receiver stops it before the next
// append, naming the sizes: no NUL-filled hole, no checkpoint accepting it.
func TestFileLiveTruncateStops(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	replica := filepath.Join(t.TempDir(), "replica")
	l := startLive(t, replica)
	l.apply(segs[0])
	if err := os.Truncate(replica, 0); err != nil {
		t.Fatal(err)
	}
	err := l.fails(segs[1])
	wantMention(t, err, replica, "is 0 bytes", fmt.Sprintf("ferry left it at %d", len(receivertest.Want(1, 10))), "truncated")
	receivertest.WantFile(t, replica, nil, "after the refused append")
	if cp := l.r.Checkpoint(); cp.LastSeq != 10 {
		t.Fatalf("checkpoint at seq %d, want 10", cp.LastSeq)
	}
}

// Bytes appended by someone else under a running receiver stop it, and
// stay.
func TestFileLiveAppendStops(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	replica := filepath.Join(t.TempDir(), "replica")
	l := startLive(t, replica)
	l.apply(segs[0])
	foreign := []byte("written by someone else\n")
	appendFile(t, replica, foreign)
	err := l.fails(segs[1])
	n := len(receivertest.Want(1, 10))
	wantMention(t, err, replica, fmt.Sprintf("is %d bytes", n+len(foreign)), fmt.Sprintf("ferry left it at %d", n), "appended")
	receivertest.WantFile(t, replica, append(receivertest.Want(1, 10), foreign...), "after the refused append")
}

// A replica replaced by a symbolic link stops a running receiver, and a
// restart refuses it too: the link's target is never written nor cut.
func TestFileSymlinkRefused(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	dir := t.TempDir()
	replica := filepath.Join(dir, "replica")
	l := startLive(t, replica)
	l.apply(segs[0])
	victim := filepath.Join(dir, "victim")
	victimData := append(receivertest.Want(1, 10), "precious bytes past the checkpoint\n"...)
	if err := os.WriteFile(victim, victimData, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(replica); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, replica); err != nil {
		t.Fatal(err)
	}
	err := l.fails(segs[1])
	wantMention(t, err, replica, "symbolic link", "replaced")
	receivertest.WantFile(t, victim, victimData, "after the running receiver stopped")

	cfg := l.st
	cfg.Applier = &apply.File{Path: replica, Repair: true}
	cfg.StateDir = filepath.Join(t.TempDir(), "state2")
	l.r.Close()
	for _, state := range []string{l.st.StateDir, cfg.StateDir} { // its own, and a new one
		cfg.StateDir = state
		r, err := receiver.Open(cfg, receivertest.Quiet)
		if err == nil {
			r.Close()
			t.Fatalf("Open on a replica that is a symbolic link (state %s) succeeded", state)
		}
		if !errors.Is(err, receiver.ErrFatal) {
			t.Errorf("Open: %v, want ErrFatal", err)
		}
		wantMention(t, err, replica, "symbolic link")
		receivertest.WantFile(t, victim, victimData, "after the refused restart")
	}
}

// A replica swapped for another file (same content, another inode) stops
// a running receiver and is refused at the next start; --repair adopts it.
func TestFileInodeSwap(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	replica := filepath.Join(t.TempDir(), "replica")
	l := startLive(t, replica)
	l.apply(segs[0])
	var before syscall.Stat_t
	if err := syscall.Stat(replica, &before); err != nil {
		t.Fatal(err)
	}
	tmp := replica + ".new"
	if err := os.WriteFile(tmp, receivertest.Want(1, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, replica); err != nil {
		t.Fatal(err)
	}
	var after syscall.Stat_t
	if err := syscall.Stat(replica, &after); err != nil {
		t.Fatal(err)
	}
	err := l.fails(segs[1])
	wantMention(t, err, replica, fmt.Sprintf("inode %d", after.Ino), fmt.Sprintf("inode %d", before.Ino), "replaced")

	l.r.Close()
	cfg := l.st
	cfg.Once = true
	cfg.Applier = &apply.File{Path: replica}
	r, err := receiver.Open(cfg, receivertest.Quiet)
	if err == nil {
		r.Close()
		t.Fatal("Open on a replica of another inode than the checkpoint's succeeded")
	}
	wantMention(t, err, replica, fmt.Sprintf("is inode %d", after.Ino), fmt.Sprintf("was inode %d", before.Ino), "--repair")

	var logged bytes.Buffer
	cfg.Applier = &apply.File{Path: replica, Repair: true, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after --repair")
	if !strings.Contains(logged.String(), "replaced") {
		t.Errorf("--repair did not log the adopted replica:\n%s", logged.String())
	}
	cfg.Applier = &apply.File{Path: replica} // the checkpoint now has the new inode
	receivertest.RunOnce(t, cfg)
}

// Bytes appended to a stopped receiver's replica that no segment after the
// checkpoint writes are refused at the next start, naming the range, and
// kept; --repair cuts them and logs the cut.
func TestFileForeignTailAtStart(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0])
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	receivertest.RunOnce(t, cfg)
	foreign := []byte("appended by someone else\n")
	appendFile(t, replica, foreign)
	n := len(receivertest.Want(1, 10))
	withForeign := append(receivertest.Want(1, 10), foreign...)

	cfg.Applier = &apply.File{Path: replica}
	r := receivertest.Open(t, cfg)
	err := receivertest.Run(t, r)
	r.Close()
	if !errors.Is(err, receiver.ErrFatal) {
		t.Fatalf("Run with foreign bytes past the checkpoint: %v, want a fatal error", err)
	}
	wantMention(t, err, replica, fmt.Sprintf("%d bytes after offset %d were not written by ferry", len(foreign), n), "--repair")
	receivertest.WantFile(t, replica, withForeign, "after the refused start")

	// Foreign bytes that a later segment would overwrite are refused too.
	receivertest.Put(t, st, segs[1])
	cfg.Applier = &apply.File{Path: replica}
	r = receivertest.Open(t, cfg)
	err = receivertest.Run(t, r)
	r.Close()
	if !errors.Is(err, receiver.ErrFatal) {
		t.Fatalf("Run: %v, want a fatal error", err)
	}
	wantMention(t, err, replica, fmt.Sprintf("byte %d, of the %d bytes found past the checkpointed size %d", n, len(foreign), n), segs[1].Name, "not all written by ferry", "--repair")
	receivertest.WantFile(t, replica, withForeign, "after the refused apply")

	var logged bytes.Buffer
	cfg.Applier = &apply.File{Path: replica, Repair: true, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after --repair")
	for _, s := range []string{"cut bytes", fmt.Sprintf("from=%d", n), fmt.Sprintf("to=%d", len(withForeign)), fmt.Sprintf("bytes=%d", len(foreign))} {
		if !strings.Contains(logged.String(), s) {
			t.Errorf("--repair log does not say %q:\n%s", s, logged.String())
		}
	}
}

// Bytes ferry applied past the checkpoint before a crash, even a torn part
// of a segment, are what the next segments apply: they are kept, and every
// record ends up there once.
func TestFileOwnTailAtStart(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0])
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	receivertest.RunOnce(t, cfg)
	// Segment 2 whole and half of segment 3, as a crash may leave them.
	torn := receivertest.Want(21, 30)
	appendFile(t, replica, append(receivertest.Want(11, 20), torn[:len(torn)/2]...))
	receivertest.Put(t, st, segs[1:]...)

	var logged bytes.Buffer
	cfg.Applier = &apply.File{Path: replica, Log: slog.New(slog.NewTextHandler(&logged, nil))}
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after the restart")
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after the restart")
	if !strings.Contains(logged.String(), "kept") {
		t.Errorf("the kept tail was not logged:\n%s", logged.String())
	}
}

// A path that is not a regular file is refused.
func TestFileRefusesFIFO(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	replica := filepath.Join(t.TempDir(), "replica")
	if err := syscall.Mkfifo(replica, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	r, err := receiver.Open(cfg, receivertest.Quiet)
	if err == nil {
		r.Close()
		t.Fatal("Open on a named pipe succeeded")
	}
	wantMention(t, err, replica, "named pipe")
}
