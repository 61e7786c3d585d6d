package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/dirsync"
)

// A peer's receiver state in a sync state dir whose checkpoint is damaged
// makes ferry status --state fail naming the peer and the file, rather
// than leave the peer out as if it were not configured.
func TestSyncStatusRefusesDamagedPeerState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, dirsync.LedgerFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	peer := filepath.Join(dir, "peer-b")
	if err := os.Mkdir(peer, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := printSyncStatus(io.Discard, dir, false); err != nil {
		t.Fatalf("a peer with nothing applied yet: %v", err)
	}
	if err := os.WriteFile(filepath.Join(peer, "checkpoint.ferry"), []byte("not a checkpoint"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := printSyncStatus(io.Discard, dir, true)
	if err == nil || !strings.Contains(err.Error(), "peer b") || !strings.Contains(err.Error(), "checkpoint.ferry") {
		t.Fatalf("a damaged peer checkpoint: %v; want an error naming peer b and checkpoint.ferry", err)
	}
}
