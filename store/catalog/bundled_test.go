package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

const testWriter = "0123456789abcdef"

func TestBundleKeyRoundTrip(t *testing.T) {
	key := BundleKey(testWriter, 0x2a)
	if key != "_bundles/0123456789abcdef/000000000000002a.bundle" {
		t.Fatalf("BundleKey: %q", key)
	}
	w, n, ok := ParseBundleKey(key)
	if !ok || w != testWriter || n != 0x2a {
		t.Fatalf("ParseBundleKey(%q) = %q %d %v", key, w, n, ok)
	}
	for _, bad := range []string{
		"", "_bundles/", "_bundles/" + testWriter, "_bundles/" + testWriter + "/",
		"bundles/" + testWriter + "/000000000000002a.bundle",
		"_bundles/0123456789ABCDEF/000000000000002a.bundle",
		"_bundles/0123456789abcde/000000000000002a.bundle",
		"_bundles/" + testWriter + "/0000000000000000.bundle", // n >= 1
		"_bundles/" + testWriter + "/000000000000002a.bundle.tmp",
		"_bundles/" + testWriter + "/x/000000000000002a.bundle",
		"_bundles/../" + testWriter + "/000000000000002a.bundle",
	} {
		if _, _, ok := ParseBundleKey(bad); ok {
			t.Errorf("ParseBundleKey(%q) accepted", bad)
		}
	}
}

