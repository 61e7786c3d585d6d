package batch

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// logRecords returns records of log-like lines (~120 bytes: timestamp,
// level, message and varied fields) totalling about size framed bytes.
func logRecords(size int) []Record {
	rng := rand.New(rand.NewPCG(7, 7))
	levels := []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	paths := []string{"/api/v1/orders", "/api/v1/users", "/healthz", "/api/v1/cart/items", "/static/app.js"}
	methods := []string{"GET", "GET", "POST", "PUT", "DELETE"}
	t := time.Date(2025, 6, 7, 8, 0, 0, 0, time.UTC)
	var recs []Record
	for n, seq := 0, uint64(1); n < size; seq++ {
		t = t.Add(time.Duration(rng.IntN(2000)) * time.Microsecond)
		line := fmt.Appendf(nil, "%s %-5s http method=%s path=%s/%d status=%d dur=%.1fms req=%016x",
			t.Format("2006-01-02T15:04:05.000000Z"), levels[rng.IntN(len(levels))],
			methods[rng.IntN(len(methods))], paths[rng.IntN(len(paths))], rng.IntN(100000),
			[]int{200, 200, 200, 201, 404, 500}[rng.IntN(6)], rng.Float64()*250, rng.Uint64())
		r := Record{Seq: seq, Time: t, Op: "log", Key: fmt.Appendf(nil, "web-%d", rng.IntN(8)), Data: line}
		n += r.FramedSize()
		recs = append(recs, r)
	}
	return recs
}

const benchSegment = 4 << 20

func BenchmarkEncode(b *testing.B) {
	recs := logRecords(benchSegment)
	for _, l := range []Level{Fastest, Default, Better} {
		b.Run(string(l), func(b *testing.B) {
			bld, err := NewBuilder(l)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(dataBytes(recs))
			b.ReportAllocs()
			var m Meta
			for b.Loop() {
				bld.Reset("app", 1, ZeroHash)
				for i := range recs {
					if err := bld.Add(&recs[i]); err != nil {
						b.Fatal(err)
					}
				}
				if _, m, err = bld.Seal(time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(dataBytes(recs))/float64(m.PayloadSize), "ratio")
			b.ReportMetric(float64(m.UncompressedSize)/float64(m.Records), "B/record")
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	recs := logRecords(benchSegment)
	for _, l := range []Level{Fastest, Default, Better} {
		b.Run(string(l), func(b *testing.B) {
			seg, m := build(b, func() *Builder {
				bld, err := NewBuilder(l)
				if err != nil {
					b.Fatal(err)
				}
				return bld
			}(), "app", 1, ZeroHash, recs, time.Time{})
			b.SetBytes(m.UncompressedSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, got, err := Decode(seg, 0); err != nil || got.Len() != len(recs) {
					b.Fatalf("%d records, %v", got.Len(), err)
				}
			}
		})
	}
}

// The benchmarks of the shipper's stages, one each, so that a regression
// shows in numbers: parse (shipper/source BenchmarkLineReader), frame
// (BenchmarkFrame), compress (BenchmarkCompressChunk), hash (BenchmarkHash)
// and seal (BenchmarkAssemble; BenchmarkEncode is frame, compress and
// seal together). Bytes per second are of the records' data: what the
// shipper was given.

// dataBytes is the bytes of the records' data.
func dataBytes(recs []Record) int64 {
	var n int64
	for i := range recs {
		n += int64(len(recs[i].Data))
	}
	return n
}

// BenchmarkFrame is the framing stage alone: records appended to a chunk
// buffer as Builder.Add frames them (the copy of every record byte), in
// each format. B/record is the framed bytes of a record.
func BenchmarkFrame(b *testing.B) {
	recs := logRecords(benchSegment)
	for _, f := range []int{1, 2} {
		b.Run(fmt.Sprintf("v%d", f), func(b *testing.B) {
			buf := make([]byte, 0, len(AppendStream(nil, f, recs)))
			b.SetBytes(dataBytes(recs))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendStream(buf[:0], f, recs)
			}
			b.ReportMetric(float64(len(buf))/float64(len(recs)), "B/record")
		})
	}
}

// BenchmarkCompressChunk is the compression stage alone, on one core: one
// ChunkSize frame of framed log records, as a Builder's worker compresses
// it (the fastest level), in each format. The ratio is of the records'
// data to the compressed bytes.
func BenchmarkCompressChunk(b *testing.B) {
	recs := logRecords(ChunkSize)
	enc, err := encoderFor(must(Fastest.zstd()))
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []int{1, 2} {
		b.Run(fmt.Sprintf("v%d", f), func(b *testing.B) {
			raw := AppendStream(nil, f, recs)
			out := make([]byte, 0, len(raw))
			b.SetBytes(dataBytes(recs))
			b.ReportAllocs()
			for b.Loop() {
				out = enc.EncodeAll(raw, out[:0])
			}
			b.ReportMetric(float64(dataBytes(recs))/float64(len(out)), "ratio")
		})
	}
}

// BenchmarkHash is the hash stage: the SHA-256 of a segment the size a
// 16 MiB segment of logs compresses to, as Seal computes it, and what
// opening such a segment costs with its hash (Open: two passes) and
// without (OpenPayload: one).
func BenchmarkHash(b *testing.B) {
	seg, _ := build(b, newBuilder(b), "app", 1, ZeroHash, logRecords(16<<20), time.Time{})
	b.Run("Hash", func(b *testing.B) {
		b.SetBytes(int64(len(seg)))
		for b.Loop() {
			Hash(seg)
		}
	})
	b.Run("Open", func(b *testing.B) {
		b.SetBytes(int64(len(seg)))
		for b.Loop() {
			must(Open(seg))
		}
	})
	b.Run("OpenPayload", func(b *testing.B) {
		b.SetBytes(int64(len(seg)))
		for b.Loop() {
			must(OpenPayload(seg))
		}
	})
}

// BenchmarkAssemble is the last of the seal stage: a sealed segment's
// metadata frame, copy and hash from compressed chunks (no compression).
func BenchmarkAssemble(b *testing.B) {
	payload := make([][]byte, 8)
	for i := range payload {
		payload[i] = bytes.Repeat([]byte{byte(i)}, 400<<10)
	}
	m := Meta{Format: FormatVersion, Stream: "app", Generation: 1, FirstSeq: 1, LastSeq: 1, Records: 1,
		Compression: "zstd", Encryption: "none", PrevSHA256: ZeroHash}
	b.SetBytes(8 * 400 << 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := assemble(m, payload...); err != nil {
			b.Fatal(err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
