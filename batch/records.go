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
	// v2 is the index of a format-2 record stream (nil for format 1),
	// shared by its slices; at is the index in it of record 0.
	v2 *index2
	at int
}

// index2 is what reading a format-2 record at random needs besides its
// offset: the seq of the segment's first record, and the time of every
// timeStride-th record, from which a record's time is the deltas of at
// most timeStride-1 frames away.
type index2 struct {
	first uint64
	offs  []uint32 // of the whole segment (Records.offs is a slice of it)
	times []int64  // times[j] is the time of record j*timeStride
}

// timeStride is how many format-2 records share one entry of index2.times:
// 8 bytes per 16 records, and a record's time at most 15 frame heads
// away.
const timeStride = 16

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
	b := rs.raw[rs.offs[i]:rs.offs[i+1]]
	var r Record
	var err error
	if rs.v2 != nil {
		if r, _, err = ParseFrame2(b, rs.nanos2(i-1)); err == nil {
			r.Seq = rs.Seq(i)
		}
	} else {
		r, _, err = ParseFrame(b)
	}
	if err != nil {
		panic(fmt.Sprintf("batch: record %d of checked records: %v", i, err)) // only a bug gets here
	}
	return r
}

// Seq is the seq of record i, read without parsing the rest of it.
func (rs Records) Seq(i int) uint64 {
	if rs.v2 != nil {
		return rs.v2.first + uint64(rs.at+i)
	}
	return beUint64(rs.raw[rs.offs[i]+4:])
}

// Time is the time of record i, read without parsing the rest of it.
func (rs Records) Time(i int) time.Time {
	if rs.v2 != nil {
		return time.Unix(0, rs.nanos2(i)).UTC()
	}
	return time.Unix(0, int64(beUint64(rs.raw[rs.offs[i]+12:]))).UTC()
}

// nanos2 is the time of format-2 record i in Unix nanoseconds (0 for the
// record before the segment's first, as the framing has it).
func (rs Records) nanos2(i int) int64 {
	x := rs.v2
	j := rs.at + i
	if j < 0 {
		return 0
	}
	t := x.times[j/timeStride]
	for k := j - j%timeStride + 1; k <= j; k++ {
		t = frameTime2(rs.raw[x.offs[k]:], t)
	}
	return t
}

// Data is the data of record i, read without parsing the rest of it: all
// that the file, exec and stdout appliers need.
func (rs Records) Data(i int) []byte {
	b := rs.raw[rs.offs[i]:rs.offs[i+1]]
	if rs.v2 != nil {
		return frameData2(b)
	}
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
	return Records{raw: rs.raw, offs: rs.offs[i : j+1], v2: rs.v2, at: rs.at + i}
}

// Framed is the bytes the records take in the record stream.
func (rs Records) Framed() int64 {
	if rs.Len() == 0 {
		return 0
	}
	return int64(rs.offs[len(rs.offs)-1] - rs.offs[0])
}

// IndexBytes is the memory ParseRecords needs besides the record stream
// for a segment of n records: their offsets, and in format 2 the time of
// every timeStride-th record.
func IndexBytes(n uint64) int64 { return int64(n+1)*4 + int64(n/timeStride+1)*8 }

// IndexNeed is the most memory ParseRecords needs besides the record
// stream for a segment of metadata m whose stream is claimed bytes: its
// records are at most what metadata says, and at most claimed divided by
// the smallest frame of its format.
func IndexNeed(m *Meta, claimed int64) int64 {
	least := int64(RecordOverhead)
	if m.Format >= 2 {
		least = MinFrame2
	}
	return IndexBytes(min(m.Records, uint64(max(claimed, 0)/least)+1))
}

// IndexCap is the memory rs's offsets (and times) hold, which ParseRecords
// reuses.
func (rs Records) IndexCap() int64 {
	n := int64(cap(rs.offs)) * 4
	if rs.v2 != nil {
		n += int64(cap(rs.v2.times)) * 8
	}
	return n
}

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
	least := RecordOverhead
	if m.Format >= 2 {
		least = MinFrame2
	}
	if most := min(m.Records, uint64(len(raw)/least)+1) + 1; uint64(cap(offs)) < most {
		offs = make([]uint32, 0, withSlack(int64(most)))
	}
	offs = offs[:0]
	c := recordCheck{m: m, want: m.FirstSeq}
	if m.Format >= 2 {
		return s.parseRecords2(raw, offs, into.v2, &c)
	}
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

// parseRecords2 is ParseRecords of a format-2 record stream, its offsets
// kept in offs and its index in x's memory (either may be nil).
func (s *Segment) parseRecords2(raw []byte, offs []uint32, x *index2, c *recordCheck) (Records, error) {
	if x == nil {
		x = new(index2)
	}
	times := x.times[:0]
	if most := int64(cap(offs)/timeStride + 1); int64(cap(times)) < most {
		times = make([]int64, 0, most)
	}
	var prev int64
	for off := 0; off < len(raw); {
		if c.n == c.m.Records {
			return Records{}, fmt.Errorf("segment holds more than the %d records metadata says: %w", c.m.Records, ErrCorrupt)
		}
		r, n, err := ParseFrame2(raw[off:], prev)
		if err != nil {
			return Records{}, fmt.Errorf("record %d: %w", c.want, err)
		}
		r.Seq = c.want
		if err := c.next(&r); err != nil {
			return Records{}, err
		}
		prev = timeNanos(r.Time)
		if len(offs)%timeStride == 0 {
			times = append(times, prev)
		}
		offs = append(offs, uint32(off))
		off += n
	}
	if err := c.end(); err != nil {
		return Records{}, err
	}
	offs = append(offs, uint32(len(raw)))
	*x = index2{first: s.Meta.FirstSeq, offs: offs, times: times}
	return Records{raw: raw, offs: offs, v2: x}, nil
}
