package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ferry status reads what a receiver published in its state dir; a file
// there replaced by a link to a device that never ends, a FIFO nobody
// writes, or a huge file is refused at once, naming it, instead of hanging
// or filling memory.
func TestStateFilesRefuseHostileFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/dev/zero", filepath.Join(dir, statusFile)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, recvEncryptionFile), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, ok := readRecvPublished(dir, os.Getpid(), time.Now(), nil); ok {
			t.Errorf("a status.json linked to /dev/zero was taken as published")
		}
		if _, err := readRecvEncryption(dir); err == nil || !strings.Contains(err.Error(), recvEncryptionFile) {
			t.Errorf("encryption.json as a FIFO: %v, want an error naming it", err)
		}
		big := filepath.Join(dir, "big.json")
		if err := os.WriteFile(big, make([]byte, maxStateFile+1), 0o600); err != nil {
			t.Error(err)
			return
		}
		if _, err := readStateFile(big); err == nil || !strings.Contains(err.Error(), "big.json") {
			t.Errorf("a file over %d bytes: %v, want an error naming it", maxStateFile, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reading the state files hung")
	}
}

// The same for a shipper's spool: status.json and state.json as a FIFO or
// a link to /dev/zero make ferry status fail naming the file, not hang.
func TestShipStatusRefusesHostileFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "state.json")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, statusFile), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := readShipStatus(dir, time.Now()); err == nil || !strings.Contains(err.Error(), statusFile) {
			t.Errorf("status.json as a FIFO: %v, want an error naming it", err)
		}
		if err := os.Remove(filepath.Join(dir, statusFile)); err != nil {
			t.Error(err)
			return
		}
		if _, err := readShipStatus(dir, time.Now()); err == nil || !strings.Contains(err.Error(), "state.json") {
			t.Errorf("state.json linked to /dev/zero: %v, want an error naming it", err)
		}
		if pid := lockHolder(dir); pid != 0 {
			t.Errorf("no LOCK: holder %d", pid)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reading the spool's state files hung")
	}
}
