// Package receivertest holds helpers for tests that run segments through a
// real receiver: test chains of sealed segments, a directory store to put
// them in, a Config with short intervals, and checks of what a replica and
// its checkpoint hold. The receiver's external tests and receiver/apply's
// tests share it.
package receivertest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// Quiet is the logger for tests: the receiver logs retries and gaps on
// purpose, which would only clutter the output.
var Quiet = slog.New(slog.DiscardHandler)

// Stream is the stream every test receives unless it says otherwise.
const Stream = "app"

// Seg is one sealed segment of a test chain.
type Seg struct {
	Name string // file name, e.g. 00000001-0000000000000001-000000000000000a.seg.zst
	Data []byte
	Meta batch.Meta
	Hash string
}

// Key is the segment's object name in a store, under Stream.
func (s Seg) Key() string { return batch.SegmentKey(Stream, s.Name) }

// RecData is the data of record seq: a line with a hash in it, so that it
// compresses poorly and the payload is most of a segment's bytes.
func RecData(seq uint64) []byte {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, seq))
	return fmt.Appendf(nil, "record %06d %x\n", seq, sum[:24])
}

// Want is what a replica holds after records from..to have been applied.
func Want(from, to uint64) []byte {
	var b bytes.Buffer
	for seq := from; seq <= to; seq++ {
		b.Write(RecData(seq))
	}
	return b.Bytes()
}

// SealSeg builds a segment of stream and generation gen holding records
// first..last, chained to a predecessor whose hash is prev.
func SealSeg(t *testing.T, stream string, gen uint32, first, last uint64, prev string) Seg {
	t.Helper()
	return SealWith(t, stream, gen, first, last, prev, RecData)
}

// SealWith is SealSeg with the data of record seq given by recData.
func SealWith(t *testing.T, stream string, gen uint32, first, last uint64, prev string, recData func(seq uint64) []byte) Seg {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset(stream, gen, prev)
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for seq := first; seq <= last; seq++ {
		r := batch.Record{Seq: seq, Time: base.Add(time.Duration(seq) * time.Second), Data: recData(seq)}
		if err := b.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	data, meta, err := b.Seal(base)
	if err != nil {
		t.Fatal(err)
	}
	return Seg{Name: meta.Name(), Data: data, Meta: meta, Hash: batch.Hash(data)}
}

// Chain builds n consecutive segments of Stream, generation 1, each
// holding per records: segs[i] holds seqs i*per+1 .. (i+1)*per.
func Chain(t *testing.T, n, per int) []Seg {
	t.Helper()
	segs := make([]Seg, n)
	prev := batch.ZeroHash
	for i := range segs {
		first := uint64(i*per + 1)
		segs[i] = SealSeg(t, Stream, 1, first, first+uint64(per)-1, prev)
		prev = segs[i].Hash
	}
	return segs
}

// NewStore returns a directory store in a fresh temp dir and its root.
func NewStore(t *testing.T) (*dir.Store, string) {
	t.Helper()
	root := t.TempDir()
	st, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return st, root
}

// Put stores segs under their own names in Stream.
func Put(t *testing.T, st store.Store, segs ...Seg) {
	t.Helper()
	for _, s := range segs {
		PutAs(t, st, s.Name, s.Data)
	}
}

// PutAs stores data as segment name of Stream, whatever it holds.
func PutAs(t *testing.T, st store.Store, name string, data []byte) {
	t.Helper()
	if err := st.Put(context.Background(), batch.SegmentKey(Stream, name), data); err != nil {
		t.Fatal(err)
	}
}

// Config receives Stream from st into a fresh state dir with intervals
// short enough for tests, in Once mode.
func Config(t *testing.T, st store.Store, ap receiver.Applier) receiver.Config {
	return receiver.Config{
		Stream:     Stream,
		StateDir:   filepath.Join(t.TempDir(), "state"),
		Store:      st,
		Applier:    ap,
		GapTimeout: 100 * time.Millisecond,
		PollMin:    time.Millisecond,
		PollMax:    5 * time.Millisecond,
		RetryMin:   time.Millisecond,
		RetryMax:   5 * time.Millisecond,
		Once:       true,
	}
}

// Open opens cfg and closes the receiver when the test ends (closing it
// earlier as well is harmless).
func Open(t *testing.T, cfg receiver.Config) *receiver.Receiver {
	t.Helper()
	r, err := receiver.Open(cfg, Quiet)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Run runs r with a deadline, so a receiver that never returns fails the
// test instead of hanging it.
func Run(t *testing.T, r *receiver.Receiver) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Run did not return within 10s")
	}
	return err
}

// RunOnce opens cfg, runs it once, wants success and closes it.
func RunOnce(t *testing.T, cfg receiver.Config) receiver.Checkpoint {
	t.Helper()
	r := Open(t, cfg)
	if err := Run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	cp := r.Checkpoint()
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return cp
}

// WantFile fails the test unless path holds exactly data.
func WantFile(t *testing.T, path string, data []byte, when string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: replica %s is %d bytes, want %d (first difference at byte %d)",
			when, path, len(got), len(data), firstDiff(got, data))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// WantCheckpoint fails the test unless cp is just after s.
func WantCheckpoint(t *testing.T, cp receiver.Checkpoint, s Seg, when string) {
	t.Helper()
	if cp.LastSeq != s.Meta.LastSeq || cp.LastHash != s.Hash || cp.Segment != s.Name {
		t.Fatalf("%s: checkpoint at seq %d hash %.16s segment %q, want seq %d hash %.16s segment %q",
			when, cp.LastSeq, cp.LastHash, cp.Segment, s.Meta.LastSeq, s.Hash, s.Name)
	}
}

// Eventually polls cond until it holds or 5s pass.
func Eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WaitReturned waits up to 5s for a cancelled Run to send its result on
// done, and fails the test with msg if it does not, or if Run failed.
func WaitReturned(t *testing.T, done <-chan error, msg string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}
