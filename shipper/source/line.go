package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
)

// Input formats for stream sources.
const (
	FormatLine   = "line"   // one record per line; the newline stays in the data
	FormatNDJSON = "ndjson" // one JSON object per line: key, op, data or data_base64, time
	FormatRaw    = "raw"    // u32 big-endian length, then that many bytes
)

// Group-commit limits for a source batch: a batch is handed to the spool
// when the input has nothing more buffered or when it reaches these.
const (
	sourceBatchBytes   = 1 << 20
	sourceBatchRecords = 8192
)

// Reader reads records from a stream such as stdin until EOF.
type Reader struct {
	R             io.Reader
	Name          string // "stdin"; names the input in errors
	Format        string
	MaxRecordSize int
}

var _ shipper.Source = (*Reader)(nil)

// ndjsonRecord is one line of --format ndjson.
type ndjsonRecord struct {
	Key        string    `json:"key"`
	Op         string    `json:"op"`
	Data       *string   `json:"data"`
	DataBase64 *string   `json:"data_base64"`
	Time       time.Time `json:"time"`
}

// Run reads until EOF and appends in batches. A malformed or oversize
// record stops it with an error naming the line (or raw record) number;
// everything before it has been appended.
func (s *Reader) Run(ctx context.Context, sink shipper.Sink) error {
	p := &recordParser{name: s.Name, format: s.Format, max: s.MaxRecordSize}
	if p.max <= 0 {
		p.max = 16 << 20
	}
	if p.format == FormatLine {
		return s.runLines(ctx, sink, p)
	}
	br := bufio.NewReaderSize(s.R, 1<<20)
	var recs []batch.Record
	var arena []byte
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := sink.AppendBatch(ctx, recs, nil)
		recs, arena = recs[:0], arena[:0]
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return flushThen(flush, nil)
		}
		var rec batch.Record
		var err error
		rec, arena, err = p.next(br, arena)
		if errors.Is(err, io.EOF) {
			return flush()
		}
		if err != nil {
			return flushThen(flush, err)
		}
		recs = append(recs, rec)
		if br.Buffered() == 0 || len(arena) >= sourceBatchBytes || len(recs) >= sourceBatchRecords {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// runLines is Run for FormatLine without copying a line: records are
// the lines where they were read, in a buffer the reader owns, handed
// over in batches as Run's (when what was read is used up, or at the
// batch limits) and before the buffer's bytes move. Copying each line
// out of a bufio.Reader into an arena was a third of the parsing stage.
func (s *Reader) runLines(ctx context.Context, sink shipper.Sink, p *recordParser) error {
	buf := make([]byte, 1<<20)
	var recs []batch.Record
	r, w, batched := 0, 0, 0 // buf[r:w] is read and not yet a record; batched bytes are in recs
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := sink.AppendBatch(ctx, recs, nil)
		clear(recs)
		recs, batched = recs[:0], 0
		return err
	}
	var readErr error
	for {
		if err := ctx.Err(); err != nil {
			return flushThen(flush, nil)
		}
		if i := bytes.IndexByte(buf[r:w], '\n'); i >= 0 || (errors.Is(readErr, io.EOF) && r < w) {
			n := w - r // the last line, without a newline, at the end of input
			if i >= 0 {
				n = i + 1
			}
			line := buf[r : r+n : r+n]
			r += n
			p.n++
			if n > p.max {
				return flushThen(flush, fmt.Errorf("%s line %d: line is over %d bytes (max_record_size): %w", p.name, p.n, p.max, batch.ErrTooLarge))
			}
			rec, err := p.fromLine(line)
			if err != nil {
				return flushThen(flush, err)
			}
			recs = append(recs, rec)
			batched += n
			if r == w || batched >= sourceBatchBytes || len(recs) >= sourceBatchRecords {
				if err := flush(); err != nil {
					return err
				}
			}
			continue
		}
		if readErr != nil {
			if errors.Is(readErr, io.EOF) {
				return flush()
			}
			return flushThen(flush, fmt.Errorf("%s line %d: %w", p.name, p.n+1, readErr))
		}
		if w-r > p.max {
			return flushThen(flush, fmt.Errorf("%s line %d: line is over %d bytes (max_record_size): %w", p.name, p.n+1, p.max, batch.ErrTooLarge))
		}
		if w == len(buf) {
			// Full: the records in it go first, then the partial line
			// moves to the front, into a larger buffer if it fills it.
			if err := flush(); err != nil {
				return err
			}
			if r == 0 {
				next := make([]byte, min(2*len(buf), p.max+1))
				copy(next, buf[:w])
				buf = next
			} else {
				w = copy(buf, buf[r:w])
				r = 0
			}
		}
		var n int
		n, readErr = s.R.Read(buf[w:])
		w += n
	}
}

