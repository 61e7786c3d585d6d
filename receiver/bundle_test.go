package receiver_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store/catalog"
)

const bundleWriter = "0123456789abcdef"

// newBundled returns a counting dir store and a bundle writer into it.
func newBundled(t *testing.T) (*bundletest.Counting, *bundletest.Writer) {
	t.Helper()
	dst, _ := receivertest.NewStore(t)
	st := bundletest.NewCounting(dst)
	return st, bundletest.NewWriter(t, st, bundleWriter)
}

// A stream whose segments are parts of bundles, with segments stored
// alone between them, is applied exactly, in order; the checkpoint names
// the bundle of the last part applied, and a restarted receiver reads no
// bundle up to it again.
func TestReceivesBundledStream(t *testing.T) {
	const s = receivertest.Stream
	st, w := newBundled(t)
	w.Bundle(t, []string{s, "other"}, 5)
	w.Alone(t, s, 7)
	b2, _ := w.Bundle(t, []string{"other", s}, 3)
	w.Bundle(t, []string{"other"}, 4) // no part of s
	w.Restart()
	b4, _ := w.Bundle(t, []string{s, "zzz"}, 2)
	w.Alone(t, s, 1)

	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, bundletest.Want(s, 1, w.Last(s)), "after the first run")
	if cp.LastSeq != w.Last(s) || cp.Bundle == nil || *cp.Bundle != (catalog.BundlePos{Writer: bundleWriter, Number: 4}) {
		t.Fatalf("checkpoint at seq %d, bundle %v; want seq %d, bundle %s/4", cp.LastSeq, cp.Bundle, w.Last(s), bundleWriter)
	}
	if saved := loadCheckpoint(t, cfg); saved.Bundle == nil || *saved.Bundle != *cp.Bundle {
		t.Fatalf("saved checkpoint's bundle %v, want %v", saved.Bundle, cp.Bundle)
	}

	// More, then a new receiver from the saved checkpoint.
	b5, _ := w.Bundle(t, []string{"other", s}, 6)
	w.Alone(t, s, 2)
	before := map[string]int{b2: st.Reads(b2), b4: st.Reads(b4)}
	cp = receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, bundletest.Want(s, 1, w.Last(s)), "after the second run")
	for key, n := range before {
		if got := st.Reads(key); got != n {
			t.Errorf("the second run read %s (at or before the checkpoint's bundle) %d times", key, got-n)
		}
	}
	if st.Reads(b5) != 2 {
		t.Errorf("bundle %s read %d times, want 2 (its index, its part)", b5, st.Reads(b5))
	}
	if *cp.Bundle != (catalog.BundlePos{Writer: bundleWriter, Number: 5}) {
		t.Errorf("checkpoint's bundle %v, want %s/5", cp.Bundle, bundleWriter)
	}
}

// A part and a segment stored alone of the same seqs: the receiver
// refuses the overlap, naming it, and plans nothing (as for two
// segments stored alone).
func TestBundledOverlapRefused(t *testing.T) {
	const s = receivertest.Stream
	st, w := newBundled(t)
	w.Alone(t, s, 3)
	_, parts := w.Bundle(t, []string{s}, 3)
	if err := st.Put(t.Context(), batch.SegmentKey(s, parts[0].Name), parts[0].Data); err != nil {
		t.Fatal(err)
	}
	replica := filepath.Join(t.TempDir(), "replica")
	r := receivertest.Open(t, receivertest.Config(t, st, &apply.File{Path: replica}))
	err := receivertest.Run(t, r)
	if err == nil || !strings.Contains(err.Error(), parts[0].Name) {
		t.Fatalf("Run: %v, want an overlap error naming %s", err, parts[0].Name)
	}
	if r.Applied() != 0 {
		t.Fatalf("applied through seq %d, want 0 (nothing is planned past an overlap)", r.Applied())
	}
}

// A part that is another stream's segment, indexed under this stream
// with its true hash, is refused as damage naming the bundle; so is a
// bundle whose index does not read. Neither is retried for ever.
func TestBundledDamageStops(t *testing.T) {
	const s = receivertest.Stream
	for _, tc := range []struct {
		name  string
		build func(t *testing.T, w *bundletest.Writer) string
	}{
		{"part of another stream", func(t *testing.T, w *bundletest.Writer) string {
			other := w.Seal(t, "apq", 2) // sorts right before "app"
			key := w.Put(t, other)
			// Index it as s's: same name length, stream order kept.
			data := readObject(t, w, key)
			i := bytes.LastIndex(data, []byte("apq 0000")) // the index line, after the parts
			data[i+2] = 'p'
			bundletest.FixIndexHash(data)
			replaceObject(t, w, key, data)
			if err := catalog.WriteBundleMarker(t.Context(), w.Store, catalog.BundleMarker{Stream: s, Writer: bundleWriter, FirstBundle: 1, FirstSeq: 1}); err != nil {
				t.Fatal(err)
			}
			return key
		}},
		{"damaged index", func(t *testing.T, w *bundletest.Writer) string {
			key, _ := w.Bundle(t, []string{s}, 2)
			data := readObject(t, w, key)
			data[len(data)-batch.BundleTrailerSize-3] ^= 1
			replaceObject(t, w, key, data)
			return key
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, w := newBundled(t)
			key := tc.build(t, w)
			cfg := receivertest.Config(t, st, &apply.File{Path: filepath.Join(t.TempDir(), "replica")})
			cfg.RetryBudget = 0 // retried for ever unless refused
			r := receivertest.Open(t, cfg)
			err := receivertest.Run(t, r)
			if err == nil || !strings.Contains(err.Error(), key) || !errors.Is(err, batch.ErrCorrupt) {
				t.Fatalf("Run: %v, want ErrCorrupt naming %s", err, key)
			}
			if r.Applied() != 0 {
				t.Fatalf("applied through seq %d", r.Applied())
			}
		})
	}
}

func readObject(t *testing.T, w *bundletest.Writer, key string) []byte {
	t.Helper()
	rc, err := w.Store.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func replaceObject(t *testing.T, w *bundletest.Writer, key string, data []byte) {
	t.Helper()
	if err := w.Store.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if err := w.Store.Put(t.Context(), key, data); err != nil {
		t.Fatal(err)
	}
}
