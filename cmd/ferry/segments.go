package main

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// listSegments returns every segment of the stream, stored alone or as a
// part of a bundle (catalog.SegmentLister), in order, with the sizes the
// store lists (a part's: its length).
func listSegments(ctx context.Context, st store.Store, stream string) ([]catalog.Segment, error) {
	return listSegmentsReporting(ctx, st, stream, nil)
}

// listSegmentsReporting is listSegments that passes over a bundle whose
// index does not read, calling damaged with it (verify reports it and
// the gap its parts leave), instead of stopping there.
func listSegmentsReporting(ctx context.Context, st store.Store, stream string, damaged func(bundle string, err error)) ([]catalog.Segment, error) {
	l := catalog.NewSegmentLister(st, stream)
	l.OnDamaged = damaged
	segs, err := l.List(ctx, "", catalog.BundlePos{})
	if err != nil {
		return nil, fmt.Errorf("list the segments of stream %q in %s: %w", stream, st, err)
	}
	return segs, nil
}

// segNames is the names of segs.
func segNames(segs []catalog.Segment) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.Name
	}
	return out
}

// segWhere names s in messages: "<stream>/<name>", and the bundle holding
// it when it is a part.
func segWhere(stream string, s catalog.Segment) string {
	key := batch.SegmentKey(stream, s.Name)
	if s.Part != nil {
		return key + " (in bundle " + s.Part.Bundle + ")"
	}
	return key
}

// readStored reads segment s whole, refusing one over limit
// (max_segment_bytes): a part by one ranged read checked against its
// bundle's index (catalog.ReadPart).
func readStored(ctx context.Context, st store.Store, s catalog.Segment, limit int64) ([]byte, error) {
	if s.Part != nil {
		return catalog.ReadPart(ctx, st, s, nil, limit)
	}
	return readSegment(ctx, st, s.Key, s.Size, limit)
}

// readStoredHeader reads enough of segment s for its metadata.
func readStoredHeader(ctx context.Context, st store.Store, s catalog.Segment) ([]byte, error) {
	if s.Part == nil {
		return readHeader(ctx, st, s.Key)
	}
	buf := make([]byte, min(s.Part.Length, 8+batch.MaxMetaSize))
	if err := store.GetRange(ctx, st, s.Part.Bundle, s.Part.Offset, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// bundleOf is the store name of the bundle holding s, "" for a segment
// stored alone.
func bundleOf(s catalog.Segment) string {
	if s.Part == nil {
		return ""
	}
	return s.Part.Bundle
}
