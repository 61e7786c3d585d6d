package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/shipper"
)

// startPGReadAhead starts the read-ahead of ship.pg_data (shipper.PGReadAhead)
// on the running shipper's Pusher; stop ends it and waits.
func startPGReadAhead(ctx context.Context, dataDir string, pusher func() (*shipper.Pusher, error), log *slog.Logger) (stop func(), err error) {
	status := filepath.Join(dataDir, "pg_wal", "archive_status")
	if _, err := os.ReadDir(status); err != nil {
		return nil, fmt.Errorf("ship.pg_data %s: %w: give PostgreSQL's data directory, readable by this user", dataDir, err)
	}
	p, err := pusher()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	ra := &shipper.PGReadAhead{DataDir: dataDir, Pusher: p, Log: log}
	go func() { ra.Run(ctx); close(done) }()
	log.Info("reading ahead of PostgreSQL's archive_command", "pg_data", dataDir)
	return func() { cancel(); <-done }, nil
}
