package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
