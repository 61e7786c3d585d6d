package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"
)

// progressEvery is how often a long job (restore, drill, bench) logs its
// progress when stderr is not a terminal: under systemd or in a pipe the
// redrawn line would be invisible, so the journal gets a line instead.
var progressEvery = 10 * time.Second

// progressLine is one look at a job's progress: text for the line redrawn
// on a terminal, attrs for the log line otherwise.
type progressLine struct {
	text  string
	attrs []any
}

// showProgress reports look() until done is closed: on a terminal w, one
// line redrawn twice a second and cleared at the end; otherwise a log
// line msg with look()'s attrs every progressEvery.
func showProgress(w io.Writer, log *slog.Logger, msg string, done <-chan struct{}, look func() progressLine) {
	if isTerminal(w) {
		redrawLine(w, done, func() string { return look().text })
		return
	}
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			log.Info(msg, look().attrs...)
		}
	}
}

// redrawLine shows line() on the terminal w every half second, each over
// the last, until done is closed, then clears it.
func redrawLine(w io.Writer, done <-chan struct{}, line func() string) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			fmt.Fprint(w, "\r\033[K")
			return
		case <-t.C:
			fmt.Fprint(w, "\r\033[K"+line())
		}
	}
}
