// Package batch defines ferry's unit of change (Record), the segment file
// format that packs records into zstd with versioned metadata in skippable
// frames, and the flush policy that decides when an open batch seals.
// It does no I/O besides io.Reader/io.Writer; see docs/FORMAT.md.
package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrCorrupt marks any damage found while decoding a segment or a record:
// bad magic, checksum mismatch, truncation, impossible sizes.
var ErrCorrupt = errors.New("corrupt segment")

// ErrTooLarge marks a record refused because it exceeds the size limit.
var ErrTooLarge = errors.New("record too large")

// Limits of the record framing.
const (
	MaxKeyLen = 1<<16 - 1 // key length is a uint16
	MaxOpLen  = 1<<8 - 1  // op length is a uint8
	// RecordOverhead is the framing every record carries besides its op,
	// key and data: u32 length + u64 seq + i64 time + u8 oplen + u16 keylen.
	// A record's FramedSize, which max_record_size limits, is RecordOverhead
	// plus the lengths of its op, key and data.
	RecordOverhead = 4 + 8 + 8 + 1 + 2
	// MaxFramedRecord caps the u32 length field of a record frame before
	// anything is allocated from it.
	MaxFramedRecord = 1<<30 - 1
)

// Record is one change. Seq is assigned by the shipper: strictly increasing
// and gapless per stream. Key and Op are optional; Data is opaque bytes.
type Record struct {
	Seq  uint64
	Time time.Time
	Key  []byte
	Op   string
	Data []byte
}

// FramedSize is the number of bytes r occupies in the decompressed record
// stream. Size limits and max_bytes are measured in it.
func (r *Record) FramedSize() int {
	return RecordOverhead + len(r.Op) + len(r.Key) + len(r.Data)
}

// CheckSize reports an error wrapping ErrTooLarge when r is over limit bytes
// (framed) or its key or op are too long for the framing.
func (r *Record) CheckSize(limit int) error {
	if len(r.Key) > MaxKeyLen {
		return fmt.Errorf("record key is %d bytes, limit %d: %w", len(r.Key), MaxKeyLen, ErrTooLarge)
	}
	if len(r.Op) > MaxOpLen {
		return fmt.Errorf("record op is %d bytes, limit %d: %w", len(r.Op), MaxOpLen, ErrTooLarge)
	}
	if n := r.FramedSize(); n > limit || n > MaxFramedRecord {
		return fmt.Errorf("record is %d bytes, limit is %d (max_record_size): %w", n, limit, ErrTooLarge)
	}
	return nil
}

// CheckTime refuses a record time the framing cannot store (it is Unix
// nanoseconds in an int64). The spool checks it before a record reaches
// its journal, where the Builder would refuse it later and fail the whole
// spool; sources check it to name the input line.
func CheckTime(t time.Time) error {
	if !t.IsZero() && !time.Unix(0, t.UnixNano()).Equal(t) {
		return fmt.Errorf("record time %s is outside the range ferry stores (years 1678-2262)", t.Format(time.RFC3339))
	}
	return nil
}

// AppendFrame appends the binary framing of r to dst:
//
//	u32 len | u64 seq | i64 unix-nanos | u8 oplen | op | u16 keylen | key | data
//
// All integers are big-endian; len counts the bytes after itself.
// The caller checks sizes first (CheckSize).
func AppendFrame(dst []byte, r *Record) []byte {
	n := r.FramedSize() - 4
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint64(dst, r.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(timeNanos(r.Time)))
	dst = append(dst, byte(len(r.Op)))
	dst = append(dst, r.Op...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Key)))
	dst = append(dst, r.Key...)
	return append(dst, r.Data...)
}

// ParseFrame decodes one record from the front of b and returns it with the
// number of bytes consumed. Key and Data alias b. Damage yields ErrCorrupt.
func ParseFrame(b []byte) (Record, int, error) {
	var r Record
	if len(b) < 4 {
		return r, 0, fmt.Errorf("record header truncated (%d bytes): %w", len(b), ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(b)
	if n > MaxFramedRecord || int(n) < RecordOverhead-4 {
		return r, 0, fmt.Errorf("record length %d out of range: %w", n, ErrCorrupt)
	}
	if uint64(len(b)-4) < uint64(n) {
		return r, 0, fmt.Errorf("record truncated: need %d bytes, have %d: %w", n, len(b)-4, ErrCorrupt)
	}
	body := b[4 : 4+n]
	r.Seq = binary.BigEndian.Uint64(body)
	r.Time = time.Unix(0, int64(binary.BigEndian.Uint64(body[8:]))).UTC()
	oplen := int(body[16])
	rest := body[17:]
	if len(rest) < oplen+2 {
		return r, 0, fmt.Errorf("record %d: op length %d overruns record: %w", r.Seq, oplen, ErrCorrupt)
	}
	r.Op = internOp(rest[:oplen])
	rest = rest[oplen:]
	keylen := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < keylen {
		return r, 0, fmt.Errorf("record %d: key length %d overruns record: %w", r.Seq, keylen, ErrCorrupt)
	}
	if keylen > 0 {
		r.Key = rest[:keylen:keylen]
	}
	r.Data = rest[keylen:len(rest):len(rest)]
	return r, int(4 + n), nil
}

// ops holds the ops parsed so far, up to maxOps of them, so that parsing a
// record (which Records does whenever one is read) costs no allocation
// for an op a stream has used before: streams use a handful.
var ops atomic.Pointer[[]string]

const maxOps = 32

func internOp(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	known := ops.Load()
	if known != nil {
		for _, s := range *known {
			if string(b) == s {
				return s
			}
		}
	}
	s := string(b)
	if known == nil || len(*known) < maxOps {
		grown := append([]string{s}, deref(known)...)
		ops.CompareAndSwap(known, &grown) // lost to another: s is added next time
	}
	return s
}

func deref(p *[]string) []string {
	if p == nil {
		return nil
	}
	return *p
}

func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
