package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestFrame2RoundTrip(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	recs := []Record{
		{Time: ts, Key: []byte("user:1"), Op: "put", Data: []byte(`{"a":1}`)},
		{Time: ts, Data: []byte("same time, no op or key\n")},
		{Time: ts.Add(-time.Hour), Key: []byte{0, '\n', 0xff}, Op: "\x00\n", Data: []byte{0, 0xff}},
		{Time: ts.Add(-time.Hour)}, // empty: one byte
		{Time: ts, Key: bytes.Repeat([]byte{'k'}, MaxKeyLen), Op: strings.Repeat("o", MaxOpLen), Data: []byte("d")},
		{Time: time.Unix(0, math.MinInt64)}, // the widest delta, wrapping
		{Time: time.Unix(0, math.MaxInt64)},
		{}, // a zero time is 0
		{Time: time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC), Data: bytes.Repeat([]byte{'x'}, 300<<10)},
	}
	var prev int64
	var stream []byte
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
		frame := AppendFrame2([]byte("prefix"), &recs[i], prev)
		if string(frame[:6]) != "prefix" {
			t.Fatal("AppendFrame2 overwrote dst")
		}
		frame = frame[6:]
		if len(frame) >= recs[i].FramedSize() {
			t.Errorf("record %d: format-2 frame %d bytes, not smaller than format 1's %d", i, len(frame), recs[i].FramedSize())
		}
		got, n, err := ParseFrame2(frame, prev)
		if err != nil || n != len(frame) {
			t.Fatalf("record %d: consumed %d of %d, %v", i, n, len(frame), err)
		}
		got.Seq = recs[i].Seq
		if d := sameRecord(got, recs[i]); d != "" {
			t.Fatalf("record %d: %s", i, d)
		}
		if !bytes.Equal(frameData2(frame), recs[i].Data) || frameTime2(frame, prev) != timeNanos(recs[i].Time) {
			t.Fatalf("record %d: frameData2/frameTime2 disagree with ParseFrame2", i)
		}
		prev = timeNanos(recs[i].Time)
		stream = append(stream, frame...)
	}
	if !bytes.Equal(stream, AppendStream(nil, 2, recs)) {
		t.Fatal("AppendStream differs from the frames one by one")
	}
	// Record 1 has the time of record 0, no op and no key: a head and
	// its data, nothing else.
	want := append(binary.AppendUvarint(nil, uint64(len(recs[1].Data))<<3), recs[1].Data...)
	if f := AppendFrame2(nil, &recs[1], timeNanos(recs[0].Time)); !bytes.Equal(f, want) || len(f) != 2+len(recs[1].Data) {
		t.Fatalf("a line with the previous time frames as % x, want % x", f, want)
	}
	if f := AppendFrame2(nil, &recs[3], timeNanos(recs[3].Time)); !bytes.Equal(f, []byte{0}) {
		t.Fatalf("an empty record with the previous time frames as % x, want 00", f)
	}
}

// TestFrame2Hostile: every damage is ErrCorrupt, found before anything is
// allocated from a length or read past the frame.
func TestFrame2Hostile(t *testing.T) {
	head := func(body uint64, flags uint64, rest ...byte) []byte {
		return append(binary.AppendUvarint(nil, body<<flagBits|flags), rest...)
	}
	cases := []struct {
		name, want string
		b          []byte
	}{
		{"empty", "truncated", nil},
		{"truncated head varint", "truncated", []byte{0x80, 0x80}},
		{"overlong head varint", "out of range", []byte{0x80, 0x00}},
		{"overlong key varint", "key length", head(3, flagKey, 0x81, 0x00, 'k')},
		{"head varint over 64 bits", "out of range", bytes.Repeat([]byte{0xff}, 11)},
		{"length over MaxFramedRecord", "out of range", head(MaxFramedRecord+1, 0)},
		{"length over 2^60", "out of range", head(1<<60, 0)},
		{"body past the end", "truncated", head(10, 0, 'a', 'b')},
		{"truncated time varint", "time delta", head(2, flagTime, 0x80, 0x80)},
		{"time flag, zero delta", "zero delta", head(1, flagTime, 0)},
		{"op length past the body", "op length", head(3, flagOp, 5, 'a', 'b')},
		{"op flag, zero length", "op length", head(1, flagOp, 0)},
		{"op flag, empty body", "op length", head(0, flagOp)},
		{"key length past the body", "key length", head(3, flagKey, 9, 'k', 'k')},
		{"key flag, zero length", "key length", head(1, flagKey, 0)},
		{"key length over MaxKeyLen", "key length", append(append(head(5, flagKey), binary.AppendUvarint(nil, MaxKeyLen+1)...), 'k', 'k')},
		{"truncated key varint", "key length", head(1, flagKey, 0x80)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, n, err := ParseFrame2(c.b, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) || n != 0 {
				t.Fatalf("n=%d err=%v, want 0 and ErrCorrupt mentioning %q (record %+v)", n, err, c.want, r)
			}
		})
	}
}

