package batch

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// scanBufSize is the read buffer of Scan: records up to it are parsed
// where the buffer holds them; a larger one is read into a buffer of its
// own size.
const scanBufSize = 256 << 10

var scanReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, scanBufSize) }}

// Scan decompresses s as a stream and calls fn with each record in order,
// making the checks of Records (a claim over limit, DefaultMaxUncompressed
// if limit <= 0, is refused before anything is allocated). Unlike
// Records it does not hold the record stream: what it needs is the zstd
// window (at most MaxWindowSize), a 256 KiB buffer, and room for the
// largest record. The record fn is given, and what it points to, is valid
// only until fn returns. An error from fn ends the scan and is returned as
// it is; a damaged segment may have had records scanned before its damage
// is found.
func (s *Segment) Scan(limit int64, fn func(r *Record) error) error {
	claimed, err := s.checkClaim(limit)
	if err != nil {
		return err
	}
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	if err := d.Reset(bytes.NewReader(s.Payload)); err != nil {
		return fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
	}
	br := scanReaders.Get().(*bufio.Reader)
	br.Reset(io.LimitReader(d, claimed)) // checkDrained looks past it
	defer func() {
		br.Reset(nil)
		scanReaders.Put(br)
	}()
	c := recordCheck{m: &s.Meta, want: s.Meta.FirstSeq}
	v2 := s.Meta.Format >= 2
	var prev int64 // format 2: the time of the record before
	var big []byte // a record larger than br's buffer
	var read int64
	for read < claimed {
		var n int64
		if v2 {
			if c.n == s.Meta.Records {
				return fmt.Errorf("segment holds more than the %d records metadata says: %w", s.Meta.Records, ErrCorrupt)
			}
			hdr, err := br.Peek(binary.MaxVarintLen64)
			if len(hdr) == 0 {
				return streamError(err, read, claimed)
			}
			h, k := binary.Uvarint(hdr)
			if k == 0 && err != nil {
				return streamError(err, read, claimed)
			}
			if k <= 0 || h>>flagBits > MaxFramedRecord {
				return fmt.Errorf("record %d: record length out of range: %w", c.want, ErrCorrupt)
			}
			n = int64(k) + int64(h>>flagBits)
		} else {
			hdr, err := br.Peek(4)
			if err != nil {
				return streamError(err, read, claimed)
			}
			n = int64(binary.BigEndian.Uint32(hdr)) + 4
			if n-4 > MaxFramedRecord || n < RecordOverhead {
				return fmt.Errorf("record %d: record length %d out of range: %w", c.want, n-4, ErrCorrupt)
			}
		}
		if read+n > claimed {
			return fmt.Errorf("record %d: record of %d bytes at %d runs past the %d bytes metadata says: %w", c.want, n, read, claimed, ErrCorrupt)
		}
		var frame []byte
		var err error
		if n <= scanBufSize {
			if frame, err = br.Peek(int(n)); err != nil {
				return streamError(err, read, claimed)
			}
		} else {
			if int64(cap(big)) < n {
				big = make([]byte, n) // n <= claimed <= limit
			}
			frame = big[:n]
			if _, err := io.ReadFull(br, frame); err != nil {
				return streamError(err, read, claimed)
			}
		}
		var r Record
		if v2 {
			r, _, err = ParseFrame2(frame, prev)
			r.Seq = c.want
			prev = timeNanos(r.Time)
		} else {
			r, _, err = ParseFrame(frame)
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", c.want, err)
		}
		if err := c.next(&r); err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
		if n <= scanBufSize {
			br.Discard(int(n))
		}
		read += n
	}
	if err := checkDrained(d, claimed); err != nil {
		return err
	}
	return c.end()
}

// streamError is the error of a record stream that failed after read of
// the claimed bytes.
func streamError(err error, read, claimed int64) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("payload decompresses to less than the %d bytes metadata says (the record at byte %d is cut short): %w", claimed, read, ErrCorrupt)
	}
	return fmt.Errorf("zstd: %v: %w", err, ErrCorrupt)
}
