// Package retention prunes a stream's archive: it deletes the oldest
// segments once they are older than keep_for and more than keep_min newer
// ones exist, but never a segment that a registered receiver of the stream
// has not applied yet (the receivers' published watermarks), and never the
// newest segment, which a fresh shipper needs to continue the stream's
// sequence and hash chain.
//
// Only a prefix of the stream is ever deleted, oldest first, so what
// remains is always a contiguous run of segments: a receiver that starts
// later starts at a clean boundary, never in front of a hole.
// Before deleting, a start marker at the first seq kept (batch.Start,
// reason "pruned") records that the stream starts there on purpose, so
// ferry verify can tell a pruned start from lost records.
//
// A stream with baseline markers (a dir: source's full copies of its tree,
// docs/DIRTREE.md) is cut only in front of a baseline: what remains starts
// with the segment holding the begin of the newest complete baseline that
// ended before now-keep_for, so a fresh replica can always be built, and
// restored to any time in keep_for. Without such a baseline nothing goes.
// Markers of baselines whose begin is deleted are deleted too.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// Policy says what to keep. At least one of KeepFor and KeepMin must be set.
type Policy struct {
	// KeepFor keeps segments stored less than this long ago (by the
	// store's modification time). 0: no age rule.
	KeepFor time.Duration
	// KeepMin keeps at least this many of the newest segments. The newest
	// segment is always kept, whatever KeepMin says.
	KeepMin int
}

// Check refuses a policy that would keep nothing by rule.
func (p Policy) Check() error {
	if p.KeepFor < 0 || p.KeepMin < 0 {
		return errors.New("retention: keep_for and keep_min must not be negative")
	}
	if p.KeepFor == 0 && p.KeepMin == 0 {
		return errors.New("retention: no policy: set keep_for, keep_min or both")
	}
	return nil
}

// Segment is one segment of the stream as listed.
type Segment struct {
	Key         string // the store name (a part's: its bundle's)
	Name        string
	Generation  uint32
	First, Last uint64
	Size        int64
	ModTime     time.Time
	// Part is where the segment lies in a bundle (nil: stored alone). A
	// part is not deleted by itself: its bundle goes once every part in
	// it lies below its stream's start marker (Apply).
	Part *catalog.Part
}

// Plan is what pruning the stream would do, and why it stops where it does.
type Plan struct {
	Stream    string
	Policy    Policy
	Segments  []Segment // every segment, oldest first
	Delete    int       // the first Delete of Segments go
	Reason    string    // why the next one is kept ("" if nothing is left to keep)
	Receivers []catalog.Watermark

	// Baselines are the stream's baseline markers, oldest first. Anchor is
	// the one the cut is in front of (nil: none); DeleteBaselines the
	// markers that go with the segments.
	Baselines       []catalog.BaselineMarker
	Anchor          *batch.Baseline
	DeleteBaselines []catalog.BaselineMarker

	// DeleteKeyHeaders are the key epoch header objects (ferry rekey,
	// batch.KeyHeaderKey) of the segments that go, and of any segment
	// older than the first kept that is gone already (an earlier prune
	// stopped before its headers).
	DeleteKeyHeaders []string
}

// DeleteBytes is the size of the segments the plan deletes.
func (p *Plan) DeleteBytes() int64 {
	var n int64
	for _, s := range p.Segments[:p.Delete] {
		n += s.Size
	}
	return n
}

// Compute lists the stream's segments and its receivers' watermarks and
// decides what goes. now is the clock. A watermark that cannot be read is an
// error: retention never guesses.
func Compute(ctx context.Context, st store.Store, stream string, pol Policy, now time.Time) (*Plan, error) {
	if err := pol.Check(); err != nil {
		return nil, err
	}
	p := &Plan{Stream: stream, Policy: pol}
	segs, err := catalog.Segments(ctx, st, stream, "")
	if err != nil {
		return nil, err
	}
	for _, s := range segs {
		gen, first, last, _ := batch.ParseSegmentName(s.Name)
		p.Segments = append(p.Segments, Segment{Key: s.Key, Name: s.Name, Generation: gen, First: first, Last: last,
			Size: s.Size, ModTime: s.ModTime, Part: s.Part})
	}
	if p.Receivers, err = catalog.ReadWatermarks(ctx, st, stream); err != nil {
		return nil, fmt.Errorf("read the receivers' watermarks (retention needs them to know what is applied): %w", err)
	}
	p.byRules(now)
	if p.Baselines, err = catalog.ListBaselines(ctx, st, stream); err != nil {
		return nil, err
	}
	if len(p.Baselines) > 0 {
		if err := p.cutAtBaseline(ctx, st, now); err != nil {
			return nil, err
		}
	}
	if len(p.Segments) > 0 {
		hdrs, err := catalog.ListKeyHeaderObjects(ctx, st, stream)
		if err != nil {
			return nil, err
		}
		kept := make(map[string]bool, len(p.Segments)-p.Delete)
		for _, s := range p.Segments[p.Delete:] {
			kept[s.Name] = true
		}
		for name, keys := range hdrs {
			if !kept[name] && name < p.Segments[p.Delete].Name {
				p.DeleteKeyHeaders = append(p.DeleteKeyHeaders, keys...)
			}
		}
		sort.Strings(p.DeleteKeyHeaders)
	}
	return p, nil
}

