package dir_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

// publishFirst is a Store with Options.PublishBeforeSync rooted at root.
func publishFirst(t testing.TB, root string) *dir.Store {
	t.Helper()
	s, err := dir.NewWithOptions(root, dir.Options{PublishBeforeSync: true})
	if err != nil {
		t.Fatalf("NewWithOptions(%s): %v", root, err)
	}
	return s
}

// The other publish order keeps every contract the suite checks.
func TestConformancePublishBeforeSync(t *testing.T) {
	storetest.RunWith(t, caps, func(t *testing.T) store.Store {
		return publishFirst(t, t.TempDir())
	})
}

// Both publish orders leave the same file under the same name, and each
// answers a Put over the other's object the same way.
func TestPublishBeforeSyncSameObject(t *testing.T) {
	root := t.TempDir()
	fast, plain := publishFirst(t, root), newStore(t, root)
	data := bytes.Repeat([]byte("segment "), 2048)
	if err := fast.Put(t.Context(), "s/a", data); err != nil {
		t.Fatal(err)
	}
	if err := plain.Put(t.Context(), "s/b", data); err != nil {
		t.Fatal(err)
	}
	a, errA := os.Stat(filepath.Join(root, "s", "a"))
	b, errB := os.Stat(filepath.Join(root, "s", "b"))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if a.Mode() != b.Mode() || a.Size() != b.Size() {
		t.Errorf("published files differ: %v %d bytes, %v %d bytes", a.Mode(), a.Size(), b.Mode(), b.Size())
	}
	if got, err := os.ReadFile(filepath.Join(root, "s", "a")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("content under s/a is not what was put (err %v)", err)
	}
	if got := listNames(t, fast, "s/"); !slices.Equal(got, []string{"s/a", "s/b"}) {
		t.Errorf("List(s/) = %q, want [s/a s/b]", got)
	}
	for _, s := range []*dir.Store{fast, plain} {
		for _, name := range []string{"s/a", "s/b"} {
			if err := s.Put(t.Context(), name, data); err != nil {
				t.Errorf("identical Put(%s) over an existing object: %v", name, err)
			}
			other := bytes.ToUpper(data)
			if err := s.Put(t.Context(), name, other); !errors.Is(err, store.ErrConflict) {
				t.Errorf("different Put(%s) over an existing object: %v, want ErrConflict", name, err)
			}
		}
	}
	if got, err := os.ReadFile(filepath.Join(root, "s", "a")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("s/a changed by a refused Put (err %v)", err)
	}
	checkNoTempFiles(t, filepath.Join(root, "s"))
}

// A file already under the name, torn or foreign, is never replaced.
func TestPublishBeforeSyncNeverReplaces(t *testing.T) {
	root := t.TempDir()
	s := publishFirst(t, root)
	data := []byte("the whole segment")
	if err := os.Mkdir(filepath.Join(root, "s"), 0o755); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(root, "s", "torn")
	if err := os.WriteFile(torn, data[:5], 0o644); err != nil {
		t.Fatal(err)
	}
	err := s.Put(t.Context(), "s/torn", data)
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "s/torn") {
		t.Errorf("Put over a torn file: %v, want ErrConflict naming s/torn", err)
	}
	if got, _ := os.ReadFile(torn); !bytes.Equal(got, data[:5]) {
		t.Errorf("torn file changed to %q", got)
	}
	checkNoTempFiles(t, filepath.Join(root, "s"))
}

// lateCancel is a context that reports cancellation from the after-th call
// of Err on, to cancel a Put between writing its temp file and linking it.
type lateCancel struct {
	context.Context
	after int32
	calls atomic.Int32
}

func (c *lateCancel) Err() error {
	if c.calls.Add(1) >= c.after {
		return context.Canceled
	}
	return nil
}

// Failures after the temp file is written remove it and publish nothing.
func TestPublishBeforeSyncFailureLeavesNoTemp(t *testing.T) {
	root := t.TempDir()
	s := publishFirst(t, root)
	if err := s.Put(t.Context(), "s/sub/x", []byte("x")); err != nil {
		t.Fatal(err)
	}

	// Cancelled once the temp file is written: Put checks ctx before the
	// link, after its first check at entry.
	ctx := &lateCancel{Context: t.Context(), after: 2}
	if err := s.Put(ctx, "s/cancelled", []byte("data")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put cancelled before the link: %v, want context.Canceled", err)
	}
	if ctx.calls.Load() < 2 {
		t.Fatalf("Put checked ctx %d times; the test no longer cancels between write and link", ctx.calls.Load())
	}

	// The name is a directory: the link fails and nothing matches.
	if err := s.Put(t.Context(), "s/sub", []byte("x")); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put over a directory: %v, want ErrPermanent", err)
	}
	if got := listNames(t, s, "s/"); got != nil {
		t.Errorf("List(s/) after failed Puts = %q, want nothing", got)
	}
	checkNoTempFiles(t, filepath.Join(root, "s"))
}

// An unwritable directory: the temp file cannot even be created.
func TestPublishBeforeSyncUnwritable(t *testing.T) {
	root := t.TempDir()
	s := publishFirst(t, root)
	if err := s.Put(t.Context(), "s/sub/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "s", "sub")
	if err := os.Chmod(sub, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(sub, 0o755) })
	probe := filepath.Join(sub, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err == nil {
		os.Remove(probe)
		t.Skip("chmod 0o500 does not stop writes here (running as root?)")
	}
	if err := s.Put(t.Context(), "s/sub/y", []byte("y")); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put into an unwritable directory: %v, want ErrPermanent", err)
	}
	checkNoTempFiles(t, sub)
}

// BenchmarkPut compares the two publish orders for 10 KB objects, each Put
// under a new name. Run it on a real disk: TMPDIR decides where.
func BenchmarkPut(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789"), 1024)
	for _, bc := range []struct {
		name string
		opts dir.Options
	}{
		{"sync-then-link", dir.Options{}},
		{"link-then-sync", dir.Options{PublishBeforeSync: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := dir.NewWithOptions(b.TempDir(), bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			i := 0
			for b.Loop() {
				if err := s.Put(b.Context(), fmt.Sprintf("s/%016x", i), data); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
