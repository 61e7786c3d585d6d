package receiver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/storetest"
)

func TestAppliesChainInOrder(t *testing.T) {
	segs := receivertest.Chain(t, 5, 10)
	st, _ := receivertest.NewStore(t)
	// Stored out of order: the receiver must apply by seq, not by arrival.
	receivertest.Put(t, st, segs[3], segs[0], segs[4], segs[2], segs[1])

	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	r := receivertest.Open(t, receivertest.Config(t, st, ap))
	if err := receivertest.Run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if got, want := ap.Applied(), names(segs...); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[4], "after Run")
	receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after Run")
	s := r.Stats()
	if s.Segments != 5 || s.Records != 50 || s.LastSeq != 50 || s.LastHash != segs[4].Hash {
		t.Fatalf("stats %+v, want 5 segments, 50 records, last seq 50", s)
	}
	var size int64
	for _, sg := range segs {
		size += int64(len(sg.Data))
	}
	if s.Bytes != size {
		t.Fatalf("stats report %d bytes read, the segments hold %d", s.Bytes, size)
	}
}

func TestRestartResumesWhereItStopped(t *testing.T) {
	segs := receivertest.Chain(t, 5, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[:3]...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, nil)

	first := newRecorder(replica)
	cfg.Applier = first
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after the first run")
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after the first run")

	receivertest.Put(t, st, segs[3:]...)
	second := newRecorder(replica)
	cfg.Applier = second
	cp = receivertest.RunOnce(t, cfg)
	if got, want := second.Applied(), names(segs[3:]...); !slices.Equal(got, want) {
		t.Fatalf("second run applied %v, want only the new %v", got, want)
	}
	receivertest.WantCheckpoint(t, cp, segs[4], "after the second run")
	receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after the second run")

	// A third run with nothing new applies nothing.
	third := newRecorder(replica)
	cfg.Applier = third
	receivertest.RunOnce(t, cfg)
	if got := third.Applied(); len(got) != 0 {
		t.Fatalf("run with nothing new applied %v", got)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after a run with nothing new")
}

// A crash after an Apply and before its checkpoint is written leaves the
// replica ahead of the checkpoint. Re-applying the segments must find
// those bytes to be theirs and give every record exactly once.
func TestCrashBetweenApplyAndCheckpoint(t *testing.T) {
	segs := receivertest.Chain(t, 5, 10)
	checkpointPath := func(cfg receiver.Config) string { return filepath.Join(cfg.StateDir, "checkpoint.ferry") }

	// The crash is simulated by putting back the checkpoint file as it was
	// before a run, while the replica keeps what that run appended.
	t.Run("restored checkpoint", func(t *testing.T) {
		st, _ := receivertest.NewStore(t)
		receivertest.Put(t, st, segs[:3]...)
		replica := filepath.Join(t.TempDir(), "replica")
		cfg := receivertest.Config(t, st, newRecorder(replica))
		receivertest.RunOnce(t, cfg)
		saved, err := os.ReadFile(checkpointPath(cfg))
		if err != nil {
			t.Fatal(err)
		}

		receivertest.Put(t, st, segs[3:]...)
		cfg.Applier = newRecorder(replica)
		receivertest.RunOnce(t, cfg)
		receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after the second run")
		if err := os.WriteFile(checkpointPath(cfg), saved, 0o644); err != nil {
			t.Fatal(err)
		}

		again := newRecorder(replica)
		cfg.Applier = again
		r := receivertest.Open(t, cfg)
		receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after reopening at the older checkpoint: nothing cut before it is checked")
		if err := receivertest.Run(t, r); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if got, want := again.Applied(), names(segs[3:]...); !slices.Equal(got, want) {
			t.Fatalf("after the crash applied %v, want %v", got, want)
		}
		receivertest.WantCheckpoint(t, r.Checkpoint(), segs[4], "after re-applying")
		receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after re-applying")
	})

	// The very first Apply of a new state dir, lost before its checkpoint:
	// the replica then holds bytes while the checkpoint is still the one
	// Open created. That must be undone like any other crash, not taken for
	// a foreign file the receiver refuses to touch.
	t.Run("first segment", func(t *testing.T) {
		st, _ := receivertest.NewStore(t)
		receivertest.Put(t, st, segs[:2]...)
		replica := filepath.Join(t.TempDir(), "replica")
		cfg := receivertest.Config(t, st, newRecorder(replica))
		r := receivertest.Open(t, cfg)
		initial, err := os.ReadFile(checkpointPath(cfg))
		if err != nil {
			t.Fatal(err)
		}
		if err := receivertest.Run(t, r); err != nil {
			t.Fatalf("Run: %v", err)
		}
		r.Close()
		if err := os.WriteFile(checkpointPath(cfg), initial, 0o644); err != nil {
			t.Fatal(err)
		}

		cfg.Applier = newRecorder(replica)
		r, err = receiver.Open(cfg, receivertest.Quiet)
		if err != nil {
			t.Fatalf("reopen after a crash before the first checkpoint: %v", err)
		}
		t.Cleanup(func() { r.Close() })
		receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after reopening at the initial checkpoint: nothing cut before it is checked")
		if err := receivertest.Run(t, r); err != nil {
			t.Fatalf("Run: %v", err)
		}
		receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after re-applying")
	})

	// The same crash, made by failing the applier's State call: Apply has
	// appended, the checkpoint write that follows never happens.
	for _, at := range []int{0, 2} {
		t.Run(fmt.Sprintf("state fails after segment %d", at+1), func(t *testing.T) {
			st, _ := receivertest.NewStore(t)
			receivertest.Put(t, st, segs...)
			replica := filepath.Join(t.TempDir(), "replica")
			errCrash := errors.New("simulated crash")
			ap := newRecorder(replica)
			ap.failState = func(last string) error {
				if last == segs[at].Name {
					return fmt.Errorf("%w: %w", errCrash, receiver.ErrFatal)
				}
				return nil
			}
			cfg := receivertest.Config(t, st, ap)
			r := receivertest.Open(t, cfg)
			if err := receivertest.Run(t, r); !errors.Is(err, errCrash) {
				t.Fatalf("Run: %v, want the simulated crash", err)
			}
			r.Close()
			receivertest.WantFile(t, replica, receivertest.Want(1, segs[at].Meta.LastSeq), "after the crash (applied, not checkpointed)")
			if at > 0 {
				receivertest.WantCheckpoint(t, loadCheckpoint(t, cfg), segs[at-1], "after the crash")
			} else if cp := loadCheckpoint(t, cfg); cp.LastSeq != 0 {
				t.Fatalf("checkpoint at seq %d after a crash in the first segment", cp.LastSeq)
			}

			cfg.Applier = newRecorder(replica)
			cp := receivertest.RunOnce(t, cfg)
			receivertest.WantCheckpoint(t, cp, segs[4], "after restart")
			receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after restart")
		})
	}
}

// After a segment was applied but its checkpoint could not be written,
// the applier is ahead of the checkpoint. Running the same Receiver again
// must not apply that segment a second time: only a reopen (which restores
// the applier to the checkpoint) may continue.
func TestRunAfterFailedCheckpointDoesNotReapply(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	failed := false
	ap.failState = func(last string) error {
		if last == segs[1].Name && !failed {
			failed = true
			return errors.New("state dir full")
		}
		return nil
	}
	cfg := receivertest.Config(t, st, ap)
	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); err == nil {
		t.Fatal("Run succeeded though the checkpoint after segment 2 failed")
	}
	if err := receivertest.Run(t, r); err == nil {
		t.Fatal("second Run on the same receiver succeeded")
	} else if !strings.Contains(err.Error(), "reopen") {
		t.Errorf("second Run: %q, want it to say the receiver must be reopened", err)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after running again on the same receiver")
	if got, want := ap.Applied(), names(segs[0], segs[1]); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	r.Close()

	cfg.Applier = newRecorder(replica)
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after reopening")
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after reopening")
}

func TestDamagedSegmentStops(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"flipped byte", func(b []byte) []byte {
			m, off, err := batch.ParseMeta(b)
			if err != nil || m.PayloadSize < 64 {
				panic(fmt.Sprintf("test segment payload too small to damage: %v", err))
			}
			b[off+(len(b)-off)/2] ^= 0x01
			return b
		}},
		{"truncated", func(b []byte) []byte { return b[:len(b)-7] }},
		{"extended", func(b []byte) []byte { return append(b, 0) }},
		{"metadata garbled", func(b []byte) []byte { b[16] = '}'; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs := receivertest.Chain(t, 3, 10)
			st, root := receivertest.NewStore(t)
			receivertest.Put(t, st, segs...)
			path := filepath.Join(root, filepath.FromSlash(segs[1].Key()))
			if err := os.WriteFile(path, tc.damage(append([]byte(nil), segs[1].Data...)), 0o644); err != nil {
				t.Fatal(err)
			}
			replica := filepath.Join(t.TempDir(), "replica")
			ap := newRecorder(replica)
			cfg := receivertest.Config(t, st, ap)
			// A running receiver stops too: damage is not waited out.
			cfg.Once = false
			cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour
			r := receivertest.Open(t, cfg)
			err := receivertest.Run(t, r)
			if !errors.Is(err, batch.ErrCorrupt) {
				t.Fatalf("Run: %v, want an error wrapping batch.ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), segs[1].Key()) {
				t.Errorf("error %q does not name the segment %s", err, segs[1].Key())
			}
			if got, want := ap.Applied(), names(segs[0]); !slices.Equal(got, want) {
				t.Fatalf("applied %v, want %v", got, want)
			}
			receivertest.WantCheckpoint(t, r.Checkpoint(), segs[0], "after the damaged segment")
			receivertest.WantCheckpoint(t, loadCheckpoint(t, cfg), segs[0], "checkpoint file after the damaged segment")
			receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after the damaged segment")
			r.Close()

			// Restored from another copy, the rest applies.
			if err := os.WriteFile(path, segs[1].Data, 0o644); err != nil {
				t.Fatal(err)
			}
			cfg.Applier = newRecorder(replica)
			cfg.Once = true
			cp := receivertest.RunOnce(t, cfg)
			receivertest.WantCheckpoint(t, cp, segs[2], "after restoring the segment")
			receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after restoring the segment")
		})
	}
}

