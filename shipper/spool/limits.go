package spool

import (
	"math"

	"github.com/ferry-dr/ferry/batch"
)

// SetLimits changes the flush policy and the backpressure limit of a
// running spool (a config reload). They take effect at the next append
// or age check: the open batch is then judged by the new policy, so it
// seals at once if it is already due under it. A seal in flight is not
// affected. limit <= 0 keeps the current one.
func (s *Spool) SetLimits(policy batch.FlushPolicy, limit int64) {
	s.in.Lock()
	defer s.in.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.Policy = policy
	if limit > 0 {
		s.cfg.Limit = limit
	}
	s.notify() // the age loop reads the new deadline; waiters for room look again
}

// Room is how many more framed bytes and records the open batch takes
// before max_bytes or max_records makes it due (math.MaxInt64 and
// math.MaxInt when that limit is off; at least one record). A replayable
// source sizes its entries by it: without a journal a segment ends only
// where an entry does, so an entry larger than the room would carry the
// segment past its limits.
func (s *Spool) Room() (bytes int64, records int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bytes, records = math.MaxInt64, math.MaxInt
	if p := s.cfg.Policy; p.MaxBytes > 0 {
		bytes = max(p.MaxBytes-s.builder.Size(), 1)
	}
	if p := s.cfg.Policy; p.MaxRecords > 0 {
		records = max(p.MaxRecords-s.builder.Records(), 1)
	}
	return bytes, records
}
