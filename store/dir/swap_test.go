package dir_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// holdLock takes the flock a Swap of s/claims/writer.json takes, as
// another process would, and returns its release.
func holdLock(t *testing.T, root string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, "s", "claims", ".writer.json.swap-lock.tmp"), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("flock: %v", err)
	}
	return func() { f.Close() }
}

// A Swap waits for the lock another process holds, and gives up when its
// context ends.
func TestSwapWaitsForLock(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	const name = "s/claims/writer.json"
	v1, err := s.Swap(t.Context(), name, []byte("a1"), "")
	if err != nil {
		t.Fatal(err)
	}
	release := holdLock(t, root)

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Swap(ctx, name, []byte("b1"), v1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Swap while another holds the lock: %v, want DeadlineExceeded", err)
	}
	if err := s.Delete(ctx, name); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Delete while another holds the lock: %v, want DeadlineExceeded", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := s.Swap(t.Context(), name, []byte("b1"), v1)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Swap returned %v while another held the lock", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Swap once the lock was released: %v", err)
	}
	if data, _, err := s.Load(t.Context(), name); err != nil || string(data) != "b1" {
		t.Errorf("Load = %q, %v; want b1", data, err)
	}
}

// The lock file stays (see lock.go) and is never listed, also after the
// object is deleted.
func TestSwapLockFileHidden(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	const name = "s/claims/writer.json"
	if _, err := s.Swap(t.Context(), name, []byte("a1"), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if got := listNames(t, s, "s/claims/"); got != nil {
		t.Errorf("List(s/claims/) = %q, want nothing", got)
	}
	entries, err := os.ReadDir(filepath.Join(root, "s", "claims"))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	if want := []string{".writer.json.swap-lock.tmp"}; !slices.Equal(files, want) {
		t.Errorf("s/claims holds %q, want just %q", files, want)
	}
	if _, err := s.Swap(t.Context(), name, []byte("a1"), "x"); !errors.Is(err, store.ErrChanged) {
		t.Errorf("Swap of the deleted object from a version: %v, want ErrChanged", err)
	}
}
