package receiver

import (
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/batch"
)

// Restore boundaries. A restore is a receiver run with a stop boundary
// (Config.Until, Config.UntilTime): it applies what the store holds up to
// the boundary, then returns, like Once.
//
// A boundary usually falls inside a segment. The records up to it are
// applied and the checkpoint is written at the last of them, marked
// partial: Segment names the partly applied segment, PartialHash is its
// hash, and LastHash stays the hash of the last fully applied segment
// (the one before it), because that is what the chain continues from. A
// run on that state, bounded or not, lists the store from the partial
// segment again, checks that it is the very same segment (name and hash),
// skips its records up to LastSeq and applies the rest it is allowed to.
// Applying it to its end turns the checkpoint back into an ordinary one.
// So a resumed restore neither reapplies nor skips a record.
//
// UntilTime: records are in seq order but their times are only mostly
// monotonic, so the boundary is positional: the run stops before the
// first record whose time is after UntilTime. Every record applied has a
// time <= UntilTime; a later record with an earlier time (after the first
// one past the boundary) is not applied.

// ErrNotReached: the store ends before the Until seq.
var ErrNotReached = errors.New("restore boundary not reached")

// bounded reports whether the run has a stop boundary.
func (r *Receiver) bounded() bool {
	return r.cfg.Until > 0 || !r.cfg.UntilTime.IsZero()
}

// chainSeq is the seq the chain continues from: the last applied seq, or,
// when a boundary left segment cp.Segment partly applied, the seq before
// that segment (which is applied again from there, skipping what is done).
func chainSeq(cp Checkpoint) uint64 {
	if cp.PartialHash == "" {
		return cp.LastSeq
	}
	_, first, _, _ := batch.ParseSegmentName(cp.Segment)
	return first - 1
}

// checkBoundary is called when a bounded run starts: it refuses a state
// already past the Until seq and notes one exactly at it.
func (r *Receiver) checkBoundary() error {
	cp := r.Checkpoint()
	if u := r.cfg.Until; u > 0 {
		if cp.LastSeq > u {
			return fmt.Errorf("state %s has applied through seq %d, past the boundary seq %d; restore into a new state dir and target",
				r.cfg.StateDir, cp.LastSeq, u)
		}
		if cp.LastSeq == u {
			r.reached = true
		}
	}
	return nil
}

// endOfStore is the result of a bounded or Once run that found nothing
// more to apply.
func (r *Receiver) endOfStore() error {
	cp := r.Checkpoint()
	if u := r.cfg.Until; u > 0 && cp.LastSeq < u {
		return fmt.Errorf("stream %q ends at seq %d in %s, before the boundary seq %d: %w",
			r.cfg.Stream, cp.LastSeq, r.cfg.Store, u, ErrNotReached)
	}
	return nil
}

// checkResume checks that a segment continuing a partial checkpoint is
// the segment that checkpoint is inside.
func checkResume(name, hash string, cp Checkpoint) error {
	if cp.PartialHash == "" || (name == cp.Segment && hash == cp.PartialHash) {
		return nil
	}
	return fmt.Errorf("the checkpoint is at seq %d inside segment %s (hash %.16s), but the store now has %s (hash %.16s) there: %w",
		cp.LastSeq, cp.Segment, cp.PartialHash, name, hash, ErrChain)
}

// cut returns the records of segment m to apply after checkpoint cp: the
// ones after LastSeq if cp is inside m, and none past the boundary.
// reached reports that the boundary is in m (or right before it).
// The records' seqs are m.FirstSeq..m.LastSeq in order (ParseRecords
// checked them), so a seq is found by arithmetic.
func (r *Receiver) cut(cp Checkpoint, m *batch.Meta, recs batch.Records) (out batch.Records, reached bool) {
	first := m.FirstSeq // of recs
	if cp.PartialHash != "" && cp.LastSeq >= first {
		skip := int(min(cp.LastSeq-first+1, uint64(recs.Len())))
		recs, first = recs.Slice(skip, recs.Len()), cp.LastSeq+1
	}
	if u := r.cfg.Until; u > 0 && m.LastSeq >= u {
		n := 0
		if u >= first {
			n = int(min(u-first+1, uint64(recs.Len())))
		}
		recs, reached = recs.Slice(0, n), true
	}
	if t := r.cfg.UntilTime; !t.IsZero() && m.MaxTime.After(t) {
		for i := range recs.Len() {
			if recs.Time(i).After(t) {
				recs, reached = recs.Slice(0, i), true
				break
			}
		}
	}
	return recs, reached
}

// subMeta is m narrowed to the records recs (a part of its segment), for
// appliers that report the seq range they apply (exec: FERRY_FIRST_SEQ).
func subMeta(m *batch.Meta, recs batch.Records) *batch.Meta {
	n := recs.Len()
	if n == 0 || (recs.Seq(0) == m.FirstSeq && recs.Seq(n-1) == m.LastSeq) {
		return m
	}
	sub := *m
	sub.FirstSeq, sub.LastSeq, sub.Records = recs.Seq(0), recs.Seq(n-1), uint64(n)
	return &sub
}
