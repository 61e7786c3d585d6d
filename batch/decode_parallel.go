package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// This file holds the receiver's fast path for Decompress and Records:
// the same checks and the same errors, but the output buffers are the
// caller's to reuse, and the payload's zstd frames (Builder writes one per
// ChunkSize of records) are decompressed on several goroutines at once.

// maxParallelFrame is the largest content size a payload frame may declare
// and still be decoded by DecompressInto's parallel path; a payload with a
// larger frame (or any frame without a declared size) is decompressed as
// one stream, exactly as Decompress does.
const maxParallelFrame = 32 << 20

// reserveLimit is how much of a claim DecompressInto reserves before any
// data has been produced, like Decompress.
const reserveLimit = 32 << 20

// frameDecoders decode one frame at a time with DecodeAll into a slot of
// the output buffer. WithDecodeAllCapLimit makes DecodeAll refuse, rather
// than reallocate, a frame that would overrun its slot.
var frameDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxParallelFrame),
		zstd.WithDecoderMaxWindow(MaxWindowSize), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		panic(err) // only fails on invalid options
	}
	return d
}}

// payloadFrame is one zstd frame of a payload: its bytes p[in:end] decode
// to out[at:at+size].
type payloadFrame struct {
	in, end int
	at      int64
	size    int64
}

const zstdMagic = 0xFD2FB528

// splitFrames walks the frame and block headers of a zstd payload (RFC
// 8878, section 3.1) without decoding anything and returns its data frames
// (skippable frames produce nothing and are left out) and the total content
// size they declare. ok is false unless every frame is well formed as far
// as its headers go, uses no dictionary and declares a content size of at
// most maxParallelFrame.
func splitFrames(p []byte) (frames []payloadFrame, total int64, ok bool) {
	for off := 0; off < len(p); {
		if len(p)-off < 4 {
			return nil, 0, false
		}
		magic := binary.LittleEndian.Uint32(p[off:])
		if magic&0xFFFFFFF0 == 0x184D2A50 {
			if len(p)-off < 8 {
				return nil, 0, false
			}
			n := int64(binary.LittleEndian.Uint32(p[off+4:]))
			if n > int64(len(p)-off-8) {
				return nil, 0, false
			}
			off += 8 + int(n)
			continue
		}
		if magic != zstdMagic {
			return nil, 0, false
		}
		i := off + 4
		if i >= len(p) {
			return nil, 0, false
		}
		fhd := p[i]
		i++
		fcsFlag, single, reserved, checksum, dict := fhd>>6, fhd&0x20 != 0, fhd&0x08 != 0, fhd&0x04 != 0, fhd&0x03
		if reserved || dict != 0 {
			return nil, 0, false
		}
		if !single {
			i++ // window descriptor; DecodeAll checks it against MaxWindowSize
		}
		fcsLen := [4]int{0, 2, 4, 8}[fcsFlag]
		if fcsFlag == 0 && single {
			fcsLen = 1
		}
		if fcsLen == 0 || i+fcsLen > len(p) {
			return nil, 0, false
		}
		var size uint64
		switch fcsLen {
		case 1:
			size = uint64(p[i])
		case 2:
			size = uint64(binary.LittleEndian.Uint16(p[i:])) + 256
		case 4:
			size = uint64(binary.LittleEndian.Uint32(p[i:]))
		case 8:
			size = binary.LittleEndian.Uint64(p[i:])
		}
		i += fcsLen
		if size > maxParallelFrame {
			return nil, 0, false
		}
		for last := false; !last; {
			if i+3 > len(p) {
				return nil, 0, false
			}
			bh := uint32(p[i]) | uint32(p[i+1])<<8 | uint32(p[i+2])<<16
			i += 3
			last = bh&1 != 0
			switch n := int(bh >> 3); (bh >> 1) & 3 {
			case 0, 2: // raw, compressed
				i += n
			case 1: // RLE: one byte repeated n times
				i++
			default: // reserved block type
				return nil, 0, false
			}
			if i > len(p) {
				return nil, 0, false
			}
		}
		if checksum {
			if i+4 > len(p) {
				return nil, 0, false
			}
			i += 4
		}
		frames = append(frames, payloadFrame{in: off, end: i, at: total, size: int64(size)})
		total += int64(size)
		off = i
	}
	return frames, total, true
}

