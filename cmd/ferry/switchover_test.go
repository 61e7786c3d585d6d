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