func TestBundleMarkerWriteListRead(t *testing.T) {
	ctx := context.Background()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ms := []BundleMarker{
		{Stream: "app", Writer: "ffffffffffffffff", FirstBundle: 7, FirstSeq: 500},
		{Stream: "app", Writer: testWriter, FirstBundle: 1, FirstSeq: 1},
		{Stream: "other", Writer: testWriter, FirstBundle: 3, FirstSeq: 9},
	}
	for _, m := range ms {
		if err := WriteBundleMarker(ctx, st, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteBundleMarker(ctx, st, ms[0]); err != nil {
		t.Fatalf("a retry with the same content: %v", err)
	}
	moved := ms[0]
	moved.FirstSeq = 501
	if err := WriteBundleMarker(ctx, st, moved); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a marker overwritten with other content: %v", err)
	}
	got, err := ListBundleMarkers(ctx, st, "app")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].FirstSeq != 1 || got[1].FirstSeq != 500 || got[1].Writer != "ffffffffffffffff" || got[0].Version != BundleMarkerVersion {
		t.Fatalf("ListBundleMarkers(app) = %+v", got)
	}
	for _, bad := range []BundleMarker{
		{Stream: "app", Writer: "xyz", FirstBundle: 1, FirstSeq: 1},
		{Stream: "app", Writer: testWriter, FirstBundle: 0, FirstSeq: 1},
		{Stream: "app", Writer: testWriter, FirstBundle: 1, FirstSeq: 0},
	} {
		if err := WriteBundleMarker(ctx, st, bad); err == nil {
			t.Errorf("WriteBundleMarker(%+v) accepted", bad)
		}
	}

	// A damaged marker stops the listing, naming it.
	key := BundledDir("app") + "aaaaaaaaaaaaaaaa-0000000000000001.json"
	if err := st.Put(ctx, key, []byte(`{"version":1`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ListBundleMarkers(ctx, st, "app"); err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("a damaged marker listed: %v", err)
	}
}

func TestParseBundleMarkerHostile(t *testing.T) {
	good := BundleMarker{Stream: "app", Writer: testWriter, FirstBundle: 2, FirstSeq: 40}
	key := good.Key()
	if key != "app/bundled/0123456789abcdef-0000000000000002.json" {
		t.Fatalf("Key: %q", key)
	}
	if m, err := ParseBundleMarker(key, MarshalBundleMarker(good)); err != nil || m.FirstSeq != 40 {
		t.Fatalf("ParseBundleMarker(good) = %+v, %v", m, err)
	}
	body := func(s string) []byte { return []byte(s) }
	for _, c := range []struct {
		key  string
		data []byte
		want string
	}{
		{key, body(`{"version":2,"stream":"app","writer":"0123456789abcdef","first_bundle":2,"first_seq":40}`), "upgrade ferry"},
		{key, body(`{"version":0,"stream":"app","writer":"0123456789abcdef","first_bundle":2,"first_seq":40}`), "version 0"},
		{key, body(`{"version":1,"stream":"other","writer":"0123456789abcdef","first_bundle":2,"first_seq":40}`), `stream "other"`},
		{key, body(`{"version":1,"stream":"app","writer":"1123456789abcdef","first_bundle":2,"first_seq":40}`), "it says writer"},
		{key, body(`{"version":1,"stream":"app","writer":"0123456789abcdef","first_bundle":3,"first_seq":40}`), "it says writer"},
		{key, body(`{"version":1,"stream":"app","writer":"0123456789abcdef","first_bundle":2,"first_seq":0}`), "first_seq 0"},
		{key, body(`{"version":1,"stream":"app","writer":"0123456789abcdef","first_bundle":2,"first_seq":40,"x":1}`), "unknown field"},
		{key, body(`{"version":1,"stream":"app","writer":"0123456789abcdef","first_bundle":2,"first_seq":40}{}`), "data after"},
		{key, body(`{"version":1,"first_seq":-1}`), "damaged"},
		{key, body(strings.Repeat(" ", maxBundleMarker+1)), "larger than"},
		{"app/bundled/0123456789abcdef-0000000000000002.jsn", MarshalBundleMarker(good), "not a marker name"},
		{"app/bundled/0123456789abcdef-0000000000000000.json", MarshalBundleMarker(good), "not a marker name"},
		{"app/bundled/0123456789ABCDEF-0000000000000002.json", MarshalBundleMarker(good), "not a marker name"},
		{"0123456789abcdef-0000000000000002.json", MarshalBundleMarker(good), "not a marker name"},
		{"x/app/bundled/0123456789abcdef-0000000000000002.json", MarshalBundleMarker(good), `stream "app"`},
	} {
		_, err := ParseBundleMarker(c.key, c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseBundleMarker(%s, %.60q) = %v; want an error with %q", c.key, c.data, err, c.want)
		}
	}
}

// ReadBundleMarker marks a damaged marker batch.ErrCorrupt (readers stop
// at it) and one of a newer version batch.ErrNewerFormat, not corrupt.
func TestReadBundleMarkerErrorKinds(t *testing.T) {
	ctx := context.Background()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	damaged := BundledDir("app") + "aaaaaaaaaaaaaaaa-0000000000000001.json"
	newer := BundledDir("app") + "bbbbbbbbbbbbbbbb-0000000000000001.json"
	if err := st.Put(ctx, damaged, []byte(`{"version":1`)); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, newer, []byte(`{"version":2,"stream":"app","writer":"bbbbbbbbbbbbbbbb","first_bundle":1,"first_seq":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBundleMarker(ctx, st, damaged); !errors.Is(err, batch.ErrCorrupt) {
		t.Errorf("damaged marker: %v; want batch.ErrCorrupt", err)
	}
	_, err = ReadBundleMarker(ctx, st, newer)
	if !errors.Is(err, batch.ErrNewerFormat) || errors.Is(err, batch.ErrCorrupt) {
		t.Errorf("newer marker: %v; want batch.ErrNewerFormat only", err)
	}
}

// A marker deleted between ListBundleMarkers' listing and its read (a
// prune of its last bundle) is passed over, not an error.
func TestListBundleMarkersSkipsOneDeletedMeanwhile(t *testing.T) {
	ctx := context.Background()
	raw, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keep := BundleMarker{Stream: "app", Writer: testWriter, FirstBundle: 1, FirstSeq: 1}
	gone := BundleMarker{Stream: "app", Writer: "ffffffffffffffff", FirstBundle: 1, FirstSeq: 1}
	for _, m := range []BundleMarker{keep, gone} {
		if err := WriteBundleMarker(ctx, raw, m); err != nil {
			t.Fatal(err)
		}
	}
	st := &storetest.Faulty{Store: raw, GetFn: func(ctx context.Context, name string) (io.ReadCloser, error) {
		if name == gone.Key() {
			return nil, fmt.Errorf("get %s: %w", name, store.ErrNotFound)
		}
		return raw.Get(ctx, name)
	}}
	ms, err := ListBundleMarkers(ctx, st, "app")
	if err != nil || len(ms) != 1 || ms[0].Writer != testWriter {
		t.Fatalf("ListBundleMarkers = %+v, %v; want only the marker still there", ms, err)
	}
}
