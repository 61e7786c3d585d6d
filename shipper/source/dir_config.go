package source

import (
	"log/slog"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/shipper"
)

// Dir replicates a directory tree: a scan first (against the index of
// what was shipped before, so a restart ships only the differences), then
// inotify events through fsnotify. Changed paths are debounced and their
// state is read when they are shipped, so a burst of writes to one file
// ships its last state once. The index (SPOOL/dirindex) claims a state only
// after the records carrying it are durable in the spool. It runs on Linux
// only (inotify, openat2); elsewhere Run fails at once.
type Dir struct {
	Root     string
	SpoolDir string // where the index lives (the shipper's spool directory)
	// Exclude holds globs (path.Match) matched against each path's base
	// name and against its whole slash-separated path relative to Root.
	// An excluded directory is not watched and nothing under it is shipped.
	Exclude []string
	// Cursor is the spool's cursor (Spool.Cursor()): the number of batches
	// this source appended that the spool kept. It tells the source whether
	// its index is ahead of the spool (possible only with fsync "off").
	Cursor []byte
	// Debounce is how long a path must stay quiet before it is shipped.
	// Default 100ms. MaxDelay bounds how long a path that keeps changing
	// waits (default 2s); it is then shipped if it can be read consistently.
	Debounce time.Duration
	MaxDelay time.Duration
	// Settle: a file changed less than this long ago is read again later
	// (default 20ms). Kernel timestamps are coarse; a write within the same
	// tick as the read could otherwise go unnoticed by the size/mtime check.
	Settle time.Duration
	// ChunkSize is the content carried by one record; larger files go as
	// chunks. Default 1 MiB, capped by MaxRecordSize (default 16 MiB).
	ChunkSize     int
	MaxRecordSize int
	// IndexEvery is how often the index snapshot is rewritten while
	// changes keep coming (it is also written when the pending log grows
	// past 4 MiB or half the snapshot, after a scan and on exit). Default 30s.
	IndexEvery time.Duration
	// Baseline, if set, makes the source ship the whole tree as a
	// baseline whenever it fires (docs/DIRTREE.md, "Baselines"), and at
	// start when this spool has completed none or the schedule fired
	// since the last one. OnBaseline is called with each completed
	// baseline once its end record is durable (stream and generation
	// unset); ferry ship hands it to BaselineMarkers.
	// Ledger, when set, makes this the source of a ferry sync site
	// (docs/SYNC.md): every change ships after a version record, and a
	// state the ledger says a peer's change left is not shipped back.
	Ledger *dirsync.Ledger

	Baseline   BaselineSchedule
	OnBaseline func(batch.Baseline)
	Log        *slog.Logger

	dirSourceRun // Linux: dir.go; elsewhere empty, and Run fails
}

var _ shipper.Source = (*Dir)(nil)

// BaselineSchedule says when baselines are due (a cron.Schedule fits).
type BaselineSchedule interface {
	Next(time.Time) time.Time
}
