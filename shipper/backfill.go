package shipper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// A target added to a running stream (a new [[ship.targets]] entry, a new
// --also, a store emptied or replaced) would otherwise get the spool's
// segments only: its copy of the stream would start at whatever seq the
// spool stood at, silently. So before anything is sent, planBackfill
// checks that every target holds the stream through the spool's base (the
// seq before its oldest segment: what every target had when the spool let
// it go). A target that does not is
//
//   - backfilled from another dir or s3:// target that holds the missing
//     segments, copied byte for byte in order, each verified (checksum,
//     name, chain) before it is put, by the target's sender before it
//     sends the spool's segments (backfill); or,
//   - if it is listed in StartNow and holds nothing of the stream, started
//     at the base on purpose: a start marker (batch.Start) records the
//     decision in the target, which `ferry verify` accepts; or
//   - refused: New fails with a message saying how to proceed.
//
// A target (or a source) that does not answer at start is judged by its
// sender instead, before it sends anything; a refusal then fails Run.
//
// The spool itself cannot backfill: it keeps a segment only until every
// target of the process that sealed it confirmed it.

// backfillPlan is the copy one target needs before its sender may send
// the spool's segments.
type backfillPlan struct {
	from      Target
	held      uint64   // the target holds the stream through held (0: nothing)
	heldName  string   // its segment ending at held ("": none)
	names     []string // from's segments to copy, in seq order, through the base
	baseHash  string   // hash of the segment ending at the base (the spool chains to it)
	baseData  []byte   // that segment, read when it was checked (names' last); backfill copies it
	markers   []string // from's start markers to copy before the segments (held == 0)
	baselines []string // from's baseline markers to copy after them (held == 0)
}

// targetStart is what planBackfill decided for one target: nothing to
// do, a backfill (plan), or to be judged by the target's sender (later),
// because a store did not answer at once.
type targetStart struct {
	plan  *backfillPlan
	later bool
}

// planBackfill runs once the spool knows where it continues the stream
// and before anything is sent: it judges every target whose stores
// answer at once, refusing one that must be (New fails), and leaves the
// others to their senders (judgeLater), so a target down at start does
// not hold up the rest.
func (s *Shipper) planBackfill(ctx context.Context) error {
	var err error
	if s.base, s.baseHash, err = s.spool.Base(); err != nil {
		return err
	}
	s.starts = map[string]*targetStart{}
	for _, t := range s.cfg.Targets {
		p, err := s.judgeTarget(ctx, t, false)
		var down *storeDown
		switch {
		case errors.As(err, &down):
			s.log.Warn("a target did not answer: whether it holds the stream's start is checked before anything is sent to it",
				"target", t.Name, "err", err)
			s.starts[t.Name] = &targetStart{later: true}
		case isHalt(err):
			// A link's receiver knows a newer generation: the sender
			// halts the shipper as it would on its first segment.
			s.starts[t.Name] = &targetStart{later: true}
		case err != nil:
			return err
		case p != nil:
			s.starts[t.Name] = &targetStart{plan: p}
			s.mu.Lock()
			s.targets[t.Name].SentSeq = p.held
			s.mu.Unlock()
		}
	}
	return nil
}

// prepareTarget is t's sender's work before it sends the spool's
// segments: judge t if planBackfill could not, then backfill it.
func (s *Shipper) prepareTarget(ctx context.Context, t Target) error {
	ts := s.starts[t.Name]
	if ts == nil {
		return nil
	}
	if ts.later {
		p, err := s.judgeTarget(ctx, t, true)
		if isHalt(err) {
			return s.halt(err)
		}
		if err != nil {
			return err
		}
		ts.plan, ts.later = p, false
		if p != nil {
			s.mu.Lock()
			s.targets[t.Name].SentSeq = p.held
			s.mu.Unlock()
		}
	}
	if ts.plan == nil {
		return nil
	}
	return s.backfill(ctx, t, ts.plan)
}

