//go:build !linux

package source

import (
	"context"
	"errors"

	"github.com/ferry-dr/ferry/shipper"
)

// dirSourceRun holds nothing: Run fails at once off Linux.
type dirSourceRun struct{}

// RequestBaseline does nothing: see Dir.
func (s *Dir) RequestBaseline() {}

// Run fails: see Dir.
func (s *Dir) Run(ctx context.Context, sink shipper.Sink) error {
	return errors.New("source dir:" + s.Root + ": directory-tree sources need Linux (inotify, openat2)")
}
