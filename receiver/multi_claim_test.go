package receiver_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// claimer is a Claimer whose answers a test sets.
type claimer struct {
	mu       sync.Mutex
	mine     []string
	refuse   atomic.Bool // the fence refuses
	released []string
}

func (c *claimer) Claim(_ context.Context, streams, _ []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.mine)
}
func (c *claimer) Fence(string) func() error {
	return func() error {
		if c.refuse.Load() {
			return errors.New("not renewed")
		}
		return nil
	}
}
func (c *claimer) Release(_ context.Context, s string) {
	c.mu.Lock()
	c.released = append(c.released, s)
	c.mu.Unlock()
}
func (c *claimer) releasedList() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.released)
}

// A stream whose fence refused once is opened again and finishes, not
// released; one Claim stops returning is stopped and released.
func TestMultiFencedStreamReopenedNotReleased(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 2, 5)
	receivertest.Put(t, st, segs...)
	tmp := t.TempDir()
	c := &claimer{mine: []string{receivertest.Stream}}
	c.refuse.Store(true)
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Claim: c}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(200 * time.Millisecond) // fenced, reaped, opened again, fenced...
	c.refuse.Store(false)
	replica := filepath.Join(tmp, receivertest.Stream+".log")
	receivertest.Eventually(t, "the stream applied once its fence passes", func() bool {
		b, _ := os.ReadFile(replica)
		return len(b) == len(receivertest.Want(1, 10))
	})
	receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after the fence passed")
	if r := c.releasedList(); len(r) != 0 {
		t.Fatalf("a stream stopped by its fence was released: %v", r)
	}
	c.mu.Lock()
	c.mine = nil
	c.mu.Unlock()
	receivertest.Eventually(t, "the stream released once not claimed", func() bool { return len(c.releasedList()) == 1 })
	if m.Receiver(receivertest.Stream) != nil {
		t.Fatal("a stream not claimed is still running")
	}
}

// A stream whose receiver stopped on an error stays this process's (it is
// opened again after Retry) until Claim stops returning it: then OnGone
// tells the process to drop what it shows of it (stopped in /metrics,
// unhealthy in /healthz), as for a stream handed over while running. It
// is not told while the stream is still claimed.
func TestMultiFailedStreamGoneWhenNotClaimed(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 2, 5)
	receivertest.Put(t, st, segs[0])
	bad := slices.Clone(segs[1].Data)
	bad[len(bad)/2] ^= 0xff // a damaged segment: its receiver stops
	receivertest.PutAs(t, st, segs[1].Name, bad)
	tmp := t.TempDir()
	c := &claimer{mine: []string{receivertest.Stream}}
	open := func(stream string, fence func() error) (*receiver.Receiver, error) {
		cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(tmp, "state", stream), Store: st,
			Applier: &apply.File{Path: filepath.Join(tmp, stream+".log")}, Fence: fence}
		if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
			return nil, err
		}
		return receiver.Open(cfg, slog.New(slog.DiscardHandler))
	}
	var mu sync.Mutex
	var stops []error
	var gone []string
	m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
		PollMin: 10 * time.Millisecond, PollMax: 20 * time.Millisecond, Retry: time.Hour, Claim: c,
		OnStop: func(_ string, _ *receiver.Receiver, err error, _ bool) {
			mu.Lock()
			stops = append(stops, err)
			mu.Unlock()
		},
		OnGone: func(s string) {
			mu.Lock()
			gone = append(gone, s)
			mu.Unlock()
		}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	receivertest.Eventually(t, "the receiver stopped on the damaged segment", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stops) == 1 && stops[0] != nil
	})
	time.Sleep(200 * time.Millisecond) // many listings, the stream still claimed
	mu.Lock()
	if len(gone) != 0 {
		t.Fatalf("OnGone called for a stream still claimed: %v", gone)
	}
	mu.Unlock()
	c.mu.Lock()
	c.mine = nil // another member holds it now
	c.mu.Unlock()
	receivertest.Eventually(t, "OnGone once the failed stream is no longer claimed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gone) == 1 && gone[0] == receivertest.Stream
	})
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(gone) != 1 {
		t.Fatalf("OnGone called %d times, want once: %v", len(gone), gone)
	}
	if r := c.releasedList(); len(r) != 0 {
		t.Fatalf("a stream that stopped on an error was released: %v", r)
	}
}
