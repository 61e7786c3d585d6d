package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/shipper/spool"
)

const tailPoll = 10 * time.Millisecond

type tailRun struct {
	sink   *fakeSink
	cancel context.CancelFunc
	done   chan error
}

func startTail(t *testing.T, src *Tail) *tailRun {
	t.Helper()
	if src.Poll == 0 {
		src.Poll = tailPoll
	}
	src.Log = quiet
	if src.Watch == nil {
		src.Watch = testTailWatch
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &tailRun{sink: &fakeSink{}, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, r.sink) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels the source and returns Run's error.
func (r *tailRun) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop")
		return nil
	}
}

// wait waits until the sink holds want (exactly, in order), then watches a
// few more polls for anything extra.
func (r *tailRun) wait(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := r.sink.datas()
		if len(got) >= len(want) {
			if !slices.Equal(got, want) {
				t.Fatalf("tail produced\n%q\nwant\n%q", got, want)
			}
			break
		}
		if !slices.Equal(got, want[:len(got)]) {
			t.Fatalf("tail produced\n%q\nwant a prefix of\n%q", got, want)
		}
		select {
		case err := <-r.done:
			t.Fatalf("tail stopped early (%v) with %q", err, got)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: tail produced %q, want %q", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(3 * tailPoll)
	if got := r.sink.datas(); !slices.Equal(got, want) {
		t.Fatalf("tail produced extra records: %q, want %q", got, want)
	}
}

func appendFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func decodeCursor(t *testing.T, b []byte) tailCursor {
	t.Helper()
	var c tailCursor
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("cursor %q: %v", b, err)
	}
	return c
}

func fileCursor(t *testing.T, path string) tailCursor {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := TailCursorAt(path, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return decodeCursor(t, b)
}

func TestTailAppendedLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 2)...)
	r := startTail(t, &Tail{Path: path, Format: FormatLine})
	r.wait(t, batchtest.Lines("l", 1, 2))
	appendFile(t, path, batchtest.Lines("l", 3, 5)...)
	r.wait(t, batchtest.Lines("l", 1, 5))
	if got, want := decodeCursor(t, r.sink.lastCursor()), fileCursor(t, path); got != want {
		t.Fatalf("cursor %+v, want %+v (end of file)", got, want)
	}
	// Every batch's cursor is the offset just after its last line.
	off := int64(0)
	for i, b := range r.sink.batches {
		for _, rec := range b {
			off += int64(len(rec.Data))
		}
		if c := decodeCursor(t, r.sink.cursors[i]); c.Off != off {
			t.Fatalf("batch %d cursor offset %d, want %d", i, c.Off, off)
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestTailEmptyFileThenLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path)
	r := startTail(t, &Tail{Path: path})
	time.Sleep(2 * tailPoll)
	appendFile(t, path, "x\n")
	r.wait(t, []string{"x\n"})
}

func TestTailPartialLineHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, "first\n", "sec")
	r := startTail(t, &Tail{Path: path, Format: FormatLine})
	r.wait(t, []string{"first\n"}) // and not "sec" for three polls
	if c := decodeCursor(t, r.sink.lastCursor()); c.Off != 6 {
		t.Fatalf("cursor offset %d, want 6 (before the partial line)", c.Off)
	}
	appendFile(t, path, "ond")
	time.Sleep(3 * tailPoll)
	appendFile(t, path, "\r\nthird\n")
	r.wait(t, []string{"first\n", "second\r\n", "third\n"})
}

func TestTailRenameRotation(t *testing.T) {
	for _, gap := range []time.Duration{0, 5 * tailPoll} {
		name := "create at once"
		if gap > 0 {
			name = "path missing for a while"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			appendFile(t, path, batchtest.Lines("l", 1, 3)...)
			r := startTail(t, &Tail{Path: path, Format: FormatLine})
			r.wait(t, batchtest.Lines("l", 1, 3))
			for round := range 3 {
				// Lines written just before the rename are read from the old
				// file before the new one is opened.
				base := 3 + round*4
				appendFile(t, path, batchtest.Lines("l", base+1, base+2)...)
				if err := os.Rename(path, filepath.Join(dir, "app.log.1")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(gap)
				appendFile(t, path, batchtest.Lines("l", base+3, base+4)...)
				r.wait(t, batchtest.Lines("l", 1, base+4))
			}
			if got, want := decodeCursor(t, r.sink.lastCursor()), fileCursor(t, path); got != want {
				t.Fatalf("cursor %+v, want the new file's end %+v", got, want)
			}
		})
	}
}

func TestTailRenameRotationPartialLastLine(t *testing.T) {
	// An unterminated last line of a rotated-away file will never be
	// finished: it is shipped as it is.
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, "a\n")
	r := startTail(t, &Tail{Path: path})
	r.wait(t, []string{"a\n"})
	appendFile(t, path, "b\n", "unterminated")
	if err := os.Rename(path, filepath.Join(dir, "app.log.1")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "c\n")
	r.wait(t, []string{"a\n", "b\n", "unterminated", "c\n"})
}

func TestTailCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, batchtest.Lines("old", 1, 5)...)
	r := startTail(t, &Tail{Path: path, Format: FormatLine})
	r.wait(t, batchtest.Lines("old", 1, 5))
	// logrotate copytruncate: copy, then truncate in place.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.log.1"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "n1\n") // shorter than the old offset
	want := append(batchtest.Lines("old", 1, 5), "n1\n")
	r.wait(t, want)
	appendFile(t, path, "n2\n", "n3\n")
	r.wait(t, append(want, "n2\n", "n3\n"))
	if got, want := decodeCursor(t, r.sink.lastCursor()), fileCursor(t, path); got != want {
		t.Fatalf("cursor %+v, want %+v", got, want)
	}
}

func TestTailRestartFromCursor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 3)...)
	appendFile(t, path, "part")
	r := startTail(t, &Tail{Path: path})
	r.wait(t, batchtest.Lines("l", 1, 3))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	cursor := r.sink.lastCursor()

	appendFile(t, path, "ial\n")
	appendFile(t, path, batchtest.Lines("l", 4, 5)...)
	r2 := startTail(t, &Tail{Path: path, Cursor: cursor})
	r2.wait(t, append([]string{"partial\n"}, batchtest.Lines("l", 4, 5)...))
}

func TestTailRotationWhileStopped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 3)...)
	r := startTail(t, &Tail{Path: path})
	r.wait(t, batchtest.Lines("l", 1, 3))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	cursor := r.sink.lastCursor()

	appendFile(t, path, batchtest.Lines("l", 4, 5)...)
	if err := os.Rename(path, filepath.Join(dir, "app.log.1")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, batchtest.Lines("l", 6, 7)...)
	r2 := startTail(t, &Tail{Path: path, Cursor: cursor})
	r2.wait(t, batchtest.Lines("l", 4, 7))
	appendFile(t, path, batchtest.Lines("l", 8, 8)...)
	r2.wait(t, batchtest.Lines("l", 4, 8))
}

func TestTailRotatedAwayWhileStoppedOldFileGone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 3)...)
	r := startTail(t, &Tail{Path: path})
	r.wait(t, batchtest.Lines("l", 1, 3))
	r.stop(t)
	// Rotated out of the directory (deleting it instead could let the new
	// file reuse its inode, which an inode cursor cannot tell apart).
	if err := os.Rename(path, filepath.Join(t.TempDir(), "elsewhere.log")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, batchtest.Lines("new", 1, 2)...)
	r2 := startTail(t, &Tail{Path: path, Cursor: r.sink.lastCursor()})
	r2.wait(t, batchtest.Lines("new", 1, 2))
}

func TestTailTruncatedWhileStopped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, batchtest.Lines("long-line", 1, 3)...)
	r := startTail(t, &Tail{Path: path})
	r.wait(t, batchtest.Lines("long-line", 1, 3))
	r.stop(t)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "s\n")
	r2 := startTail(t, &Tail{Path: path, Cursor: r.sink.lastCursor()})
	r2.wait(t, []string{"s\n"})
}

func TestTailNDJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.ndjson")
	first := `{"key":"k","op":"put","data":"v"}` + "\n"
	appendFile(t, path, first)
	r := startTail(t, &Tail{Path: path, Format: FormatNDJSON})
	waitFor(t, "one record", func() bool { return len(r.sink.records()) == 1 })
	if got := r.sink.records()[0]; string(got.Key) != "k" || got.Op != "put" || string(got.Data) != "v" {
		t.Fatalf("record %+v", got)
	}
	appendFile(t, path, "not json\n")
	select {
	case err := <-r.done:
		r.done <- err
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", len(first))) {
			t.Fatalf("err %v, want it to name the file and offset %d", err, len(first))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail kept going after a bad line")
	}
}

func TestTailOversizeLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, "ok\n", strings.Repeat("x", 200)) // no newline yet
	r := startTail(t, &Tail{Path: path, MaxRecordSize: 64})
	select {
	case err := <-r.done:
		r.done <- err
		if !errors.Is(err, batch.ErrTooLarge) || !strings.Contains(err.Error(), "offset 3") {
			t.Fatalf("err %v, want ErrTooLarge at offset 3", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail kept going past an oversize line")
	}
	if got := r.sink.datas(); !slices.Equal(got, []string{"ok\n"}) {
		t.Fatalf("appended %q, want the line before it", got)
	}
}

func TestTailMissingFile(t *testing.T) {
	src := &Tail{Path: filepath.Join(t.TempDir(), "nope.log"), Poll: tailPoll, Log: quiet}
	if err := src.Run(context.Background(), &fakeSink{}); err == nil || !strings.Contains(err.Error(), "nope.log") {
		t.Fatalf("err %v, want it to name the file", err)
	}
}

func TestTailBadCursor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, "x\n")
	src := &Tail{Path: path, Cursor: []byte("garbage"), Poll: tailPoll, Log: quiet}
	if err := src.Run(context.Background(), &fakeSink{}); err == nil || !strings.Contains(err.Error(), "cursor") {
		t.Fatalf("err %v, want a cursor error", err)
	}
}

