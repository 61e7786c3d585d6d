// Package bundletest builds stores of streams whose segments are stored
// alone and in bundles, as a bundle-writing shipper leaves them
// (docs/STREAMS.md, "The wiring plan"): chained segments sealed by
// batch.Builder, packed by batch.BundleWriter into
// "_bundles/<writer>/<n>.bundle", and each stream's bundle marker written
// before its first part's bundle. Readers' tests use it in place of a
// shipper.
package bundletest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// RecData is record seq of stream: a line naming both, with a hash in it
// so that it compresses poorly.
func RecData(stream string, seq uint64) []byte {
	sum := sha256.Sum256(binary.BigEndian.AppendUint64([]byte(stream), seq))
	return fmt.Appendf(nil, "%s %06d %x\n", stream, seq, sum[:16])
}

// Want is what a replica of stream holds after records from..to.
func Want(stream string, from, to uint64) []byte {
	var b bytes.Buffer
	for seq := from; seq <= to; seq++ {
		b.Write(RecData(stream, seq))
	}
	return b.Bytes()
}

// Seg is a sealed segment.
type Seg struct {
	Name string
	Data []byte
	Meta batch.Meta
	Hash string
}

// Writer writes streams' segments into a store, alone or in bundles of one
// writer id, each stream's chain continuing across both.
type Writer struct {
	Store  store.Store
	ID     string // the writer id, 16 hex digits
	Gen    uint32
	Next   uint64            // the next bundle's number
	seq    map[string]uint64 // per stream: the last seq sealed
	prev   map[string]string // per stream: the last segment's hash
	marked map[string]bool   // streams with a marker of this writer's start
	b      *batch.Builder
}

// NewWriter writes into st as writer id (generation 1, bundles from 1).
func NewWriter(t testing.TB, st store.Store, id string) *Writer {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	return &Writer{Store: st, ID: id, Gen: 1, Next: 1, seq: map[string]uint64{}, prev: map[string]string{}, marked: map[string]bool{}, b: b}
}

// Restart forgets which streams have a marker, as a new ship start does:
// the next bundle of each stream writes a new marker.
func (w *Writer) Restart() { w.marked = map[string]bool{} }

// Last is the last seq sealed of stream.
func (w *Writer) Last(stream string) uint64 { return w.seq[stream] }

// Seal seals the next n records of stream, chained to its last segment,
// without storing them.
func (w *Writer) Seal(t testing.TB, stream string, n int) Seg {
	t.Helper()
	prev := w.prev[stream]
	if prev == "" {
		prev = batch.ZeroHash
	}
	w.b.Reset(stream, w.Gen, prev)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first := w.seq[stream] + 1
	for seq := first; seq < first+uint64(n); seq++ {
		r := batch.Record{Seq: seq, Time: base.Add(time.Duration(seq) * time.Millisecond), Data: RecData(stream, seq)}
		if err := w.b.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	data, meta, err := w.b.Seal(base)
	if err != nil {
		t.Fatal(err)
	}
	data = slices.Clone(data)
	w.seq[stream] = meta.LastSeq
	w.prev[stream] = batch.Hash(data)
	return Seg{Name: meta.Name(), Data: data, Meta: meta, Hash: w.prev[stream]}
}

// Alone seals the next n records of stream and stores them as a segment
// of its own.
func (w *Writer) Alone(t testing.TB, stream string, n int) Seg {
	t.Helper()
	s := w.Seal(t, stream, n)
	if err := w.Store.Put(context.Background(), batch.SegmentKey(stream, s.Name), s.Data); err != nil {
		t.Fatal(err)
	}
	return s
}

// Bundle seals the next n records of each stream and stores them as one
// bundle, writing first the marker of each stream not marked since the
// writer's start. It returns the bundle's store name and its parts.
func (w *Writer) Bundle(t testing.TB, streams []string, n int) (string, []Seg) {
	t.Helper()
	segs := make([]Seg, 0, len(streams))
	for _, s := range slices.Sorted(slices.Values(streams)) {
		segs = append(segs, w.Seal(t, s, n))
	}
	return w.Put(t, segs...), segs
}

// Put packs segs (in ascending order of stream) into the writer's next
// bundle and stores it, writing the markers first.
func (w *Writer) Put(t testing.TB, segs ...Seg) string {
	t.Helper()
	key, data := w.Pack(t, segs...)
	if err := w.Store.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
	return key
}

// Pack is Put without the bundle's put: it writes the markers and
// returns the bundle's store name and bytes, for a test to store (or
// damage first).
func (w *Writer) Pack(t testing.TB, segs ...Seg) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	n := w.Next
	w.Next++
	var buf bytes.Buffer
	bw := batch.NewBundleWriter(&buf)
	for _, s := range segs {
		if err := bw.Add(s.Data, s.Hash); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		if w.marked[s.Meta.Stream] {
			continue
		}
		m := catalog.BundleMarker{Stream: s.Meta.Stream, Writer: w.ID, FirstBundle: n, FirstSeq: s.Meta.FirstSeq}
		if err := catalog.WriteBundleMarker(ctx, w.Store, m); err != nil {
			t.Fatal(err)
		}
		w.marked[s.Meta.Stream] = true
	}
	return catalog.BundleKey(w.ID, n), buf.Bytes()
}

// Counting is a store that counts the reads of each object (Get,
// GetRange, GetSuffix), to show which bundles a reader reads.
type Counting struct {
	store.RangeGetter
	mu    sync.Mutex
	reads map[string]int
}

// NewCounting counts the reads of st.
func NewCounting(st store.RangeGetter) *Counting {
	return &Counting{RangeGetter: st, reads: map[string]int{}}
}

func (c *Counting) count(name string) {
	c.mu.Lock()
	c.reads[name]++
	c.mu.Unlock()
}

func (c *Counting) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	c.count(name)
	return c.RangeGetter.Get(ctx, name)
}

func (c *Counting) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	c.count(name)
	return c.RangeGetter.GetRange(ctx, name, off, p)
}

func (c *Counting) GetSuffix(ctx context.Context, name string, p []byte) (int, int64, error) {
	c.count(name)
	return c.RangeGetter.GetSuffix(ctx, name, p)
}

// Reads is how many times name was read.
func (c *Counting) Reads(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[name]
}

// FixIndexHash sets the trailer's index hash of the bundle data to its
// index's, after a test edited the index: a forged index that reads as
// valid.
func FixIndexHash(data []byte) {
	tr := data[len(data)-batch.BundleTrailerSize:]
	off, n := binary.LittleEndian.Uint64(tr[24:]), binary.LittleEndian.Uint64(tr[32:])
	sum := sha256.Sum256(data[off : off+n])
	copy(tr[40:], sum[:])
}
