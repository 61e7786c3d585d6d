package catalog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

const writerID = "00000000000000aa"

// counting is a store that counts reads per object.
type counting struct {
	store.RangeGetter
	mu    sync.Mutex
	reads map[string]int
}

func newCounting(t *testing.T) *counting {
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &counting{RangeGetter: st, reads: map[string]int{}}
}

func (c *counting) count(name string) {
	c.mu.Lock()
	c.reads[name]++
	c.mu.Unlock()
}

func (c *counting) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	c.count(name)
	return c.RangeGetter.Get(ctx, name)
}

func (c *counting) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	c.count(name)
	return c.RangeGetter.GetRange(ctx, name, off, p)
}

func (c *counting) GetSuffix(ctx context.Context, name string, p []byte) (int, int64, error) {
	c.count(name)
	return c.RangeGetter.GetSuffix(ctx, name, p)
}

func (c *counting) Reads(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[name]
}

// names is the names of segs.
func names(segs []catalog.Segment) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.Name
	}
	return out
}

// records reads every segment of segs (parts by ReadPart) and returns the
// records' data, checking each continues the chain.
func records(t *testing.T, st store.Store, segs []catalog.Segment) []byte {
	t.Helper()
	var out bytes.Buffer
	prev := batch.ZeroHash
	for _, s := range segs {
		var data []byte
		var err error
		if s.Part != nil {
			data, err = catalog.ReadPart(t.Context(), st, s, nil, 0)
		} else {
			var rc io.ReadCloser
			if rc, err = st.Get(t.Context(), s.Key); err == nil {
				data, err = io.ReadAll(rc)
				rc.Close()
			}
		}
		if err != nil {
			t.Fatalf("read %s: %v", s.Key, err)
		}
		seg, err := batch.Open(data)
		if err != nil {
			t.Fatalf("open %s: %v", s.Name, err)
		}
		if seg.Meta.PrevSHA256 != prev {
			t.Fatalf("%s does not continue the chain", s.Name)
		}
		prev = seg.Hash
		recs, err := seg.Records(batch.DefaultMaxSegmentBytes)
		if err != nil {
			t.Fatal(err)
		}
		for i := range recs.Len() {
			out.Write(recs.Data(i))
		}
	}
	return out.Bytes()
}

