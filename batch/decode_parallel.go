package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

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
// same errors: a claim over limit (DefaultMaxUncompressed if limit <= 0)
// is refused before anything is allocated, anything other than exactly
// the claimed size is refused, and frames may declare windows of at most
// MaxWindowSize. A buffer too small for the claim is replaced once by one
// that holds it: the output never outgrows the claim.
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
	out := claimBuffer(dst, claimed)
	if err := decodeFrames(s.Payload, out, frames, workers); err != nil {
		return nil, err
	}
	return out, nil
}

// claimBuffer is dst's memory, or new memory if dst cannot hold claimed
// bytes, sliced to claimed bytes. New memory gets some slack beyond the
// claim, so that the next segment (rarely of the very same size) fits too
// when the caller reuses it; the slack is never written, so it costs
// address space, not memory.
func claimBuffer(dst []byte, claimed int64) []byte {
	if int64(cap(dst)) >= claimed {
		return dst[:claimed]
	}
	return make([]byte, claimed, withSlack(claimed))
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
	return decompressFrom(bytes.NewReader(s.Payload), dst, claimed, 1)
}

// checkDrained checks that d, which produced the claimed bytes, ends there
// and ends well (the last frame's checksum is checked only at its end).
func checkDrained(d io.Reader, claimed int64) error {
	var one [1]byte
	for {
		n, err := d.Read(one[:])
		switch {
		case n > 0:
			return fmt.Errorf("payload decompresses to more than the %d bytes metadata says: %w", claimed, ErrCorrupt)
		case err == io.EOF:
			return nil
		case err != nil:
			return fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
		}
	}
}
