package retention

import (
	"context"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// every fires every d, from any time.
type every time.Duration

func (e every) Next(t time.Time) time.Time { return t.Add(time.Duration(e)) }

var _ cron.Schedule = every(0)

// A Scheduler prunes on its schedule with its policy; Set replaces both
// while it runs, and a rule without a schedule never prunes until a Set
// gives it one.
func TestSchedulerSet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewScheduler(Rule{}) // no schedule
	got := make(chan Policy, 100)
	done := make(chan struct{})
	go func() { s.Run(ctx, func(_ context.Context, p Policy) { got <- p }); close(done) }()
	select {
	case p := <-got:
		t.Fatalf("pruned with %+v without a schedule", p)
	case <-time.After(100 * time.Millisecond):
	}

	s.Set(Rule{Schedule: every(10 * time.Millisecond), Policy: Policy{KeepFor: time.Hour}})
	waitPolicy(t, got, Policy{KeepFor: time.Hour})
	s.Set(Rule{Schedule: every(10 * time.Millisecond), Policy: Policy{KeepFor: time.Minute, KeepMin: 3}})
	waitPolicy(t, got, Policy{KeepFor: time.Minute, KeepMin: 3})

	// A long schedule set while the short one waits: no prune until it fires.
	s.Set(Rule{Schedule: every(time.Hour), Policy: Policy{KeepMin: 1}})
	time.Sleep(50 * time.Millisecond)
	for len(got) > 0 {
		<-got // any run of the old rule that was already under way
	}
	select {
	case p := <-got:
		t.Fatalf("pruned with %+v though the schedule in force fires in an hour", p)
	case <-time.After(150 * time.Millisecond):
	}
	if r := s.Rule(); r.Policy.KeepMin != 1 {
		t.Fatalf("Rule() = %+v", r)
	}
	cancel()
	<-done
}

// waitPolicy waits until a prune runs with want.
func waitPolicy(t *testing.T, got <-chan Policy, want Policy) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case p := <-got:
			if p == want {
				return
			}
		case <-deadline:
			t.Fatalf("no prune with %+v within 5s", want)
		}
	}
}
