package dirtree

import (
	"fmt"
	"io"
	"slices"

	"github.com/ferry-dr/ferry/batch"
	"github.com/klauspost/compress/zstd"
)

// Summary sums the records of a dir: stream by op, splitting each
// record's framed bytes into their parts, for `ferry cat --sum`: what a
// range of segments spends its bytes on (docs/BENCHMARKS.md breaks the
// tree benchmark's churn down with it). Records of other streams are
// summed by their op too, with all their data counted as content.
type Summary struct {
	level zstd.EncoderLevel
	ops   map[string]*OpSum
	keys  map[string]bool // every key named so far
}

// OpSum is one op's share. Framing + Keys + Header + Content is the
// records' framed size (batch.Record.FramedSize).
type OpSum struct {
	Op      string `json:"op"`
	Records int64  `json:"records"`
	// Repeats are records whose key an earlier record of the range named
	// (a chunk that continues a file is not one): a path shipped again.
	Repeats      int64 `json:"repeats"`
	RepeatFramed int64 `json:"repeat_framed_bytes"`
	Framing      int64 `json:"framing_bytes"` // seq, time, lengths, op: batch.RecordOverhead + len(op) each
	Keys         int64 `json:"key_bytes"`
	// Header is the op's fixed header, and a delta's block list or a
	// rename's old path.
	Header int64 `json:"header_bytes"`
	// Content is what the record carries of the tree: file content, a
	// symlink's target, appended bytes, a delta's blocks, JSON data.
	Content int64 `json:"content_bytes"`
	// Compressed is the op's framed records compressed alone, in one
	// stream at the summary's level with ferry's 1 MiB window: an
	// estimate of the op's share of the compressed segments (records
	// compress better among their own kind, and a segment's 2 MiB frames
	// restart the window).
	Compressed int64 `json:"compressed_alone_bytes"`

	enc   *zstd.Encoder
	count *countWriter
	frame []byte
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// NewSummary returns an empty Summary that estimates compressed shares at
// level (ferry's compression setting; "" is fastest, the default).
func NewSummary(level batch.Level) (*Summary, error) {
	var zl zstd.EncoderLevel
	switch level {
	case batch.Fastest, "":
		zl = zstd.SpeedFastest
	case batch.Default:
		zl = zstd.SpeedDefault
	case batch.Better:
		zl = zstd.SpeedBetterCompression
	case batch.Best:
		zl = zstd.SpeedBestCompression
	default:
		return nil, fmt.Errorf("unknown compression level %q (want fastest, default, better or best)", level)
	}
	return &Summary{level: zl, ops: map[string]*OpSum{}, keys: map[string]bool{}}, nil
}

// Add sums r.
func (s *Summary) Add(r *batch.Record) error {
	o := s.ops[r.Op]
	if o == nil {
		o = &OpSum{Op: r.Op, count: &countWriter{}}
		enc, err := zstd.NewWriter(o.count, zstd.WithEncoderLevel(s.level), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20))
		if err != nil {
			return fmt.Errorf("zstd encoder: %w", err)
		}
		o.enc = enc
		s.ops[r.Op] = o
	}
	framed := int64(r.FramedSize())
	o.Records++
	o.Framing += int64(batch.RecordOverhead + len(r.Op))
	o.Keys += int64(len(r.Key))
	hdr := int64(headerOf(r.Op, r.Data))
	o.Header += hdr
	o.Content += int64(len(r.Data)) - hdr
	if s.keys[string(r.Key)] && !continuesChunk(r) {
		o.Repeats++
		o.RepeatFramed += framed
	}
	s.keys[string(r.Key)] = true
	o.frame = batch.AppendFrame(o.frame[:0], r)
	if _, err := o.enc.Write(o.frame); err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	return nil
}

// headerOf is the part of a record's data that is not tree content.
func headerOf(op string, data []byte) int {
	switch op {
	case OpPut, OpChunk, OpAttr, OpMkdir, OpSymlink:
		return min(len(data), HeaderLen)
	case OpAppend:
		return min(len(data), DeltaHeaderLen)
	case OpDelta:
		if d, err := ParseDelta(op, data); err == nil {
			return len(data) - len(d.Data) - len(d.Tail)
		}
		return min(len(data), DeltaHeaderLen)
	case OpRename:
		return len(data) // the header and the old path
	}
	return 0
}

// continuesChunk reports whether r is a chunk after a file's first.
func continuesChunk(r *batch.Record) bool {
	if r.Op != OpChunk {
		return false
	}
	h, _, err := ParseHeader(r.Data)
	return err == nil && h.Offset > 0
}

// Ops returns the sums, ops with the most framed bytes first, each with
// Compressed filled in. Call it once, after the last Add.
func (s *Summary) Ops() ([]OpSum, error) {
	out := make([]OpSum, 0, len(s.ops))
	for _, o := range s.ops {
		if err := o.enc.Close(); err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		o.Compressed = o.count.n
		out = append(out, *o)
	}
	slices.SortFunc(out, func(a, b OpSum) int {
		if d := b.framed() - a.framed(); d != 0 {
			return int(min(max(d, -1), 1))
		}
		if a.Op < b.Op {
			return -1
		}
		return 1
	})
	return out, nil
}

func (o *OpSum) framed() int64 { return o.Framing + o.Keys + o.Header + o.Content }

// WriteTable prints ops (from Ops) as a table with a total line.
func WriteTable(w io.Writer, ops []OpSum) error {
	var t OpSum
	t.Op = "total"
	line := func(o OpSum) error {
		_, err := fmt.Fprintf(w, "%-15s %8d %8d %12d %12d %10d %10d %12d %12d\n", o.Op, o.Records, o.Repeats,
			o.framed(), o.Framing, o.Keys, o.Header, o.Content, o.Compressed)
		return err
	}
	if _, err := fmt.Fprintf(w, "%-15s %8s %8s %12s %12s %10s %10s %12s %12s\n", "op", "records", "repeats",
		"framed", "framing", "keys", "header", "content", "zstd alone"); err != nil {
		return err
	}
	for _, o := range ops {
		if err := line(o); err != nil {
			return err
		}
		t.Records += o.Records
		t.Repeats += o.Repeats
		t.RepeatFramed += o.RepeatFramed
		t.Framing += o.Framing
		t.Keys += o.Keys
		t.Header += o.Header
		t.Content += o.Content
		t.Compressed += o.Compressed
	}
	if err := line(t); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "repeats: %d records, %d framed bytes, of keys an earlier record of the range named\n",
		t.Repeats, t.RepeatFramed)
	return err
}
