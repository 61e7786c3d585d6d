package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
)

// Tail follows a growing file like `tail -F`: across rotation by
// rename+create (the rest of the old file is read first) and copytruncate
// (reading restarts at offset 0). Its cursor (device, inode, offset of the
// next unread byte) is stored in the spool atomically with the records, so
// a restart resumes exactly after the last accepted line.
type Tail struct {
	Path          string
	Format        string // line or ndjson
	MaxRecordSize int
	Poll          time.Duration // default 100ms
	Cursor        []byte        // from Spool.Cursor(); nil starts at the beginning
	Log           *slog.Logger
	// Replayable lets the spool skip the journal for the file's lines
	// (Shipper.SourceReplayable): the file holds them, and the newest
	// sealed segment's cursor says where to read again after a crash.
	// Before the cursor leaves a file's bytes for good (a rotated file
	// read to its end, a truncated file read again from 0) the lines read
	// so far are sealed. ferry ship sets it unless [ship] tail_journal;
	// ferry rejoin cuts the file at the spool's cursor, so the lines read
	// but not sealed are cut with the rest past the fork.
	Replayable bool
	// Watch, if set, wakes the tail when its file changes: an idle file is
	// not read or stat'ed every Poll, only on an event (or the Watch's
	// Fallback). Poll still spaces the reads of a busy file; with
	// Coalesce, the Watch looks at the path every Poll between them.
	Watch *TailWatch
	// Coalesce, if positive, spaces the reads of a busy file while what
	// it reads is sealed later than that (a sink that tells when,
	// SealDeadline: shipper.Shipper; the open segment's age seal, or a
	// bundle tick): the tail reads at most every Coalesce, and once more
	// Poll before the seal, so the lines written meanwhile arrive
	// together in one batch (issue 23: 100 files written 100 times a
	// second were read 1,000 times a second, each read a stat, a batch
	// and a timer). A line waits no longer for its segment than without
	// it: with no deadline (no segment open under an age seal), or the
	// seal nearer than Coalesce, the tail reads every Poll as before.
	Coalesce time.Duration
	// EndWhenGone, if positive, ends Run (returning nil) once the file
	// has been read to its end after its path went away and nothing has
	// taken the path for this long: a glob stream's file that was
	// removed, not rotated (docs/STREAMS.md). Zero waits for the path to
	// come back, as across a rotation.
	EndWhenGone time.Duration

	backlog []string       // files rotated away while stopped, still to read
	recs    []batch.Record // emit's batch, reused: the sink copies what it keeps

	polls atomic.Int64 // times Run looked at the file for new lines (tests)
	wakes atomic.Int64 // times Run's waits between looks ended (tests)
}

var _ shipper.Source = (*Tail)(nil)

// replayableSink is a Sink that need not journal what a source can give
// again from its cursor (shipper.Shipper).
type replayableSink interface{ SourceReplayable() }

// deadlineSink tells a source when what it appends now is sealed at the
// latest (the open segment's age seal or a bundle tick; zero when it
// cannot say): shipper.Shipper.SealDeadline.
type deadlineSink interface {
	SealDeadline() time.Time
}

var _ deadlineSink = (*shipper.Shipper)(nil)

// roomSink tells a replayable source how much the open segment still
// takes (shipper.Shipper.SealRoom), so that its batches, where such a
// segment must end, keep segments within max_bytes and max_records.
type roomSink interface {
	SealRoom() (bytes int64, records int)
}

type tailCursor struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
	Off int64  `json:"off"`
	// Sum is the CRC-32C of the sumBytes bytes before Off (fewer at the
	// start of the file; omitted when 0): it finds the copy a
	// copytruncate made while ferry was down, which holds the lines after
	// Off the truncation took from the file. Cursors of older ferry
	// versions have none.
	Sum uint32 `json:"sum,omitempty"`
}

// sumBytes is how many bytes before a cursor's offset its Sum covers.
const sumBytes = 64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sumBefore is the Sum of a cursor at off in r. before, if it holds at
// least sumBytes, is the bytes that end at off, which saves a read.
func sumBefore(r io.ReaderAt, off int64, before []byte) uint32 {
	n := min(off, sumBytes)
	if n == 0 {
		return 0
	}
	if int64(len(before)) >= n {
		return crc32.Checksum(before[int64(len(before))-n:], castagnoli)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, off-n); err != nil {
		return 0
	}
	return crc32.Checksum(buf, castagnoli)
}

type tailFile struct {
	f        *os.File
	dev, ino uint64
	off      int64 // next unread byte
	buf      []byte
	rotated  bool // a newer file has taken the path; finish this one
}

