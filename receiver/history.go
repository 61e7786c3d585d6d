package receiver

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Following the stream's history (docs/FORMAT.md, "Generation records").
// A pass asks the history where the checkpoint continues (History.Next):
// seq from+1, in the segments of one generation. It lists (or takes the
// offers of) that generation only, and applies the segments the history
// holds (History.Place) up to the generation's end; the pass after
// continues in the next generation that owns seqs. Segments an old
// primary wrote past a fork are divergent: skipped, logged once, counted,
// never applied.
//
// The history is read in the first pass, and again by every pass that
// finds anything new, before it applies any of it: a record is created
// before the new generation's segments, so a pass that could apply a
// segment the record makes divergent sees the record first. Records are
// create-only and cached (catalog.Histories), so a read is one LIST of the
// small generations dir. A pass with nothing new reads nothing.

// cursor is where a pass continues the stream in its history.
type cursor struct {
	stream string
	hist   batch.History
	gen    uint32 // the generation whose segments continue the stream
	from   uint64 // the seq the chain continues from (chainSeq)
	end    uint64 // the last seq gen owns (History.End)
	// bounded: a newer generation ends gen at end.
	bounded bool
	// applied is the segment of gen applied through from, when the
	// checkpoint names it: a listing shows it again, so that a segment
	// overlapping it is seen. after is where the listing starts.
	applied      string
	appliedFirst uint64
	after        string
}

// follow returns where the stream continues after cp in h. A checkpoint
// past its generation's end is a *batch.DivergedError; a generation h does
// not hold wraps batch.ErrUnknownGeneration (a newer read may find it).
func (r *Receiver) follow(h batch.History, cp Checkpoint) (cursor, error) {
	gen, _, err := h.Next(cp.Generation, cp.LastSeq)
	if err != nil {
		return cursor{}, fmt.Errorf("stream %q: %w", r.cfg.Stream, err)
	}
	c := cursor{stream: r.cfg.Stream, hist: h, gen: gen, from: chainSeq(cp)}
	c.end, c.bounded = h.End(gen)
	partial := cp.PartialHash != ""
	if gen != cp.Generation {
		if partial {
			// A restore stopped inside cp.Segment, and a fork now ends
			// its generation at the seq it stopped at.
			_, first, last, _ := batch.ParseSegmentName(cp.Segment)
			_, perr := h.Place(cp.Generation, first, last)
			return cursor{}, fmt.Errorf("stream %q: the checkpoint is inside segment %s, which the history no longer holds whole (%v): %w",
				r.cfg.Stream, cp.Segment, perr, ErrHistory)
		}
		if err := r.checkFork(h, gen, cp); err != nil {
			return cursor{}, err
		}
	}
	if g, first, _, ok := batch.ParseSegmentName(cp.Segment); ok && g == gen && !partial && first > 0 {
		c.applied, c.appliedFirst = cp.Segment, first
		c.after = batch.NameAfter(gen, first-1)
	} else {
		c.after = batch.NameAfter(gen, c.from)
	}
	return c, nil
}

// checkFork checks that generation gen, which the checkpoint enters at its
// fork, forked from the chain the checkpoint applied: its fork hash is the
// hash of the last segment applied.
func (r *Receiver) checkFork(h batch.History, gen uint32, cp Checkpoint) error {
	rec, _ := h.Record(gen)
	hash := rec.ForkHash
	if hash == "" {
		hash = batch.ZeroHash
	}
	if rec.ForkSeq == cp.LastSeq && hash == cp.LastHash {
		return nil
	}
	applied := cp.Segment
	if applied == "" {
		applied = "none"
	}
	return fmt.Errorf("stream %q: generation record %s forks at seq %d from a segment of hash %.16s, but this site applied through seq %d (segment %s, hash %.16s): the history forked from another chain than the one applied here; run ferry rejoin: %w",
		r.cfg.Stream, batch.GenerationKey(r.cfg.Stream, gen), rec.ForkSeq, hash, cp.LastSeq, applied, cp.LastHash, ErrHistory)
}

