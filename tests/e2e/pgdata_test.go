//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// ship --pg-data refuses, before it ships anything, a directory that is
// not PostgreSQL's data directory (no pg_wal/archive_status), naming the
// key and the directory, and a relative one naming the key.
func TestShipPGDataRefused(t *testing.T) {
	t.Parallel()
	s := newStream(t, "pg")
	notPG := filepath.Join(s.dir, "not-pgdata")
	if err := os.MkdirAll(filepath.Join(notPG, "pg_wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"ship", "--store", s.store, "--stream", s.name, "--spool", s.spool, "--source", "none"}
	failFerry(t, nil, []string{"ship.pg_data", notPG, "archive_status"}, append(args, "--pg-data", notPG)...)
	failFerry(t, nil, []string{"ship.pg_data", "not an absolute path"}, append(args, "--pg-data", "15/main")...)
}