func TestChainErrors(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	next := segs[1]
	for _, tc := range []struct {
		name string
		bad  func(t *testing.T) (string, []byte) // name and content stored after segs[0]
		msg  string
	}{
		{"other stream", func(t *testing.T) (string, []byte) {
			s := receivertest.SealSeg(t, "other", 1, 11, 20, segs[0].Hash)
			return s.Name, s.Data
		}, `stream "other"`},
		{"previous hash", func(t *testing.T) (string, []byte) {
			s := receivertest.SealSeg(t, receivertest.Stream, 1, 11, 20, batch.Hash([]byte("some other segment")))
			return s.Name, s.Data
		}, "previous-segment hash"},
		{"name disagrees with metadata", func(t *testing.T) (string, []byte) {
			s := receivertest.SealSeg(t, receivertest.Stream, 1, 11, 15, segs[0].Hash)
			return next.Name, s.Data
		}, "name disagrees"},
		{"generation", func(t *testing.T) (string, []byte) {
			s := receivertest.SealSeg(t, receivertest.Stream, 2, 11, 20, segs[0].Hash)
			return next.Name, s.Data
		}, "generation 2, expected 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := receivertest.NewStore(t)
			receivertest.Put(t, st, segs[0])
			name, data := tc.bad(t)
			receivertest.PutAs(t, st, name, data)
			replica := filepath.Join(t.TempDir(), "replica")
			ap := newRecorder(replica)
			r := receivertest.Open(t, receivertest.Config(t, st, ap))
			err := receivertest.Run(t, r)
			if !errors.Is(err, receiver.ErrChain) {
				t.Fatalf("Run: %v, want ErrChain", err)
			}
			for _, s := range []string{batch.SegmentKey(receivertest.Stream, name), tc.msg} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if got, want := ap.Applied(), names(segs[0]); !slices.Equal(got, want) {
				t.Fatalf("applied %v, want %v", got, want)
			}
			receivertest.WantCheckpoint(t, r.Checkpoint(), segs[0], "after the chain error")
			receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after the chain error")
		})
	}
}

