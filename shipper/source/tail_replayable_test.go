package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/shipper"
)

// journalSize is the size of the journal files in a spool directory.
func journalSize(t *testing.T, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "journal") {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			n += fi.Size()
		}
	}
	return n
}

// A Replayable tail's lines go only into segments: the spool's journal
// stays empty, and the newest segment carries the offset after its last
// line. Without Replayable they are journaled as before.
func TestTailReplayableSkipsJournal(t *testing.T) {
	for _, replayable := range []bool{true, false} {
		t.Run(fmt.Sprint("replayable=", replayable), func(t *testing.T) {
			cfg, _ := shipperConfig(t)
			cfg.Spool.Policy.MaxRecords = 1000 // open batches stay open
			sh := startShipper(t, cfg)
			path := filepath.Join(t.TempDir(), "app.log")
			var data []byte
			for i := 1; i <= 250; i++ {
				data = fmt.Appendf(data, "line %04d\n", i)
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- (&Tail{Path: path, Format: FormatLine, Log: quiet, Replayable: replayable}).Run(ctx, sh)
			}()
			waitFor(t, "250 lines appended", func() bool { return sh.Spool().LastSeq() == 250 })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			n := journalSize(t, cfg.Spool.Dir)
			if replayable && n != 0 {
				t.Fatalf("journal holds %d bytes; a replayable tail's lines go only into segments", n)
			}
			if !replayable && n == 0 {
				t.Fatal("journal is empty; a tail that is not Replayable journals its lines")
			}
			drain(t, sh) // seals the open batch with the cursor after line 250
			want, _ := TailCursorAt(path, int64(len(data)))
			if got := sh.Spool().Cursor(); string(got) != string(want) {
				t.Fatalf("cursor %s after the seal, want %s", got, want)
			}
		})
	}
}

// A Replayable tail seals what it read before it follows a truncated file
// (copytruncate) from offset 0: the lines read before are in no journal,
// and the file no longer holds them. A crash right after loses none: the
// shipper is closed without a drain (its open batch is lost, as in a
// kill -9) and a new one, from the spool's cursor, ships the rest once.
func TestTailReplayableSealsBeforeTruncation(t *testing.T) {
	cfg, st := shipperConfig(t)
	cfg.Spool.Policy.MaxRecords = 100000 // only the truncation seals
	sh, err := shipper.New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, batchtest.Lines("old", 1, 50)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Tail{Path: path, Format: FormatLine, Poll: 5 * time.Millisecond, Log: quiet, Replayable: true}).Run(ctx, sh)
	}()
	waitFor(t, "50 lines appended", func() bool { return sh.Spool().LastSeq() == 50 })
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, batchtest.Lines("new", 1, 3)...)
	waitFor(t, "the 3 lines after the truncation appended", func() bool { return sh.Spool().LastSeq() == 53 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := sh.Close(); err != nil { // no drain: the open batch is lost
		t.Fatal(err)
	}

	appendFile(t, path, batchtest.Lines("new", 4, 5)...)
	sh = startShipper(t, cfg)
	if got := sh.Spool().LastSeq(); got != 50 {
		t.Fatalf("after the crash the spool holds seqs through %d, want 50: the lines read before the truncation sealed", got)
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		done <- (&Tail{Path: path, Format: FormatLine, Poll: 5 * time.Millisecond, Cursor: sh.Spool().Cursor(), Log: quiet, Replayable: true}).Run(ctx, sh)
	}()
	waitFor(t, "55 lines appended", func() bool { return sh.Spool().LastSeq() == 55 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	drain(t, sh)
	got := batchtest.Datas(batchtest.CheckChain(t, batchtest.ReadStore(t, st, "app"), 0, batch.ZeroHash))
	if want := slices.Concat(batchtest.Lines("old", 1, 50), batchtest.Lines("new", 1, 5)); !slices.Equal(got, want) {
		t.Fatalf("stored %d lines %q, want %d: %q", len(got), got, len(want), want)
	}
}

// Without a journal a segment ends only where the source's batch does, so
// a Replayable tail ends its batches where the open segment is full
// (Shipper.SealRoom): a file read in one go still seals into segments
// within max_bytes and max_records (up to the record that crosses them),
// as a journaled tail's are split.
func TestTailReplayableBatchesKeepSegmentLimits(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
		maxRecs  int
	}{{"max_bytes", 4 << 10, 0}, {"max_records", 0, 70}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, st := shipperConfig(t)
			cfg.Spool.Policy.MaxBytes, cfg.Spool.Policy.MaxRecords = tc.maxBytes, tc.maxRecs
			sh := startShipper(t, cfg)
			path := filepath.Join(t.TempDir(), "app.log")
			appendFile(t, path, batchtest.Lines("line", 1, 3000)...)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- (&Tail{Path: path, Format: FormatLine, Log: quiet, Replayable: true}).Run(ctx, sh)
			}()
			waitFor(t, "3000 lines appended", func() bool { return sh.Spool().LastSeq() == 3000 })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			drain(t, sh)
			segs := batchtest.ReadStore(t, st, "app")
			got := batchtest.Datas(batchtest.CheckChain(t, segs, 0, batch.ZeroHash))
			if want := batchtest.Lines("line", 1, 3000); !slices.Equal(got, want) {
				t.Fatalf("stored %d lines, want the file's 3000", len(got))
			}
			for _, sg := range segs {
				var size int64
				var last int
				for i := range sg.Records {
					last = sg.Records[i].FramedSize()
					size += int64(last)
				}
				if tc.maxBytes > 0 && size-int64(last) >= tc.maxBytes {
					t.Fatalf("segment %s holds %d framed bytes, past max_bytes %d by more than its last record", sg.Name, size, tc.maxBytes)
				}
				if tc.maxRecs > 0 && len(sg.Records) > tc.maxRecs {
					t.Fatalf("segment %s holds %d records, max_records %d", sg.Name, len(sg.Records), tc.maxRecs)
				}
			}
			if len(segs) < 10 {
				t.Fatalf("%d segments for 3000 lines", len(segs))
			}
		})
	}
}
