package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Bundles (docs/STREAMS.md, "Prune"). Retention stays per stream: a
// prune of stream S writes S's start marker and deletes S's segments
// stored alone, but S's parts only go with their bundle, which is deleted
// once every part in it, of whichever stream, lies below its stream's
// newest start marker. A bundle marker of S that points at no stored
// bundle any more is deleted with the last of them, unless it is S's
// newest (pruneMarkers).

// pruneBundles deletes the bundles holding parts (of stream, below its new
// start marker) whose every part lies below its stream's newest start
// marker, then the bundle markers left without bundles of the streams
// those bundles held.
func pruneBundles(ctx context.Context, st store.Store, stream string, parts []*catalog.Part, log *slog.Logger) error {
	if len(parts) == 0 {
		return nil
	}
	starts := map[string]*catalog.StartMarker{} // stream: its newest start marker (nil: none)
	below := func(stream string, bp *catalog.Part) (bool, error) {
		m, ok := starts[stream]
		if !ok {
			all, err := catalog.ListStarts(ctx, st, stream)
			if err != nil {
				return false, err
			}
			for i := range all {
				if s := &all[i]; m == nil || s.Gen > m.Gen || (s.Gen == m.Gen && s.Seq > m.Seq) {
					m = s
				}
			}
			starts[stream] = m
		}
		return m != nil && (bp.Generation < m.Gen || (bp.Generation == m.Gen && bp.LastSeq < m.Seq)), nil
	}
	seen := map[string]bool{}
	touched := map[string]bool{} // streams with a part in a deleted bundle
	for _, p := range parts {
		if seen[p.Bundle] {
			continue
		}
		seen[p.Bundle] = true
		b, err := catalog.OpenBundle(ctx, st, p.Bundle, p.BundleSize, 0)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("prune: %w (left in place)", err)
		}
		all := true
		for i := range b.Parts {
			bp := &catalog.Part{BundlePart: b.Parts[i]}
			ok, err := below(bp.Stream, bp)
			if err != nil {
				return fmt.Errorf("prune bundle %s: %w", p.Bundle, err)
			}
			if !ok {
				all = false
				break
			}
		}
		if !all {
			continue
		}
		if err := st.Delete(ctx, p.Bundle); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete bundle %s: %w (its parts are below their streams' start markers; the next prune deletes it)", p.Bundle, err)
		}
		for i := range b.Parts {
			touched[b.Parts[i].Stream] = true
		}
		if log != nil {
			log.Debug("pruned bundle", "bundle", p.Bundle, "bytes", p.BundleSize)
		}
	}
	names := make([]string, 0, len(touched))
	for s := range touched {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		if err := pruneMarkers(ctx, st, s, log); err != nil {
			return err
		}
	}
	return nil
}

// pruneMarkers deletes stream's bundle markers that point at no bundle
// any more: those, other than the newest (a running shipper may still
// put bundles under it), whose writer holds no bundle numbered from the
// marker's first up to the first of the writer's next marker of stream.
func pruneMarkers(ctx context.Context, st store.Store, stream string, log *slog.Logger) error {
	markers, err := catalog.ListBundleMarkers(ctx, st, stream) // by FirstSeq
	if err != nil {
		return err
	}
	if len(markers) < 2 {
		return nil
	}
	stored := map[string][]uint64{} // writer: its bundle numbers, ascending
	for _, m := range markers {
		if _, ok := stored[m.Writer]; ok {
			continue
		}
		var ns []uint64
		err := st.List(ctx, catalog.WriterDir(m.Writer), "", func(o store.Object) error {
			if _, n, ok := catalog.ParseBundleKey(o.Name); ok {
				ns = append(ns, n)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list %s: %w", catalog.WriterDir(m.Writer), err)
		}
		stored[m.Writer] = ns
	}
	for i, m := range markers[:len(markers)-1] {
		end := uint64(math.MaxUint64) // the first bundle not m's
		for _, next := range markers[i+1:] {
			if next.Writer == m.Writer {
				end = next.FirstBundle
				break
			}
		}
		ns := stored[m.Writer]
		j := sort.Search(len(ns), func(k int) bool { return ns[k] >= m.FirstBundle })
		if j < len(ns) && ns[j] < end {
			continue // a bundle of m's is still stored
		}
		if err := st.Delete(ctx, m.Key()); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete bundle marker %s: %w", m.Key(), err)
		}
		if log != nil {
			log.Debug("pruned bundle marker", "key", m.Key())
		}
	}
	return nil
}
