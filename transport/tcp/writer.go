package tcp

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// One writer per stream: while a link of a stream is established, the
// server refuses a link of the stream from another shipper (code busy).
// A shipper is identified by what it says in HELLO; a new link of the same
// shipper replaces its old one, which may be half-dead (a reconnect after
// the network dropped it, or a restart after a crash), and a link of a
// newer generation fences the old writer.

// shipperID is who a shipper says it is in HELLO.
type shipperID struct {
	ClientID, Site, Host, Spool string
	PID                         int
}

// shipper is who h says the shipper is.
func (h *helloMsg) shipper() shipperID {
	return shipperID{ClientID: h.ClientID, Site: h.Site, Host: h.Host, PID: h.PID, Spool: h.Spool}
}

// same reports whether a and b name the same shipper: the same client id,
// site, host and spool. The pid may differ: a restarted shipper is the
// same one.
func (a shipperID) same(b shipperID) bool {
	return a.ClientID == b.ClientID && a.Site == b.Site && a.Host == b.Host && a.Spool == b.Spool
}

func (a shipperID) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "client_id %q", a.ClientID)
	if a.Site != "" {
		fmt.Fprintf(&b, ", site %q", a.Site)
	}
	if a.Host != "" {
		fmt.Fprintf(&b, ", host %q", a.Host)
	}
	if a.PID != 0 {
		fmt.Fprintf(&b, ", pid %d", a.PID)
	}
	if a.Spool != "" {
		fmt.Fprintf(&b, ", spool %q", a.Spool)
	}
	return b.String()
}

// check refuses identity fields over their caps: they only name the
// shipper, and an unauthenticated peer must not make the server keep and
// log arbitrary amounts. The client checks its own the same way.
func (a shipperID) check() error {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"client_id", a.ClientID, maxIdentity}, {"site", a.Site, maxIdentity}, {"host", a.Host, maxIdentity}, {"spool", a.Spool, maxSpoolPath}} {
		if len(f.v) > f.max {
			return fmt.Errorf("%s is %d bytes; at most %d are accepted", f.name, len(f.v), f.max)
		}
	}
	if a.PID < 0 {
		return fmt.Errorf("pid %d is negative", a.PID)
	}
	return nil
}

// claimWriter makes sess the writer of its stream. An established writer
// of an older generation is fenced, and one of the same shipper replaced:
// either way its link is closed, and claimWriter waits (up to timeout) for
// it to finish the request in hand, so that nothing it still stores can
// come after what sess is told in WELCOME. Any other writer keeps the
// stream, and sess is refused with code busy naming it. ss.admit must be
// held.
func (s *Server) claimWriter(ctx context.Context, ss *streamState, sess *session, timeout time.Duration) error {
	s.mu.Lock()
	old := ss.writer
	s.mu.Unlock()
	if old != nil {
		var why string
		switch {
		case old.gen < sess.gen:
			why = fmt.Sprintf("fenced by a shipper of generation %d (%s from %s)", sess.gen, sess.id, sess.peer)
		case old.id.same(sess.id):
			why = fmt.Sprintf("replaced by a new link of the same shipper from %s", sess.peer)
		default:
			return refuseWith(codeBusy, "stream %q already has a shipper on this receiver: %s from %s, connected since %s; "+
				"one writer per stream: stop one of them (this shipper is %s; it retries, so it takes over once the other's link has ended)",
				sess.stream, old.id, old.peer, old.since.UTC().Format(time.RFC3339), sess.id)
		}
		old.log.Warn("link closed: " + why)
		old.cancel()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-old.done:
		case <-t.C:
			return refuseWith(codeBusy, "the previous link of stream %q (%s from %s) is still finishing a request; retry", sess.stream, old.id, old.peer)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	ss.writer = sess
	s.mu.Unlock()
	return nil
}

// releaseWriter ends sess's claim on its stream, once it no longer
// touches the inbox.
func (s *Server) releaseWriter(sess *session) {
	s.mu.Lock()
	if ss := s.streams[sess.stream]; ss != nil && ss.writer == sess {
		ss.writer = nil
	}
	s.mu.Unlock()
	close(sess.done)
}
