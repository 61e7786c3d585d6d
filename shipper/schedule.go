package shipper

import (
	"context"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Clock is the time source of the shipper's schedules (tests inject one
// that they advance by hand, so no test sleeps through real minutes).
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Window is a recurring period in which segments may be sent: it opens at
// every time Start fires and stays open for Duration.
type Window struct {
	Start    cron.Schedule
	Duration time.Duration
	// Spec is Start as written, for status and logs.
	Spec string
	// BandwidthLimit caps the bytes per second sent to each target while
	// the window is open (see pace.go); 0: no cap.
	BandwidthLimit int64
}

// Schedules are the time rules of a shipper. The zero value has none:
// sending is always allowed and only the flush policy seals.
type Schedules struct {
	// FlushAt seals the open batch whenever it fires, on top of the size,
	// count and age rules (e.g. ship every hour on the hour).
	FlushAt cron.Schedule
	// Windows, if any, restrict sending to the times inside one of them.
	// Outside, records are still accepted and sealed into the spool and
	// nothing is sent; when a window opens the backlog drains; when it
	// closes, the segment being sent finishes and sending stops.
	Windows []Window
}

// WindowState is whether sending is allowed now and when that changes.
type WindowState struct {
	Restricted bool      // windows are configured
	Open       bool      // sending is allowed now
	Until      time.Time // open: when the open window closes
	NextOpen   time.Time // closed: when the next window opens
	// BandwidthLimit is the cap of the open windows in bytes per second:
	// 0 if one of them has none, else the highest. 0 when closed.
	BandwidthLimit int64
}

// windowAt evaluates the windows at t.
func (sc *Schedules) windowAt(t time.Time) WindowState {
	if len(sc.Windows) == 0 {
		return WindowState{Open: true}
	}
	ws := WindowState{Restricted: true}
	uncapped := false
	for _, w := range sc.Windows {
		// The window is open at t if it started in (t - Duration, t].
		if start := w.Start.Next(t.Add(-w.Duration)); !start.After(t) {
			end := start.Add(w.Duration)
			if !ws.Open || end.After(ws.Until) {
				ws.Until = end
			}
			ws.Open = true
			// Overlapping windows: the most generous one wins.
			uncapped = uncapped || w.BandwidthLimit <= 0
			ws.BandwidthLimit = max(ws.BandwidthLimit, w.BandwidthLimit)
		}
		if next := w.Start.Next(t); ws.NextOpen.IsZero() || next.Before(ws.NextOpen) {
			ws.NextOpen = next
		}
	}
	if ws.Open {
		ws.NextOpen = time.Time{}
	}
	if uncapped {
		ws.BandwidthLimit = 0
	}
	return ws
}

// schedState holds the schedules in force, which SetSchedules replaces
// while the shipper runs (a SIGHUP reload).
type schedState struct {
	mu      sync.Mutex
	cur     *Schedules    // nil: Config.Schedules
	changed chan struct{} // closed and replaced by SetSchedules
}

// SetSchedules replaces flush_at and the sending windows from now on.
// What waits on them looks again at once: a sender outside the old windows
// starts sending if a new one is open, and one inside stops before its next
// segment if none is (the segment being sent finishes); the flush_at loop
// waits for the new schedule's next time.
func (s *Shipper) SetSchedules(sc Schedules) {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	s.sched.cur = &sc
	if s.sched.changed != nil {
		close(s.sched.changed)
	}
	s.sched.changed = make(chan struct{})
}

// schedules returns the schedules in force and a channel closed when
// SetSchedules replaces them.
func (s *Shipper) schedules() (*Schedules, <-chan struct{}) {
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	if s.sched.changed == nil {
		s.sched.changed = make(chan struct{})
	}
	if s.sched.cur == nil {
		return &s.cfg.Schedules, s.sched.changed
	}
	return s.sched.cur, s.sched.changed
}

// windowNow evaluates the sending windows in force now.
func (s *Shipper) windowNow() WindowState {
	sc, _ := s.schedules()
	return sc.windowAt(s.clock.Now())
}

// Window reports whether sending is allowed now and when that changes.
func (s *Shipper) Window() WindowState { return s.windowNow() }

// waitWindow blocks until a window is open (at once when none are
// configured). It returns false when ctx ends first.
func (s *Shipper) waitWindow(ctx context.Context, target string) bool {
	logged := false
	for {
		sc, changed := s.schedules()
		ws := sc.windowAt(s.clock.Now())
		if ws.Open {
			if logged {
				s.log.Info("sending window open; sending", "target", target, "until", ws.Until)
			}
			return true
		}
		if !logged {
			s.log.Info("outside the sending windows; segments wait in the spool", "target", target, "next_open", ws.NextOpen)
			logged = true
		}
		wait := ws.NextOpen.Sub(s.clock.Now())
		if ws.NextOpen.IsZero() {
			wait = time.Hour // a schedule that never fires again: look again later
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
			logged = false // say what the new windows mean
		case <-s.clock.After(max(wait, 0)):
		}
	}
}

// flushLoop seals the open batch whenever FlushAt fires (the FlushAt in
// force: SetSchedules may set, change or remove it).
func (s *Shipper) flushLoop(ctx context.Context) error {
	for {
		sc, changed := s.schedules()
		var fire <-chan time.Time // nil: no flush_at, wait for a change
		if sc.FlushAt != nil {
			now := s.clock.Now()
			if next := sc.FlushAt.Next(now); !next.IsZero() {
				fire = s.clock.After(next.Sub(now))
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			continue
		case <-fire:
		}
		if err := s.spool.Seal("schedule"); err != nil {
			return err
		}
	}
}