// DecompressInto is Decompress with the output written into dst's memory
// (grown if it is too small) and the payload's frames decompressed on up
// to workers goroutines at once. It makes the same checks and returns the
// same errors: more than limit bytes (DefaultMaxUncompressed if limit <= 0)
// or anything other than exactly the claimed size is refused, frames may
// declare windows of at most MaxWindowSize, and when dst is too small for
// the claim, at most 32 MiB of it is reserved before data is produced;
// beyond that, memory grows only with the data actually produced.
//
// A payload whose frames do not all declare their content size, or one
// that declares over 32 MiB, is decompressed as a single stream.
func (s *Segment) DecompressInto(dst []byte, limit int64, workers int) ([]byte, error) {
	claimed, err := s.checkClaim(limit)
	if err != nil {
		return nil, err
	}
	frames, total, ok := splitFrames(s.Payload)
	if !ok || total != claimed {
		// Let the stream decoder find what is wrong, or decode the frames
		// this path does not.
		return s.decompressStream(dst, claimed)
	}
	// Buffers get some slack beyond the claim, so that the next segment
	// (rarely of the very same size) fits too when the caller reuses them.
	most := withSlack(claimed)
	out := dst[:0]
	if int64(cap(out)) < min(claimed, reserveLimit) {
		out = make([]byte, 0, min(most, reserveLimit))
	}
	for done := 0; done < len(frames); {
		// Decode every frame that fits in out's capacity, then grow it
		// (at least doubling, so the copying stays linear) for the next.
		n := done
		for n < len(frames) && frames[n].at+frames[n].size <= int64(cap(out)) {
			n++
		}
		if n == done {
			f := frames[done]
			grown := make([]byte, f.at, min(most, max(2*int64(cap(out)), f.at+f.size)))
			copy(grown, out[:f.at])
			out = grown
			continue
		}
		if err := decodeFrames(s.Payload, out[:cap(out)], frames[done:n], workers); err != nil {
			return nil, err
		}
		done = n
	}
	return out[:claimed], nil
}

// withSlack adds an eighth to a buffer size.
func withSlack(n int64) int64 { return n + n/8 }

// decodeFrames decodes frames of payload into their slots of out on up to
// workers goroutines (the caller's among them). Of several damaged frames,
// the first in payload order is reported.
func decodeFrames(payload, out []byte, frames []payloadFrame, workers int) error {
	errs := make([]error, len(frames))
	var next atomic.Int64
	var failed atomic.Int64 // lowest index of a frame that failed
	failed.Store(int64(len(frames)))
	work := func() {
		d := frameDecoders.Get().(*zstd.Decoder)
		defer frameDecoders.Put(d)
		for {
			i := next.Add(1) - 1
			if i >= int64(len(frames)) || i > failed.Load() {
				return
			}
			f := frames[i]
			slot := out[f.at : f.at : f.at+f.size]
			got, err := d.DecodeAll(payload[f.in:f.end], slot)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("zstd frame at payload offset %d: %v: %w", f.in, err, ErrCorrupt)
			case int64(len(got)) != f.size || (f.size > 0 && &got[0] != &out[f.at]):
				errs[i] = fmt.Errorf("zstd frame at payload offset %d decompresses to %d bytes, its header says %d: %w", f.in, len(got), f.size, ErrCorrupt)
			default:
				continue
			}
			for {
				cur := failed.Load()
				if i >= cur || failed.CompareAndSwap(cur, i) {
					break
				}
			}
		}
	}
	var wg sync.WaitGroup
	for range min(workers, len(frames)) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	if i := failed.Load(); i < int64(len(frames)) {
		return errs[i]
	}
	return nil
}

// decompressStream is Decompress into dst's memory.
func (s *Segment) decompressStream(dst []byte, claimed int64) ([]byte, error) {
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	if err := d.Reset(bytes.NewReader(s.Payload)); err != nil {
		return nil, fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
	}
	out := bytes.NewBuffer(dst[:0])
	out.Grow(int(min(claimed, reserveLimit)) + bytes.MinRead)
	n, err := io.Copy(out, io.LimitReader(d, claimed+1))
	if err != nil {
		return nil, fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
	}
	if n != claimed {
		return nil, fmt.Errorf("payload decompresses to %d+ bytes, metadata says %d: %w", n, claimed, ErrCorrupt)
	}
	return out.Bytes(), nil
}

// ParseRecords decodes raw, the decompressed record stream of s, into
// recs's memory (grown if it is too small) with the checks of Records:
// exactly FirstSeq..LastSeq in order, within MinTime..MaxTime. The records
// alias raw.
func (s *Segment) ParseRecords(raw []byte, recs []Record) ([]Record, error) {
	m := &s.Meta
	if most := min(m.Records, uint64(len(raw)/RecordOverhead)+1); uint64(cap(recs)) < most {
		recs = make([]Record, 0, withSlack(int64(most)))
	}
	recs = recs[:0]
	want := m.FirstSeq
	for len(raw) > 0 {
		r, n, err := ParseFrame(raw)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", want, err)
		}
		if r.Seq != want || r.Seq > m.LastSeq {
			return nil, fmt.Errorf("record seq %d where %d expected (segment %d..%d): %w", r.Seq, want, m.FirstSeq, m.LastSeq, ErrCorrupt)
		}
		if r.Time.Before(m.MinTime) || r.Time.After(m.MaxTime) {
			return nil, fmt.Errorf("record %d time %s outside segment range: %w", r.Seq, r.Time.Format(time.RFC3339Nano), ErrCorrupt)
		}
		recs = append(recs, r)
		raw = raw[n:]
		want++
	}
	if uint64(len(recs)) != m.Records {
		return nil, fmt.Errorf("segment holds %d records, metadata says %d: %w", len(recs), m.Records, ErrCorrupt)
	}
	return recs, nil
}