func fileID(fi os.FileInfo) (uint64, uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino)
	}
	return 0, 0
}

// TailCursorAt is the cursor of a Tail that has read path up to offset
// off: a spool seeded with it (ferry promote, on a file: replica that
// becomes the primary's log) follows the file from there. The file must
// exist and hold at least off bytes.
func TailCursorAt(path string, off int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tail %s: %w", path, err)
	}
	if fi.Size() < off {
		return nil, fmt.Errorf("tail %s: the file has %d bytes, fewer than the %d to start after", path, fi.Size(), off)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tail %s: %w", path, err)
	}
	defer f.Close()
	dev, ino := fileID(fi)
	return json.Marshal(tailCursor{Dev: dev, Ino: ino, Off: off, Sum: sumBefore(f, off, nil)})
}

// TailCursorOffset is the offset a Tail's cursor (from Spool.Cursor) has
// read path up to: ok is false when cursor is not a Tail's, or names
// another file than path (another device or inode: the file was rotated
// since, or replaced) or path does not exist.
func TailCursorOffset(path string, cursor []byte) (off int64, ok bool, err error) {
	var c tailCursor
	if len(cursor) == 0 || json.Unmarshal(cursor, &c) != nil || c.Ino == 0 {
		return 0, false, nil
	}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("tail %s: %w", path, err)
	}
	if dev, ino := fileID(fi); dev != c.Dev || ino != c.Ino {
		return 0, false, nil
	}
	return c.Off, true, nil
}