// The stream's first segment chains to the zero hash, as verify demands;
// one that claims a predecessor is not the start of this stream.
func TestFirstSegmentMustChainToZero(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.SealSeg(t, receivertest.Stream, 1, 1, 10, batch.Hash([]byte("an earlier segment"))))
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	r := receivertest.Open(t, receivertest.Config(t, st, ap))
	err := receivertest.Run(t, r)
	if !errors.Is(err, receiver.ErrChain) || !strings.Contains(err.Error(), "not zero") {
		t.Fatalf("Run: %v, want ErrChain about the first segment's previous hash", err)
	}
	if got := ap.Applied(); len(got) != 0 {
		t.Fatalf("applied %v", got)
	}
}

func TestTransientStoreErrorsAreRetried(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	errFlaky := errors.New("connection reset")
	var lists, gets, shortReads atomic.Int32
	faulty := &storetest.Faulty{
		Store: st,
		ListFn: func(ctx context.Context, dir, after string, fn func(store.Object) error) error {
			if lists.Add(1) <= 3 {
				return errFlaky
			}
			return st.List(ctx, dir, after, fn)
		},
		GetFn: func(ctx context.Context, name string) (io.ReadCloser, error) {
			switch n := gets.Add(1); {
			case n <= 3:
				return nil, fmt.Errorf("get %s: %w", name, errFlaky)
			case n <= 5:
				// The body breaks off mid-segment.
				shortReads.Add(1)
				rc, err := st.Get(ctx, name)
				if err != nil {
					return nil, err
				}
				return struct {
					io.Reader
					io.Closer
				}{io.MultiReader(io.LimitReader(rc, 100), iotestErr{errFlaky}), rc}, nil
			}
			return st.Get(ctx, name)
		},
	}
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, faulty, newRecorder(replica))
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after transient errors")
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after transient errors")
	if lists.Load() < 4 || gets.Load() != 8 || shortReads.Load() != 2 {
		t.Fatalf("lists=%d gets=%d short reads=%d, want >=4, 8 (5 failed + 3), 2", lists.Load(), gets.Load(), shortReads.Load())
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func TestPermanentStoreErrorsStopAtOnce(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	for _, op := range []string{"list", "get"} {
		t.Run(op, func(t *testing.T) {
			st, _ := receivertest.NewStore(t)
			receivertest.Put(t, st, segs...)
			var calls atomic.Int32
			errDenied := fmt.Errorf("access denied: %w", store.ErrPermanent)
			faulty := &storetest.Faulty{Store: st}
			if op == "list" {
				faulty.ListFn = func(ctx context.Context, dir, after string, fn func(store.Object) error) error {
					calls.Add(1)
					return errDenied
				}
			} else {
				faulty.GetFn = func(ctx context.Context, name string) (io.ReadCloser, error) {
					calls.Add(1)
					return nil, errDenied
				}
			}
			replica := filepath.Join(t.TempDir(), "replica")
			cfg := receivertest.Config(t, faulty, newRecorder(replica))
			cfg.Once = false
			cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour // a retry would hang the test
			r := receivertest.Open(t, cfg)
			err := receivertest.Run(t, r)
			if !errors.Is(err, store.ErrPermanent) {
				t.Fatalf("Run: %v, want ErrPermanent", err)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("%s called %d times, want 1 (no retry)", op, n)
			}
			if cp := r.Checkpoint(); cp.LastSeq != 0 {
				t.Fatalf("checkpoint at seq %d, want 0", cp.LastSeq)
			}
		})
	}
}

func TestOpenRefusesStateInUse(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	r := receivertest.Open(t, cfg)

	cfg2 := cfg
	cfg2.Applier = newRecorder(filepath.Join(t.TempDir(), "other"))
	if r2, err := receiver.Open(cfg2, receivertest.Quiet); err == nil {
		r2.Close()
		t.Fatal("second Open of a state dir in use succeeded")
	} else if !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), cfg.StateDir) {
		t.Fatalf("second Open: %q, want it to say %s is in use", err, cfg.StateDir)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cfg2.Applier = newRecorder(replica)
	receivertest.Open(t, cfg2).Close()
}

func TestOpenRefusesAnotherStreamsState(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	receivertest.RunOnce(t, cfg)

	c := cfg
	c.Applier = newRecorder(filepath.Join(t.TempDir(), "replica"))
	c.Stream = "other"
	r, err := receiver.Open(c, receivertest.Quiet)
	if err == nil {
		r.Close()
		t.Fatal("Open succeeded")
	}
	if !strings.Contains(err.Error(), `belongs to stream "app"`) || !strings.Contains(err.Error(), cfg.StateDir) {
		t.Fatalf("Open: %q, want it to name the state dir and its stream", err)
	}
}

func TestOpenRefusesBadConfig(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	for _, tc := range []struct {
		name   string
		change func(*receiver.Config)
		msg    string
	}{
		{"stream name", func(c *receiver.Config) { c.Stream = "../etc" }, "stream name"},
		{"no state dir", func(c *receiver.Config) { c.StateDir = "" }, "state directory not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
			tc.change(&c)
			r, err := receiver.Open(c, receivertest.Quiet)
			if err == nil {
				r.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Open: %q, want it to mention %q", err, tc.msg)
			}
		})
	}
}
