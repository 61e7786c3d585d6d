package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/shipper/source"
	"github.com/ferry-dr/ferry/shipper/spool"
)

// TestHelperHoldLock is not a test: run by TestStopLockHolder as a child
// process, it holds the lock of $FERRY_HOLD_LOCK until it is killed.
func TestHelperHoldLock(t *testing.T) {
	dir := os.Getenv("FERRY_HOLD_LOCK")
	if dir == "" {
		t.Skip("helper process")
	}
	if _, err := fsutil.Lock(dir, "spool"); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("locked\n")
	time.Sleep(time.Minute)
}

// stopLockHolder signals the process named in LOCK and returns once the
// lock is free; a free lock is left alone.
func TestStopLockHolder(t *testing.T) {
	dir := t.TempDir()
	if pid, err := stopLockHolder(context.Background(), dir, "shipper"); pid != 0 || err != nil {
		t.Fatalf("no LOCK: pid %d err %v; want nothing done", pid, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "FERRY_HOLD_LOCK="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("helper said %q", line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pid, err := stopLockHolder(ctx, dir, "shipper")
	if err != nil || pid != cmd.Process.Pid {
		t.Fatalf("pid %d err %v; want the helper's pid %d stopped", pid, err, cmd.Process.Pid)
	}
	if held, err := fsutil.Locked(dir); held || err != nil {
		t.Fatalf("lock held %v err %v after stopLockHolder", held, err)
	}
	if pid, err := stopLockHolder(ctx, dir, "shipper"); pid != 0 || err != nil {
		t.Fatalf("free LOCK naming a dead pid: pid %d err %v; want nothing done", pid, err)
	}
}

// A spool with a sealed segment no target confirmed did not drain.
func TestDrainedSpoolRefusesUnsent(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Config{Dir: dir, Stream: "app"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Append(context.Background(), []batch.Record{{Data: []byte("x\n")}, {Data: []byte("y\n")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil { // the journal is resealed at the next Open
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Stream, cfg.Ship.Spool = "app", dir
	_, _, err = drainedSpool(cfg)
	if err == nil || !strings.Contains(err.Error(), "did not drain: 1 segments unsent") {
		t.Fatalf("drainedSpool: %v; want the unsent segment reported", err)
	}
}

// A tail that stopped before the end of its file did not drain.
func TestTailAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	if err := tailAtEnd(path, nil); err == nil {
		t.Fatal("a missing file passed")
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := tailAtEnd(path, nil); err != nil {
		t.Fatalf("empty file, no cursor: %v", err)
	}
	if err := os.WriteFile(path, []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	half, _ := source.TailCursorAt(path, 2)
	if err := tailAtEnd(path, half); err == nil || !strings.Contains(err.Error(), "stopped at byte 2 of "+path+", which has 4 bytes") {
		t.Fatalf("cursor at byte 2: %v", err)
	}
	end, _ := source.TailCursorAt(path, 4)
	if err := tailAtEnd(path, end); err != nil {
		t.Fatalf("cursor at the end: %v", err)
	}
	// A cursor an older ferry wrote has no sum.
	var c map[string]any
	if err := json.Unmarshal(end, &c); err != nil || c["sum"] == nil {
		t.Fatalf("cursor %s: %v; want a sum", end, err)
	}
	delete(c, "sum")
	old, _ := json.Marshal(c)
	if err := tailAtEnd(path, old); err != nil {
		t.Fatalf("cursor at the end without a sum: %v", err)
	}
}

// waitTailRead waits for the running shipper's own status to say it read
// its tail to the end of the file as it is now; a status of another
// process, or of a smaller file, does not count.
func TestWaitTailRead(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(log, []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitTailRead(ctx, dir, log); err != nil {
		t.Fatalf("no shipper running: %v; want no wait", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "FERRY_HOLD_LOCK="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("helper said %q", line)
	}
	publish := func(pid int, tail *tailStatus) {
		t.Helper()
		if err := writeShipStatus(dir, shipStatus{Role: "shipper", Running: true, PID: pid, UpdatedAt: time.Now(), Tail: tail}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		pid  int
		tail tailStatus
		want string
	}{
		{"behind", cmd.Process.Pid, tailStatus{Path: log, Size: 4, ReadBytes: 2}, "has read 2 of the 4 bytes of " + log},
		{"rotated", cmd.Process.Pid, tailStatus{Path: log, Size: 4, ReadBytes: 9, OtherFile: true}, "is still reading a rotated file"},
		{"the file grew since", cmd.Process.Pid, tailStatus{Path: log, Size: 2, ReadBytes: 2, AtEnd: true}, "has read 2 of the 4 bytes"},
		{"another process's status", os.Getpid(), tailStatus{Path: log, Size: 4, ReadBytes: 4, AtEnd: true}, "published no status"},
	} {
		publish(c.pid, &c.tail)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := waitTailRead(ctx, dir, log)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was stopped") {
			t.Errorf("%s: %v; want a refusal that says %q and that nothing was stopped", c.name, err, c.want)
		}
	}
	// Read to the end while waiting: it returns then.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish(cmd.Process.Pid, &tailStatus{Path: log, Size: 4, ReadBytes: 2})
	go func() {
		time.Sleep(200 * time.Millisecond)
		publish(cmd.Process.Pid, &tailStatus{Path: log, Size: 4, ReadBytes: 4, AtEnd: true})
	}()
	if err := waitTailRead(ctx, dir, log); err != nil {
		t.Fatalf("the shipper published it read the file to the end: %v", err)
	}
	// A shipper that publishes no tail progress (an older ferry): no wait.
	publish(cmd.Process.Pid, nil)
	if err := waitTailRead(ctx, dir, log); err != nil {
		t.Fatalf("no tail progress published: %v; want no wait", err)
	}
}

// The status a shipper publishes says how far its tail has read the file,
// by the spool's cursor.
func TestTailProgress(t *testing.T) {
	log := filepath.Join(t.TempDir(), "app.log")
	if err := os.WriteFile(log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := tailProgress(log, nil); err != nil || !p.AtEnd || p.Size != 0 {
		t.Fatalf("empty file, no cursor: %+v %v; want at the end", p, err)
	}
	if err := os.WriteFile(log, []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := tailProgress(log, nil); err != nil || p.AtEnd || p.Size != 4 || p.ReadBytes != 0 {
		t.Fatalf("4 bytes, no cursor: %+v %v; want 0 of 4 read", p, err)
	}
	half, _ := source.TailCursorAt(log, 2)
	end, _ := source.TailCursorAt(log, 4)
	var c map[string]any
	if err := json.Unmarshal(end, &c); err != nil {
		t.Fatal(err)
	}
	c["ino"] = c["ino"].(float64) + 1
	rotated, _ := json.Marshal(c)
	for _, c := range []struct {
		cursor     []byte
		off        int64
		atEnd, rot bool
	}{{half, 2, false, false}, {end, 4, true, false}, {rotated, 4, false, true}} {
		p, err := tailProgress(log, c.cursor)
		if err != nil || p.AtEnd != c.atEnd || p.OtherFile != c.rot || p.ReadBytes != c.off || p.Size != 4 {
			t.Errorf("cursor %s: %+v %v; want read %d, at end %v, other file %v", c.cursor, p, err, c.off, c.atEnd, c.rot)
		}
	}
}
