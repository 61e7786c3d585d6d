package retention

import (
	"context"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Rule is a scheduled retention: prune with Policy whenever Schedule
// fires. A nil Schedule: never.
type Rule struct {
	Schedule cron.Schedule
	Policy   Policy
}

// Scheduler runs a Rule that Set may replace while it runs (a config
// reload): the next prune waits for the new schedule and uses the new
// policy. The zero value is not usable; use NewScheduler.
type Scheduler struct {
	// Now and After are the clock (tests turn them); default the real one.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time

	mu      sync.Mutex
	rule    Rule
	changed chan struct{} // closed and replaced by Set
}

// NewScheduler returns a Scheduler that runs r.
func NewScheduler(r Rule) *Scheduler {
	return &Scheduler{Now: time.Now, After: time.After, rule: r, changed: make(chan struct{})}
}

// Set replaces the rule from now on: a Run waiting for the old schedule
// waits for the new one instead.
func (s *Scheduler) Set(r Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rule = r
	close(s.changed)
	s.changed = make(chan struct{})
}

// Rule returns the rule in force.
func (s *Scheduler) Rule() Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rule
}

// Run calls prune with the policy in force whenever the schedule in force
// fires, until ctx ends. A rule without a schedule waits for a Set.
func (s *Scheduler) Run(ctx context.Context, prune func(context.Context, Policy)) {
	for {
		s.mu.Lock()
		r, changed := s.rule, s.changed
		s.mu.Unlock()
		var fire <-chan time.Time // nil: no schedule, wait for a Set
		if r.Schedule != nil {
			now := s.Now()
			if next := r.Schedule.Next(now); !next.IsZero() {
				fire = s.After(next.Sub(now))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			continue
		case <-fire:
		}
		prune(ctx, r.Policy)
	}
}
