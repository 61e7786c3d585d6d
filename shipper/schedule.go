package shipper

import (
	"context"
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

// Window reports whether sending is allowed now and when that changes.
func (s *Shipper) Window() WindowState { return s.cfg.Schedules.windowAt(s.clock.Now()) }

// waitWindow blocks until a window is open (at once when none are
// configured). It returns false when ctx ends first.
func (s *Shipper) waitWindow(ctx context.Context, target string) bool {
	logged := false
	for {
		ws := s.cfg.Schedules.windowAt(s.clock.Now())
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
		case <-s.clock.After(max(wait, 0)):
		}
	}
}

// flushLoop seals the open batch whenever FlushAt fires.
func (s *Shipper) flushLoop(ctx context.Context) error {
	if s.cfg.Schedules.FlushAt == nil {
		return nil
	}
	for {
		now := s.clock.Now()
		next := s.cfg.Schedules.FlushAt.Next(now)
		if next.IsZero() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(next.Sub(now)):
		}
		if err := s.spool.Seal("schedule"); err != nil {
			return err
		}
	}
}
