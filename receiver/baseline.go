package receiver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// ErrPruned: a restore needs segments that retention deleted, and no
// baseline lets it start after them.
var ErrPruned = errors.New("needed segments were pruned")

// RestoreStart is where a restore into a new state begins.
type RestoreStart struct {
	// Baseline is the baseline the restore starts at; nil when it
	// starts at the beginning of the stream.
	Baseline *batch.Baseline
	// Segment holds the baseline-begin record.
	Segment string
}

// PlanRestoreStart picks where a restore of stream into a new state
// starts (docs/DIRTREE.md, "Restoring from a baseline"): at the begin of
// the newest baseline with a marker whose end is at or before the
// boundary (until seq, untilTime; zero for none), which the stream's
// history holds whole and whose begin segment the store still holds;
// else at the start of the stream if its first segment is still there.
// Otherwise it fails with ErrPruned, naming what is missing. The restore
// follows the stream's history across its generations (the receiver does
// the same), so gen, the generation a restore was once confined to, is
// not used.
func PlanRestoreStart(ctx context.Context, st store.Store, stream string, gen uint32, until uint64, untilTime time.Time) (RestoreStart, error) {
	hist, err := catalog.ReadHistory(ctx, st, stream)
	if err != nil {
		return RestoreStart{}, err
	}
	// The segments of the history, in seq order: the owner of a seq never
	// decreases as the seq grows, so name order is seq order. A segment
	// the history does not hold, or cannot place, is left to the receiver
	// to skip or report.
	var segs []string
	dir := batch.StreamDir(stream)
	err = st.List(ctx, dir, "", func(o store.Object) error {
		name := strings.TrimPrefix(o.Name, dir)
		g, first, last, ok := batch.ParseSegmentName(name)
		if !ok {
			return nil
		}
		if where, err := hist.Place(g, first, last); err == nil && where == batch.InHistory {
			segs = append(segs, name)
		}
		return nil
	})
	if err != nil {
		return RestoreStart{}, fmt.Errorf("list %s: %w", dir, err)
	}
	sort.Strings(segs)
	if len(segs) == 0 {
		return RestoreStart{}, nil // the receiver reports an empty store
	}
	_, first, _, _ := batch.ParseSegmentName(segs[0])
	marks, err := catalog.ListBaselines(ctx, st, stream)
	if err != nil {
		return RestoreStart{}, err
	}
	var skipped []string
	for i := len(marks) - 1; i >= 0; i-- {
		m := marks[i]
		if !heldWhole(hist, m.Gen, m.Begin, m.End) || (until > 0 && m.End > until) || m.Begin < first {
			continue
		}
		b, err := catalog.ReadBaseline(ctx, st, m)
		if err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		if !untilTime.IsZero() && b.EndTime.After(untilTime) {
			continue
		}
		seg := segmentHolding(segs, m.Begin)
		if seg == "" {
			skipped = append(skipped, fmt.Sprintf("baseline %s: no segment holds its begin seq %d", m.Name, m.Begin))
			continue
		}
		return RestoreStart{Baseline: &b, Segment: seg}, nil
	}
	if first == 1 {
		return RestoreStart{}, nil
	}
	bound := "the end of the store"
	switch {
	case until > 0:
		bound = fmt.Sprintf("the boundary seq %d", until)
	case !untilTime.IsZero():
		bound = "the boundary " + untilTime.Format(time.RFC3339Nano)
	}
	msg := fmt.Sprintf("stream %q in %s starts at seq %d (segment %s): seq 1..%d were pruned, and no complete baseline (%d marker(s) in %s) begins in what is left and ends by %s",
		stream, st, first, segs[0], first-1, len(marks), batch.BaselineDir(stream), bound)
	if len(skipped) > 0 {
		msg += " (" + strings.Join(skipped, "; ") + ")"
	}
	return RestoreStart{}, fmt.Errorf("%s; restore to a later boundary, or from an archive that still holds them: %w", msg, ErrPruned)
}

// heldWhole reports whether the history holds seqs begin..end of
// generation gen: a baseline an old primary wrote past a fork is not part
// of the stream.
func heldWhole(h batch.History, gen uint32, begin, end uint64) bool {
	ob, ok1 := h.Owner(begin)
	oe, ok2 := h.Owner(end)
	return ok1 && ok2 && ob == gen && oe == gen
}

// segmentHolding returns the listed segment whose seq range holds seq.
func segmentHolding(segs []string, seq uint64) string {
	i := sort.Search(len(segs), func(i int) bool {
		_, _, last, _ := batch.ParseSegmentName(segs[i])
		return last >= seq
	})
	if i == len(segs) {
		return ""
	}
	if _, first, _, _ := batch.ParseSegmentName(segs[i]); first > seq {
		return ""
	}
	return segs[i]
}

// StartAtBaseline writes the first checkpoint of a new state in cfg.StateDir
// so that a receiver opened on it applies from the baseline-begin record of
// start onward: the checkpoint is inside start.Segment just before that
// record (a partial checkpoint, as a restore boundary leaves, restore.go),
// so the receiver checks that segment's name and hash and the chain from
// there on. The applier's starting state is recorded as Open records it,
// so an interrupted restore resumes like any other. A state that already
// has a checkpoint is left alone (the restore is resumed); so is a start
// without a baseline.
func StartAtBaseline(ctx context.Context, cfg Config, start RestoreStart) error {
	if start.Baseline == nil || start.Baseline.BeginSeq <= 1 {
		return nil
	}
	if err := fsutil.CheckWritableDir(cfg.StateDir, "state"); err != nil {
		return err
	}
	lock, err := fsutil.Lock(cfg.StateDir, "state")
	if err != nil {
		return err
	}
	defer lock.Close()
	if _, ok, err := LoadCheckpoint(cfg.StateDir); err != nil || ok {
		return err
	}
	key := batch.SegmentKey(cfg.Stream, start.Segment)
	rc, err := cfg.Store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("segment %s: %w", key, err)
	}
	limit := segmentLimit(cfg.MaxSegmentBytes)
	data, err := batch.ReadSegment(rc, nil, 0, limit)
	rc.Close()
	if err != nil {
		return fmt.Errorf("segment %s: %w", key, err)
	}
	seg, err := batch.Open(data)
	if err == nil {
		err = admit(&cfg, key, &seg.Meta)
	}
	if err == nil {
		err = seg.Decrypt(cfg.Decrypter)
	}
	if err == nil {
		err = seg.Scan(limit, func(*batch.Record) error { return nil })
	}
	if err != nil {
		return fmt.Errorf("segment %s: %w", key, err)
	}
	m := &seg.Meta
	if m.Name() != start.Segment || m.Stream != cfg.Stream {
		return fmt.Errorf("segment %s: metadata says stream %q %s: %w", key, m.Stream, m.Name(), ErrChain)
	}
	cp := newCheckpoint(cfg.Stream, m.Generation)
	cp.LastSeq, cp.LastHash = start.Baseline.BeginSeq-1, m.PrevSHA256
	cp.Segment, cp.PartialHash = start.Segment, batch.Hash(data)
	if st, ok := cfg.Applier.(Stateful); ok {
		if err := st.Restore(nil); err != nil {
			return err
		}
		cp.Applier, err = st.State()
		cfg.Applier.Close()
		if err != nil {
			return err
		}
	}
	return saveCheckpoint(cfg.StateDir, cp)
}
