package batch

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// ErrDiverged marks a checkpoint that applied seqs the stream's history
// does not contain: a newer generation forked below them (DivergedError).
var ErrDiverged = errors.New("diverged from the stream's history")

// ErrFenced marks a writer whose generation is no longer the newest
// (FencedError).
var ErrFenced = errors.New("fenced by a newer generation")

// ErrUnknownGeneration marks a generation the history does not hold: 0, or
// newer than its newest record. Reading the generation records again may
// find it; if not, the store is missing a record.
var ErrUnknownGeneration = errors.New("generation not in the stream's history")

// History is the chain of generations of one stream, built by NewHistory
// from its generation records; the zero value is not usable.
//
// Each generation k has a fork seq f_k (f_1 = 0) and owns the seqs s with
//
//	f_k < s <= End(k) = min over j > k of f_j
//
// and the newest generation owns every seq above its fork. A later fork
// may be lower than an earlier one (a site that had applied less was
// promoted); it cuts every older generation at once, and a generation
// whose range it empties owns nothing. The ranges partition 1..MaxUint64,
// so every seq has exactly one owner: the newest generation forked below
// it. The history of the stream is, seq by seq, the records carried by
// the owner's segments.
type History struct {
	stream string
	recs   []Generation // recs[k-1] is generation k; recs[0] is the implicit generation 1
	ends   []uint64     // ends[k-1] is End(k); math.MaxUint64 for the newest
}

// NewHistory builds the history of stream from its generation records, in
// any order. The records must be generations 2, 3, ... N without a gap or
// a duplicate (generation 1 is implicit), each of stream, each with parent
// generation-1 and consistent fork fields; the error names the offending
// record's key. No records is the history of generation 1 alone.
func NewHistory(stream string, recs []Generation) (History, error) {
	if err := CheckStream(stream); err != nil {
		return History{}, err
	}
	sorted := slices.Clone(recs)
	slices.SortStableFunc(sorted, func(a, b Generation) int { return cmp.Compare(a.Generation, b.Generation) })
	h := History{stream: stream, recs: make([]Generation, 1, len(sorted)+1)}
	h.recs[0] = Generation{Version: GenerationVersion, Stream: stream, Generation: 1}
	for i, g := range sorted {
		key := GenerationKey(stream, g.Generation)
		want := uint64(i) + 2
		switch {
		case i > 0 && g.Generation == sorted[i-1].Generation:
			return History{}, fmt.Errorf("generation record %s: generation %d given twice", key, g.Generation)
		case g.Generation < 2:
			return History{}, fmt.Errorf("generation record %s: generation %d has no record (generation 1 is implicit)", key, g.Generation)
		case uint64(g.Generation) != want:
			return History{}, fmt.Errorf("generation record %s: the record of generation %d is missing", key, want)
		case g.Stream != stream:
			return History{}, fmt.Errorf("generation record %s: it says stream %q", key, g.Stream)
		}
		if err := g.check(); err != nil {
			return History{}, fmt.Errorf("generation record %s: %w", key, err)
		}
		h.recs = append(h.recs, g)
	}
	h.ends = make([]uint64, len(h.recs))
	end := uint64(math.MaxUint64)
	for i := len(h.recs) - 1; i >= 0; i-- {
		h.ends[i] = end
		end = min(end, h.recs[i].ForkSeq)
	}
	return h, nil
}

// Stream is the stream the history is of.
func (h History) Stream() string { return h.stream }

// Newest returns the record of the newest generation; its Generation is
// the number. For a stream never promoted it is the implicit record of
// generation 1 (parent 0, fork 0, no hash, zero time).
func (h History) Newest() Generation { return h.recs[len(h.recs)-1] }

// Record returns the record of generation g; ok is false when g is not in
// the history (0 or newer than Newest).
func (h History) Record(g uint32) (rec Generation, ok bool) {
	if !h.has(g) {
		return Generation{}, false
	}
	return h.recs[g-1], true
}

func (h History) has(g uint32) bool { return g >= 1 && uint64(g) <= uint64(len(h.recs)) }

// End returns the last seq generation g owns: the lowest fork seq of the
// newer generations. bounded is false for the newest generation, which
// owns every seq above its fork; last is then math.MaxUint64. g owns
// nothing when last <= its ForkSeq. A generation not in the history owns
// nothing in it: End returns 0, true.
func (h History) End(g uint32) (last uint64, bounded bool) {
	if !h.has(g) {
		return 0, true
	}
	return h.ends[g-1], uint64(g) < uint64(len(h.recs))
}

// Owner returns the generation whose segments carry seq in the history:
// the newest generation forked below seq. ok is false for seq 0, which no
// record has.
func (h History) Owner(seq uint64) (gen uint32, ok bool) {
	if seq == 0 {
		return 0, false
	}
	// ends is non-decreasing, and the owner is the first generation whose
	// End is at least seq: every older one ends at or below the owner's fork.
	i := sort.Search(len(h.ends), func(i int) bool { return h.ends[i] >= seq })
	return uint32(i + 1), true
}

// Placement says where a segment stands in the history (Place).
type Placement int

const (
	// InHistory: the segment's seqs are owned by its generation; a
	// receiver applies it.
	InHistory Placement = iota + 1
	// Divergent: the segment is not part of the history; a receiver skips
	// it. Either a newer generation forked below its first seq (the old
	// primary went on shipping after the fork), or it starts at or below
	// its generation's own fork seq, which a writer that follows the
	// generation's record never does (its first segment starts at
	// ForkSeq+1).
	Divergent
)

