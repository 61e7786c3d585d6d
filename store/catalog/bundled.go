package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Bundles (docs/FORMAT.md "Bundles", docs/STREAMS.md "The wiring plan")
// live outside every stream, one directory per writer:
//
//	_bundles/<writer>/<n>.bundle             bundle number n of writer (batch.BundleName)
//	<stream>/bundled/<writer>-<n>.json       the stream's bundle marker (BundleMarker)
//
// A writer id is 16 lower-case hex digits, made once per bundle spool.
// A stream's bundle marker says: from FirstSeq on, the stream's segments
// may be parts of the writer's bundles numbered FirstBundle and up. A
// shipper writes one marker per stream per (writer, ship start), before
// the first bundle holding the stream's part is put; it is never
// overwritten.

// BundlesDir is the store directory holding every writer's bundles. It
// starts with "_", which no stream name does (batch.ValidStream), so
// stream listings pass it over.
const BundlesDir = "_bundles/"

// BundleMarkerVersion is the version of the bundle marker format this
// ferry writes and reads.
const BundleMarkerVersion = 1

// maxBundleMarker caps a bundle marker read.
const maxBundleMarker = 4 << 10

// ValidWriter reports whether id is a writer id: 16 lower-case hex digits.
func ValidWriter(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := range len(id) {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// WriterDir is writer's directory of bundles: "_bundles/<writer>/".
func WriterDir(writer string) string { return BundlesDir + writer + "/" }

// BundleKey is the store name of writer's bundle number n.
func BundleKey(writer string, n uint64) string { return WriterDir(writer) + batch.BundleName(n) }

// ParseBundleKey splits a store name made by BundleKey; ok is false for
// any other name.
func ParseBundleKey(key string) (writer string, n uint64, ok bool) {
	rest, found := strings.CutPrefix(key, BundlesDir)
	if !found {
		return "", 0, false
	}
	writer, name, found := strings.Cut(rest, "/")
	if !found || !ValidWriter(writer) {
		return "", 0, false
	}
	n, ok = batch.ParseBundleName(name)
	return writer, n, ok
}

// BundledDir is stream's directory of bundle markers.
func BundledDir(stream string) string { return stream + "/bundled/" }

// BundleMarker is the content of "<stream>/bundled/<writer>-<n>.json".
type BundleMarker struct {
	Version     int    `json:"version"`
	Stream      string `json:"stream"`
	Writer      string `json:"writer"`
	FirstBundle uint64 `json:"first_bundle"`
	FirstSeq    uint64 `json:"first_seq"`
}

// Name is the marker's object name under BundledDir.
func (m BundleMarker) Name() string { return fmt.Sprintf("%s-%016x.json", m.Writer, m.FirstBundle) }

// Key is the marker's store name.
func (m BundleMarker) Key() string { return BundledDir(m.Stream) + m.Name() }

// ParseBundleMarkerName splits a marker's object name.
func ParseBundleMarkerName(name string) (writer string, first uint64, ok bool) {
	rest, found := strings.CutSuffix(name, ".json")
	if !found || len(rest) != 16+1+16 || rest[16] != '-' || !ValidWriter(rest[:16]) || !ValidWriter(rest[17:]) {
		return "", 0, false
	}
	n, ok := batch.ParseBundleName(rest[17:] + ".bundle")
	return rest[:16], n, ok
}

// MarshalBundleMarker encodes m (Version set to BundleMarkerVersion).
func MarshalBundleMarker(m BundleMarker) []byte {
	m.Version = BundleMarkerVersion
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // plain struct of strings and integers
	}
	return append(b, '\n')
}

// ParseBundleMarker checks a marker read from key (its store name) and
// returns it. The name and the content must agree.
func ParseBundleMarker(key string, data []byte) (BundleMarker, error) {
	var m BundleMarker
	dir, name, ok := cutLast(key)
	if !ok {
		return m, fmt.Errorf("bundle marker %s: not a marker name", key)
	}
	writer, first, ok := ParseBundleMarkerName(name)
	if !ok {
		return m, fmt.Errorf("bundle marker %s: not a marker name", key)
	}
	if len(data) > maxBundleMarker {
		return m, fmt.Errorf("bundle marker %s is larger than %d bytes: damaged", key, maxBundleMarker)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("bundle marker %s is damaged: %v", key, err)
	}
	if dec.More() {
		return m, fmt.Errorf("bundle marker %s is damaged: data after the JSON object", key)
	}
	switch {
	case m.Version > BundleMarkerVersion:
		return m, fmt.Errorf("bundle marker %s has version %d; this ferry reads %d; %w", key, m.Version, BundleMarkerVersion, batch.ErrNewerFormat)
	case m.Version < 1:
		return m, fmt.Errorf("bundle marker %s is damaged: version %d", key, m.Version)
	case m.Writer != writer || m.FirstBundle != first:
		return m, fmt.Errorf("bundle marker %s is damaged: it says writer %q bundle %d", key, m.Writer, m.FirstBundle)
	case BundledDir(m.Stream) != dir+"/":
		return m, fmt.Errorf("bundle marker %s is damaged: it says stream %q", key, m.Stream)
	case m.FirstSeq < 1:
		return m, fmt.Errorf("bundle marker %s is damaged: first_seq %d", key, m.FirstSeq)
	}
	return m, nil
}

// cutLast splits key at its last "/".
func cutLast(key string) (dir, name string, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

// ListBundleMarkers reads every bundle marker of stream, ordered by
// FirstSeq (then writer and bundle number). A damaged marker is an error
// naming it: a reader that skipped it could miss the stream's parts. One
// deleted between the listing and its read (a prune) is passed over, as
// SegmentLister does.
func ListBundleMarkers(ctx context.Context, st store.Store, stream string) ([]BundleMarker, error) {
	dir := BundledDir(stream)
	var keys []string
	err := st.List(ctx, dir, "", func(o store.Object) error {
		keys = append(keys, o.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list bundle markers %s: %w", dir, err)
	}
	out := make([]BundleMarker, 0, len(keys))
	for _, key := range keys {
		m, err := ReadBundleMarker(ctx, st, key)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted since the listing, with the last of its bundles
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.FirstSeq != b.FirstSeq {
			return a.FirstSeq < b.FirstSeq
		}
		if a.Writer != b.Writer {
			return a.Writer < b.Writer
		}
		return a.FirstBundle < b.FirstBundle
	})
	return out, nil
}

// ReadBundleMarker reads and checks the marker stored under key. A marker
// that does not parse is marked batch.ErrCorrupt (readers stop at it
// rather than retry); one of a newer version batch.ErrNewerFormat.
func ReadBundleMarker(ctx context.Context, st store.Store, key string) (BundleMarker, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return BundleMarker{}, fmt.Errorf("read bundle marker %s: %w", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxBundleMarker+1))
	if err != nil {
		return BundleMarker{}, fmt.Errorf("read bundle marker %s: %w", key, err)
	}
	m, err := ParseBundleMarker(key, data)
	if err != nil && !errors.Is(err, batch.ErrNewerFormat) {
		return m, fmt.Errorf("%w: %w", err, batch.ErrCorrupt)
	}
	return m, err
}

// WriteBundleMarker stores m. Markers are never overwritten: if one of
// that name exists with the same content (a retry), it is left as it is;
// with other content the Put's ErrConflict is returned.
func WriteBundleMarker(ctx context.Context, st store.Store, m BundleMarker) error {
	if !ValidWriter(m.Writer) || m.FirstBundle < 1 || m.FirstSeq < 1 {
		return fmt.Errorf("bundle marker for stream %s: writer %q, bundle %d, seq %d are not valid", m.Stream, m.Writer, m.FirstBundle, m.FirstSeq)
	}
	key := m.Key()
	if err := st.Put(ctx, key, MarshalBundleMarker(m)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("write bundle marker %s: another marker of that name exists with other content (two ship starts with one writer id?): %w", key, err)
		}
		return fmt.Errorf("write bundle marker %s: %w", key, err)
	}
	return nil
}