// A stream's segments, alone and in bundles, come merged in seq order; a
// reader's position and after skip what it applied; each index is read
// once per lister.
func TestSegmentsMergesPartsAndOwnSegments(t *testing.T) {
	st := newCounting(t)
	w := bundletest.NewWriter(t, st, writerID)
	b1, _ := w.Bundle(t, []string{"a", "b", "c"}, 5)
	w.Alone(t, "a", 5)
	b2, _ := w.Bundle(t, []string{"a", "b"}, 5)
	b3, _ := w.Bundle(t, []string{"b", "c"}, 5)
	w.Alone(t, "a", 3)
	w.Restart()
	b4, _ := w.Bundle(t, []string{"a", "c"}, 2)

	l := catalog.NewSegmentLister(st, "a")
	segs, err := l.List(t.Context(), "", catalog.BundlePos{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		batch.SegmentName(1, 1, 5), batch.SegmentName(1, 6, 10), batch.SegmentName(1, 11, 15),
		batch.SegmentName(1, 16, 18), batch.SegmentName(1, 19, 20),
	}
	if got := names(segs); !slices.Equal(got, want) {
		t.Fatalf("segments of a: %q, want %q", got, want)
	}
	for i, key := range []string{b1, "a/" + want[1], b2, "a/" + want[3], b4} {
		if segs[i].Key != key || (segs[i].Part != nil) != strings.HasPrefix(key, "_bundles/") {
			t.Errorf("segment %s read from %s (part %v), want %s", segs[i].Name, segs[i].Key, segs[i].Part != nil, key)
		}
	}
	if got, want := records(t, st, segs), bundletest.Want("a", 1, 20); !bytes.Equal(got, want) {
		t.Fatalf("records of a: %q, want %q", got, want)
	}
	if n := st.Reads(b3); n != 1 {
		t.Errorf("bundle %s (no part of a) read %d times, want once (its index)", b3, n)
	}

	// Again, after the second part: b1 and b2 are not read again.
	before := map[string]int{b1: st.Reads(b1), b2: st.Reads(b2), b3: st.Reads(b3), b4: st.Reads(b4)}
	segs, err = l.List(t.Context(), want[2], catalog.BundlePos{Writer: writerID, Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(segs); !slices.Equal(got, want[3:]) {
		t.Fatalf("segments of a after %s: %q, want %q", want[2], got, want[3:])
	}
	for key, n := range before {
		if got := st.Reads(key); got != n {
			t.Errorf("listing again read %s %d more times; a lister reads each index once", key, got-n)
		}
	}

	// A new lister from the position does not read bundles 1 and 2.
	before = map[string]int{b1: st.Reads(b1), b2: st.Reads(b2)}
	if _, err := catalog.NewSegmentLister(st, "a").List(t.Context(), want[2], catalog.BundlePos{Writer: writerID, Number: 2}); err != nil {
		t.Fatal(err)
	}
	for key, n := range before {
		if got := st.Reads(key); got != n {
			t.Errorf("a lister after bundle 2 read %s", key)
		}
	}

	// Stream c: parts only, in bundles 1, 3 and 4.
	segs, err = catalog.Segments(t.Context(), st, "c", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := records(t, st, segs), bundletest.Want("c", 1, 12); !bytes.Equal(got, want) {
		t.Fatalf("records of c: %q, want %q", got, want)
	}
}

// A bundle whose index is larger than one suffix read takes a second
// ranged read, and still lists every stream's part.
func TestSegmentsLargeIndex(t *testing.T) {
	st := newCounting(t)
	w := bundletest.NewWriter(t, st, writerID)
	var streams []string
	for i := range 300 {
		streams = append(streams, fmt.Sprintf("s-%03d-%s", i, strings.Repeat("x", 112)))
	}
	key, _ := w.Bundle(t, streams, 1)
	rc, err := st.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	for _, s := range []string{streams[0], streams[299]} {
		segs, err := catalog.Segments(t.Context(), st, s, "")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := records(t, st, segs), bundletest.Want(s, 1, 1); !bytes.Equal(got, want) {
			t.Fatalf("records of %s: %q, want %q", s, got, want)
		}
	}
	// Two listings, each: the suffix and the rest of the index; then
	// each part once. (The Get above is one more.)
	if n := st.Reads(key); n != 1+2*(2+1) {
		t.Errorf("bundle read %d times, want 7 (1 Get, per stream 2 index reads and 1 part)", n)
	}
}

// forge rewrites the index of the bundle stored under key with edit (same
// length) and fixes the trailer's hash, so that the index reads as valid
// and says what edit made it say.
func forge(t *testing.T, st store.Store, key string, edit func(idx []byte)) {
	t.Helper()
	data := readAll(t, st, key)
	tr := data[len(data)-batch.BundleTrailerSize:]
	off, n := binary.LittleEndian.Uint64(tr[24:]), binary.LittleEndian.Uint64(tr[32:])
	idx := data[off : off+n]
	edit(idx)
	sum := sha256.Sum256(idx)
	copy(tr[40:], sum[:])
	replace(t, st, key, data)
}

func readAll(t *testing.T, st store.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// replace stores data under key in place of what is there.
func replace(t *testing.T, st store.Store, key string, data []byte) {
	t.Helper()
	if err := st.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(t.Context(), key, data); err != nil {
		t.Fatal(err)
	}
}

// readParts lists stream and reads each of its parts, returning the first
// error.
func readParts(t *testing.T, st store.Store, stream string) error {
	t.Helper()
	segs, err := catalog.Segments(t.Context(), st, stream, "")
	if err != nil {
		return err
	}
	for _, s := range segs {
		if s.Part == nil {
			continue
		}
		if _, err := catalog.ReadPart(t.Context(), st, s, nil, 0); err != nil {
			return err
		}
	}
	return nil
}

func TestSegmentsHostile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stream  string
		build   func(t *testing.T, st store.Store, w *bundletest.Writer) string // returns the bundle key
		want    string                                                          // in the error; "" for none
		corrupt bool
	}{
		{
			name: "index names another stream's part", stream: "b",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				key, _ := w.Bundle(t, []string{"a", "c"}, 3)
				forge(t, st, key, func(idx []byte) {
					i := bytes.Index(idx, []byte("\nc "))
					idx[i+1] = 'b' // c's part, its true hash, indexed as b's
				})
				if err := catalog.WriteBundleMarker(t.Context(), st, catalog.BundleMarker{Stream: "b", Writer: writerID, FirstBundle: 1, FirstSeq: 1}); err != nil {
					t.Fatal(err)
				}
				return key
			},
			want: "holds segment c/", corrupt: true,
		},
		{
			name: "index with a wrong hash", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				seg := w.Seal(t, "a", 3)
				w.Restart()
				segs := []bundletest.Seg{seg}
				segs[0].Hash = strings.Repeat("0", 64)
				return w.Put(t, segs...)
			},
			want: "the index says 0000000000000000", corrupt: true,
		},
		{
			name: "index with other seqs", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				key, _ := w.Bundle(t, []string{"a"}, 3)
				forge(t, st, key, func(idx []byte) {
					i := bytes.Index(idx, []byte("0000000000000003 "))
					idx[i+15] = '2' // last seq 3 -> 2
				})
				return key
			},
			want: "holds segment a/", corrupt: true,
		},
		{
			name: "damaged index", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				key, _ := w.Bundle(t, []string{"a", "b"}, 3)
				data := readAll(t, st, key)
				data[len(data)-batch.BundleTrailerSize-10] ^= 1
				replace(t, st, key, data)
				return key
			},
			want: "does not match its sha256", corrupt: true,
		},
		{
			name: "damaged part", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				key, _ := w.Bundle(t, []string{"a", "b"}, 3)
				data := readAll(t, st, key)
				data[40] ^= 1
				replace(t, st, key, data)
				return key
			},
			want: "the index says", corrupt: true,
		},
		{
			name: "truncated bundle", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				key, _ := w.Bundle(t, []string{"a", "b"}, 3)
				data := readAll(t, st, key)
				replace(t, st, key, data[:len(data)-1])
				return key
			},
			corrupt: true,
		},
		{
			name: "trailer claims a huge index", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				key, _ := w.Bundle(t, []string{"a"}, 3)
				data := readAll(t, st, key)
				tr := data[len(data)-batch.BundleTrailerSize:]
				binary.LittleEndian.PutUint64(tr[24:], 0)
				binary.LittleEndian.PutUint64(tr[32:], 1<<40)
				replace(t, st, key, data)
				return key
			},
			corrupt: true,
		},
		{
			name: "damaged marker", stream: "a",
			build: func(t *testing.T, st store.Store, w *bundletest.Writer) string {
				w.Bundle(t, []string{"a"}, 3)
				m := catalog.BundleMarker{Stream: "a", Writer: writerID, FirstBundle: 7, FirstSeq: 4}
				if err := st.Put(t.Context(), m.Key(), []byte(`{"version":1,"stream":"a"}`)); err != nil {
					t.Fatal(err)
				}
				return m.Key()
			},
			want: "is damaged", corrupt: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newCounting(t)
			w := bundletest.NewWriter(t, st, writerID)
			key := tc.build(t, st, w)
			err := readParts(t, st, tc.stream)
			if err == nil {
				t.Fatalf("read %s: no error", tc.stream)
			}
			if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s and say %q", err, key, tc.want)
			}
			if tc.corrupt && !errors.Is(err, batch.ErrCorrupt) {
				t.Errorf("error %q does not wrap batch.ErrCorrupt", err)
			}
		})
	}
}