// Run follows the file until ctx ends.
func (s *Tail) Run(ctx context.Context, sink shipper.Sink) error {
	if s.Poll <= 0 {
		s.Poll = 100 * time.Millisecond
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.MaxRecordSize <= 0 {
		s.MaxRecordSize = 16 << 20
	}
	p := &recordParser{name: s.Path, format: s.Format, max: s.MaxRecordSize}
	// The file keeps its bytes: after a crash the spool's cursor says
	// where to read again, so the spool need not journal them.
	durable, replayable := sink.(shipper.DurableSink)
	if r, ok := sink.(replayableSink); ok && replayable && s.Replayable {
		r.SourceReplayable()
	} else {
		replayable = false
	}
	idle := &tailIdle{watch: s.Watch}
	defer idle.unwatch()
	cur, err := s.openStart()
	if err != nil {
		return err
	}
	defer func() {
		if cur != nil {
			cur.f.Close()
		}
	}()
	var lastRead time.Time
	for {
		s.polls.Add(1)
		lastRead = time.Now()
		n, err := s.readLines(ctx, cur, p, sink)
		if err != nil {
			return err
		}
		if n > 0 {
			idle.unwatch() // busy: polled, no event per write
			continue
		}
		if cur.rotated {
			idle.unwatch() // the watch is on the old file
			// Drained the old file: ship a final line without newline, move on.
			if err := s.flushPartial(ctx, cur, p, sink); err != nil {
				return err
			}
			if replayable {
				// Its records are in no journal: seal them before the cursor
				// leaves the file, which may be deleted once rotated away.
				if err := durable.AppendDurable(ctx, nil, nil); err != nil {
					return err
				}
			}
			cur.f.Close()
			cur = nil
			if len(s.backlog) > 0 {
				// Another file rotated away while ferry was stopped: read it
				// whole, in rotation order, before the live file.
				next := s.backlog[0]
				s.backlog = s.backlog[1:]
				if cur, err = openRotated(next); err != nil {
					return err
				}
				s.Log.Info("shipping a file rotated while stopped", "path", next)
				continue
			}
			if cur, err = s.waitOpen(ctx); cur == nil {
				if errors.Is(err, errGone) {
					s.Log.Info("tailed file removed: every line read, its stream ends", "path", s.Path)
					return nil
				}
				return err
			}
			continue
		}
		off := cur.off
		if err := s.checkRotation(cur); err != nil {
			return err
		}
		if cur.off != off && replayable {
			// Truncated: the lines read from it are in no journal, and
			// the file no longer has them to read again. Seal them
			// before a cursor into the new content can follow.
			if err := durable.AppendDurable(ctx, nil, nil); err != nil {
				return err
			}
		}
		if cur.rotated || cur.off != off {
			idle.unwatch()
			continue // truncated: what was written since is there to read now
		}
		if idle.empty++; idle.empty >= 2 && idle.wake == nil && idle.watch != nil {
			// Idle: sleep until the file changes. A write between the
			// last read and the watch is read by the read that follows.
			if err := idle.start(s.Path); err != nil {
				return err
			}
			continue
		}
		next := s.nextRead(sink, lastRead)
		if idle.wake == nil {
			next = later(next, time.Now().Add(s.Poll)) // a read spaced Poll from the last look, as always
		}
		if !s.pause(ctx, idle.wake, next, cur) {
			return nil
		}
	}
}

// nextRead is when a tail that last read at lastRead reads again if its
// file has no watch: Poll later, or with Coalesce, up to Coalesce later
// while the open segment's seal is further off, but no later than Poll
// before that seal.
func (s *Tail) nextRead(sink shipper.Sink, lastRead time.Time) time.Time {
	next := lastRead.Add(s.Poll)
	ds, ok := sink.(deadlineSink)
	if s.Coalesce <= s.Poll || !ok {
		return next
	}
	due := ds.SealDeadline()
	if due.IsZero() {
		return next // nothing open: the next line opens a segment, at once
	}
	coalesced := lastRead.Add(s.Coalesce)
	if beforeDue := due.Add(-s.Poll); beforeDue.Before(coalesced) {
		coalesced = beforeDue
	}
	return later(next, coalesced)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// tailIdle is a tail's watch on its file while the file is idle.
type tailIdle struct {
	watch  *TailWatch
	empty  int           // reads in a row that found nothing
	wake   chan struct{} // set while watching
	cancel func()
}

func (t *tailIdle) start(path string) error {
	w, cancel, err := t.watch.watch(path)
	if err != nil {
		return err
	}
	t.wake, t.cancel = w, cancel
	return nil
}

func (t *tailIdle) unwatch() {
	t.empty = 0
	if t.cancel != nil {
		t.cancel()
		t.wake, t.cancel = nil, nil
	}
}

// pause waits until the file may have more: with a watch (wake), for an
// event on it or the Watch's fallback, and then until next; without, until
// next. A wait longer than Poll (Coalesce) looks at the path every Poll
// and ends as soon as cur was rotated away or truncated, so a rotation is
// noticed as soon as without Coalesce (two rotations between looks would
// skip the file between them); with a Watch, the Watch looks for it
// (TailWatch.follow) and the tail sleeps. It returns false when ctx
// ended.
func (s *Tail) pause(ctx context.Context, wake <-chan struct{}, next time.Time, cur *tailFile) bool {
	if wake != nil {
		select {
		case <-ctx.Done():
			return false
		case <-wake:
		case <-s.Watch.everyone():
		}
	}
	if wake == nil && s.Watch != nil && time.Until(next) > s.Poll {
		// The Watch looks at the path every Poll for every such tail at
		// once: this one sleeps until next or a change.
		moved, cancel := s.Watch.follow(s.Path, cur, s.Poll)
		defer cancel()
		return s.sleepOr(ctx, time.Until(next), moved)
	}
	for wake == nil && time.Until(next) > s.Poll {
		if !s.sleep(ctx, s.Poll) {
			return false
		}
		if s.moved(cur) {
			return true
		}
	}
	return s.sleep(ctx, time.Until(next))
}

// moved reports whether the path no longer names cur's file at or past
// its offset: rotated away, removed, or truncated (checkRotation tells
// which).
func (s *Tail) moved(cur *tailFile) bool {
	fi, err := os.Stat(s.Path)
	if err != nil {
		return true
	}
	dev, ino := fileID(fi)
	return dev != cur.dev || ino != cur.ino || fi.Size() < cur.off
}

// sleep waits for wait, or returns false when ctx ends first.
func (s *Tail) sleep(ctx context.Context, wait time.Duration) bool {
	return s.sleepOr(ctx, wait, nil)
}

// sleepOr waits for wait or a signal on or, or returns false when ctx
// ends first.
func (s *Tail) sleepOr(ctx context.Context, wait time.Duration, or <-chan struct{}) bool {
	s.wakes.Add(1)
	if wait <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-or:
		return true
	}
}

// openStart opens the file at the stored cursor, or, when the file was
// rotated while ferry was down, finds the old file by inode in the same
// directory and finishes it first.
func (s *Tail) openStart() (*tailFile, error) {
	var c tailCursor
	if len(s.Cursor) > 0 {
		if err := json.Unmarshal(s.Cursor, &c); err != nil {
			return nil, fmt.Errorf("tail %s: spool cursor unreadable: %v", s.Path, err)
		}
	}
	t, size, err := openTail(s.Path)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	switch {
	case c.Ino == 0:
	case c.Dev == t.dev && c.Ino == t.ino:
		t.off = c.Off
		if size < c.Off {
			if cp := s.findCopy(c); cp != "" {
				if ot, _, err := openTail(cp); err == nil {
					// Its lines after the cursor were never sealed (a crash
					// before the truncation was seen): read them first.
					s.Log.Info("file was truncated while stopped (copytruncate); finishing its copy first", "path", s.Path, "copy", cp, "offset", c.Off)
					t.f.Close()
					ot.off, ot.rotated = c.Off, true
					return ot, nil
				}
			}
			s.Log.Warn("tailed file is shorter than the saved offset (truncated while stopped); reading from the start",
				"path", s.Path, "offset", c.Off, "size", size)
			t.off = 0
		}
	default:
		if old := findByInode(filepath.Dir(s.Path), c.Dev, c.Ino); old != "" {
			if ot, _, err := openTail(old); err == nil {
				s.backlog = s.rotatedSince(old, t.ino)
				s.Log.Info("file was rotated while stopped; finishing the old file first", "path", old, "rotated_files_after_it", len(s.backlog))
				t.f.Close()
				ot.off, ot.rotated = c.Off, true
				return ot, nil
			}
		}
		s.Log.Warn("file was rotated while stopped and the old file is gone; lines after the saved offset in it may be missing",
			"path", s.Path, "offset", c.Off)
	}
	return t, nil
}

// rotatedSince lists the files rotated away after old while ferry was
// stopped: siblings named like the tailed file plus a suffix ("app.log.1",
// "app.log-20261128"), not compressed, neither old nor the live file
// (liveIno), modified no earlier than old; oldest first. Numbered schemes
// that shift names keep mtime order, so mtime is the rotation order.
func (s *Tail) rotatedSince(old string, liveIno uint64) []string {
	ofi, err := os.Stat(old)
	if err != nil {
		return nil
	}
	_, oldIno := fileID(ofi)
	dir, base := filepath.Split(s.Path)
	ents, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return nil
	}
	type cand struct {
		path string
		mod  time.Time
	}
	var cands []cand
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, base) || name == base || filepath.Join(dir, name) == old {
			continue
		}
		if isCompressed(name) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.ModTime().Before(ofi.ModTime()) {
			continue
		}
		if _, ino := fileID(fi); ino == oldIno || ino == liveIno {
			continue
		}
		cands = append(cands, cand{filepath.Join(dir, name), fi.ModTime()})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].mod.Before(cands[j].mod) })
	out := make([]string, len(cands))
	for i, c := range cands {
		out[i] = c.path
	}
	return out
}

