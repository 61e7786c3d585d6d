//go:build linux

package source

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
)

// Flushing: a path marked dirty again only moves its last change, so a
// burst of changes ships once, Debounce after the last (MaxDelay after the
// first at most). Due paths ship in parts; each part's paths go to the
// index's pending log before its first batch reaches the sink, and its
// last batch is appended durably, so the index never claims a state whose
// records could still be lost.

// dirLogLimit is the pending-log size that triggers a snapshot.
const dirLogLimit = 4 << 20

// dirDirtyMark is a changed path waiting to be shipped.
type dirDirtyMark struct{ first, last time.Time }

// dirtySince reports whether rel was marked dirty at or after t: it changed
// since then and will be shipped again.
func (r *dirRun) dirtySince(rel string, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.dirty[rel]
	return m != nil && !m.last.Before(t)
}

func (r *dirRun) markDirty(rel string, now time.Time) {
	r.mu.Lock()
	if m := r.dirty[rel]; m != nil {
		m.last = now
	} else {
		r.dirty[rel] = &dirDirtyMark{first: now, last: now}
	}
	r.mu.Unlock()
	r.wake()
}

// takeDue removes and returns the paths quiet for Debounce (or dirty for
// MaxDelay), and when the next of the others is due.
func (r *dirRun) takeDue(now time.Time) ([]string, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var due []string
	var next time.Time
	for p, m := range r.dirty {
		at := m.last.Add(r.debounce)
		if f := m.first.Add(r.maxDelay); f.Before(at) {
			at = f
		}
		if !at.After(now) {
			due = append(due, p)
			delete(r.dirty, p)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, next
}

// flush ships the given paths (plus any ancestor the index does not hold
// as a shipped directory, so the replica never sees a path below something
// that is not yet a directory there), parents before children.
func (r *dirRun) flush(ctx context.Context, sink shipper.Sink, due []string) error {
	renames, due := r.takeRenames(due)
	set := make(map[string]struct{}, len(due))
	for _, p := range due {
		set[p] = struct{}{}
		for a := dirParent(p); a != "" && a != "."; a = dirParent(a) {
			if e := r.idx.get(a); e == nil || e.Kind != dirKindDir || e.Pending {
				set[a] = struct{}{}
			}
		}
	}
	paths := make([]string, 0, len(set))
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths) // a parent is a prefix of its children, so it sorts first
	// In parts, each made durable and logged on its own, so that a crash
	// in the middle of a large scan ships again only the part it was in.
	for len(paths) > 0 {
		n := min(len(paths), dirFlushPaths)
		if err := r.flushPart(ctx, sink, paths[:n], renames); err != nil {
			return err
		}
		renames = nil
		paths = paths[n:]
	}
	return nil
}

// dirFlushPaths is the most paths one part of a flush ships.
const dirFlushPaths = 8192

func (r *dirRun) flushPart(ctx context.Context, sink shipper.Sink, paths []string, renames []dirRenamePair) error {
	if l := r.src.Ledger; l != nil {
		// The appliers of the peers' streams change the tree under the same
		// lock: what this part reads is never half of their work.
		l.Lock()
		defer l.Unlock()
	}
	r.flushPaths, r.logged, r.inFlush = paths, false, true
	r.cur, r.curBytes = r.cur[:0], 0
	if err := r.shipRenames(ctx, sink, paths, renames); err != nil {
		return err
	}
	for _, p := range paths {
		if err := r.process(ctx, sink, p); err != nil {
			return err
		}
		r.baselineShipped(p)
	}
	if len(r.cur) > 0 {
		if err := r.send(ctx, sink, true); err != nil {
			return err
		}
	}
	r.inFlush = false
	r.mu.Lock()
	r.status.Flushes++
	r.status.Indexed = len(r.idx.entries)
	r.mu.Unlock()
	// Rewrite the snapshot once the log is a good part of it: the cost of
	// snapshots stays proportional to what is shipped.
	if r.idx.logSize >= max(dirLogLimit, r.idx.snapSize/2) {
		return r.maybePersist(true)
	}
	return nil
}

// maybePersist writes the index snapshot when forced (and anything changed)
// or when IndexEvery has passed since the last one. Never mid-flush.
func (r *dirRun) maybePersist(force bool) error {
	if r.inFlush || (r.changed == 0 && r.idx.logSize == 0) {
		return nil
	}
	if !force && time.Since(r.lastPersist) < r.indexEvery {
		return nil
	}
	if err := r.idx.persist(); err != nil {
		return err
	}
	r.changed, r.lastPersist = 0, time.Now()
	return nil
}

// emit adds a record to the flush's current batch, first handing the batch
// to the sink if it is full. The last batch of a flush is sent durably by
// flush itself, so the current batch is never empty after an emit.
func (r *dirRun) emit(ctx context.Context, sink shipper.Sink, rec batch.Record) error {
	n := rec.FramedSize()
	if len(r.cur) > 0 && (r.curBytes+n > sourceBatchBytes || len(r.cur) >= sourceBatchRecords) {
		if err := r.send(ctx, sink, false); err != nil {
			return err
		}
	}
	r.cur = append(r.cur, rec)
	r.curBytes += n
	r.changed++
	return nil
}

func (r *dirRun) send(ctx context.Context, sink shipper.Sink, durable bool) error {
	if !r.logged {
		if err := r.idx.logPending(r.idx.batches+1, r.flushPaths); err != nil {
			return err
		}
		r.logged = true
	}
	if l := r.src.Ledger; l != nil {
		if err := l.Sync(); err != nil {
			return err
		}
	}
	r.idx.batches++
	cursor, _ := json.Marshal(dirCursor{Batches: r.idx.batches})
	var err error
	if ds, ok := sink.(shipper.DurableSink); ok && durable {
		err = ds.AppendDurable(ctx, r.cur, cursor)
	} else {
		err = sink.AppendBatch(ctx, r.cur, cursor)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.status.Records += uint64(len(r.cur))
	r.status.Bytes += int64(r.curBytes)
	r.mu.Unlock()
	clear(r.cur)
	r.cur, r.curBytes = r.cur[:0], 0
	return nil
}
