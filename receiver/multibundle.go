package receiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Bundles under a Multi (docs/STREAMS.md, "The wiring plan"). The Multi's
// listing of the whole store shows "_bundles/<writer>/<n>.bundle" objects
// beside the streams' segments. Each bundle a listing shows for the first
// time is read once: whole, with one GET, when it is at most
// bundleReadWhole bytes, else its index by a suffix range and each wanted
// part by a ranged GET. Each part of a running stream past its checkpoint
// is checked (its hash against the index, its metadata against the
// entry, then as a segment: batch.Bundle.OpenPart) and offered to the
// stream's receiver with its verified bytes, as the direct link offers
// the segments it stored. So the listing walks one bundle per tick
// instead of a segment per stream, and no stream reads the bundle's index
// on its own.
//
// Bundles in the Multi's first listing are not read: each receiver lists
// the store itself when it starts (and when offers do not continue it, a
// gap), which finds them (catalog.SegmentLister). A bundle that fails to
// read is left to the streams' own listings too, which stop at a damaged
// one naming it.
//
// A writer numbers its bundles in the order it puts them, so the Multi
// keeps, per writer, the highest number it read: a bundle above it is
// new. A listing that misses a bundle once (an S3-compatible store's
// listing need not show every object at once) then does not make it new
// again, to be read and offered twice; one that shows up below the
// highest read (put out of order) is not offered, and its streams find
// it by their own listing when the next part does not continue them.

// bundleReadWhole is the largest bundle read whole by one GET; a larger
// one is read by its index and the ranged GETs of the wanted parts.
const bundleReadWhole = 16 << 20

// bundleOffer is an offer to make to a stream's receiver: of segment
// name, by offer.
type bundleOffer struct {
	name  string
	offer func(r *Receiver)
}

// bundleOffers reads the bundles of a listing not read before and returns,
// per running stream, the offers of its parts.
func (m *Multi) bundleOffers(ctx context.Context, bundles []store.Object) map[string][]bundleOffer {
	first := !m.listed
	m.listed = true
	if m.bundleTop == nil {
		m.bundleTop = map[string]uint64{}
	}
	var fresh []store.Object
	for _, o := range bundles {
		w, n, _ := catalog.ParseBundleKey(o.Name)
		if n <= m.bundleTop[w] {
			continue
		}
		if !first {
			fresh = append(fresh, o)
		}
	}
	for _, o := range bundles { // after: a listing is in name order per writer anyway
		w, n, _ := catalog.ParseBundleKey(o.Name)
		m.bundleTop[w] = max(m.bundleTop[w], n)
	}
	if len(fresh) == 0 {
		return nil
	}
	runs := m.snapshot()
	offers := map[string][]bundleOffer{}
	for _, o := range fresh {
		if err := m.readBundle(ctx, o, runs, offers); err != nil && ctx.Err() == nil {
			m.log.Warn("cannot read a new bundle; its streams read it themselves", "bundle", o.Name, "err", err)
		}
	}
	return offers
}

// readBundle reads bundle o and adds to offers the part of each running
// stream in runs that lies past its checkpoint.
func (m *Multi) readBundle(ctx context.Context, o store.Object, runs map[string]*streamRun, offers map[string][]bundleOffer) error {
	writer, num, _ := catalog.ParseBundleKey(o.Name)
	var b *batch.Bundle
	var whole []byte // the bundle, when read whole
	var err error
	if o.Size <= bundleReadWhole {
		b, whole, err = m.readBundleWhole(ctx, o)
	} else {
		b, err = catalog.OpenBundle(ctx, m.cfg.Store, o.Name, o.Size, 0)
	}
	if err != nil {
		return err
	}
	for i := range b.Parts {
		p := &b.Parts[i]
		sr := runs[p.Stream]
		if sr == nil || p.Name() <= sr.r.Checkpoint().Segment {
			continue
		}
		part := &catalog.Part{Bundle: o.Name, Writer: writer, Number: num, BundleSize: o.Size, ModTime: o.ModTime, BundlePart: *p}
		if m.parts == nil {
			m.parts, m.partTop = map[string][]listedSeg{}, map[string]uint64{}
		}
		m.partTop[p.Stream] = max(m.partTop[p.Stream], p.LastSeq)
		m.parts[p.Stream] = append(m.parts[p.Stream], listedSeg{lastSeq: p.LastSeq, modTime: o.ModTime})
		name := p.Name()
		byPlace := func() {
			offers[p.Stream] = append(offers[p.Stream], bundleOffer{name: name, offer: func(r *Receiver) {
				r.offer(planned{name: name, listed: part.Length, part: part})
			}})
		}
		if p.Length > sr.r.cfg.MaxSegmentBytes {
			// Not decoded here: the stream's own read refuses it against
			// its max_segment_bytes before allocating, naming it.
			byPlace()
			continue
		}
		var buf []byte // decoded in place when read whole
		if whole != nil {
			buf = whole[p.Offset : p.Offset+p.Length : p.Offset+p.Length]
		}
		seg, data, err := b.OpenPart(i, buf)
		if err != nil {
			if !batch.IsUnreadable(err) && !errors.Is(err, batch.ErrNewerFormat) {
				return err
			}
			// Offered by its place only: the stream reads it again,
			// meets the damage and stops there, naming it. The other
			// streams' parts are still good.
			byPlace()
			continue
		}
		offers[p.Stream] = append(offers[p.Stream], bundleOffer{name: name, offer: func(r *Receiver) {
			r.offerVerified(seg, data, part)
		}})
	}
	return nil
}

// readBundleWhole reads bundle o with one GET and opens its index from
// the bytes read, which it returns too.
func (m *Multi) readBundleWhole(ctx context.Context, o store.Object) (*batch.Bundle, []byte, error) {
	if o.Size < batch.BundleTrailerSize {
		return nil, nil, fmt.Errorf("bundle %s: %d bytes, shorter than its trailer: %w", o.Name, o.Size, batch.ErrCorrupt)
	}
	rc, err := m.cfg.Store.Get(ctx, o.Name)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	data := make([]byte, o.Size) // at most bundleReadWhole
	if _, err := io.ReadFull(rc, data); err != nil {
		return nil, nil, fmt.Errorf("read bundle %s: %w", o.Name, err)
	}
	b, err := batch.OpenBundle(bytes.NewReader(data), o.Size, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("bundle %s: %w", o.Name, err)
	}
	return b, data, nil
}
