package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFileAtomicReplacesAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, content := range []string{"one", "two, longer"} {
		if err := WriteFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %v; want only state.json (no temp files)", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("write into a missing dir: %v; want an error naming it", err)
	}
}

func TestLockRefusesSecondHolder(t *testing.T) {
	dir := t.TempDir()
	f, err := Lock(dir, "spool")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(dir, "spool")
	want := fmt.Sprintf("spool %s is in use by another ferry process (pid %d)", dir, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v; want %q", err, want)
	}
	f.Close()
	g, err := Lock(dir, "spool")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	g.Close()
}

func TestCheckWritableDir(t *testing.T) {
	dir := t.TempDir()
	if err := CheckWritableDir(filepath.Join(dir, "a", "b"), "state"); err != nil {
		t.Fatalf("creating a nested dir: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, p := range []string{file, filepath.Join(file, "sub")} {
		if err := CheckWritableDir(p, "state"); err == nil || !strings.Contains(err.Error(), "state directory "+p) {
			t.Fatalf("CheckWritableDir(%s): %v; want an error naming it", p, err)
		}
	}
	if err := CheckWritableDir("", "spool"); err == nil || !strings.Contains(err.Error(), "spool directory not set") {
		t.Fatalf("empty path: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "a", "b")); len(left) != 0 {
		t.Fatalf("probe file left behind: %v", left)
	}
}

// SyncWithDir runs both fsyncs and reports each one's error, and waits
// for both either way.
func TestSyncWithDir(t *testing.T) {
	dir := t.TempDir()
	ran := false
	if ferr, derr := SyncWithDir(func() error { ran = true; return nil }, dir); ferr != nil || derr != nil || !ran {
		t.Fatalf("SyncWithDir = %v, %v (file sync ran: %t); want nil, nil after running it", ferr, derr, ran)
	}
	boom := fmt.Errorf("file fsync failed")
	missing := filepath.Join(dir, "gone")
	if ferr, derr := SyncWithDir(func() error { return boom }, missing); ferr != boom || derr == nil {
		t.Fatalf("both failing: %v, %v; want the file's error and the directory's", ferr, derr)
	}
	if ferr, derr := SyncWithDir(func() error { return nil }, missing); ferr != nil || derr == nil || !strings.Contains(derr.Error(), "gone") {
		t.Fatalf("directory failing: %v, %v; want nil and an error naming it", ferr, derr)
	}
}

// Locked sees a lock another holder has, and a missing or released LOCK
// as free; probing leaves the holder's lock in place.
func TestLocked(t *testing.T) {
	dir := t.TempDir()
	if held, err := Locked(dir); held || err != nil {
		t.Fatalf("no LOCK: held %v, err %v", held, err)
	}
	f, err := Lock(dir, "spool")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if held, err := Locked(dir); !held || err != nil {
			t.Fatalf("LOCK held: Locked says held %v, err %v", held, err)
		}
	}
	f.Close()
	if held, err := Locked(dir); held || err != nil {
		t.Fatalf("LOCK released: held %v, err %v", held, err)
	}
}

func TestSyncfsReportsErrorsOn(t *testing.T) {
	for rel, want := range map[string]bool{"6.1.0-18-amd64": true, "5.8.0": true, "5.10.1": true, "5.7.19": false, "4.19.0-25": false, "": false, "x": false} {
		if got := SyncfsReportsErrorsOn(rel); got != want {
			t.Errorf("SyncfsReportsErrorsOn(%q) = %v, want %v", rel, got, want)
		}
	}
}
