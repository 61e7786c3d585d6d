package shipper

import (
	"context"
	"time"
)

// A sending window may cap the bandwidth (Window.BandwidthLimit): while it
// is open, each target is sent at most that many bytes per second.
//
// A target that paces its own bytes on the wire (a LinkLimiter, the tcp://
// link) is given the cap before each segment and paces every chunk of it,
// so a large segment never bursts at full speed. Other stores take a whole
// segment per Put (dir, s3), so for them the cap is an average: each
// segment goes at full speed, and the next waits until the bytes sent so
// far are paid for at the cap. The cap in force when a segment starts
// applies to all of it, as a window closing lets that segment finish.

// LinkLimiter is a target that paces the bytes it puts on the wire and
// takes a further cap at run time (tcp.Client). Before each segment the
// shipper sets the cap of the sending window in force, 0 for none; the
// target keeps its own limit too, and the lower of the two applies.
type LinkLimiter interface {
	SetWindowLimit(bytesPerSecond int64)
}

// pacer holds one target's sends to the windows' bandwidth caps. Only the
// target's sender uses it.
type pacer struct {
	s      *Shipper
	target string
	link   LinkLimiter // nil: pace whole segments
	// next is when the segments sent so far are paid for at rate: the
	// earliest the next one may start.
	next time.Time
	rate int64
}

func (s *Shipper) newPacer(t Target) *pacer {
	p := &pacer{s: s, target: t.Name}
	p.link, _ = t.Store.(LinkLimiter)
	return p
}

// wait blocks until a sending window is open and, under a capped window,
// until the target may take size more bytes; it returns false when ctx ends
// first. It is waitWindow plus the bandwidth cap.
func (p *pacer) wait(ctx context.Context, size int64) bool {
	logged := false
	for {
		if !p.s.waitWindow(ctx, p.target) {
			return false
		}
		now := p.s.clock.Now()
		sc, changed := p.s.schedules()
		ws := sc.windowAt(now)
		if !ws.Open {
			continue // it closed between the two looks
		}
		limit := ws.BandwidthLimit
		if p.link != nil {
			p.link.SetWindowLimit(limit)
			return true
		}
		if limit <= 0 {
			p.next, p.rate = time.Time{}, 0
			return true
		}
		if p.rate != limit && p.next.After(now) {
			// What is owed is bytes: at the new cap it takes longer or less long.
			owed := float64(p.next.Sub(now)) * float64(p.rate) / float64(limit)
			p.next = now.Add(time.Duration(owed))
		}
		p.rate = limit
		if !p.next.After(now) {
			p.next = now.Add(bytesTime(size, limit))
			return true
		}
		if !logged {
			p.s.log.Debug("bandwidth cap of the sending window: segment waits", "target", p.target,
				"bytes_per_second", limit, "until", p.next)
			logged = true
		}
		wait := p.next.Sub(now)
		if !ws.Until.IsZero() {
			wait = min(wait, ws.Until.Sub(now)) // the cap may change when the window closes
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed: // new windows: look again
		case <-p.s.clock.After(wait):
		}
	}
}

// ready is wait without waiting, for a segment to follow others still on
// their way: true when a sending window is open and the target may take it
// now. Only a pipelining target has segments on their way, and every one
// so far (the tcp:// link) is a LinkLimiter.
func (p *pacer) ready() bool {
	ws := p.s.windowNow()
	switch {
	case !ws.Open:
		return false
	case p.link != nil:
		p.link.SetWindowLimit(ws.BandwidthLimit)
		return true
	case ws.BandwidthLimit > 0:
		return false // pace it in wait, after the answers
	}
	p.next, p.rate = time.Time{}, 0
	return true
}

// bytesTime is how long n bytes take at rate bytes per second.
func bytesTime(n, rate int64) time.Duration {
	return time.Duration(float64(n) / float64(rate) * float64(time.Second))
}