// judgeTarget decides whether t, which must hold the stream through the
// spool's base, does; if not, how it gets the missing segments (the
// plan), or starts now, or is refused (the error). Store errors are
// waited out if wait is set (Shipper.try).
func (s *Shipper) judgeTarget(ctx context.Context, t Target, wait bool) (*backfillPlan, error) {
	base := s.base
	if base == 0 {
		return nil, nil // the spool holds the stream from its start
	}
	var held uint64
	var heldName string
	var ok bool
	var err error
	link := store.IsSegmentsOnly(t.Store)
	if link {
		// A link reports only its newest segment: one query answers both.
		held, heldName, err = s.heldThrough(ctx, t, wait)
		ok = linkHolds(held, heldName, base, s.Generation())
	} else {
		ok, err = s.holdsThrough(ctx, t, base, wait)
	}
	if err != nil {
		return nil, fmt.Errorf("target %s: check that it holds stream %q through seq %d: %w", t.Name, s.cfg.Spool.Stream, base, err)
	}
	if ok {
		return nil, nil
	}
	if !link {
		if held, heldName, err = s.heldThrough(ctx, t, wait); err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
	}
	if t.StartNow {
		return nil, s.startNow(ctx, t, held, wait)
	}
	var why []string
	for _, from := range s.cfg.Targets {
		if from.Name == t.Name || store.IsSegmentsOnly(from.Store) {
			continue
		}
		p, err := s.sourcePlan(ctx, from, held, wait)
		var down *storeDown
		if errors.As(err, &down) {
			return nil, err
		}
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", from.Name, err))
			continue
		}
		p.heldName = heldName
		s.log.Warn("target lacks the start of the stream: it is backfilled from another target before it gets the spool's segments",
			"target", t.Name, "from", from.Name, "stream", s.cfg.Spool.Stream, "held_seq", held, "base_seq", base, "segments", len(p.names))
		return p, nil
	}
	return nil, s.refuseTarget(t, held, base, why)
}

// refuseTarget is New's error for a target that lacks part of the stream
// no other target can give it.
func (s *Shipper) refuseTarget(t Target, held, base uint64, why []string) error {
	stream := s.cfg.Spool.Stream
	holds := "holds nothing of stream " + fmt.Sprintf("%q", stream)
	if held > 0 {
		holds = fmt.Sprintf("holds stream %q only through seq %d", stream, held)
	}
	msg := fmt.Sprintf("target %s (%s) %s, but the spool %s continues the stream after seq %d, and seq %d..%d have left the spool",
		t.Name, t.Store, holds, s.cfg.Spool.Dir, base, held+1, base)
	if len(why) > 0 {
		msg += "; no other target can give them (" + strings.Join(why, "; ") + ")"
	} else {
		msg += "; no other dir or s3:// target can give them"
	}
	msg += ". To give it the whole history, copy the stream's objects (" + stream + "/ with its subdirectories) into it from a store that has them " +
		"(cp -a, aws s3 sync), or add such a store as a target so ferry copies them; "
	if held > 0 {
		msg += "its copy is not the stream's history as it stands: move it aside to start the target afresh"
	} else {
		msg += fmt.Sprintf("to start it at seq %d on purpose, list it in [ship] start_now (or --start-now %s): a start marker in the target then records that its history begins there", base+1, t.Name)
	}
	return errors.New(msg)
}

// startNow starts t, which lacks the stream through base, at base+1 on
// purpose: only a target holding nothing of the stream, which then gets
// a start marker (tcp:// links carry none: the receiver's inbox starts
// where it starts).
func (s *Shipper) startNow(ctx context.Context, t Target, held uint64, wait bool) error {
	base, baseHash := s.base, s.baseHash
	if held > 0 {
		return fmt.Errorf("target %s (%s) holds stream %q only through seq %d, but the spool continues it after seq %d: start_now starts only a target that holds nothing of the stream; "+
			"move its copy aside to start it at seq %d, or copy the missing segments into it", t.Name, t.Store, s.cfg.Spool.Stream, held, base, base+1)
	}
	s.log.Warn("start_now: target begins the stream mid-way; the records before are not in it", "target", t.Name,
		"stream", s.cfg.Spool.Stream, "seq", base+1)
	if store.IsSegmentsOnly(t.Store) {
		return nil
	}
	host, _ := os.Hostname()
	gen := s.Generation()
	if hasHistory(s.history) {
		gen, _ = s.history.Owner(base + 1)
	}
	m := batch.Start{Stream: s.cfg.Spool.Stream, Generation: gen, Seq: base + 1, PrevSHA256: baseHash,
		Reason: batch.StartNewTarget, Target: t.Name, Host: host, Time: time.Now()}
	err := s.tryOn(ctx, wait, t, "write start marker", func(ctx context.Context) error {
		return catalog.WriteStart(ctx, t.Store, m)
	})
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	return nil
}

