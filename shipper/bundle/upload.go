package bundle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// errStopList ends a listing early.
var errStopList = errors.New("stop listing")

// upload puts the bundles not yet in every target, oldest first. It stops
// at the first one with a stream not registered (a later bundle must not
// be put before it: a stream's sender confirms its parts through the
// newest put). uploading held.
func (b *Bundler) upload(ctx context.Context) error {
	b.mu.Lock()
	pending := append([]*sealed(nil), b.pending...)
	b.mu.Unlock()
	for _, sb := range pending {
		b.mu.Lock()
		done := len(sb.put) == len(b.cfg.Targets)
		streams := maps(b.streams)
		b.mu.Unlock()
		if done {
			continue
		}
		for _, p := range sb.parts {
			if streams[p.Stream] == nil {
				b.cfg.Log.Debug("bundle waits for its streams to start", "bundle", sb.path, "stream", p.Stream)
				return nil
			}
		}
		if err := b.put(ctx, sb, streams); err != nil {
			return err
		}
	}
	return nil
}

// put stores sb in every target that does not hold it yet, telling its
// streams after each.
func (b *Bundler) put(ctx context.Context, sb *sealed, streams map[string]Stream) error {
	data, err := fsutil.ReadFileBounced(sb.path)
	if err != nil {
		return fmt.Errorf("read %s: %w", sb.path, err)
	}
	key := catalog.BundleKey(b.writer, sb.n)
	for _, t := range b.cfg.Targets {
		if sb.put[t.Name] {
			continue
		}
		log := b.cfg.Log.With("store", t.Store.String())
		for _, p := range sb.parts {
			s := streams[p.Stream]
			err := store.Retry(ctx, b.cfg.Retry, log, "stream "+p.Stream+": writer lease", func(ctx context.Context) error {
				err := s.Sendable(ctx, t.Name)
				if err != nil && s.Halted() != nil {
					return fmt.Errorf("%w: %w", store.ErrPermanent, err)
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("bundle %s holds a part of stream %s, which may not be put to %s: %w", key, p.Stream, t.Name, err)
			}
			if err := b.mark(ctx, t, sb, p); err != nil {
				return err
			}
		}
		b.cfg.Step("marked")
		err := store.Retry(ctx, b.cfg.Retry, log, "put "+key, func(ctx context.Context) error {
			return t.Store.Put(ctx, key, data)
		})
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("target %s: %s exists there with other content: another ship uses writer id %s (a copied spool %s?); stopping: %w",
				t.Name, key, b.writer, b.cfg.Dir, err)
		}
		if err != nil {
			return fmt.Errorf("target %s: put %s: %w", t.Name, key, err)
		}
		b.mu.Lock()
		sb.put[t.Name] = true
		b.mu.Unlock()
		if len(sb.put) == len(b.cfg.Targets) {
			b.cfg.Step("put")
		}
		// Each target's senders go on as soon as it holds the bundle.
		for _, p := range sb.parts {
			streams[p.Stream].PartPut(t.Name, p.LastSeq)
		}
	}
	b.mu.Lock()
	b.stats.Put++
	b.mu.Unlock()
	return nil
}

// mark prepares target t for the first bundle carrying stream p.Stream
// after this start: it checks that t holds no segment of the part's
// generation starting inside its seqs (another writer's: the dir store's
// overlap check covers only a stream's own directory), then writes the
// stream's bundle marker. Once per stream and target per start.
func (b *Bundler) mark(ctx context.Context, t Target, sb *sealed, p batch.BundlePart) error {
	k := p.Stream + "\x00" + t.Name
	b.mu.Lock()
	done := b.marked[k]
	b.mu.Unlock()
	if done {
		return nil
	}
	log := b.cfg.Log.With("store", t.Store.String())
	dir := batch.StreamDir(p.Stream)
	var clash string
	err := store.Retry(ctx, b.cfg.Retry, log, "list "+dir, func(ctx context.Context) error {
		clash = ""
		after := dir + fmt.Sprintf("%08x-%016x", p.Generation, p.FirstSeq-1) + "-ffffffffffffffff"
		err := t.Store.List(ctx, dir, after, func(o store.Object) error {
			gen, first, _, ok := batch.ParseSegmentName(strings.TrimPrefix(o.Name, dir))
			if !ok {
				return nil
			}
			if gen == p.Generation && first <= p.LastSeq {
				clash = o.Name
			}
			return errStopList
		})
		if errors.Is(err, errStopList) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	if clash != "" {
		return fmt.Errorf("target %s: segment %s overlaps stream %s's part %s in bundle %s: another writer ships stream %q (split brain?); stopping: %w",
			t.Name, clash, p.Stream, p.Name(), catalog.BundleKey(b.writer, sb.n), p.Stream, store.ErrConflict)
	}
	m := catalog.BundleMarker{Stream: p.Stream, Writer: b.writer, FirstBundle: sb.n, FirstSeq: p.FirstSeq}
	err = store.Retry(ctx, b.cfg.Retry, log, "write bundle marker "+m.Key(), func(ctx context.Context) error {
		return catalog.WriteBundleMarker(ctx, t.Store, m)
	})
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	b.mu.Lock()
	b.marked[k] = true
	b.mu.Unlock()
	return nil
}

// retire removes the bundle files every target holds whose every part's
// spool saved a state.json past it. state.json is saved first when the
// newest bundle goes, so its number is never used again. uploading held.
func (b *Bundler) retire() error {
	b.mu.Lock()
	var gone []*sealed
	keep := b.pending[:0]
	for i, sb := range b.pending {
		if len(sb.put) == len(b.cfg.Targets) && b.savedPastLocked(sb) && len(keep) == 0 {
			gone = append(gone, sb)
			continue
		}
		keep = append(keep, b.pending[i])
	}
	b.pending = keep
	next, saved := b.next, b.saved
	b.mu.Unlock()
	if len(gone) == 0 {
		return nil
	}
	if next > saved && gone[len(gone)-1].n == next-1 {
		if err := fsutil.WriteFileAtomic(b.path("state.json"), fmt.Appendf(nil, "{\"next\":%d}\n", next), 0o644); err != nil {
			return fmt.Errorf("bundle spool: write state.json: %w", err)
		}
		b.mu.Lock()
		b.saved = next
		b.mu.Unlock()
	}
	for _, sb := range gone {
		if err := os.Remove(sb.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.cfg.Log.Warn("cannot remove a retired bundle; the next start puts it again", "bundle", sb.path, "err", err)
		}
	}
	return nil
}

// savedPastLocked reports whether every spool with a part in sb saved a
// state.json past it. mu held.
func (b *Bundler) savedPastLocked(sb *sealed) bool {
	for _, p := range sb.parts {
		var seq uint64
		if s := b.streams[p.Stream]; s != nil {
			seq = s.Spool().StateSealedSeq()
		} else if sp := b.gone[p.Stream]; sp != nil {
			seq = sp.StateSealedSeq()
		}
		if seq < p.LastSeq {
			return false
		}
	}
	return true
}