func flushThen(flush func() error, err error) error {
	if ferr := flush(); ferr != nil && err == nil {
		return ferr
	}
	return err
}

// recordParser turns one input format into records, counting lines or raw
// records for error messages.
type recordParser struct {
	name   string
	format string
	max    int
	n      int // records read so far
}

// next reads one record. Its Data (and Key) live in arena, which is
// returned grown. At a clean end of input it returns io.EOF.
func (p *recordParser) next(br *bufio.Reader, arena []byte) (batch.Record, []byte, error) {
	if p.format == FormatRaw {
		return p.nextRaw(br, arena)
	}
	start := len(arena)
	var err error
	arena, err = readLine(br, arena, p.max)
	if err != nil && !errors.Is(err, io.EOF) {
		return batch.Record{}, arena, fmt.Errorf("%s line %d: %w", p.name, p.n+1, err)
	}
	if len(arena) == start {
		return batch.Record{}, arena, io.EOF
	}
	p.n++
	rec, err := p.fromLine(arena[start:len(arena):len(arena)])
	return rec, arena, err
}

// fromLine makes a record of one complete line (newline included).
func (p *recordParser) fromLine(line []byte) (batch.Record, error) {
	rec := batch.Record{Data: line}
	if p.format == FormatNDJSON {
		var err error
		rec, err = p.parseNDJSON(line)
		if err != nil {
			return rec, err
		}
	}
	if err := rec.CheckSize(p.max); err != nil {
		return rec, fmt.Errorf("%s line %d: %w", p.name, p.n, err)
	}
	return rec, nil
}

// readLine appends one line including its newline (if any) to dst. A line
// longer than max is an error wrapping batch.ErrTooLarge.
func readLine(br *bufio.Reader, dst []byte, max int) ([]byte, error) {
	start := len(dst)
	for {
		frag, err := br.ReadSlice('\n')
		dst = append(dst, frag...)
		if len(dst)-start > max {
			return dst, fmt.Errorf("line is over %d bytes (max_record_size): %w", max, batch.ErrTooLarge)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return dst, err
	}
}

func (p *recordParser) parseNDJSON(line []byte) (batch.Record, error) {
	var j ndjsonRecord
	trimmed := line
	for len(trimmed) > 0 && (trimmed[len(trimmed)-1] == '\n' || trimmed[len(trimmed)-1] == '\r') {
		trimmed = trimmed[:len(trimmed)-1]
	}
	if len(trimmed) == 0 {
		return batch.Record{}, fmt.Errorf("%s line %d: empty line, expected a JSON object", p.name, p.n)
	}
	if err := json.Unmarshal(trimmed, &j); err != nil {
		return batch.Record{}, fmt.Errorf("%s line %d: invalid JSON record: %v", p.name, p.n, err)
	}
	if err := batch.CheckTime(j.Time); err != nil {
		return batch.Record{}, fmt.Errorf("%s line %d: %w", p.name, p.n, err)
	}
	rec := batch.Record{Key: []byte(j.Key), Op: j.Op, Time: j.Time}
	switch {
	case j.Data != nil && j.DataBase64 != nil:
		return rec, fmt.Errorf("%s line %d: give data or data_base64, not both", p.name, p.n)
	case j.Data != nil:
		rec.Data = []byte(*j.Data)
	case j.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*j.DataBase64)
		if err != nil {
			return rec, fmt.Errorf("%s line %d: data_base64: %v", p.name, p.n, err)
		}
		rec.Data = b
	}
	if len(j.Key) == 0 {
		rec.Key = nil
	}
	return rec, nil
}

func (p *recordParser) nextRaw(br *bufio.Reader, arena []byte) (batch.Record, []byte, error) {
	var hdr [4]byte
	n, err := io.ReadFull(br, hdr[:])
	if n == 0 && errors.Is(err, io.EOF) {
		return batch.Record{}, arena, io.EOF
	}
	if err != nil {
		return batch.Record{}, arena, fmt.Errorf("%s raw record %d: truncated length prefix", p.name, p.n+1)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if uint64(size)+batch.RecordOverhead > uint64(p.max) { // a raw record has no op or key
		return batch.Record{}, arena, fmt.Errorf("%s raw record %d: length %d is over max_record_size %d: %w", p.name, p.n+1, size, p.max, batch.ErrTooLarge)
	}
	start := len(arena)
	arena = append(arena, make([]byte, size)...)
	if _, err := io.ReadFull(br, arena[start:]); err != nil {
		return batch.Record{}, arena, fmt.Errorf("%s raw record %d: truncated: want %d bytes: %v", p.name, p.n+1, size, err)
	}
	p.n++
	return batch.Record{Data: arena[start:len(arena):len(arena)]}, arena, nil
}
