package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// A stream's segments are stored alone, as "<stream>/<segment name>", or
// as parts of bundles ("_bundles/<writer>/<n>.bundle") that the stream's
// bundle markers point at (docs/STREAMS.md, "How a single-stream reader
// finds its segments"). SegmentLister finds both and yields them merged in
// the order of their names, which is seq order within a generation: one
// LIST of "<stream>/", one of "<stream>/bundled/" (each new marker read
// once), one of "_bundles/<writer>/" per writer after the reader's
// position, and one suffix-range read of each new bundle's index (a
// second ranged read if the index is over IndexRead bytes). A bundle's
// index is read once per lister: bundles are immutable.

// IndexRead is how many bytes of a bundle's end one read fetches: the
// trailer and, for up to about 400 streams of 20-character names, the
// whole index.
const IndexRead = 64 << 10

// Segment is one segment of a stream, stored alone or as a bundle's part.
type Segment struct {
	Name string // the segment name (batch.SegmentName)
	Key  string // the store name it is read from: "<stream>/<name>", or the bundle's
	Size int64  // its stored bytes
	// ModTime is when the store wrote it (a part: its bundle), as
	// listed; zero if unknown.
	ModTime time.Time
	Part    *Part // where it lies in its bundle; nil for a segment stored alone
}

// Part is where a stream's segment lies in a bundle, and what the
// bundle's index says of it; ReadPart holds the part's bytes to it.
type Part struct {
	Bundle     string // the bundle's store name
	Writer     string
	Number     uint64
	BundleSize int64     // the bundle's stored size, as listed
	ModTime    time.Time // when the store wrote the bundle, as listed; zero if unknown
	batch.BundlePart
}

// BundlePos is a position in a writer's bundles: bundle Number of Writer
// and those before it are read. The zero value is no position.
type BundlePos struct {
	Writer string `json:"writer"`
	Number uint64 `json:"number"`
}

// IsZero reports whether p is no position.
func (p BundlePos) IsZero() bool { return p.Writer == "" }

// String is "writer/number", for logs and errors.
func (p BundlePos) String() string { return fmt.Sprintf("%s/%d", p.Writer, p.Number) }

// SegmentLister lists one stream's segments. It keeps the bundle markers
// and each bundle's part of the stream it has read (both immutable), so
// a reader that follows the stream reads each only once. It is safe for
// use by one goroutine at a time.
type SegmentLister struct {
	Store  store.Store
	Stream string
	// MaxBundleBytes refuses a bundle larger than this before any read
	// (batch.DefaultMaxBundleBytes if <= 0).
	MaxBundleBytes int64
	// OnDamaged, if set, is called with each bundle whose index does
	// not read (batch.ErrCorrupt, ErrSegmentTooLarge or a newer format),
	// which is then passed over: for a report of every defect (ferry
	// verify). Unset, such a bundle is List's error.
	OnDamaged func(bundle string, err error)

	mu      sync.Mutex
	markers map[string]BundleMarker // by store name
	parts   map[string]*Part        // by bundle store name; nil: the bundle holds no part of Stream
}

// NewSegmentLister lists stream's segments in st.
func NewSegmentLister(st store.Store, stream string) *SegmentLister {
	return &SegmentLister{Store: st, Stream: stream}
}

// Segments lists stream's segments in st whose names sort after after
// ("" for all), stored alone or in bundles: see SegmentLister.List.
func Segments(ctx context.Context, st store.Store, stream, after string) ([]Segment, error) {
	return NewSegmentLister(st, stream).List(ctx, after, BundlePos{})
}

