package spool

import "github.com/ferry-dr/ferry/batch"

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
