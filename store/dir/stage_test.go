package dir_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// stage writes data to a staged object under name in pieces of 100 KiB
// and returns it unpublished.
func stage(t *testing.T, s *dir.Store, name string, data []byte) store.Staged {
	t.Helper()
	st, err := s.Stage(t.Context(), name)
	if err != nil {
		t.Fatalf("Stage(%s): %v", name, err)
	}
	for rest := data; len(rest) > 0; {
		k := min(len(rest), 100<<10)
		if _, err := st.Write(rest[:k]); err != nil {
			t.Fatalf("write to staged %s: %v", name, err)
		}
		rest = rest[k:]
	}
	return st
}

// A staged object is stored under its name only by Publish, with Put's
// contract: identical content over an existing object is success,
// different content a conflict that leaves the stored object alone, an
// overlapping segment a conflict; Discard leaves nothing. In both
// publish orders, and with content larger than the chunks it is compared
// in.
func TestStage(t *testing.T) {
	for _, o := range []dir.Options{{}, {PublishBeforeSync: true}} {
		t.Run(map[bool]string{false: "sync-first", true: "publish-first"}[o.PublishBeforeSync], func(t *testing.T) {
			root := t.TempDir()
			s, err := dir.NewWithOptions(root, o)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			data := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
			const seg = "s/00000001-0000000000000001-0000000000000010.seg.zst"
			st := stage(t, s, seg, data)
			if got := listNames(t, s, "s/"); len(got) != 0 {
				t.Fatalf("before Publish, List(s/) = %q, want nothing", got)
			}
			if st.Size() != int64(len(data)) {
				t.Errorf("Size() = %d, want %d", st.Size(), len(data))
			}
			back := make([]byte, 16)
			if _, err := st.ReadAt(back, int64(len(data))-16); err != nil || !bytes.Equal(back, data[len(data)-16:]) {
				t.Errorf("ReadAt the end: %q, %v", back, err)
			}
			if err := st.Publish(ctx); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			st.Discard() // after Publish: nothing
			if got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(seg))); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("published object differs from what was staged (err %v)", err)
			}

			// The same bytes again: a resend, success.
			if err := stage(t, s, seg, data).Publish(ctx); err != nil {
				t.Errorf("Publish of identical content over the object: %v", err)
			}
			// Other bytes (the last one differs, past the first chunk):
			// conflict, the stored object untouched.
			other := slices.Clone(data)
			other[len(other)-1] ^= 1
			if err := stage(t, s, seg, other).Publish(ctx); !errors.Is(err, store.ErrConflict) {
				t.Errorf("Publish of other content under the name: %v, want ErrConflict", err)
			}
			if got, _ := os.ReadFile(filepath.Join(root, filepath.FromSlash(seg))); !bytes.Equal(got, data) {
				t.Error("a conflicting Publish changed the stored object")
			}
			// A segment overlapping the stored one: conflict.
			if err := stage(t, s, "s/00000001-0000000000000008-0000000000000020.seg.zst", data).Publish(ctx); !errors.Is(err, store.ErrConflict) {
				t.Errorf("Publish of an overlapping segment: %v, want ErrConflict", err)
			}
			// Discarded: nothing under the name, no temp file.
			d := stage(t, s, "s/other", data)
			d.Discard()
			d.Discard()
			if err := d.Publish(ctx); err == nil {
				t.Error("Publish after Discard succeeded")
			}
			if got := listNames(t, s, "s/"); !slices.Equal(got, []string{seg}) {
				t.Errorf("List(s/) = %q, want only %s", got, seg)
			}
			ents, err := os.ReadDir(filepath.Join(root, "s"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Name() != filepath.Base(seg) && e.Name() != ".segments-lock.tmp" {
					t.Errorf("left behind in s/: %s", e.Name())
				}
			}
		})
	}
}

// Stage refuses an invalid name as Put does: permanently, before writing.
func TestStageInvalidName(t *testing.T) {
	s := newStore(t, t.TempDir())
	for _, name := range []string{"", "../x", "s/.x.tmp"} {
		if _, err := s.Stage(t.Context(), name); !errors.Is(err, store.ErrPermanent) {
			t.Errorf("Stage(%q): %v, want ErrPermanent", name, err)
		}
	}
}

// RemoveTemps removes what a Put or a staged object left when its process
// died (here: never published), keeps the lock files and the objects, and
// names what it removed.
func TestRemoveTemps(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	const seg = "s/00000001-0000000000000001-0000000000000010.seg.zst"
	if err := s.Put(t.Context(), seg, []byte("stored")); err != nil {
		t.Fatal(err)
	}
	stage(t, s, "s/00000001-0000000000000011-0000000000000020.seg.zst", []byte("torn")) // never published
	removed, err := s.RemoveTemps("s/")
	if err != nil || len(removed) != 1 || !strings.HasPrefix(removed[0], "s/.00000001-0000000000000011-0000000000000020.seg.zst.") {
		t.Fatalf("RemoveTemps = %q, %v; want the staged segment's temp file", removed, err)
	}
	ents, err := os.ReadDir(filepath.Join(root, "s"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{".segments-lock.tmp", filepath.Base(seg)}; !slices.Equal(names, want) {
		t.Errorf("left in s/: %q, want %q", names, want)
	}
	if removed, err := s.RemoveTemps("missing/"); err != nil || removed != nil {
		t.Errorf("RemoveTemps of a missing dir = %q, %v", removed, err)
	}
}
