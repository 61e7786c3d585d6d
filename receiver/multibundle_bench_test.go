package receiver_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

// hiding is a dir store whose listings leave out the objects hidden, so
// that a benchmark can store every round first and show them one by one
// while a receiver runs: what it measures is the receiver's CPU, not the
// writes'.
type hiding struct {
	*dir.Store
	mu     sync.Mutex
	hidden map[string]bool
}

func (h *hiding) hide(key string) {
	h.mu.Lock()
	h.hidden[key] = true
	h.mu.Unlock()
}

func (h *hiding) show(keys []string) {
	h.mu.Lock()
	for _, k := range keys {
		delete(h.hidden, k)
	}
	h.mu.Unlock()
}

func (h *hiding) visible(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.hidden[name]
}

func (h *hiding) List(ctx context.Context, d, after string, fn func(store.Object) error) error {
	return h.Store.List(ctx, d, after, func(o store.Object) error {
		if !h.visible(o.Name) {
			return nil
		}
		return fn(o)
	})
}

func (h *hiding) ListTree(ctx context.Context, d string, fn func(store.Object) error) error {
	return h.Store.ListTree(ctx, d, func(o store.Object) error {
		if !h.visible(o.Name) {
			return nil
		}
		return fn(o)
	})
}

// cpuTime is the process's user + system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMultiReceive measures a many-stream receiver (Multi) applying
// 100 streams' segments, one op being one round of every stream's next
// 200 records: stored as 100 segments, or as one bundle of 100 parts
// (docs/STREAMS.md, "Bundle segments"). Every round is stored before the
// clock starts and shown to the listings one at a time; the op ends when
// every stream has applied it. It reports the process's CPU per
// stream-segment (cpu-us/part), listing, reading, checking, applying
// (file: applier, an fsync per segment) and checkpointing included.
func BenchmarkMultiReceive(b *testing.B) {
	const streams, per = 100, 200
	for _, bundled := range []bool{false, true} {
		name := "segments"
		if bundled {
			name = "bundles"
		}
		b.Run(name, func(b *testing.B) {
			root := b.TempDir()
			raw, err := dir.New(filepath.Join(root, "store"))
			if err != nil {
				b.Fatal(err)
			}
			st := &hiding{Store: raw, hidden: map[string]bool{}}
			w := bundletest.NewWriter(b, st, "00000000000000b1")
			var names []string
			for i := range streams {
				names = append(names, fmt.Sprintf("s%03d", i))
			}
			rounds := make([][]string, b.N+1) // the keys each round stores
			for r := range rounds {
				if !bundled {
					for _, s := range names {
						seg := w.Seal(b, s, per)
						key := batch.SegmentKey(s, seg.Name)
						if r > 0 {
							st.hide(key)
						}
						if err := st.Put(context.Background(), key, seg.Data); err != nil {
							b.Fatal(err)
						}
						rounds[r] = append(rounds[r], key)
					}
					continue
				}
				key := catalog.BundleKey(w.ID, w.Next)
				if r > 0 {
					st.hide(key)
				}
				w.Bundle(b, names, per)
				rounds[r] = append(rounds[r], key)
			}
			open := func(stream string, fence func() error) (*receiver.Receiver, error) {
				cfg := receiver.Config{Stream: stream, StateDir: filepath.Join(root, "state", stream), Store: st,
					Applier: &apply.File{Path: filepath.Join(root, stream+".log")}, Fence: fence}
				if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
					return nil, err
				}
				return receiver.Open(cfg, slog.New(slog.DiscardHandler))
			}
			m, err := receiver.NewMulti(receiver.MultiConfig{Store: st, Match: func(string) bool { return true }, Open: open,
				PollMin: 20 * time.Millisecond, PollMax: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			waitApplied := func(seq uint64) {
				deadline := time.Now().Add(2 * time.Minute)
				for _, s := range names {
					for {
						if r := m.Receiver(s); r != nil && r.Checkpoint().LastSeq >= seq {
							break
						}
						if time.Now().After(deadline) {
							b.Fatalf("stream %s not applied through seq %d in 2 minutes", s, seq)
						}
						time.Sleep(2 * time.Millisecond)
					}
				}
			}
			waitApplied(per)
			b.ResetTimer()
			cpu := cpuTime(b)
			for r := 1; r <= b.N; r++ {
				st.show(rounds[r])
				waitApplied(uint64((r + 1) * per))
			}
			cpu = cpuTime(b) - cpu
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*streams), "cpu-us/part")
		})
	}
}