func TestTailIntoSpoolRestart(t *testing.T) {
	// The cursor travels through the spool: after a restart of the spool,
	// Spool.Cursor resumes the tail exactly after the last accepted line.
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 4)...)
	cfg := spool.Config{Dir: t.TempDir(), Stream: "app", Fsync: spool.FsyncBatch}
	cfg.Policy.MaxRecords = 3
	sp := openSpool(t, cfg)

	run := func(cursor []byte, want int) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		src := &Tail{Path: path, Cursor: cursor, Poll: tailPoll, Log: quiet}
		go func() { done <- src.Run(ctx, spoolSink{sp}) }()
		waitFor(t, "records in the spool", func() bool { return sp.Stats().LastSeq == uint64(want) })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run(nil, 4)
	sp.Close()
	appendFile(t, path, batchtest.Lines("l", 5, 6)...)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, batchtest.Lines("l", 7, 7)...)
	sp = openSpool(t, cfg)
	run(sp.Cursor(), 7)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	all := batchtest.CheckChain(t, batchtest.ReadDir(t, filepath.Join(cfg.Dir, "sealed")), 0, batch.ZeroHash)
	if got := batchtest.Datas(all); !slices.Equal(got, batchtest.Lines("l", 1, 7)) {
		t.Fatalf("spool holds %q", got)
	}
}

// spoolSink appends straight into a spool, as the shipper does.
type spoolSink struct{ sp *spool.Spool }

func (s spoolSink) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	_, err := s.sp.Append(ctx, recs, cursor)
	return err
}

// A Tail started from TailCursorAt reads only what was appended after the
// offset: the lines before it are already the stream's.
func TestTailCursorAtStartsAfterOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replica.log")
	if err := os.WriteFile(path, []byte("old 1\nold 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cur, err := TailCursorAt(path, int64(len("old 1\nold 2\n")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TailCursorAt(path, 1<<20); err == nil {
		t.Fatal("TailCursorAt past the end of the file: no error")
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new 1\nnew 2\n")
	f.Close()
	src := &Tail{Path: path, Format: "line", MaxRecordSize: 1 << 20, Poll: tailPoll, Cursor: cur, Log: quiet}
	sink := &fakeSink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	waitFor(t, "two new lines", func() bool { return len(sink.datas()) >= 2 })
	cancel()
	<-done
	if got := sink.datas(); len(got) != 2 || got[0] != "new 1\n" || got[1] != "new 2\n" {
		t.Fatalf("tail from the cursor read %q; want only the two new lines", got)
	}
}

// TestTailEndWhenGone checks a removed file is read to its end, including
// lines written just before the removal and a last line without newline,
// and that Run then ends by itself; a rotation (the path back within
// EndWhenGone) continues as before.
func TestTailEndWhenGone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 2)...)
	r := startTail(t, &Tail{Path: path, Format: FormatLine, EndWhenGone: 20 * tailPoll})
	r.wait(t, batchtest.Lines("l", 1, 2))
	// A rotation: the path is back well within EndWhenGone.
	appendFile(t, path, batchtest.Lines("l", 3, 3)...)
	if err := os.Rename(path, filepath.Join(dir, "app.log.1")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, batchtest.Lines("l", 4, 4)...)
	r.wait(t, batchtest.Lines("l", 1, 4))
	// A removal: the open file is finished, then Run ends.
	appendFile(t, path, "l5\n", "l6")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after the file was removed")
	}
	if got, want := r.sink.datas(), append(batchtest.Lines("l", 1, 4), "l5\n", "l6"); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A copytruncate while the tail was stopped: the copy (found by the
// cursor's sum of the bytes before its offset) holds the lines after the
// cursor that the truncation took from the file; they are read from it
// first, then the file from 0. A cursor without a sum (older ferry)
// reads the file from 0 as before.
func TestTailCopyTruncatedWhileStopped(t *testing.T) {
	for _, withSum := range []bool{true, false} {
		t.Run(fmt.Sprint("sum=", withSum), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			appendFile(t, path, batchtest.Lines("l", 1, 5)...)
			r := startTail(t, &Tail{Path: path})
			r.wait(t, batchtest.Lines("l", 1, 5))
			r.stop(t)
			cursor := r.sink.lastCursor()
			if !withSum {
				c := decodeCursor(t, cursor)
				c.Sum = 0
				cursor, _ = json.Marshal(c)
			}
			appendFile(t, path, batchtest.Lines("l", 6, 8)...)
			// Another rotated file that is no copy of this one, with as many bytes.
			appendFile(t, filepath.Join(dir, "app.log.2"), batchtest.Lines("x", 1, 8)...)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "app.log.1"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, "n1\n")
			want := append(batchtest.Lines("l", 6, 8), "n1\n")
			if !withSum {
				want = []string{"n1\n"}
			}
			r2 := startTail(t, &Tail{Path: path, Cursor: cursor})
			r2.wait(t, want)
			if got, want := decodeCursor(t, r2.sink.lastCursor()), fileCursor(t, path); got != want {
				t.Fatalf("cursor %+v, want %+v", got, want)
			}
		})
	}
}