// findCopy finds the copy a copytruncate of the tailed file made while
// ferry was stopped: a sibling named like it plus a suffix, not
// compressed, holding at least c.Off bytes, whose sumBytes before c.Off
// match c.Sum; the newest, if several do. "" if none does, or c has no Sum.
func (s *Tail) findCopy(c tailCursor) string {
	if c.Sum == 0 {
		return ""
	}
	dir, base := filepath.Split(s.Path)
	ents, err := os.ReadDir(filepath.Clean(dir))
	if err != nil {
		return ""
	}
	var found string
	var mod time.Time
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, base) || name == base || isCompressed(name) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < c.Off || (found != "" && !fi.ModTime().After(mod)) {
			continue
		}
		p := filepath.Join(dir, name)
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sum := sumBefore(f, c.Off, nil)
		f.Close()
		if sum == c.Sum {
			found, mod = p, fi.ModTime()
		}
	}
	return found
}

func isCompressed(name string) bool {
	switch filepath.Ext(name) {
	case ".gz", ".zst", ".bz2", ".xz", ".lz4":
		return true
	}
	return false
}

func openRotated(path string) (*tailFile, error) {
	t, _, err := openTail(path)
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	t.rotated = true
	return t, nil
}

// openTail opens a regular file to follow and returns it with its size.
// Errors are the os errors (os.ErrNotExist is tested by callers).
func openTail(path string) (*tailFile, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is a directory", path)
	}
	dev, ino := fileID(fi)
	return &tailFile{f: f, dev: dev, ino: ino}, fi.Size(), nil
}

func findByInode(dir string, dev, ino uint64) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if d, i := fileID(fi); d == dev && i == ino {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}

// errGone is waitOpen's error when the path stayed away for EndWhenGone.
var errGone = errors.New("tailed file removed")

// waitOpen opens the path (after rotation it may not exist for a moment).
// It returns nil, nil when ctx ends first, and nil, errGone when
// EndWhenGone passes first.
func (s *Tail) waitOpen(ctx context.Context) (*tailFile, error) {
	var gone <-chan time.Time
	if s.EndWhenGone > 0 {
		t := time.NewTimer(s.EndWhenGone)
		defer t.Stop()
		gone = t.C
	}
	for {
		t, _, err := openTail(s.Path)
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("tail: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-gone:
			return nil, errGone
		case <-time.After(s.Poll):
		}
	}
}

