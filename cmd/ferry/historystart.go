package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// historyStart is where a stream's history in a store starts, for ferry
// ls and ferry verify, and whether that start is accounted for: seq 1, or
// at or before a start marker (retention pruned what came before; a
// target was added mid-stream with start_now) or a baseline (a replica
// can be built from it). Any other late start means records are missing.
type historyStart struct {
	Seq     uint64 // first seq of the first segment of the history (0: none)
	Segment string
	Why     string // how the start is accounted for, or what is missing
	OK      bool
}

// String is the line ls and verify print.
func (hs historyStart) String() string {
	if hs.Seq == 0 {
		return "history: no segments"
	}
	return fmt.Sprintf("history starts at seq %d (segment %s): %s", hs.Seq, hs.Segment, hs.Why)
}

// findHistoryStart judges the start of the history among names (the
// stream's segments, sorted) in st.
func findHistoryStart(ctx context.Context, st store.Store, stream string, segs []catalog.Segment, h batch.History) (historyStart, error) {
	var hs historyStart
	var at catalog.Segment
	for _, s := range segs {
		name := s.Name
		gen, first, last, _ := batch.ParseSegmentName(name)
		if p, err := h.Place(gen, first, last); err == nil && p == batch.InHistory {
			hs.Seq, hs.Segment, at = first, name, s
			break
		}
	}
	if hs.Seq == 0 {
		hs.OK = true
		return hs, nil
	}
	if hs.Seq == 1 {
		hs.Why, hs.OK = "the stream's start", true
		return hs, nil
	}
	gen, _, _, _ := batch.ParseSegmentName(hs.Segment)
	prev := ""
	if data, err := readStoredHeader(ctx, st, at); err == nil {
		if m, _, err := batch.ParseMeta(data); err == nil {
			prev = m.PrevSHA256
		}
	}
	starts, err := catalog.ListStarts(ctx, st, stream)
	if err != nil {
		return hs, err
	}
	for _, m := range starts {
		if m.Seq < hs.Seq {
			continue
		}
		s, err := catalog.ReadStart(ctx, st, m)
		if err != nil {
			return hs, err
		}
		if s.Seq == hs.Seq && s.Generation == gen && prev != "" && s.PrevSHA256 != prev {
			hs.Why = fmt.Sprintf("start marker %s says the segment at seq %d chains to %.16s, but %s chains to %.16s: it is not the stream the marker was written for",
				m.Key, s.Seq, s.PrevSHA256, hs.Segment, prev)
			return hs, nil
		}
		hs.OK = true
		at := s.Time.UTC().Format(time.RFC3339)
		switch s.Reason {
		case batch.StartPruned:
			hs.Why = fmt.Sprintf("seq 1..%d were pruned by retention at %s (start marker %s)", s.Seq-1, at, m.Key)
		case batch.StartNewTarget:
			hs.Why = fmt.Sprintf("this store was added as target %s mid-stream at %s on %s and began at seq %d on purpose (start_now; start marker %s)",
				s.Target, at, s.Host, s.Seq, m.Key)
		default:
			hs.Why = fmt.Sprintf("seq 1..%d are absent on purpose (%s at %s; start marker %s)", s.Seq-1, s.Reason, at, m.Key)
		}
		if s.Seq > hs.Seq {
			hs.Why += fmt.Sprintf("; seq %d..%d are still stored", hs.Seq, s.Seq-1)
		}
		return hs, nil
	}
	bls, err := catalog.ListBaselines(ctx, st, stream)
	if err != nil {
		return hs, err
	}
	for _, m := range bls {
		if m.Begin >= hs.Seq {
			hs.OK = true
			hs.Why = fmt.Sprintf("seq 1..%d are absent; baseline %s (seq %d..%d) rebuilds a replica from there", hs.Seq-1, m.Name, m.Begin, m.End)
			return hs, nil
		}
	}
	var what []string
	if len(starts) > 0 {
		what = append(what, fmt.Sprintf("the newest start marker %s is below it", starts[len(starts)-1].Key))
	}
	if len(bls) > 0 {
		what = append(what, "no baseline begins in what is stored")
	}
	hs.Why = fmt.Sprintf("seq 1..%d are MISSING: no start marker (%s) or baseline accounts for them", hs.Seq-1, batch.StartDir(stream))
	if len(what) > 0 {
		hs.Why += " (" + strings.Join(what, "; ") + ")"
	}
	hs.Why += "; records were lost, or the store was added as a target mid-stream: copy the missing segments from a store that has them"
	return hs, nil
}