// byRules sets Delete and Reason by keep_min, keep_for, the receivers'
// watermarks and the newest segment.
func (p *Plan) byRules(now time.Time) {
	pol := p.Policy
	keepMin := max(pol.KeepMin, 1)
	for i, s := range p.Segments {
		switch {
		case len(p.Segments)-i <= keepMin:
			if pol.KeepMin >= 1 {
				p.Reason = fmt.Sprintf("keep_min = %d: %s is one of the newest %d", pol.KeepMin, s.Name, pol.KeepMin)
			} else {
				p.Reason = fmt.Sprintf("%s is the newest segment, which is always kept (a new spool continues the stream from it)", s.Name)
			}
			return
		case pol.KeepFor > 0 && (s.ModTime.IsZero() || now.Sub(s.ModTime) < pol.KeepFor):
			if s.ModTime.IsZero() {
				p.Reason = fmt.Sprintf("%s has no modification time in the store, so keep_for cannot be checked", s.Name)
			} else {
				p.Reason = fmt.Sprintf("keep_for = %s: %s was stored %s ago", pol.KeepFor, s.Name, now.Sub(s.ModTime).Round(time.Second))
			}
			return
		}
		if w, ok := unapplied(p.Receivers, s); ok {
			if w.PublishedAt.IsZero() {
				p.Reason = fmt.Sprintf("receiver %s has registered but applied nothing yet; %s is not applied", w.Receiver, s.Name)
			} else {
				p.Reason = fmt.Sprintf("receiver %s has applied only through generation %d seq %d; %s is not applied",
					w.Receiver, w.Generation, w.AppliedSeq, s.Name)
			}
			return
		}
		p.Delete = i + 1
	}
}

// cutAtBaseline moves the cut back to the segment holding the begin of the
// anchor: the newest baseline whose begin segment is listed and, under
// keep_for, that ended at or before now-keep_for (so a restore to any time
// within keep_for finds a baseline that ends before it). With no anchor
// nothing is deleted: the segments from the stream's start are needed.
func (p *Plan) cutAtBaseline(ctx context.Context, st store.Store, now time.Time) error {
	idx := -1
	for i := len(p.Baselines) - 1; i >= 0 && idx < 0; i-- {
		m := p.Baselines[i]
		j := p.holding(m.Gen, m.Begin)
		if j < 0 {
			continue
		}
		b, err := catalog.ReadBaseline(ctx, st, m)
		if err != nil {
			return err
		}
		if p.Policy.KeepFor > 0 && now.Sub(b.EndTime) < p.Policy.KeepFor {
			continue
		}
		idx, p.Anchor = j, &b
	}
	if idx < 0 {
		if p.Delete > 0 {
			p.Delete = 0
			p.Reason = "no complete baseline"
			if p.Policy.KeepFor > 0 {
				p.Reason += fmt.Sprintf(" ended more than keep_for = %s ago", p.Policy.KeepFor)
			}
			p.Reason += fmt.Sprintf(" whose begin is still stored (%d marker(s)): a restore needs every segment from %s on", len(p.Baselines), p.Segments[0].Name)
		}
		return nil
	}
	if idx < p.Delete {
		p.Delete = idx
		p.Reason = fmt.Sprintf("it holds the begin (seq %d) of baseline %s, the newest complete one", p.Anchor.BeginSeq,
			batch.BaselineName(p.Anchor.Generation, p.Anchor.BeginSeq, p.Anchor.EndSeq))
		if p.Policy.KeepFor > 0 {
			p.Reason += fmt.Sprintf(" that ended more than keep_for = %s ago (%s)", p.Policy.KeepFor, p.Anchor.EndTime.Format(time.RFC3339))
		}
		p.Reason += "; restores start there"
	}
	first := p.Segments[p.Delete]
	for _, m := range p.Baselines {
		if m.Gen < first.Generation || (m.Gen == first.Generation && m.Begin < first.First) {
			p.DeleteBaselines = append(p.DeleteBaselines, m)
		}
	}
	return nil
}

// holding returns the index of the segment of generation gen that holds
// seq, or -1.
func (p *Plan) holding(gen uint32, seq uint64) int {
	for i, s := range p.Segments {
		if s.Generation == gen && s.First <= seq && seq <= s.Last {
			return i
		}
	}
	return -1
}

// unapplied returns a receiver that has not applied s.
func unapplied(ws []catalog.Watermark, s Segment) (catalog.Watermark, bool) {
	for _, w := range ws {
		if s.Generation > w.Generation || (s.Generation == w.Generation && s.Last > w.AppliedSeq) {
			return w, true
		}
	}
	return catalog.Watermark{}, false
}

