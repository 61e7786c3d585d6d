package receiver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// quiet is the logger for tests: the receiver logs retries and gaps on
// purpose, which would only clutter the output.
var quiet = slog.New(slog.DiscardHandler)

// testStream is the stream every test receives unless it says otherwise.
const testStream = "app"

// seg is one sealed segment of a test chain.
type seg struct {
	name string // file name, e.g. 00000001-0000000000000001-000000000000000a.seg.zst
	data []byte
	meta batch.Meta
	hash string
}

// key is the segment's object name in a store, under testStream.
func (s seg) key() string { return batch.SegmentKey(testStream, s.name) }

// recData is the data of record seq: a line with a hash in it, so that it
// compresses poorly and the payload is most of a segment's bytes.
func recData(seq uint64) []byte {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64(nil, seq))
	return fmt.Appendf(nil, "record %06d %x\n", seq, sum[:24])
}

// want is what a replica holds after records from..to have been applied.
func want(from, to uint64) []byte {
	var b bytes.Buffer
	for seq := from; seq <= to; seq++ {
		b.Write(recData(seq))
	}
	return b.Bytes()
}

// sealSeg builds a segment of stream and generation gen holding records
// first..last, chained to a predecessor whose hash is prev.
func sealSeg(t *testing.T, stream string, gen uint32, first, last uint64, prev string) seg {
	t.Helper()
	return sealWith(t, stream, gen, first, last, prev, recData)
}

// sealWith is sealSeg with the data of record seq given by recData.
func sealWith(t *testing.T, stream string, gen uint32, first, last uint64, prev string, recData func(seq uint64) []byte) seg {
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
	return seg{name: meta.Name(), data: data, meta: meta, hash: batch.Hash(data)}
}

// chain builds n consecutive segments of testStream, generation 1, each
// holding per records: segs[i] holds seqs i*per+1 .. (i+1)*per.
func chain(t *testing.T, n, per int) []seg {
	t.Helper()
	segs := make([]seg, n)
	prev := batch.ZeroHash
	for i := range segs {
		first := uint64(i*per + 1)
		segs[i] = sealSeg(t, testStream, 1, first, first+uint64(per)-1, prev)
		prev = segs[i].hash
	}
	return segs
}

// newStore returns a directory store in a fresh temp dir and its root.
func newStore(t *testing.T) (*dir.Store, string) {
	t.Helper()
	root := t.TempDir()
	st, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return st, root
}

// put stores segs under their own names in testStream.
func put(t *testing.T, st store.Store, segs ...seg) {
	t.Helper()
	for _, s := range segs {
		putAs(t, st, s.name, s.data)
	}
}

// putAs stores data as segment name of testStream, whatever it holds.
func putAs(t *testing.T, st store.Store, name string, data []byte) {
	t.Helper()
	if err := st.Put(context.Background(), batch.SegmentKey(testStream, name), data); err != nil {
		t.Fatal(err)
	}
}

// testConfig receives testStream from st into a fresh state dir with
// intervals short enough for tests, in Once mode.
func testConfig(t *testing.T, st store.Store, ap receiver.Applier) receiver.Config {
	return receiver.Config{
		Stream:     testStream,
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

// open opens cfg and closes the receiver when the test ends (closing it
// earlier as well is harmless).
func open(t *testing.T, cfg receiver.Config) *receiver.Receiver {
	t.Helper()
	r, err := receiver.Open(cfg, quiet)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// run runs r with a deadline, so a receiver that never returns fails the
// test instead of hanging it.
func run(t *testing.T, r *receiver.Receiver) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := r.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Run did not return within 10s")
	}
	return err
}

// runOnce opens cfg, runs it once, wants success and closes it.
func runOnce(t *testing.T, cfg receiver.Config) receiver.Checkpoint {
	t.Helper()
	r := open(t, cfg)
	if err := run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	cp := r.Checkpoint()
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return cp
}

// recorder is an apply.File that remembers which segments it applied and
// can fail its State call, which is how a test stops the receiver between
// an Apply and the checkpoint write that should follow it.
type recorder struct {
	*apply.File

	mu        sync.Mutex
	applied   []string
	failState func(last string) error // called with the last applied segment
}

var (
	_ receiver.Applier  = (*recorder)(nil)
	_ receiver.Stateful = (*recorder)(nil)
)

// DeferSync hides File's (a different signature, so recorder is
// not a SyncDeferrer): the receiver checkpoints every segment it applies,
// which the crash-between-apply-and-checkpoint tests rely on. Groups are
// tested in group_test.go.
func (a *recorder) DeferSync() {}

func newRecorder(path string) *recorder {
	return &recorder{File: &apply.File{Path: path}}
}

func (a *recorder) Apply(ctx context.Context, meta *batch.Meta, recs []batch.Record) error {
	if err := a.File.Apply(ctx, meta, recs); err != nil {
		return err
	}
	a.mu.Lock()
	a.applied = append(a.applied, meta.Name())
	a.mu.Unlock()
	return nil
}

func (a *recorder) State() (json.RawMessage, error) {
	a.mu.Lock()
	fail, last := a.failState, ""
	if len(a.applied) > 0 {
		last = a.applied[len(a.applied)-1]
	}
	a.mu.Unlock()
	if fail != nil && last != "" {
		if err := fail(last); err != nil {
			return nil, err
		}
	}
	return a.File.State()
}

func (a *recorder) Applied() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.applied...)
}

// names returns the names of segs.
func names(segs ...seg) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.name
	}
	return out
}

// wantFile fails the test unless path holds exactly data.
func wantFile(t *testing.T, path string, data []byte, when string) {
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

// wantCheckpoint fails the test unless cp is just after s.
func wantCheckpoint(t *testing.T, cp receiver.Checkpoint, s seg, when string) {
	t.Helper()
	if cp.LastSeq != s.meta.LastSeq || cp.LastHash != s.hash || cp.Segment != s.name {
		t.Fatalf("%s: checkpoint at seq %d hash %.16s segment %q, want seq %d hash %.16s segment %q",
			when, cp.LastSeq, cp.LastHash, cp.Segment, s.meta.LastSeq, s.hash, s.name)
	}
}

// loadCheckpoint reads the checkpoint in cfg's state dir.
func loadCheckpoint(t *testing.T, cfg receiver.Config) receiver.Checkpoint {
	t.Helper()
	cp, ok, err := receiver.LoadCheckpoint(cfg.StateDir)
	if err != nil || !ok {
		t.Fatalf("LoadCheckpoint(%s): ok=%v err=%v", cfg.StateDir, ok, err)
	}
	return cp
}

// eventually polls cond until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