// TestRecords2 reads the records of a format-2 segment at random, sliced
// and whole: seq, time, data and the record agree with what was added,
// with the times changing, staying and going back across the index's
// stride.
func TestRecords2(t *testing.T) {
	recs := makeRecords(500, 3*timeStride+5)
	for i := 1; i < len(recs); i++ {
		if i%3 == 0 || i%timeStride == 0 { // the previous record's time: no delta framed
			recs[i].Time = recs[i-1].Time
		}
	}
	seg, m := build(t, newBuilder(t), "app", 1, ZeroHash, recs, baseTime)
	if m.Format != 2 {
		t.Fatalf("format %d", m.Format)
	}
	_, rs, err := Decode(seg, 0)
	if err != nil {
		t.Fatal(err)
	}
	check := func(rs Records, from int) {
		t.Helper()
		for i := rs.Len() - 1; i >= 0; i-- { // backwards: no state carried
			want := recs[from+i]
			if rs.Seq(i) != want.Seq || !rs.Time(i).Equal(want.Time) || !bytes.Equal(rs.Data(i), want.Data) {
				t.Fatalf("record %d of slice from %d: seq %d time %s data %q, want %d %s %q", i, from,
					rs.Seq(i), rs.Time(i), rs.Data(i), want.Seq, want.Time, want.Data)
			}
			if d := sameRecord(rs.At(i), want); d != "" {
				t.Fatalf("At(%d) of slice from %d: %s", i, from, d)
			}
		}
	}
	check(rs, 0)
	for _, s := range [][2]int{{1, 2}, {timeStride - 1, 2 * timeStride}, {timeStride + 3, len(recs)}, {len(recs) - 1, len(recs)}} {
		check(rs.Slice(s[0], s[1]), s[0])
		check(rs.Slice(s[0], s[1]).Slice(1, s[1]-s[0]), s[0]+1)
	}
	if rs.Framed() != m.UncompressedSize {
		t.Fatalf("Framed %d, uncompressed_size %d", rs.Framed(), m.UncompressedSize)
	}
	if got, most := rs.IndexCap(), IndexNeed(&m, m.UncompressedSize); got > most*2 {
		t.Fatalf("index holds %d bytes, IndexNeed says %d", got, most)
	}

	// Reusing the index of an earlier segment (a receiver's into).
	recs2 := makeRecords(9, 40)
	seg2, _ := build(t, newBuilder(t), "app", 1, ZeroHash, recs2, baseTime)
	s2, err := Open(seg2)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s2.Decompress(0)
	if err != nil {
		t.Fatal(err)
	}
	rs2, err := s2.ParseRecords(raw, rs)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all(rs2), recs2)
}