// inHistory reports whether a segment of gen with the given seqs is part
// of the stream's history (with no history loaded: of the spool's
// generation).
func (s *Shipper) inHistory(gen uint32, first, last uint64) bool {
	if !hasHistory(s.history) {
		return gen == s.Generation()
	}
	p, err := s.history.Place(gen, first, last)
	return err == nil && p == batch.InHistory
}

// holdsThrough reports whether t, a dir or s3:// target (a link: see
// linkHolds), holds a segment of the history that reaches seq or past it:
// a target pruned by retention holds the stream through seq all the same.
// It lists forward from below seq in growing windows, so a
// target that holds it costs a LIST or a few, whatever the size of its
// archive.
func (s *Shipper) holdsThrough(ctx context.Context, t Target, seq uint64, wait bool) (bool, error) {
	stream := s.cfg.Spool.Stream
	dir := batch.StreamDir(stream)
	gen := s.Generation()
	if hasHistory(s.history) {
		gen, _ = s.history.Owner(seq)
	}
	errStop := errors.New("stop")
	for k := uint64(1); ; k *= 8 {
		lo := seq - min(k, seq)
		var below, holds bool
		err := s.tryOn(ctx, wait, t, "list "+dir, func(ctx context.Context) error {
			below, holds = false, false
			err := t.Store.List(ctx, dir, dir+batch.NameAfter(gen, lo), func(o store.Object) error {
				g, first, last, ok := batch.ParseSegmentName(strings.TrimPrefix(o.Name, dir))
				switch {
				case !ok || !s.inHistory(g, first, last):
					return nil
				case last >= seq:
					holds = true
					return errStop
				case g == gen:
					below = true // one reaching seq from below lo would overlap it
				}
				return nil
			})
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		})
		if err != nil || holds {
			return holds, err
		}
		if below || lo == 0 {
			// Or in a bundle (bundled_held.go).
			p, err := s.newestPart(ctx, t, gen, wait)
			return p.LastSeq >= seq, err
		}
	}
}

// linkHolds is holdsThrough for a tcp:// link in generation gen, given
// what heldThrough found: the link reports only the newest segment of its
// generation that its receiver holds. With none in a generation after the
// first, the receiver began the generation at its fork (its checkpoint,
// by promote or rejoin, is there) and judges the segments itself: it
// refuses one at or below the fork.
func linkHolds(held uint64, name string, seq uint64, gen uint32) bool {
	return held >= seq || (name == "" && gen > 1)
}

// heldThrough returns the highest seq of the history t holds and the
// segment ending there (0, "": nothing), or for a target with no segment
// but a start marker, the seq before the marker's. A tcp:// link reports
// only the newest segment of its generation; with none, its receiver is
// taken to hold the stream through the generation's fork.
func (s *Shipper) heldThrough(ctx context.Context, t Target, wait bool) (uint64, string, error) {
	stream := s.cfg.Spool.Stream
	dir := batch.StreamDir(stream)
	var held uint64
	var name string
	err := s.tryOn(ctx, wait, t, "list "+dir, func(ctx context.Context) error {
		held, name = 0, ""
		return t.Store.List(ctx, dir, "", func(o store.Object) error {
			n := strings.TrimPrefix(o.Name, dir)
			if g, first, last, ok := batch.ParseSegmentName(n); ok && s.inHistory(g, first, last) && last > held {
				held, name = last, n
			}
			return nil
		})
	})
	if err != nil {
		return 0, "", fmt.Errorf("list %s: %w", dir, err)
	}
	p, err := s.newestPart(ctx, t, s.Generation(), wait)
	if err != nil {
		return 0, "", err
	}
	if p.LastSeq > held {
		held, name = p.LastSeq, p.Name
	}
	if held > 0 {
		return held, name, nil
	}
	if store.IsSegmentsOnly(t.Store) {
		if rec, ok := s.history.Record(s.Generation()); ok {
			return rec.ForkSeq, "", nil
		}
		return 0, "", nil
	}
	var starts []catalog.StartMarker
	err = s.tryOn(ctx, wait, t, "list "+batch.StartDir(stream), func(ctx context.Context) error {
		var err error
		starts, err = catalog.ListStarts(ctx, t.Store, stream)
		return err
	})
	if err != nil {
		return 0, "", err
	}
	if len(starts) > 0 {
		return starts[len(starts)-1].Seq - 1, "", nil
	}
	return 0, "", nil
}

