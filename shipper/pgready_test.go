package shipper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// The read-ahead takes .ready files in the order PostgreSQL's archiver
// does: timeline history files first, then by name; other files and
// names a push cannot carry are skipped.
func TestReadyFilesOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"000000020000000000000003.ready", "00000002.history.ready", "000000010000000000000002.partial.ready",
		"000000010000000000000001.00000028.backup.ready", "000000010000000000000001.done", ".hidden.ready", "xlogtemp.123"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := readyFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"00000002.history", "000000010000000000000001.00000028.backup", "000000010000000000000002.partial", "000000020000000000000003"}
	if !slices.Equal(got, want) {
		t.Fatalf("readyFiles = %q, want %q", got, want)
	}
}

// Run pushes each .ready file's WAL file, in order, and wakes for a new
// one (inotify; Interval is long here). What it must not push: a name
// whose .ready is gone (.done), a .ready whose file is missing (both
// skipped), and, past a file it cannot read (a FIFO in pg_wal), nothing,
// as PostgreSQL archives in order; archive_command gets the error.
func TestPGReadAheadRun(t *testing.T) {
	st := newDirStore(t)
	r := startShipper(t, shipperConfig(t, Target{Name: "store", Store: st}))
	p := &Pusher{Shipper: r.Shipper, Retry: store.RetryPolicy{Min: 1, Max: 1}, Log: quiet, Markers: []MarkerStore{
		{Name: "store", Store: st, Key: func(n string) string { return PushMarkerKey("app", n) }},
	}}
	data := t.TempDir()
	wal := filepath.Join(data, "pg_wal")
	status := filepath.Join(wal, "archive_status")
	if err := os.MkdirAll(status, 0o700); err != nil {
		t.Fatal(err)
	}
	seg := func(i int) string { return fmt.Sprintf("%024X", 1<<32+i) }
	put := func(i int, mark string) {
		if err := os.WriteFile(filepath.Join(wal, seg(i)), bytes.Repeat([]byte{byte(i)}, 70<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		if mark != "" {
			if err := os.WriteFile(filepath.Join(status, seg(i)+mark), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(1, ".ready")
	put(2, ".done")
	if err := os.WriteFile(filepath.Join(status, seg(3)+".ready"), nil, 0o600); err != nil {
		t.Fatal(err) // .ready, no WAL file
	}
	put(4, ".ready")

	shipped := make(chan string, 16)
	ra := &PGReadAhead{DataDir: data, Pusher: p, Interval: time.Hour, Log: quiet,
		OnShipped: func(name string, already bool) { shipped <- name }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ra.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}()
	next := func(want string) {
		t.Helper()
		select {
		case got := <-shipped:
			if got != want {
				t.Fatalf("shipped %s, want %s", got, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s not shipped", want)
		}
	}
	next(seg(1))
	next(seg(4))
	put(5, ".ready") // a new .ready wakes the read-ahead
	next(seg(5))

	if err := syscall.Mkfifo(filepath.Join(wal, seg(6)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(status, seg(6)+".ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	put(7, ".ready")
	select {
	case got := <-shipped:
		t.Fatalf("shipped %s past a FIFO", got)
	case <-time.After(time.Second):
	}
	for i := 1; i <= 7; i++ {
		_, err := ReadPushMarker(t.Context(), st, PushMarkerKey("app", seg(i)))
		if shipped := i == 1 || i == 4 || i == 5; shipped != (err == nil) {
			t.Errorf("marker of %s: %v; shipped: %v", seg(i), err, shipped)
		}
	}
}

// An inotify queue overflow (more events than fs.inotify.max_queued_events
// while the read-ahead is busy) is reported on the watcher's Errors
// channel: the read-ahead reads it, or the watcher's reader blocks on it
// for good and no .ready file wakes the read-ahead again, and lists
// archive_status at once, as an event may have been lost.
func TestPGReadAheadInotifyOverflow(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	maxQueued, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	st := newDirStore(t)
	r := startShipper(t, shipperConfig(t, Target{Name: "store", Store: st}))
	p := &Pusher{Shipper: r.Shipper, Retry: store.RetryPolicy{Min: 1, Max: 1}, Log: quiet, Markers: []MarkerStore{
		{Name: "store", Store: st, Key: func(n string) string { return PushMarkerKey("app", n) }},
	}}
	data := t.TempDir()
	wal := filepath.Join(data, "pg_wal")
	status := filepath.Join(wal, "archive_status")
	if err := os.MkdirAll(status, 0o700); err != nil {
		t.Fatal(err)
	}
	seg := func(i int) string { return fmt.Sprintf("%024X", 1<<32+i) }
	put := func(i int) {
		if err := os.WriteFile(filepath.Join(wal, seg(i)), bytes.Repeat([]byte{byte(i)}, 10<<10), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(status, seg(i)+".ready"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	put(1)
	var logs lockedBuffer
	stalled, release := make(chan struct{}), make(chan struct{})
	shipped := make(chan string, 16)
	ra := &PGReadAhead{DataDir: data, Pusher: p, Interval: time.Hour, Log: slog.New(slog.NewTextHandler(&logs, nil)),
		OnShipped: func(name string, already bool) {
			if name == seg(1) {
				close(stalled)
				<-release // busy: nothing reads the watcher meanwhile
			}
			shipped <- name
		}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ra.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}()
	select {
	case <-stalled:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not shipped", seg(1))
	}
	// Overflow the watch's queue: more events than it holds (each file
	// makes a create and a remove).
	for i := range maxQueued/2 + 2000 {
		f := filepath.Join(status, fmt.Sprintf("flood.%d", i))
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if got := <-shipped; got != seg(1) {
		t.Fatalf("shipped %s, want %s", got, seg(1))
	}
	put(2) // a new .ready: the watch, or the listing after the overflow, finds it
	select {
	case got := <-shipped:
		if got != seg(2) {
			t.Fatalf("shipped %s, want %s", got, seg(2))
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not shipped 20s after its .ready appeared (Interval is an hour): the read-ahead no longer hears inotify after an overflow\nlog:\n%s", seg(2), logs.String())
	}
	if !strings.Contains(logs.String(), "inotify on archive_status reported an error") {
		t.Errorf("no overflow reported in the log; the flood did not overflow the queue:\n%s", logs.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for a logger and the test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
