package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Off a terminal (here a buffer: stderr under systemd or in a pipe),
// progress is logged every progressEvery with the look's attrs, and
// nothing is redrawn.
func TestProgressLoggedOffTerminal(t *testing.T) {
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 20 * time.Millisecond
	var w, logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var n atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		showProgress(&w, log, "restore progress", done, func() progressLine {
			return progressLine{text: "redrawn", attrs: []any{"records", n.Add(1)}}
		})
		close(finished)
	}()
	time.Sleep(150 * time.Millisecond)
	close(done)
	<-finished
	if w.Len() != 0 {
		t.Errorf("wrote %q to a writer that is not a terminal", w.String())
	}
	lines := strings.Count(logs.String(), `msg="restore progress" records=`)
	if lines < 2 || int64(lines) != n.Load() {
		t.Errorf("%d progress lines logged for %d looks, want at least 2, one per look:\n%s", lines, n.Load(), logs.String())
	}
}