// A segment stored alone and a part of the same seqs are both listed,
// the one stored alone first (readers refuse the overlap), and so are
// ranges that overlap in part.
func TestSegmentsOverlapBothListed(t *testing.T) {
	st := newCounting(t)
	w := bundletest.NewWriter(t, st, writerID)
	_, parts := w.Bundle(t, []string{"a", "b"}, 4)
	if err := st.Put(t.Context(), batch.SegmentKey("a", parts[0].Name), parts[0].Data); err != nil {
		t.Fatal(err)
	}
	segs, err := catalog.Segments(t.Context(), st, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 2 || segs[0].Part != nil || segs[1].Part == nil || segs[0].Name != segs[1].Name {
		t.Fatalf("listed %+v, want %s alone, then as a part", segs, parts[0].Name)
	}
}

// A marker whose bundles are gone (pruned) lists nothing; the stream's
// own segments are still listed.
func TestSegmentsMarkerWithoutBundles(t *testing.T) {
	st := newCounting(t)
	w := bundletest.NewWriter(t, st, writerID)
	seg := w.Alone(t, "a", 2)
	if err := catalog.WriteBundleMarker(t.Context(), st, catalog.BundleMarker{Stream: "a", Writer: writerID, FirstBundle: 5, FirstSeq: 3}); err != nil {
		t.Fatal(err)
	}
	w.Next = 1
	w.Bundle(t, []string{"b"}, 2) // bundle 1, below the marker's
	segs, err := catalog.Segments(t.Context(), st, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(segs); !slices.Equal(got, []string{seg.Name}) {
		t.Fatalf("listed %q, want only %s", got, seg.Name)
	}
	if n := st.Reads(catalog.BundleKey(writerID, 1)); n != 0 {
		t.Errorf("bundle 1, below the marker's first, was read %d times", n)
	}
}

// A bundle over the limit is refused before any read; a part over the
// reader's segment limit before it is read.
func TestSegmentsOversize(t *testing.T) {
	st := newCounting(t)
	w := bundletest.NewWriter(t, st, writerID)
	key, _ := w.Bundle(t, []string{"a"}, 50)
	l := catalog.NewSegmentLister(st, "a")
	l.MaxBundleBytes = 100
	_, err := l.List(t.Context(), "", catalog.BundlePos{})
	if !errors.Is(err, batch.ErrSegmentTooLarge) || !strings.Contains(err.Error(), key) {
		t.Fatalf("List with a 100-byte bundle limit: %v, want ErrSegmentTooLarge naming %s", err, key)
	}
	if n := st.Reads(key); n != 0 {
		t.Fatalf("a bundle over the limit was read %d times", n)
	}
	segs, err := catalog.Segments(t.Context(), st, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	reads := st.Reads(key)
	if _, err := catalog.ReadPart(t.Context(), st, segs[0], nil, 100); !errors.Is(err, batch.ErrSegmentTooLarge) {
		t.Fatalf("ReadPart with a 100-byte limit: %v, want ErrSegmentTooLarge", err)
	}
	if st.Reads(key) != reads {
		t.Fatal("a part over the limit was read")
	}
}
