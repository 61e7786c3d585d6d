package batch

import (
	"fmt"
	"iter"
	"math"
	"time"
)

// Records is the records of a segment, or of a run of them, as the
// decompressed record stream frames them. Each is parsed when it is read,
// so beyond the stream itself a segment's records cost one offset (4
// bytes) each, not a Record (96 bytes, more than the smallest record takes
// framed). Records come from ParseRecords, which checks every frame first,
// or RecordsOf. A Records and what its records point to alias the stream:
// they are valid as long as it is.
type Records struct {
	raw  []byte   // the frames
	offs []uint32 // record i is raw[offs[i]:offs[i+1]]; len(offs) is Len()+1
}

// RecordsOf frames recs as a segment's record stream does, for tests and
// tools that have records in hand. Their seqs must follow one another, as
// in a segment.
func RecordsOf(recs []Record) Records {
	var raw []byte
	offs := make([]uint32, 0, len(recs)+1)
	for i := range recs {
		offs = append(offs, uint32(len(raw)))
		raw = AppendFrame(raw, &recs[i])
	}
	return Records{raw: raw, offs: append(offs, uint32(len(raw)))}
}

// Len is the number of records.
func (rs Records) Len() int { return max(len(rs.offs)-1, 0) }

// At parses record i (0 <= i < Len()). Its Key and Data alias the stream.
func (rs Records) At(i int) Record {
	r, _, err := ParseFrame(rs.raw[rs.offs[i]:rs.offs[i+1]])
	if err != nil {
		panic(fmt.Sprintf("batch: record %d of checked records: %v", i, err)) // only a bug gets here
	}
	return r
}

// Seq is the seq of record i, read without parsing the rest of it.
func (rs Records) Seq(i int) uint64 { return beUint64(rs.raw[rs.offs[i]+4:]) }

// Time is the time of record i, read without parsing the rest of it.
func (rs Records) Time(i int) time.Time {
	return time.Unix(0, int64(beUint64(rs.raw[rs.offs[i]+12:]))).UTC()
}

// Data is the data of record i, read without parsing the rest of it: all
// that the file, exec and stdout appliers need.
func (rs Records) Data(i int) []byte {
	b := rs.raw[rs.offs[i]:rs.offs[i+1]]
	op := int(b[20])
	key := int(b[21+op])<<8 | int(b[22+op])
	return b[23+op+key : len(b) : len(b)]
}

// All yields each record with its index, in order. The Record a loop
// body gets is its own copy; its Key and Data alias the stream.
func (rs Records) All() iter.Seq2[int, Record] {
	return func(yield func(int, Record) bool) {
		for i := range rs.Len() {
			if !yield(i, rs.At(i)) {
				return
			}
		}
	}
}

// Slice is records i..j-1 (0 <= i <= j <= Len()), sharing the stream.
func (rs Records) Slice(i, j int) Records {
	if i == j {
		return Records{}
	}
	return Records{raw: rs.raw, offs: rs.offs[i : j+1]}
}

// Framed is the bytes the records take in the record stream.
func (rs Records) Framed() int64 {
	if rs.Len() == 0 {
		return 0
	}
	return int64(rs.offs[len(rs.offs)-1] - rs.offs[0])
}

// IndexBytes is the memory ParseRecords needs besides the record stream
// for a segment of n records: their offsets.
func IndexBytes(n uint64) int64 { return int64(n+1) * 4 }

// IndexCap is the memory rs's offsets hold, which ParseRecords reuses.
func (rs Records) IndexCap() int64 { return int64(cap(rs.offs)) * 4 }

func beUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[7]) | uint64(b[6])<<8 | uint64(b[5])<<16 | uint64(b[4])<<24 |
		uint64(b[3])<<32 | uint64(b[2])<<40 | uint64(b[1])<<48 | uint64(b[0])<<56
}

// ParseRecords checks raw, the decompressed record stream of s, and
// returns its records, with their offsets kept in the memory of into's
// (Records of an earlier segment done with; grown if it is too small):
// every record must frame well, the seqs must be exactly
// FirstSeq..LastSeq in order and the times within MinTime..MaxTime. The
// records alias raw.
func (s *Segment) ParseRecords(raw []byte, into Records) (Records, error) {
	m := &s.Meta
	offs := into.offs
	if int64(len(raw)) >= math.MaxUint32 {
		return Records{}, fmt.Errorf("record stream is %d bytes, more than a segment may hold: %w", len(raw), ErrCorrupt)
	}
	if most := min(m.Records, uint64(len(raw)/RecordOverhead)+1) + 1; uint64(cap(offs)) < most {
		offs = make([]uint32, 0, withSlack(int64(most)))
	}
	offs = offs[:0]
	c := recordCheck{m: m, want: m.FirstSeq}
	for off := 0; off < len(raw); {
		r, n, err := ParseFrame(raw[off:])
		if err != nil {
			return Records{}, fmt.Errorf("record %d: %w", c.want, err)
		}
		if err := c.next(&r); err != nil {
			return Records{}, err
		}
		offs = append(offs, uint32(off))
		off += n
	}
	if err := c.end(); err != nil {
		return Records{}, err
	}
	return Records{raw: raw, offs: append(offs, uint32(len(raw)))}, nil
}

// recordCheck holds a segment's records, one after the other, to what its
// metadata says of them.
type recordCheck struct {
	m    *Meta
	want uint64 // the seq of the next record
	n    uint64 // records seen
}

func (c *recordCheck) next(r *Record) error {
	m := c.m
	if r.Seq != c.want || r.Seq > m.LastSeq {
		return fmt.Errorf("record seq %d where %d expected (segment %d..%d): %w", r.Seq, c.want, m.FirstSeq, m.LastSeq, ErrCorrupt)
	}
	if r.Time.Before(m.MinTime) || r.Time.After(m.MaxTime) {
		return fmt.Errorf("record %d time %s outside segment range: %w", r.Seq, r.Time.Format(time.RFC3339Nano), ErrCorrupt)
	}
	c.want++
	c.n++
	return nil
}

func (c *recordCheck) end() error {
	if c.n != c.m.Records {
		return fmt.Errorf("segment holds %d records, metadata says %d: %w", c.n, c.m.Records, ErrCorrupt)
	}
	return nil
}