// Apply deletes the planned segments, oldest first, stopping at the first
// failure so that what remains stays contiguous. It returns how many it
// deleted. Before the first deletion it writes a start marker at the
// first seq kept (batch.Start, reason "pruned"), so `ferry verify` can
// tell the pruned start from lost records; the markers below it, and the
// key epoch headers of the deleted segments, go after the segments.
func (p *Plan) Apply(ctx context.Context, st store.Store, log *slog.Logger) (int, error) {
	var starts []catalog.StartMarker
	if p.Delete > 0 {
		var err error
		if starts, err = p.markStart(ctx, st); err != nil {
			return 0, err
		}
	}
	var parts []*catalog.Part
	for i, s := range p.Segments[:p.Delete] {
		if s.Part != nil {
			parts = append(parts, s.Part) // below the start marker now; its bundle may go below
			continue
		}
		if err := st.Delete(ctx, s.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return i, fmt.Errorf("delete %s: %w (deleted %d of %d; the rest stays)", s.Key, err, i, p.Delete)
		}
		if log != nil {
			log.Debug("pruned segment", "segment", s.Key, "bytes", s.Size)
		}
	}
	for _, m := range starts {
		if err := st.Delete(ctx, m.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return p.Delete, fmt.Errorf("delete start marker %s: %w (the segments before it are deleted)", m.Key, err)
		}
	}
	for _, m := range p.DeleteBaselines {
		if err := st.Delete(ctx, m.Key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return p.Delete, fmt.Errorf("delete baseline marker %s: %w (the segments before it are deleted)", m.Key, err)
		}
		if log != nil {
			log.Debug("pruned baseline marker", "key", m.Key)
		}
	}
	if err := pruneBundles(ctx, st, p.Stream, parts, log); err != nil {
		return p.Delete, err
	}
	// After their segments: a header never goes while its segment stays.
	// One left by a failure here goes with the next prune.
	for _, key := range p.DeleteKeyHeaders {
		if err := st.Delete(ctx, key); err != nil && !errors.Is(err, store.ErrNotFound) {
			return p.Delete, fmt.Errorf("delete key epoch header %s: %w (its segment is deleted; the next prune deletes it)", key, err)
		}
		if log != nil {
			log.Debug("pruned key epoch header", "key", key)
		}
	}
	return p.Delete, nil
}

// markStart writes the start marker at the first segment kept and returns
// the older markers, which the deletions make moot.
func (p *Plan) markStart(ctx context.Context, st store.Store) ([]catalog.StartMarker, error) {
	kept := p.Segments[p.Delete]
	if err := catalog.MarkPrunedAt(ctx, st, p.Stream, catalog.Segment{Name: kept.Name, Key: kept.Key, Part: kept.Part}); err != nil {
		return nil, err
	}
	all, err := catalog.ListStarts(ctx, st, p.Stream)
	if err != nil {
		return nil, err
	}
	var older []catalog.StartMarker
	for _, s := range all {
		if s.Seq < kept.First {
			older = append(older, s)
		}
	}
	return older, nil
}

// Summary describes the plan for people: what goes, what stays and why.
func (p *Plan) Summary(dryRun bool) string {
	var b strings.Builder
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	switch {
	case len(p.Segments) == 0:
		fmt.Fprintf(&b, "stream %s has no segments; nothing to prune\n", p.Stream)
		return b.String()
	case p.Delete == 0:
		fmt.Fprintf(&b, "%s nothing: %d segment(s) kept\n", verb, len(p.Segments))
	default:
		first, last := p.Segments[0], p.Segments[p.Delete-1]
		fmt.Fprintf(&b, "%s %d segment(s), %d bytes: seq %d..%d (%s .. %s)\n", verb, p.Delete, p.DeleteBytes(),
			first.First, last.Last, first.Name, last.Name)
		fmt.Fprintf(&b, "kept %d segment(s)\n", len(p.Segments)-p.Delete)
	}
	if p.Reason != "" {
		fmt.Fprintf(&b, "kept from %s on because %s\n", p.Segments[p.Delete].Name, p.Reason)
	}
	if p.Anchor != nil {
		fmt.Fprintf(&b, "kept baseline %s (seq %d..%d, ended %s) and everything after it: the oldest point a fresh restore can start from\n",
			batch.BaselineName(p.Anchor.Generation, p.Anchor.BeginSeq, p.Anchor.EndSeq), p.Anchor.BeginSeq, p.Anchor.EndSeq,
			p.Anchor.EndTime.Format(time.RFC3339))
	}
	if n := len(p.DeleteBaselines); n > 0 {
		fmt.Fprintf(&b, "%s %d baseline marker(s) whose begin is deleted\n", verb, n)
	}
	if n := len(p.DeleteKeyHeaders); n > 0 {
		fmt.Fprintf(&b, "%s %d key epoch header(s) (ferry rekey) of deleted segments\n", verb, n)
	}
	if len(p.Receivers) == 0 {
		fmt.Fprintf(&b, "no receiver has registered for stream %s: only keep_for and keep_min protect its segments\n", p.Stream)
	}
	return b.String()
}
