package shipper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// The stream's history (batch.History, docs/FORMAT.md "Generation
// records") decides which generation a shipper writes and when it must
// stop. New reads it from every target that can hold generation records
// (any but a segments-only one, such as a tcp:// link, whose receiver
// keeps the history itself), makes the copies agree, and then:
//
//   - a spool that has shipped something stays in its generation (the one
//     state.json names, or Config.Spool.Generation if set);
//   - a fresh spool takes the newest generation, unless the config names
//     one;
//   - the spool's generation must be the newest: an older one is fenced
//     (batch.FencedError), one the history lacks is refused.
//
// While running, every send round to such a target lists the records
// again (fence.go).

// histTarget is a target that holds the stream's generation records, with
// a reader that caches the records it has read: after the first Read, one
// costs a LIST, plus a GET per record created since.
type histTarget struct {
	t Target
	h *catalog.Histories

	checked time.Time // last successful read, under Shipper.mu
}

// loadHistory reads the stream's history from every target that can hold
// it. The longest wins if every other is a prefix of it; the records the
// others lack are then copied to them (create-only), so the history
// travels with the stream. Histories that disagree are an error naming
// both stores. When no target can hold a history it returns the zero
// History (hasHistory is false). Store errors are waited out if wait is
// set (Shipper.try).
func (s *Shipper) loadHistory(ctx context.Context, wait bool) (batch.History, error) {
	stream := s.cfg.Spool.Stream
	var hists []batch.History
	for _, t := range s.cfg.Targets {
		if store.IsSegmentsOnly(t.Store) {
			continue
		}
		ht := &histTarget{t: t, h: catalog.NewHistories(t.Store, stream)}
		var h batch.History
		err := s.try(ctx, wait, t.Store, "list "+batch.GenerationDir(stream), func(ctx context.Context) error {
			var err error
			h, err = ht.h.Read(ctx)
			return err
		})
		if err != nil {
			return batch.History{}, fmt.Errorf("read the generation history of stream %q in %s: %w", stream, t.Store, err)
		}
		ht.checked = time.Now()
		s.hist = append(s.hist, ht)
		hists = append(hists, h)
	}
	if len(hists) == 0 {
		return batch.History{}, nil
	}
	best := 0
	for i, h := range hists {
		if h.Newest().Generation > hists[best].Newest().Generation {
			best = i
		}
	}
	longest := hists[best]
	for i, h := range hists {
		for g := uint32(2); g <= h.Newest().Generation; g++ {
			a, _ := h.Record(g)
			b, _ := longest.Record(g)
			if !sameRecord(a, b) {
				return batch.History{}, s.historyConflict(g, s.hist[i].t, a, s.hist[best].t, b)
			}
		}
	}
	for i, h := range hists {
		t := s.hist[i].t
		for g := h.Newest().Generation + 1; g <= longest.Newest().Generation; g++ {
			rec, _ := longest.Record(g)
			err := s.try(ctx, wait, t.Store, "create "+batch.GenerationKey(stream, g), func(ctx context.Context) error {
				return catalog.CreateGeneration(ctx, t.Store, rec)
			})
			if errors.Is(err, catalog.ErrPromoted) {
				// Created meanwhile, by a promotion or another copier: only
				// the same record is the same history.
				return batch.History{}, fmt.Errorf("stream %q has conflicting generation histories: copying generation %d from %s to %s: %w",
					stream, g, s.hist[best].t.Store, t.Store, err)
			}
			if err != nil {
				return batch.History{}, fmt.Errorf("copy generation record %s from %s to %s: %w",
					batch.GenerationKey(stream, g), s.hist[best].t.Store, t.Store, err)
			}
			s.log.Info("copied generation record to a target that lacked it", "stream", stream, "generation", g,
				"from", s.hist[best].t.Store.String(), "store", t.Store.String())
		}
	}
	return longest, nil
}

// hasHistory reports whether hist was loaded from a target: the zero
// History (no target holds one) has no stream.
func hasHistory(hist batch.History) bool { return hist.Stream() != "" }

// sameRecord reports whether two generation records say the same: their
// encodings are equal (MarshalGeneration is deterministic).
func sameRecord(a, b batch.Generation) bool {
	ea, erra := batch.MarshalGeneration(a)
	eb, errb := batch.MarshalGeneration(b)
	return erra == nil && errb == nil && bytes.Equal(ea, eb)
}

func (s *Shipper) historyConflict(g uint32, ta Target, a batch.Generation, tb Target, b batch.Generation) error {
	return fmt.Errorf("stream %q has conflicting generation histories: in %s %s, but in %s %s; "+
		"ferry cannot tell which is the stream's: keep the right record in every store (docs/FENCING.md) and start again",
		s.cfg.Spool.Stream, ta.Store, describeRecord(a), tb.Store, describeRecord(b))
}

// describeRecord says what a generation record records, for messages.
func describeRecord(r batch.Generation) string {
	site := r.Site
	if site == "" {
		site = "an unnamed site"
	}
	return fmt.Sprintf("generation %d was promoted at seq %d (hash %.12s) on %s (host %s) at %s",
		r.Generation, r.ForkSeq, r.ForkHash, site, r.Host, r.Time.UTC().Format(time.RFC3339))
}

