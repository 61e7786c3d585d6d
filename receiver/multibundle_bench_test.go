package receiver_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/s3"
)

// hiding is a dir store whose listings leave out the objects hidden, so
// that a benchmark can store every round first and show them one by one
// while a receiver runs: what it measures is the receiver's CPU, not the
// writes'.
type hiding struct {
	benchStore
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
	return h.benchStore.List(ctx, d, after, func(o store.Object) error {
		if !h.visible(o.Name) {
			return nil
		}
		return fn(o)
	})
}

func (h *hiding) ListTree(ctx context.Context, d string, descend func(string) bool, fn func(store.Object) error) error {
	return h.benchStore.ListTree(ctx, d, descend, func(o store.Object) error {
		if !h.visible(o.Name) {
			return nil
		}
		return fn(o)
	})
}

// benchStore is what a Multi reading bundles uses of a store.
type benchStore interface {
	store.Store
	store.TreeLister
	store.RangeGetter
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
//
// With FERRY_VERSITYGW set it also runs both on a versitygw server
// (s3-segments, s3-bundles), and reports the requests per stream-segment
// (reqs/part, counted by the store). The server's CPU is not the
// process's: what is reported is the receiver's.
func BenchmarkMultiReceive(b *testing.B) {
	stores := []string{"dir"}
	if os.Getenv("FERRY_VERSITYGW") != "" {
		stores = append(stores, "s3")
	}
	for _, kind := range stores {
		benchMultiReceive(b, kind)
	}
}

func benchMultiReceive(b *testing.B, kind string) {
	const streams, per = 100, 200
	for _, bundled := range []bool{false, true} {
		name := "segments"
		if bundled {
			name = "bundles"
		}
		if kind != "dir" {
			name = kind + "-" + name
		}
		b.Run(name, func(b *testing.B) {
			root := b.TempDir()
			var raw benchStore
			var reqs *atomic.Int64 // S3 requests, counted by the store
			var kindMu sync.Mutex
			kinds := map[string]int{} // and by kind, since the clock started
			counting := false
			if kind == "dir" {
				d, err := dir.New(filepath.Join(root, "store"))
				if err != nil {
					b.Fatal(err)
				}
				raw = d
			} else {
				srv := versitygw.Start(b)
				srv.CreateBucket(b, "bench")
				reqs = new(atomic.Int64)
				s, err := s3.New(context.Background(), s3.Config{Bucket: "bench", Prefix: "p", Endpoint: srv.Endpoint, Region: "us-east-1",
					AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, OnRequest: func(k string) {
						reqs.Add(1)
						kindMu.Lock()
						if counting {
							kinds[k]++
						}
						kindMu.Unlock()
					}}, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				raw = s
			}
			st := &hiding{benchStore: raw, hidden: map[string]bool{}}
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
			var reqs0 int64
			if reqs != nil {
				reqs0 = reqs.Load()
				kindMu.Lock()
				counting = true
				kindMu.Unlock()
			}
			b.ResetTimer()
			cpu := cpuTime(b)
			for r := 1; r <= b.N; r++ {
				st.show(rounds[r])
				waitApplied(uint64((r + 1) * per))
			}
			cpu = cpuTime(b) - cpu
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*streams), "cpu-us/part")
			if reqs != nil {
				b.ReportMetric(float64(reqs.Load()-reqs0)/float64(b.N*streams), "reqs/part")
				kindMu.Lock()
				b.Logf("%d ops of %d stream-segments: requests by kind %v", b.N, streams, kinds)
				kindMu.Unlock()
			}
		})
	}
}