// TestForged2 holds format 2's checks to forged record streams with a
// valid payload checksum: the seq is implicit, so a forgery can only
// disagree with the metadata on the count, times and sizes.
func TestForged2(t *testing.T) {
	recs := makeRecords(1, 3)
	four := makeRecords(1, 4)
	torn := frames2(recs)
	cases := []struct {
		name, want string
		raw        []byte
		edit       func(*Meta)
		wantScan   string // Scan's words when they differ
	}{
		{"fewer than claimed", "holds 2 records, metadata says 3", frames2(recs[:2]), nil, ""},
		{"more than claimed", "more than the 3 records", frames2(four), nil, ""},
		{"torn last frame", "record truncated", torn[:len(torn)-1], nil, "runs past the 81 bytes"},
		{"time before min", "outside segment range", frames2(recs), func(m *Meta) { m.MinTime = m.MinTime.Add(time.Nanosecond) }, ""},
		{"time after max", "outside segment range", frames2(recs), func(m *Meta) { m.MaxTime = m.MaxTime.Add(-time.Nanosecond) }, ""},
		{"format 1 frames", "", frames(recs), nil, ""},
		{"length past the stream", "record truncated", binary.AppendUvarint(nil, 1<<29<<flagBits), nil, "runs past the 5 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := honestMeta2(recs)
			m.UncompressedSize = int64(len(c.raw))
			if c.edit != nil {
				c.edit(&m)
			}
			seg := forge(t, m, compress(t, c.raw))
			_, got, err := Decode(seg, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) || got.Len() != 0 {
				t.Fatalf("Decode: %d records, err = %v, want ErrCorrupt mentioning %q", got.Len(), err, c.want)
			}
			s, err := Open(seg)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if c.wantScan != "" {
				want = c.wantScan
			}
			if err := s.Scan(0, func(*Record) error { return nil }); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
				t.Fatalf("Scan: err = %v, want ErrCorrupt mentioning %q", err, want)
			}
		})
	}
	if _, got, err := Decode(forge(t, honestMeta2(recs), compress(t, frames2(recs))), 0); err != nil || got.Len() != 3 {
		t.Fatalf("honest forgery: %d records, %v", got.Len(), err)
	}
}

// A format-2 segment claiming more records than its limit would hold
// framed in format 1 is refused before anything is allocated for them,
// even though its record stream is within the limit.
func TestForged2RecordClaim(t *testing.T) {
	recs := make([]Record, 10_000)
	for i := range recs {
		recs[i] = Record{Seq: uint64(i + 1), Time: baseTime}
	}
	seg, m := build(t, newBuilder(t), "app", 1, ZeroHash, recs, baseTime)
	if m.UncompressedSize > 10_100 { // one byte a record, and the first's time
		t.Fatalf("%d empty records take %d bytes", len(recs), m.UncompressedSize)
	}
	limit := int64(len(recs)*RecordOverhead - 1)
	if _, _, err := Decode(seg, limit); !errors.Is(err, ErrSegmentTooLarge) || !strings.Contains(err.Error(), "claims 10000 records") {
		t.Fatalf("records over the limit framed: err = %v, want ErrSegmentTooLarge", err)
	}
	_, rs, err := Decode(seg, limit+1)
	if err != nil {
		t.Fatalf("records at the limit framed: %v", err)
	}
	// What a receiver budgets for the index (IndexNeed) covers what it
	// holds, though each record takes one byte of the stream, not 23.
	if need := IndexNeed(&m, m.UncompressedSize); rs.IndexCap() > withSlack(need) || need < int64(len(recs)+1)*4 {
		t.Fatalf("index holds %d bytes, IndexNeed says %d for %d records", rs.IndexCap(), need, len(recs))
	}
}

// FuzzParseFrame2 checks that ParseFrame2 never panics, refuses with
// ErrCorrupt, and that whatever it accepts re-frames to the same bytes
// (a record stream has one encoding).
func FuzzParseFrame2(f *testing.F) {
	f.Add(frames2(goldenRecordsOf(2)), int64(0))
	for _, r := range goldenRecordsOf(2) {
		f.Add(AppendFrame2(nil, &r, 0), int64(0))
		f.Add(AppendFrame2(nil, &r, timeNanos(r.Time)), timeNanos(r.Time))
	}
	f.Add([]byte{}, int64(0))
	f.Add([]byte{0}, int64(5))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}, int64(0))
	f.Add([]byte{0x0f, 0x80}, int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, b []byte, prev int64) {
		r, n, err := ParseFrame2(b, prev)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || n != 0 {
				t.Fatalf("n=%d err=%v, want 0 and ErrCorrupt", n, err)
			}
			return
		}
		if n < MinFrame2 || n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if err := r.CheckSize(MaxFramedRecord); err != nil {
			t.Fatalf("parsed record fails CheckSize: %v", err)
		}
		if re := AppendFrame2(nil, &r, prev); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-framed\n% x\nwant\n% x", re, b[:n])
		}
	})
}