// pickGeneration returns the generation the shipper writes: the spool's,
// or for a fresh spool without a configured one the history's newest. It
// must be the newest: an older one is fenced (the *batch.FencedError),
// one the history does not hold is refused.
func (s *Shipper) pickGeneration(hist batch.History) (uint32, error) {
	gen := s.spool.Config().Generation
	if !hasHistory(hist) {
		return gen, nil
	}
	if s.spool.Fresh() && s.cfg.Spool.Generation == 0 {
		gen = hist.Newest().Generation
	}
	err := hist.Fenced(gen)
	if errors.Is(err, batch.ErrUnknownGeneration) {
		return 0, fmt.Errorf("generation %d of stream %q has no record in %s, whose newest generation is %d: %w; "+
			"leave generation unset (0) to follow the stream's history, or promote a site to begin a generation",
			gen, s.cfg.Spool.Stream, s.histStores(), hist.Newest().Generation, batch.ErrUnknownGeneration)
	}
	return gen, err
}

// histStores names the targets that hold the history, for messages.
func (s *Shipper) histStores() string {
	var b bytes.Buffer
	for i, ht := range s.hist {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ht.t.Store.String())
	}
	return b.String()
}

// continueStream makes the fresh spool continue the stream in generation
// gen: after the newest segment of gen in any target, or, if gen has no
// segment yet, at its record's fork seq, chained to the fork hash
// (generation 1: from the start).
// Store errors are waited out if wait is set (Shipper.try).
func (s *Shipper) continueStream(ctx context.Context, gen uint32, hist batch.History, wait bool) error {
	stream := s.cfg.Spool.Stream
	ok := hasHistory(hist)
	var best string
	var bestTarget store.Store
	var bestPart heldPart
	var bestPartOf Target
	for _, t := range s.cfg.Targets {
		// A fresh spool cannot know where the stream stands until the
		// target answers: starting at seq 1 beside existing segments would
		// fork the stream. A permanent error (credentials, bucket) fails.
		err := s.try(ctx, wait, t.Store, "list "+batch.StreamDir(stream), func(ctx context.Context) error {
			return t.Store.List(ctx, batch.StreamDir(stream), batch.StreamDir(stream)+batch.NameAfter(gen-1, ^uint64(0)), func(o store.Object) error {
				name := o.Name[len(stream)+1:]
				if g, _, _, ok := batch.ParseSegmentName(name); ok && g == gen && name > best {
					best, bestTarget = name, t.Store
				}
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("look for existing segments in %s: %w", t.Store, err)
		}
		p, err := s.newestPart(ctx, t, gen, wait)
		if err != nil {
			return fmt.Errorf("look for existing segments in %s: %w", t.Store, err)
		}
		if _, _, last, _ := batch.ParseSegmentName(best); p.LastSeq > last {
			best, bestTarget, bestPart, bestPartOf = p.Name, t.Store, p, t
		}
	}
	if bestPart.Key != "" && bestPart.Name == best {
		// The stream's newest segment is a part of a bundle.
		seg, err := s.readPart(ctx, bestPartOf, bestPart, wait)
		if err != nil {
			return fmt.Errorf("read newest segment %s (in %s): %w", best, bestPart.Key, err)
		}
		return s.continueAfter(gen, hist, best, bestTarget, seg)
	}
	if best == "" {
		rec, _ := hist.Record(gen)
		if !ok || rec.ForkSeq == 0 {
			if gen == s.spool.Config().Generation && !s.spool.Held() {
				return nil // a new spool starts the stream as it is
			}
			return s.spool.Continue(gen, 0, batch.ZeroHash)
		}
		s.log.Info("new spool begins its generation at the fork", "stream", stream, "generation", gen, "seq", rec.ForkSeq+1)
		return s.spool.Continue(gen, rec.ForkSeq, rec.ForkHash)
	}
	var data []byte
	err := s.try(ctx, wait, bestTarget, "get "+best, func(ctx context.Context) error {
		rc, err := bestTarget.Get(ctx, batch.SegmentKey(stream, best))
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = batch.ReadAll(rc, 4<<30)
		return err
	})
	if err != nil {
		return fmt.Errorf("read newest segment %s: %w", best, err)
	}
	seg, err := batch.Open(data)
	if err != nil {
		return fmt.Errorf("newest segment %s in %s: %w", best, bestTarget, err)
	}
	return s.continueAfter(gen, hist, best, bestTarget, seg)
}

// continueAfter makes the fresh spool continue the stream after seg, its
// newest segment best of generation gen, found in bestTarget.
func (s *Shipper) continueAfter(gen uint32, hist batch.History, best string, bestTarget store.Store, seg *batch.Segment) error {
	stream := s.cfg.Spool.Stream
	if hasHistory(hist) {
		// Continuing after a segment outside the history would make every
		// later one divergent too.
		if p, err := hist.Place(gen, seg.Meta.FirstSeq, seg.Meta.LastSeq); err != nil || p != batch.InHistory {
			rec, _ := hist.Record(gen)
			return fmt.Errorf("newest segment %s of generation %d in %s is not in the stream's history (generation %d forked at seq %d): "+
				"a writer ignored the generation record; move it aside and start again", best, gen, bestTarget, gen, rec.ForkSeq)
		}
	}
	s.log.Info("new spool continues the stream found in the store", "stream", stream, "generation", gen, "segment", best, "seq", seg.Meta.LastSeq)
	return s.spool.Continue(gen, seg.Meta.LastSeq, seg.Hash)
}