// List returns the stream's segments whose names sort after after, in
// the order of their names; a segment stored alone comes before a part
// of the same name (two copies of one range: readers refuse them as an
// overlap). Bundles of pos.Writer numbered up to pos.Number are not read:
// pos is the bundle of the last part a reader applied, and a writer puts
// a stream's parts in bundles of rising numbers.
//
// A bundle marker or a bundle index that does not read as the format says
// is an error naming it (ErrCorrupt from package batch; a reader that
// passed over it could miss the stream's segments). A bundle listed and
// gone when read (pruned meanwhile) is passed over. A marker whose
// bundles are all gone lists nothing.
func (l *SegmentLister) List(ctx context.Context, after string, pos BundlePos) ([]Segment, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := batch.CheckStream(l.Stream); err != nil {
		return nil, err
	}
	dir := batch.StreamDir(l.Stream)
	start := ""
	if after != "" {
		start = dir + after
	}
	var out []Segment
	err := l.Store.List(ctx, dir, start, func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		if _, _, _, ok := batch.ParseSegmentName(name); ok {
			out = append(out, Segment{Name: name, Key: o.Name, Size: o.Size, ModTime: o.ModTime})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	writers, err := l.writers(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range writers {
		from := w.first - 1 // list after it
		if w.writer == pos.Writer {
			from = max(from, pos.Number)
		}
		parts, err := l.bundleParts(ctx, w.writer, from)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if name := p.Name(); name > after {
				out = append(out, Segment{Name: name, Key: p.Bundle, Size: p.Length, ModTime: p.ModTime, Part: p})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Part == nil && out[j].Part != nil
	})
	return out, nil
}

// writerFrom is a writer whose bundles may hold the stream's parts from
// bundle number first on.
type writerFrom struct {
	writer string
	first  uint64
}

// writers reads the stream's bundle markers (those not read before) and
// returns each writer named, with the lowest first bundle its markers give.
func (l *SegmentLister) writers(ctx context.Context) ([]writerFrom, error) {
	dir := BundledDir(l.Stream)
	var fresh []string
	err := l.Store.List(ctx, dir, "", func(o store.Object) error {
		if _, ok := l.markers[o.Name]; !ok {
			fresh = append(fresh, o.Name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list bundle markers %s: %w", dir, err)
	}
	for _, key := range fresh {
		m, err := ReadBundleMarker(ctx, l.Store, key)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted with the last of its bundles
		}
		if err != nil {
			return nil, err
		}
		if l.markers == nil {
			l.markers = map[string]BundleMarker{}
		}
		l.markers[key] = m
	}
	first := map[string]uint64{}
	for _, m := range l.markers {
		if f, ok := first[m.Writer]; !ok || m.FirstBundle < f {
			first[m.Writer] = m.FirstBundle
		}
	}
	out := make([]writerFrom, 0, len(first))
	for w, f := range first {
		out = append(out, writerFrom{w, f})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].writer < out[j].writer })
	return out, nil
}

// bundleParts lists writer's bundles numbered above from and returns the
// stream's part of each that has one, reading the index of each bundle
// not read before.
func (l *SegmentLister) bundleParts(ctx context.Context, writer string, from uint64) ([]*Part, error) {
	dir := WriterDir(writer)
	start := ""
	if from > 0 {
		start = BundleKey(writer, from)
	}
	type listed struct {
		key  string
		n    uint64
		size int64
		mod  time.Time
	}
	var bundles []listed
	err := l.Store.List(ctx, dir, start, func(o store.Object) error {
		if w, n, ok := ParseBundleKey(o.Name); ok && w == writer && n > from {
			bundles = append(bundles, listed{o.Name, n, o.Size, o.ModTime})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list bundles %s: %w", dir, err)
	}
	if l.parts == nil {
		l.parts = map[string]*Part{}
	}
	// Bundles at or below from are behind every reader of this lister.
	for key := range l.parts {
		if w, n, _ := ParseBundleKey(key); w == writer && n <= from {
			delete(l.parts, key)
		}
	}
	var out []*Part
	for _, b := range bundles {
		p, ok := l.parts[b.key]
		if !ok {
			bd, err := OpenBundle(ctx, l.Store, b.key, b.size, l.MaxBundleBytes)
			if errors.Is(err, store.ErrNotFound) {
				continue // pruned since the listing
			}
			if err != nil && l.OnDamaged != nil && (batch.IsUnreadable(err) || errors.Is(err, batch.ErrNewerFormat)) {
				l.OnDamaged(b.key, err)
				continue
			}
			if err != nil {
				return nil, err
			}
			if i, found := bd.Find(l.Stream); found {
				p = &Part{Bundle: b.key, Writer: writer, Number: b.n, BundleSize: b.size, ModTime: b.mod, BundlePart: bd.Parts[i]}
			}
			l.parts[b.key] = p
		}
		if p != nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// OpenBundle reads the trailer and index of the bundle stored under key,
// of size bytes as listed: one suffix-range read of up to IndexRead bytes,
// and a second ranged read of the index only if it is larger. A bundle
// over limit bytes (batch.DefaultMaxBundleBytes if <= 0) is refused before
// any read, and every size its trailer and index claim is checked
// (batch.OpenBundle) before anything is allocated for it. The returned
// Bundle reads parts through ranged reads that do not watch ctx's
// cancellation after OpenBundle returns; use ReadPart to read a part.
func OpenBundle(ctx context.Context, st store.Store, key string, size, limit int64) (*batch.Bundle, error) {
	if limit <= 0 {
		limit = batch.DefaultMaxBundleBytes
	}
	if size > limit {
		return nil, fmt.Errorf("bundle %s: %d bytes, over the limit of %d: %w", key, size, limit, batch.ErrSegmentTooLarge)
	}
	if size < batch.BundleTrailerSize {
		return nil, fmt.Errorf("bundle %s: %d bytes, shorter than its %d-byte trailer: %w", key, size, batch.BundleTrailerSize, batch.ErrCorrupt)
	}
	tail := make([]byte, min(IndexRead, size))
	if rg, ok := st.(store.RangeGetter); ok {
		n, got, err := rg.GetSuffix(ctx, key, tail)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", key, err)
		}
		if got != size || n != len(tail) {
			return nil, fmt.Errorf("bundle %s has %d bytes, its listing said %d (bundles are never rewritten): %w", key, got, size, batch.ErrCorrupt)
		}
	} else if err := store.GetRange(ctx, st, key, size-int64(len(tail)), tail); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", key, err)
	}
	r := &rangeReader{ctx: ctx, st: st, key: key, tail: tail, tailAt: size - int64(len(tail))}
	b, err := batch.OpenBundle(r, size, limit)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", key, err)
	}
	return b, nil
}

// rangeReader is a bundle object as an io.ReaderAt: reads within its tail
// (already fetched) are served from it, others by a ranged read.
type rangeReader struct {
	ctx    context.Context
	st     store.Store
	key    string
	tail   []byte
	tailAt int64
}

func (r *rangeReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.tailAt && off-r.tailAt+int64(len(p)) <= int64(len(r.tail)) {
		return copy(p, r.tail[off-r.tailAt:]), nil
	}
	if err := store.GetRange(r.ctx, r.st, r.key, off, p); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, io.EOF // shorter than its listing: batch says corrupt
		}
		return 0, err
	}
	return len(p), nil
}

// ReadPart reads the bytes of seg, a part (seg.Part set), with one ranged
// read into buf (grown only if too small) and checks them before anything
// else of them is used: they hash to the index's SHA-256, and their
// metadata names the stream, generation and seqs the index gives (a valid
// segment of another stream or other seqs is refused). A part over limit
// bytes (max_segment_bytes) is refused before it is read. Every refusal of
// the bytes wraps batch.ErrCorrupt and names the bundle and the part; the
// caller then opens them as any segment (batch.Open).
func ReadPart(ctx context.Context, st store.Store, seg Segment, buf []byte, limit int64) ([]byte, error) {
	p := seg.Part
	if p == nil {
		return nil, fmt.Errorf("segment %s is not a bundle part", seg.Key)
	}
	what := fmt.Sprintf("bundle %s part %s/%s", p.Bundle, p.Stream, p.Name())
	if limit > 0 && p.Length > limit {
		return nil, fmt.Errorf("%s: %d bytes, over the limit of %d: %w", what, p.Length, limit, batch.ErrSegmentTooLarge)
	}
	if int64(cap(buf)) < p.Length {
		buf = make([]byte, p.Length)
	}
	buf = buf[:p.Length]
	if err := store.GetRange(ctx, st, p.Bundle, p.Offset, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s: %w: %w", what, err, batch.ErrCorrupt)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := CheckPart(p, buf); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return buf, nil
}

// CheckPart checks data, read as part p: its SHA-256 is the index's and
// its metadata names the stream, generation and seqs the index gives.
func CheckPart(p *Part, data []byte) error {
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != p.SHA256 {
		return fmt.Errorf("sha256 %s, the index says %s: %w", got[:16], p.SHA256[:16], batch.ErrCorrupt)
	}
	m, _, err := batch.ParseMeta(data)
	if err != nil {
		return err
	}
	if m.Stream != p.Stream || m.Generation != p.Generation || m.FirstSeq != p.FirstSeq || m.LastSeq != p.LastSeq {
		return fmt.Errorf("holds segment %s/%s: %w", m.Stream, m.Name(), batch.ErrCorrupt)
	}
	return nil
}
