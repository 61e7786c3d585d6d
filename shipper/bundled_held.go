package shipper

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// A stream shipped with bundles has segments in a target that its own
// directory does not list: parts of bundles (docs/STREAMS.md, "The wiring
// plan"). Where the shipper's start asks what a target holds of the
// stream (holdsThrough, heldThrough, continueStream), it also looks at
// the stream's newest part: the bundle markers under <stream>/bundled/
// name the writers, and each writer's bundles are read from the newest
// back until one carries the stream. Bundles never change, so their
// indexes are kept (bundleIndexes) for the other streams of the process,
// which mostly find their part in the same newest bundle.

// heldPart is a stream's newest part in a target.
type heldPart struct {
	Name    string // segment name
	LastSeq uint64
	Hash    string
	Key     string // the bundle's store name
}

// bundleIndexes caches the parts of bundles read by this process, by the
// store's String and the bundle's key. Bundles are immutable.
var bundleIndexes = struct {
	sync.Mutex
	m map[string][]batch.BundlePart
}{m: map[string][]batch.BundlePart{}}

// maxBundleIndexes bounds bundleIndexes; past it, it starts afresh.
const maxBundleIndexes = 256

// newestPart returns stream's part with the highest seq in generation gen
// among the bundles t holds (zero if none).
func (s *Shipper) newestPart(ctx context.Context, t Target, gen uint32, wait bool) (heldPart, error) {
	stream := s.cfg.Spool.Stream
	var best heldPart
	if store.IsSegmentsOnly(t.Store) {
		return best, nil
	}
	var markers []catalog.BundleMarker
	err := s.tryOn(ctx, wait, t, "list "+catalog.BundledDir(stream), func(ctx context.Context) error {
		var err error
		markers, err = catalog.ListBundleMarkers(ctx, t.Store, stream)
		return err
	})
	if err != nil || len(markers) == 0 {
		return best, err
	}
	first := map[string]uint64{} // writer -> its lowest marked bundle
	for _, m := range markers {
		if f, ok := first[m.Writer]; !ok || m.FirstBundle < f {
			first[m.Writer] = m.FirstBundle
		}
	}
	for w, from := range first {
		var keys []string
		err := s.tryOn(ctx, wait, t, "list "+catalog.WriterDir(w), func(ctx context.Context) error {
			keys = keys[:0]
			return t.Store.List(ctx, catalog.WriterDir(w), catalog.BundleKey(w, from-1), func(o store.Object) error {
				if _, _, ok := catalog.ParseBundleKey(o.Name); ok {
					keys = append(keys, o.Name)
				}
				return nil
			})
		})
		if err != nil {
			return best, err
		}
		for i := len(keys) - 1; i >= 0; i-- {
			parts, err := s.bundleIndex(ctx, t, keys[i], wait)
			if err != nil {
				return best, err
			}
			j, ok := (&batch.Bundle{Parts: parts}).Find(stream)
			if !ok {
				continue
			}
			if p := parts[j]; p.Generation == gen && p.LastSeq > best.LastSeq {
				best = heldPart{Name: p.Name(), LastSeq: p.LastSeq, Hash: p.SHA256, Key: keys[i]}
			}
			break
		}
	}
	return best, nil
}

// bundleIndex reads the index of the bundle key in t.
func (s *Shipper) bundleIndex(ctx context.Context, t Target, key string, wait bool) ([]batch.BundlePart, error) {
	ck := t.Store.String() + "\x00" + key
	bundleIndexes.Lock()
	parts, ok := bundleIndexes.m[ck]
	bundleIndexes.Unlock()
	if ok {
		return parts, nil
	}
	err := s.tryOn(ctx, wait, t, "get "+key, func(ctx context.Context) error {
		data, err := getAll(ctx, t.Store, key)
		if err != nil {
			return err
		}
		b, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", key, err)
		}
		parts = b.Parts
		return nil
	})
	if err != nil {
		return nil, err
	}
	bundleIndexes.Lock()
	if len(bundleIndexes.m) >= maxBundleIndexes {
		clear(bundleIndexes.m)
	}
	bundleIndexes.m[ck] = parts
	bundleIndexes.Unlock()
	return parts, nil
}

// readPart reads and checks stream's part p (newestPart) from t.
func (s *Shipper) readPart(ctx context.Context, t Target, p heldPart, wait bool) (*batch.Segment, error) {
	var seg *batch.Segment
	err := s.tryOn(ctx, wait, t, "get "+p.Key, func(ctx context.Context) error {
		data, err := getAll(ctx, t.Store, p.Key)
		if err != nil {
			return err
		}
		b, err := batch.OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", p.Key, err)
		}
		i, ok := b.Find(s.cfg.Spool.Stream)
		if !ok {
			return fmt.Errorf("bundle %s: no part of stream %s: %w", p.Key, s.cfg.Spool.Stream, batch.ErrCorrupt)
		}
		seg, _, err = b.OpenPart(i, nil)
		return err
	})
	return seg, err
}

func getAll(ctx context.Context, st store.Store, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, batch.DefaultMaxBundleBytes+1))
}
