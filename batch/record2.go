package batch

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Format 2's compact framing (docs/FORMAT.md, "Record stream, format 2").
// A record frame is
//
//	uvarint head = body length << 3 | flags
//	body: [T: zigzag varint time delta] [O: u8 oplen, op] [K: uvarint keylen, key] data
//
// The seq is implicit (the segment's first_seq plus the record's index),
// the time is a delta from the record before it (from 0 for the first
// record of a segment), and each of time, op and key takes bytes only
// when its flag is set. A log line with the time of the line before it
// costs its data plus one or two bytes.
const (
	flagTime = 1 << iota // the time differs from the previous record's
	flagOp               // the op is not empty
	flagKey              // the key is not empty
	flagBits = 3
)

// MinFrame2 is the smallest format-2 frame: an empty record with the time
// of the record before it is one byte.
const MinFrame2 = 1

// AppendFrame2 appends r framed as format 2 frames it, prev being the
// time (Unix nanoseconds, 0 for a zero Time) of the record before it in
// the segment, 0 for the first. The caller checks sizes first
// (CheckSize).
func AppendFrame2(dst []byte, r *Record, prev int64) []byte {
	t := timeNanos(r.Time)
	var flags uint64
	body := len(r.Data)
	var dt uint64
	if t != prev {
		flags |= flagTime
		dt = zigzag(t - prev) // wraps; the reader's addition wraps back
		body += uvarintLen(dt)
	}
	if len(r.Op) > 0 {
		flags |= flagOp
		body += 1 + len(r.Op)
	}
	if len(r.Key) > 0 {
		flags |= flagKey
		body += uvarintLen(uint64(len(r.Key))) + len(r.Key)
	}
	dst = binary.AppendUvarint(dst, uint64(body)<<flagBits|flags)
	if flags&flagTime != 0 {
		dst = binary.AppendUvarint(dst, dt)
	}
	if flags&flagOp != 0 {
		dst = append(dst, byte(len(r.Op)))
		dst = append(dst, r.Op...)
	}
	if flags&flagKey != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(r.Key)))
		dst = append(dst, r.Key...)
	}
	return append(dst, r.Data...)
}

// ParseFrame2 decodes one format-2 record from the front of b, prev being
// the time of the record before it (as AppendFrame2 takes it), and
// returns it with the number of bytes consumed. The record's Seq is left
// 0: it is implicit in the segment. Key and Data alias b. The frame must
// be canonical (a flag set only for a value that needs it), so a record
// stream has one encoding. Damage yields ErrCorrupt.
func ParseFrame2(b []byte, prev int64) (Record, int, error) {
	var r Record
	body, flags, k, err := frameHead2(b)
	if err != nil {
		return r, 0, err
	}
	rest := b[k : k+body]
	t := prev
	if flags&flagTime != 0 {
		dt, n := uvarint(rest)
		if n <= 0 {
			return r, 0, fmt.Errorf("record time delta is not a varint within its frame: %w", ErrCorrupt)
		}
		if dt == 0 {
			return r, 0, fmt.Errorf("record time flag set with a zero delta: %w", ErrCorrupt)
		}
		t = prev + unzigzag(dt)
		rest = rest[n:]
	}
	r.Time = time.Unix(0, t).UTC()
	if flags&flagOp != 0 {
		if len(rest) < 1 || rest[0] == 0 || len(rest)-1 < int(rest[0]) {
			return r, 0, fmt.Errorf("record op length overruns its frame or is 0 with the op flag set: %w", ErrCorrupt)
		}
		r.Op = internOp(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
	}
	if flags&flagKey != 0 {
		kl, n := uvarint(rest)
		if n <= 0 || kl == 0 || kl > MaxKeyLen || uint64(len(rest)-n) < kl {
			return r, 0, fmt.Errorf("record key length overruns its frame, is over %d or is 0 with the key flag set: %w", MaxKeyLen, ErrCorrupt)
		}
		r.Key = rest[n : n+int(kl) : n+int(kl)]
		rest = rest[n+int(kl):]
	}
	r.Data = rest[:len(rest):len(rest)]
	return r, k + body, nil
}

// frameHead2 reads the head of the format-2 frame at the front of b: its
// body length and flags, and the head's own length. The body must fit in
// b.
func frameHead2(b []byte) (body int, flags uint64, k int, err error) {
	h, k := uvarint(b)
	if k == 0 {
		return 0, 0, 0, fmt.Errorf("record head truncated (%d bytes): %w", len(b), ErrCorrupt)
	}
	if k < 0 || h>>flagBits > MaxFramedRecord {
		return 0, 0, 0, fmt.Errorf("record length out of range: %w", ErrCorrupt)
	}
	n := int(h >> flagBits)
	if len(b)-k < n {
		return 0, 0, 0, fmt.Errorf("record truncated: need %d bytes, have %d: %w", n, len(b)-k, ErrCorrupt)
	}
	return n, h & (1<<flagBits - 1), k, nil
}

// frameTime2 is the time of the format-2 frame at the front of b (a
// checked one) given prev, the time of the record before it.
func frameTime2(b []byte, prev int64) int64 {
	h, k := binary.Uvarint(b)
	if h&flagTime == 0 {
		return prev
	}
	dt, _ := binary.Uvarint(b[k:])
	return prev + unzigzag(dt)
}

// frameData2 is the data of the format-2 frame at the front of b (a
// checked one).
func frameData2(b []byte) []byte {
	h, k := binary.Uvarint(b)
	end := k + int(h>>flagBits)
	i := k
	if h&flagTime != 0 {
		_, n := binary.Uvarint(b[i:])
		i += n
	}
	if h&flagOp != 0 {
		i += 1 + int(b[i])
	}
	if h&flagKey != 0 {
		kl, n := binary.Uvarint(b[i:])
		i += n + int(kl)
	}
	return b[i:end:end]
}

// uvarint is binary.Uvarint refusing (n < 0) a varint longer than it
// needs to be, so that a record stream has one encoding.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, -n
	}
	return v, n
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// AppendStream appends recs framed as the record stream of a segment of
// format f (1 or 2) frames them: what `zstd -dc` prints of a plaintext
// segment of exactly recs. It is for tests and tools.
func AppendStream(dst []byte, f int, recs []Record) []byte {
	var prev int64
	for i := range recs {
		if f >= 2 {
			dst = AppendFrame2(dst, &recs[i], prev)
			prev = timeNanos(recs[i].Time)
		} else {
			dst = AppendFrame(dst, &recs[i])
		}
	}
	return dst
}
