package shipper

import (
	"context"
	"fmt"
)

// A multi-stream ship with bundles on (package shipper/bundle) seals the
// stream's small batches into bundles and puts them itself; the stream's
// senders skip those parts (send) and confirm each one, in order, once the
// Bundler says the target holds it (PartPut). The methods below are what
// the Bundler needs of a stream.

// Halted is why the shipper stopped sending (fenced, lease lost), nil
// while it may send: a halted stream is left out of bundles.
func (s *Shipper) Halted() error { return s.haltErr() }

// Sendable returns nil once the stream may be put to target now: the
// shipper is prepared, not halted, and holds target's writer lease
// (renewed first if it is due). Bundles are put only when every stream in
// them is sendable, as each stream's own sender puts only then.
func (s *Shipper) Sendable(ctx context.Context, target string) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.haltErr(); err != nil {
		return err
	}
	for _, t := range s.cfg.Targets {
		if t.Name != target {
			continue
		}
		if l := s.leaseOf(t); l != nil {
			if err := l.ensure(ctx); err != nil {
				if isHalt(err) {
					return s.halt(err)
				}
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("stream %s has no target %q", s.cfg.Spool.Stream, target)
}

// PartPut records that target holds the stream's parts through lastSeq
// (their bundles are put there). The sender confirms them in order.
func (s *Shipper) PartPut(target string, lastSeq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.partsPut == nil {
		s.partsPut = map[string]uint64{}
	}
	if lastSeq > s.partsPut[target] {
		s.partsPut[target] = lastSeq
		close(s.partCh)
		s.partCh = make(chan struct{})
	}
}

// partState is the seq through which target holds the stream's parts and
// the channel closed when that moves.
func (s *Shipper) partState(target string) (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.partsPut[target], s.partCh
}