// cursorAt reads the history if fresh asks for it (or none is read yet),
// and returns where cp continues in it. A generation the history does not
// hold makes it read the history again before it gives up.
func (r *Receiver) cursorAt(ctx context.Context, cp Checkpoint, fresh bool) (cursor, error) {
	if fresh || !r.histRead {
		if err := r.readHistory(ctx); err != nil {
			return cursor{}, err
		}
		fresh = true
	}
	c, err := r.follow(r.hist, cp)
	if errors.Is(err, batch.ErrUnknownGeneration) && !fresh {
		if err := r.readHistory(ctx); err != nil {
			return cursor{}, err
		}
		c, err = r.follow(r.hist, cp)
	}
	if errors.Is(err, batch.ErrUnknownGeneration) {
		return cursor{}, fmt.Errorf("%w; the store has no record %s (is this the stream's store?): %w",
			err, batch.GenerationKey(r.cfg.Stream, cp.Generation), ErrHistory)
	}
	return c, err
}

// readHistory reads the stream's generation records into r.hist. Failures
// of the store are retried; a damaged record or chain (which
// catalog.Histories marks store.ErrPermanent) stops the receiver.
func (r *Receiver) readHistory(ctx context.Context) error {
	if r.hists == nil {
		r.hists = catalog.NewHistories(r.cfg.Store, r.cfg.Stream)
	}
	dir := batch.GenerationDir(r.cfg.Stream)
	return r.retry(ctx, "read generation records "+dir, func() error {
		h, err := r.hists.Read(ctx)
		switch {
		case err == nil:
			r.hist, r.histRead = h, true
		case errors.Is(err, store.ErrPermanent):
			return fmt.Errorf("stream %q: %w; nothing more is applied until it is repaired: %w", r.cfg.Stream, err, ErrHistory)
		}
		return err
	})
}

// isNew reports whether a segment listed or offered may be applied after
// c, or shows that the stream went on in a later generation: anything but
// the segment applied last, of c's generation or a later one.
func (c cursor) isNew(name string) bool {
	g, _, _, ok := batch.ParseSegmentName(name)
	return ok && (g > c.gen || (g == c.gen && name > c.after && name != c.applied))
}

// noteDivergent logs and counts, once each, segments a pass skipped as not
// in the stream's history.
func (r *Receiver) noteDivergent(c cursor, names []string) {
	for _, name := range names {
		if r.divergent[name] {
			continue
		}
		if r.divergent == nil {
			r.divergent = map[string]bool{}
		}
		r.divergent[name] = true
		r.mu.Lock()
		r.stats.Divergent++
		r.mu.Unlock()
		rec, _ := c.hist.Record(c.gen)
		r.log.Warn("segment is not in the stream's history (divergent): skipped, never applied",
			"segment", name, "stream", r.cfg.Stream, "generation", c.gen, "fork_seq", rec.ForkSeq, "end_seq", c.end)
	}
}

// overlapError reports segment name overlapping segment other (or, when
// other is "", the seqs applied through upTo).
func overlapError(stream, name string, first, last uint64, other string, oFirst, oLast uint64, applied bool) error {
	what := fmt.Sprintf("segment %s (seq %d..%d)", other, oFirst, oLast)
	switch {
	case other == "":
		what = fmt.Sprintf("the seqs applied through %d", oLast)
	case applied:
		what += ", which this site applied"
	}
	return fmt.Errorf("stream %q: segment %s (seq %d..%d) overlaps %s: two writers are shipping into one stream; nothing more is applied until the stray segment is removed (check with ferry verify which one the stream's history holds): %w",
		stream, name, first, last, what, ErrOverlap)
}

// listAfter lists the segments of c.gen after c.after. newer reports a
// segment of a later generation.
func (r *Receiver) listAfter(ctx context.Context, c cursor) (listed []planned, newer bool, err error) {
	dir := batch.StreamDir(r.cfg.Stream)
	if r.segs == nil {
		r.segs = catalog.NewSegmentLister(r.cfg.Store, r.cfg.Stream)
	}
	var pos catalog.BundlePos
	if b := r.position().Bundle; b != nil {
		pos = *b
	}
	err = r.retry(ctx, "list "+dir, func() error {
		listed, newer = listed[:0], false
		segs, err := r.segs.List(ctx, c.after, pos)
		if err != nil && (batch.IsUnreadable(err) || IsNewerFormat(err)) {
			// A damaged bundle: the stream stops there (not retried).
			return fmt.Errorf("stream %q: %w; nothing past it is applied (restore the bundle from another copy)", r.cfg.Stream, err)
		}
		if err != nil {
			return err
		}
		for _, s := range segs {
			gen, _, _, _ := batch.ParseSegmentName(s.Name)
			switch {
			case gen == c.gen:
				listed = append(listed, planned{name: s.Name, listed: s.Size, part: s.Part})
			case gen > c.gen:
				newer = true
			}
		}
		return nil
	})
	return listed, newer, err
}