// checkRotation notices rename+create (the path now names another file)
// and copytruncate (the file shrank below our offset).
func (s *Tail) checkRotation(t *tailFile) error {
	fi, err := os.Stat(s.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			t.rotated = true // renamed away; the new file will appear
			return nil
		}
		return fmt.Errorf("tail: %w", err)
	}
	if dev, ino := fileID(fi); dev != t.dev || ino != t.ino {
		t.rotated = true
		return nil
	}
	if fi.Size() < t.off {
		s.Log.Info("tailed file was truncated (copytruncate); reading from the start", "path", s.Path, "offset", t.off)
		t.off = 0
		t.buf = t.buf[:0]
	}
	return nil
}

// readLines reads what is new, appends the complete lines as one batch per
// chunk, and returns how many bytes it consumed.
func (s *Tail) readLines(ctx context.Context, t *tailFile, p *recordParser, sink shipper.Sink) (int, error) {
	consumed := 0
	for {
		if cap(t.buf)-len(t.buf) < 64<<10 {
			nb := make([]byte, len(t.buf), 2*cap(t.buf)+256<<10)
			copy(nb, t.buf)
			t.buf = nb
		}
		n, err := t.f.ReadAt(t.buf[len(t.buf):cap(t.buf)], t.off+int64(len(t.buf)))
		t.buf = t.buf[:len(t.buf)+n]
		if err != nil && !errors.Is(err, io.EOF) {
			return consumed, fmt.Errorf("tail %s: %w", s.Path, err)
		}
		last := bytes.LastIndexByte(t.buf, '\n')
		if last < 0 {
			if len(t.buf) > p.max {
				return consumed, fmt.Errorf("tail %s offset %d: line is over %d bytes (max_record_size): %w", s.Path, t.off, p.max, batch.ErrTooLarge)
			}
			return consumed, nil
		}
		if err := s.emit(ctx, t, p, sink, t.buf[:last+1]); err != nil {
			return consumed, err
		}
		consumed += last + 1
		rest := copy(t.buf, t.buf[last+1:])
		t.buf = t.buf[:rest]
		if n == 0 {
			return consumed, nil
		}
	}
}

// emit appends complete lines in chunk (which ends with a newline) and
// advances the offset with them.
func (s *Tail) emit(ctx context.Context, t *tailFile, p *recordParser, sink shipper.Sink, chunk []byte) error {
	recs := s.recs[:0]
	defer func() { s.recs = recs[:0] }()
	off, start, all := t.off, t.off, chunk
	// Without a journal a segment ends only where a batch does: a batch
	// ends where the open segment is full, as a journaled one is split.
	roomBytes, roomRecords := int64(math.MaxInt64), sourceBatchRecords
	room, sized := sink.(roomSink)
	sized = sized && s.Replayable
	if sized {
		roomBytes, roomRecords = room.SealRoom()
		roomRecords = min(roomRecords, sourceBatchRecords)
	}
	var size int64
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		var line []byte
		if i < 0 {
			line, chunk = chunk, nil
		} else {
			line, chunk = chunk[:i+1], chunk[i+1:]
		}
		p.n++
		rec, err := p.fromLine(line)
		if err != nil {
			return fmt.Errorf("tail %s offset %d: %w", s.Path, off, err)
		}
		off += int64(len(line))
		recs = append(recs, rec)
		size += int64(rec.FramedSize())
		if len(recs) >= roomRecords || size >= roomBytes || len(chunk) == 0 {
			cur, _ := json.Marshal(tailCursor{Dev: t.dev, Ino: t.ino, Off: off, Sum: sumBefore(t.f, off, all[:off-start])})
			if err := sink.AppendBatch(ctx, recs, cur); err != nil {
				return err
			}
			t.off = off
			recs, size = recs[:0], 0
			if sized {
				roomBytes, roomRecords = room.SealRoom()
				roomRecords = min(roomRecords, sourceBatchRecords)
			}
		}
	}
	return nil
}

// flushPartial ships a final unterminated line of a rotated-away file.
func (s *Tail) flushPartial(ctx context.Context, t *tailFile, p *recordParser, sink shipper.Sink) error {
	if len(t.buf) == 0 {
		return nil
	}
	err := s.emit(ctx, t, p, sink, t.buf)
	t.buf = t.buf[:0]
	return err
}
