//go:build !linux

package shipper

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// DirSource replicates a directory tree; see source_dir.go. It watches with
// inotify and reads beneath its root with openat2, so it runs on Linux only;
// elsewhere Run fails at once.
type DirSource struct {
	Root          string
	SpoolDir      string
	Exclude       []string
	Cursor        []byte
	Debounce      time.Duration
	MaxDelay      time.Duration
	Settle        time.Duration
	ChunkSize     int
	MaxRecordSize int
	IndexEvery    time.Duration
	Baseline      BaselineSchedule
	OnBaseline    func(batch.Baseline)
	Log           *slog.Logger
}

// RequestBaseline does nothing: see DirSource.
func (s *DirSource) RequestBaseline() {}

// Run fails: see DirSource.
func (s *DirSource) Run(ctx context.Context, sink Sink) error {
	return errors.New("source dir:" + s.Root + ": directory-tree sources need Linux (inotify, openat2)")
}
