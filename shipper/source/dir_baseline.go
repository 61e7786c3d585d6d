//go:build linux

package source

import (
	"context"
	"encoding/json"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/shipper"
)

// dirBaselineRun is a baseline in progress.
type dirBaselineRun struct {
	begin   batch.Record        // the baseline-begin record, seq and time assigned
	started time.Time           // when the walk began
	owed    map[string]struct{} // paths the walk found that are not shipped yet
	paths   uint64              // paths shipped since the begin record
}

// RequestBaseline asks the running source for a baseline now (ferry ship
// on SIGUSR1). A request while one is in progress is dropped.
func (s *Dir) RequestBaseline() {
	s.baselineWanted.Store(true)
	s.wakeRun()
}

// initBaseline sets when the first baseline is due: at once if the spool
// has completed none or the schedule fired since the last one ended (it
// was missed while the source was down), else at the schedule's next time.
func (r *dirRun) initBaseline() error {
	if r.src.Ledger != nil {
		r.src.Ledger.SetBaseline(false) // a run cut short in one begins anew
	}
	if r.src.Baseline == nil {
		return nil
	}
	last, ok, err := LoadLastBaseline(r.src.SpoolDir)
	if err != nil {
		return err
	}
	now := time.Now()
	switch {
	case !ok:
		r.nextBaseline = now
	default:
		r.nextBaseline = r.src.Baseline.Next(last.EndTime)
		r.status.LastBaseline = last.EndTime
	}
	return nil
}

// baselineDue reports whether a baseline should begin now.
func (r *dirRun) baselineDue(now time.Time) bool {
	if r.base != nil {
		return false
	}
	if r.src.baselineWanted.Load() {
		return true
	}
	return !r.nextBaseline.IsZero() && !now.Before(r.nextBaseline)
}

// beginBaseline ships the baseline-begin record (durably, so its seq is
// known), marks every path of the index unknown, so that every path is
// shipped in full whatever the index says, and scans the tree. The paths
// the scan marks are owed: the baseline ends once each has been shipped.
func (r *dirRun) beginBaseline(ctx context.Context, sink shipper.Sink) error {
	r.src.baselineWanted.Store(false)
	started := time.Now()
	data, _ := json.Marshal(dirtree.BaselineData{Version: 1, StartedAt: started.UTC()})
	rec, err := r.sendMarker(ctx, sink, batch.Record{Op: dirtree.OpBaselineBegin, Key: []byte("."), Data: data})
	if err != nil {
		return err
	}
	r.base = &dirBaselineRun{begin: rec, started: started}
	r.idx.markPending(".")
	r.mu.Lock()
	r.status.BaselineRunning = true
	r.mu.Unlock()
	r.log.Info("baseline started: shipping the whole tree", "seq", rec.Seq)
	if l := r.src.Ledger; l != nil {
		// ferry sync: this site's versions read back by a rejoin ship too,
		// and so do its deletes (gone), which the walk cannot find.
		l.SetBaseline(true)
		for _, p := range l.OwnDeletes() {
			r.markDirty(p, time.Time{})
		}
	}
	if err := r.scan(); err != nil {
		return err
	}
	r.mu.Lock()
	r.base.owed = make(map[string]struct{}, len(r.dirty))
	for p := range r.dirty {
		r.base.owed[p] = struct{}{}
	}
	r.mu.Unlock()
	return nil
}

// baselineShipped notes that p was processed; it is no longer owed unless
// it is waiting to be shipped again (it kept changing while it was read).
// A path that could not be read is not owed either: the source ships it
// as soon as it can, baseline or not, like in any scan.
func (r *dirRun) baselineShipped(p string) {
	b := r.base
	if b == nil {
		return
	}
	b.paths++
	if _, ok := b.owed[p]; !ok {
		return
	}
	r.mu.Lock()
	_, again := r.dirty[p]
	r.mu.Unlock()
	if !again {
		delete(b.owed, p)
	}
}

// maybeEndBaseline ships the baseline-end record once nothing is owed,
// then records the baseline in the spool and hands it to OnBaseline.
func (r *dirRun) maybeEndBaseline(ctx context.Context, sink shipper.Sink) error {
	b := r.base
	if b == nil || len(b.owed) > 0 {
		return nil
	}
	data, _ := json.Marshal(dirtree.BaselineData{Version: 1, StartedAt: b.started.UTC(), BeginSeq: b.begin.Seq, Paths: b.paths})
	rec, err := r.sendMarker(ctx, sink, batch.Record{Op: dirtree.OpBaselineEnd, Key: []byte("."), Data: data})
	if err != nil {
		return err
	}
	done := batch.Baseline{BeginSeq: b.begin.Seq, EndSeq: rec.Seq, BeginTime: b.begin.Time.UTC(), EndTime: rec.Time.UTC(), Paths: b.paths}
	if err := saveLastBaseline(r.src.SpoolDir, done); err != nil {
		return err
	}
	r.base = nil
	if l := r.src.Ledger; l != nil {
		l.SetBaseline(false)
	}
	if sched := r.src.Baseline; sched != nil {
		r.nextBaseline = sched.Next(time.Now())
	}
	r.mu.Lock()
	r.status.BaselineRunning = false
	r.status.Baselines++
	r.status.LastBaseline = done.EndTime
	r.mu.Unlock()
	r.log.Info("baseline complete", "begin_seq", done.BeginSeq, "end_seq", done.EndSeq, "paths", done.Paths,
		"took", time.Since(b.started).Round(time.Millisecond))
	if r.src.OnBaseline != nil {
		r.src.OnBaseline(done)
	}
	return nil
}

// sendMarker ships one baseline record as a batch of its own, durably,
// and returns it with its seq and time. It is called between flushes.
func (r *dirRun) sendMarker(ctx context.Context, sink shipper.Sink, rec batch.Record) (batch.Record, error) {
	recs := []batch.Record{rec}
	r.idx.batches++
	cursor, _ := json.Marshal(dirCursor{Batches: r.idx.batches})
	var err error
	if ds, ok := sink.(shipper.DurableSink); ok {
		err = ds.AppendDurable(ctx, recs, cursor)
	} else {
		err = sink.AppendBatch(ctx, recs, cursor)
	}
	if err != nil {
		return rec, err
	}
	r.changed++ // the snapshot carries the batch count
	r.mu.Lock()
	r.status.Records++
	r.status.Bytes += int64(rec.FramedSize())
	r.mu.Unlock()
	return recs[0], nil
}