// sourcePlan checks that from holds the history's segments from held+1
// (from its first, when held is 0) through base, contiguous, the last
// one's hash being baseHash, and returns the copy.
func (s *Shipper) sourcePlan(ctx context.Context, from Target, held uint64, wait bool) (*backfillPlan, error) {
	base, baseHash := s.base, s.baseHash
	stream := s.cfg.Spool.Stream
	dir := batch.StreamDir(stream)
	type seg struct {
		name        string
		first, last uint64
	}
	var segs []seg
	err := s.tryOn(ctx, wait, from, "list "+dir, func(ctx context.Context) error {
		segs = segs[:0]
		return from.Store.List(ctx, dir, "", func(o store.Object) error {
			n := strings.TrimPrefix(o.Name, dir)
			if g, first, last, ok := batch.ParseSegmentName(n); ok && s.inHistory(g, first, last) && last > held && first <= base {
				segs = append(segs, seg{n, first, last})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	switch {
	case len(segs) == 0:
		return nil, fmt.Errorf("holds no segment of seq %d..%d", held+1, base)
	case held > 0 && segs[0].first != held+1:
		return nil, fmt.Errorf("its segments resume at seq %d, not %d", segs[0].first, held+1)
	case segs[len(segs)-1].last != base:
		return nil, fmt.Errorf("no segment of its ends at seq %d (its last before the spool's ends at %d)", base, segs[len(segs)-1].last)
	}
	p := &backfillPlan{from: from, held: held, baseHash: baseHash}
	for i, sg := range segs {
		if i > 0 && sg.first != segs[i-1].last+1 {
			return nil, fmt.Errorf("seq %d..%d missing between %s and %s", segs[i-1].last+1, sg.first-1, segs[i-1].name, sg.name)
		}
		p.names = append(p.names, sg.name)
	}
	// The spool's segments chain to the base: a copy ending in another
	// segment there is another history.
	data, err := s.getSegment(ctx, from, p.names[len(p.names)-1], wait)
	if err != nil {
		return nil, err
	}
	if h := batch.Hash(data); h != baseHash {
		return nil, fmt.Errorf("its segment %s has hash %.16s, but the spool's segments chain to %.16s: another history", p.names[len(p.names)-1], h, baseHash)
	}
	p.baseData = data
	if held == 0 {
		err := s.tryOn(ctx, wait, from, "list markers", func(ctx context.Context) error {
			p.markers, p.baselines = nil, nil
			starts, err := catalog.ListStarts(ctx, from.Store, stream)
			if err != nil {
				return err
			}
			for _, m := range starts {
				p.markers = append(p.markers, m.Key)
			}
			bls, err := catalog.ListBaselines(ctx, from.Store, stream)
			for _, m := range bls {
				p.baselines = append(p.baselines, m.Key)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// tryOn is Shipper.try on t's store that, when it waits, also shows
// each failure in t's status as a failed put does.
func (s *Shipper) tryOn(ctx context.Context, wait bool, t Target, op string, fn func(context.Context) error) error {
	return s.try(ctx, wait, t.Store, op, func(ctx context.Context) error {
		err := fn(ctx)
		if err != nil && wait && !isHalt(err) && ctx.Err() == nil {
			s.setTargetError(t.Name, err)
		}
		return err
	})
}

// maxBackfillSegment caps a segment read for a backfill: the receiver's
// and the readers' own cap.
const maxBackfillSegment = 4 << 30

// getSegment reads the segment name of the stream from t, retrying.
func (s *Shipper) getSegment(ctx context.Context, t Target, name string, wait bool) ([]byte, error) {
	key := batch.SegmentKey(s.cfg.Spool.Stream, name)
	var data []byte
	err := s.tryOn(ctx, wait, t, "get "+key, func(ctx context.Context) error {
		rc, err := t.Store.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = batch.ReadAll(rc, maxBackfillSegment)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", key, t.Name, err)
	}
	return data, nil
}

// copyObject copies a small object (a marker) from one target to another.
// One the target holds with other content is left alone and logged.
func (s *Shipper) copyObject(ctx context.Context, from, to Target, key string) error {
	var data []byte
	err := store.Retry(ctx, s.retry, s.log.With("store", from.Store.String()), "get "+key, func(ctx context.Context) error {
		rc, err := from.Store.Get(ctx, key)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = batch.ReadAll(rc, 64<<10)
		return err
	})
	if err != nil {
		return fmt.Errorf("get %s from %s: %w", key, from.Name, err)
	}
	err = store.Retry(ctx, s.retry, s.log.With("store", to.Store.String()), "put "+key, func(ctx context.Context) error {
		return to.Store.Put(ctx, key, data)
	})
	if errors.Is(err, store.ErrConflict) {
		s.log.Warn("backfill: the target holds another object under this name; left as it is", "target", to.Name, "key", key)
		return nil
	}
	return err
}

// backfill copies p's segments into t in order, each checked before it is
// put: it must open (checksum), carry the name it is stored under and
// chain to the one before (the first to t's segment ending at p.held).
func (s *Shipper) backfill(ctx context.Context, t Target, p *backfillPlan) error {
	stream := s.cfg.Spool.Stream
	started := time.Now()
	s.log.Info("backfill starts", "target", t.Name, "from", p.from.Name, "stream", stream, "segments", len(p.names), "after_seq", p.held)
	if !store.IsSegmentsOnly(t.Store) {
		for _, key := range p.markers {
			if err := s.copyObject(ctx, p.from, t, key); err != nil {
				return fmt.Errorf("backfill target %s: %w", t.Name, err)
			}
		}
	}
	prev := ""
	if p.heldName != "" {
		data, err := s.getSegment(ctx, t, p.heldName, true)
		if err != nil {
			return fmt.Errorf("backfill target %s: %w", t.Name, err)
		}
		prev = batch.Hash(data)
	}
	var bytes int64
	for i, name := range p.names {
		var data []byte
		if i == len(p.names)-1 && p.baseData != nil {
			data, p.baseData = p.baseData, nil // read and checked by sourcePlan
		} else {
			var err error
			if data, err = s.getSegment(ctx, p.from, name, true); err != nil {
				return fmt.Errorf("backfill target %s: %w", t.Name, err)
			}
		}
		key := batch.SegmentKey(stream, name)
		seg, err := batch.Open(data)
		switch {
		case err != nil:
			return fmt.Errorf("backfill target %s: segment %s in %s: %w; nothing after it copied", t.Name, key, p.from.Store, err)
		case seg.Meta.Name() != name || seg.Meta.Stream != stream:
			return fmt.Errorf("backfill target %s: segment %s in %s says it is %s of stream %q; nothing after it copied", t.Name, key, p.from.Store, seg.Meta.Name(), seg.Meta.Stream)
		case prev != "" && seg.Meta.PrevSHA256 != prev:
			return fmt.Errorf("backfill target %s: segment %s in %s does not chain to the one before it (prev_sha256 %.16s, want %.16s): chain broken; nothing after it copied",
				t.Name, key, p.from.Store, seg.Meta.PrevSHA256, prev)
		case s.cfg.Spool.Encrypter != nil && !seg.Meta.Encrypted():
			return fmt.Errorf("backfill target %s: segment %s in %s is plaintext (sealed before [encryption] was configured) "+
				"and encryption is on, so it is not copied; let the target begin at the spool's seq instead (start_now) or backfill it "+
				"without encryption; nothing after it copied", t.Name, key, p.from.Store)
		case i == len(p.names)-1 && seg.Hash != p.baseHash:
			return fmt.Errorf("backfill target %s: segment %s in %s changed since it was checked (hash %.16s, want %.16s)", t.Name, key, p.from.Store, seg.Hash, p.baseHash)
		}
		f := inflight{seg: spool.SealedSegment{Name: name, FirstSeq: seg.Meta.FirstSeq, LastSeq: seg.Meta.LastSeq, Size: int64(len(data))},
			key: key, data: data, started: time.Now()}
		if err := s.deliver(ctx, t, f, nil); err != nil || ctx.Err() != nil {
			return err
		}
		prev = seg.Hash
		bytes += int64(len(data))
		s.mu.Lock()
		st := s.targets[t.Name]
		st.SentSeq, st.LastError, st.LastSent = seg.Meta.LastSeq, "", time.Now()
		st.Segments++
		st.BytesSent += int64(len(data))
		s.ackChangedLocked()
		s.mu.Unlock()
		if s.cfg.OnSent != nil {
			s.cfg.OnSent(t.Name, len(data), time.Since(f.started))
		}
	}
	if !store.IsSegmentsOnly(t.Store) {
		for _, key := range p.baselines {
			if err := s.copyObject(ctx, p.from, t, key); err != nil {
				return fmt.Errorf("backfill target %s: %w", t.Name, err)
			}
		}
	}
	s.log.Info("backfill done", "target", t.Name, "from", p.from.Name, "stream", stream, "segments", len(p.names), "bytes", bytes,
		"took", time.Since(started).Round(time.Millisecond))
	return nil
}
