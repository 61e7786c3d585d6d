package source

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testTailWatch, when set, is the Watch startTail gives every Tail.
var testTailWatch *TailWatch

// TestTailWatched runs the tail tests with a TailWatch: appends, a
// partial line, rotation by rename and copytruncate are all noticed
// through its events.
func TestTailWatched(t *testing.T) {
	tw, err := NewTailWatch(quiet, time.Hour) // only events wake the tails
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	testTailWatch = tw
	defer func() { testTailWatch = nil }()
	for name, f := range map[string]func(*testing.T){
		"appended":           TestTailAppendedLines,
		"empty then lines":   TestTailEmptyFileThenLines,
		"partial line":       TestTailPartialLineHeld,
		"rename rotation":    TestTailRenameRotation,
		"rename, no newline": TestTailRenameRotationPartialLastLine,
		"copytruncate":       TestTailCopyTruncate,
		"restart at cursor":  TestTailRestartFromCursor,
	} {
		t.Run(name, f)
	}
}

// TestTailWatchIdle: a watched tail whose file is idle does not look at it
// every Poll (an unwatched one does), and a write wakes it at once.
func TestTailWatchIdle(t *testing.T) {
	tw, err := NewTailWatch(quiet, time.Hour) // only events wake the tails
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	dir := t.TempDir()
	idle := func(watch *TailWatch) int {
		path := filepath.Join(dir, "idle.log")
		if err := os.WriteFile(path, []byte("one\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		src := &Tail{Path: path, Watch: watch, Poll: 10 * time.Millisecond}
		r := startTail(t, src)
		r.wait(t, []string{"one\n"})
		before := src.polls.Load()
		time.Sleep(time.Second)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("two\n")
		f.Close()
		start := time.Now()
		r.wait(t, []string{"one\n", "two\n"})
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("a write to an idle watched file took %s to arrive", d)
		}
		r.stop(t)
		os.Remove(path)
		return int(src.polls.Load() - before)
	}
	if n := idle(tw); n > 8 {
		t.Errorf("a watched tail looked at its idle file %d times in 1 s (Poll 10ms); want only on events", n)
	}
	if n := idle(nil); n < 20 {
		t.Errorf("an unwatched tail looked at its idle file %d times in 1 s (Poll 10ms); the test cannot tell", n)
	}
}

// TestTailWatchRotatedWhileIdle: a watched tail whose idle file is renamed
// away follows the new file at once, not at the next Fallback.
func TestTailWatchRotatedWhileIdle(t *testing.T) {
	tw, err := NewTailWatch(quiet, time.Hour) // only events wake the tails
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, "a\n")
	r := startTail(t, &Tail{Path: path, Watch: tw, Poll: 10 * time.Millisecond})
	r.wait(t, []string{"a\n"})
	time.Sleep(100 * time.Millisecond) // idle: watching
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path) // the new file, empty for a while
	time.Sleep(100 * time.Millisecond)
	appendFile(t, path, "b\n")
	r.wait(t, []string{"a\n", "b\n"})
	time.Sleep(100 * time.Millisecond) // idle on the new file
	appendFile(t, path, "c\n")
	r.wait(t, []string{"a\n", "b\n", "c\n"})
}