func (p Placement) String() string {
	switch p {
	case InHistory:
		return "in history"
	case Divergent:
		return "divergent"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}

// Place places a segment of generation g holding seqs first..last. With
// f the fork seq of g:
//
//	first <= f                  Divergent
//	f < first, last <= End(g)   InHistory
//	End(g) < first              Divergent
//	first <= End(g) < last      error: the segment straddles the fork of a
//	                            newer generation and cannot be placed
//
// A generation that owns nothing has only Divergent segments. The error
// for a generation not in the history wraps ErrUnknownGeneration; an
// impossible range (first 0 or last < first) is an error too.
func (h History) Place(g uint32, first, last uint64) (Placement, error) {
	name := SegmentName(g, first, last)
	if first == 0 || last < first {
		return 0, fmt.Errorf("segment %s: impossible seq range", name)
	}
	if !h.has(g) {
		return 0, fmt.Errorf("segment %s: stream %s has generations 1 to %d: %w", name, h.stream, len(h.recs), ErrUnknownGeneration)
	}
	fork, end := h.recs[g-1].ForkSeq, h.ends[g-1]
	switch {
	case first <= fork, first > end:
		return Divergent, nil
	case last > end:
		return 0, fmt.Errorf("segment %s straddles seq %d, where %s: it is partly in the history and partly divergent",
			name, end, promoted(h.cutter(g)))
	}
	return InHistory, nil
}

// Next returns where a receiver whose checkpoint is at generation g, last
// seq last (0: nothing applied) continues: seq last+1, carried by the
// segments of generation gen (its Owner, which may skip generations that
// own nothing). The checkpoint is in the history when last <= End(g): the
// seqs it applied from g's segments, and those g inherited, are still
// the history's. Otherwise the site applied seqs a newer generation forked
// below, and the error is a *DivergedError. A generation not in the history
// is an error wrapping ErrUnknownGeneration.
func (h History) Next(g uint32, last uint64) (gen uint32, seq uint64, err error) {
	if !h.has(g) {
		return 0, 0, fmt.Errorf("checkpoint at generation %d: stream %s has generations 1 to %d: %w", g, h.stream, len(h.recs), ErrUnknownGeneration)
	}
	if end := h.ends[g-1]; last > end {
		return 0, 0, &DivergedError{Generation: g, Seq: last, Fork: h.cutter(g)}
	}
	if last == math.MaxUint64 {
		return 0, 0, fmt.Errorf("checkpoint at generation %d seq %d: no seq follows", g, last)
	}
	gen, _ = h.Owner(last + 1)
	return gen, last + 1, nil
}

// Records returns the records of generations 2 to Newest, oldest first:
// what a store holds of the history (generation 1 has none).
func (h History) Records() []Generation {
	return slices.Clone(h.recs[1:])
}

// EndedBy returns the record of the generation whose fork ended generation
// g: the oldest newer generation forked at End(g). ok is false for the
// newest generation, which nothing ended, and for one not in the history.
func (h History) EndedBy(g uint32) (rec Generation, ok bool) {
	if !h.has(g) || uint64(g) == uint64(len(h.recs)) {
		return Generation{}, false
	}
	return h.cutter(g), true
}

// cutter returns the record that bounds generation g (not the newest): the
// oldest newer generation forked at End(g).
func (h History) cutter(g uint32) Generation {
	end := h.ends[g-1]
	for _, r := range h.recs[g:] {
		if r.ForkSeq == end {
			return r
		}
	}
	panic("batch: History.ends does not match its records")
}

// Fenced returns nil when writerGen is the newest generation, so a writer
// of it may ship. When a newer generation exists the error is a
// *FencedError carrying the record of generation writerGen+1; a
// generation not in the history is an error wrapping ErrUnknownGeneration
// (a writer must not ship a generation whose record it cannot see).
func (h History) Fenced(writerGen uint32) error {
	switch {
	case !h.has(writerGen):
		return fmt.Errorf("writer of generation %d: stream %s has generations 1 to %d: %w", writerGen, h.stream, len(h.recs), ErrUnknownGeneration)
	case uint64(writerGen) < uint64(len(h.recs)):
		return &FencedError{Generation: writerGen, Next: h.recs[writerGen]}
	}
	return nil
}

// DivergedError is Next's error for a checkpoint past the end of its
// generation. Fork is the record of the generation whose fork ended it
// (the oldest one forked at End(Generation)); the seqs up to Fork.ForkSeq
// are common to the site and the history.
type DivergedError struct {
	Generation uint32 // the checkpoint's generation
	Seq        uint64 // the checkpoint's last seq
	Fork       Generation
}

func (e *DivergedError) Error() string {
	return fmt.Sprintf("diverged: this site's checkpoint is at generation %d seq %d, but %s: the site applied records past that fork, which are not in the stream's history; run ferry rejoin",
		e.Generation, e.Seq, promoted(e.Fork))
}

// Unwrap makes errors.Is(err, ErrDiverged) true.
func (e *DivergedError) Unwrap() error { return ErrDiverged }

// FencedError is Fenced's error: Next, the record of generation
// Generation+1, was created, so the writer of Generation must stop.
type FencedError struct {
	Generation uint32 // the fenced writer's generation
	Next       Generation
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("fenced: %s; run ferry rejoin", promoted(e.Next))
}

// Unwrap makes errors.Is(err, ErrFenced) true.
func (e *FencedError) Unwrap() error { return ErrFenced }

// promoted describes a record for messages: "generation G was promoted at
// seq F on SITE at TIME".
func promoted(r Generation) string {
	site := r.Site
	if site == "" {
		site = "an unnamed site"
	}
	return fmt.Sprintf("generation %d was promoted at seq %d on %s at %s", r.Generation, r.ForkSeq, site, r.Time.UTC().Format(time.RFC3339))
}
