package tcp

import (
	"net"
	"slices"
	"sync"
)

// gate bounds the connections a Server holds, as sshd's MaxStartups and
// PerSource limits do: at most maxConns in all, of which at most
// maxStartups have not authenticated yet (TLS handshake and HELLO). A
// connection over a cap is closed as soon as it is accepted, before it
// costs more than its descriptor.
//
// Caps alone would let an attacker who keeps every startup slot busy lock
// the real shipper out, so a new connection may take the place of another:
//
//   - With every startup slot taken, the newcomer evicts the oldest
//     startup of the source (IPv4 address, IPv6 /64) that holds the most
//     of them, if that is more than the newcomer's source holds; else the
//     newcomer is closed. A shipper connecting from its own address thus
//     always gets a slot, however many an attacker elsewhere holds.
//   - A connection whose token was wrong waits out the server's delay
//     before its REFUSE (penalty) outside the startup slots, counted only
//     in maxConns; with all connections taken, a newcomer evicts the
//     oldest of those first, as it was to be closed anyway.
//
// Evicting closes the connection; its handler then fails and releases its
// ticket, which is a no-op by then.
type gate struct {
	maxConns    int
	maxStartups int

	mu       sync.Mutex
	conns    int       // admitted, neither released nor evicted
	startups []*ticket // not authenticated, oldest first
	penalty  []*ticket // failed authentication, oldest first
}

// ticket is one admitted connection's place in the gate.
type ticket struct {
	conn    net.Conn
	source  string
	state   ticketState
	evicted chan struct{} // closed when the gate closes conn to make room
}

type ticketState uint8

const (
	ticketStartup ticketState = iota
	ticketPenalty
	ticketLink // authenticated
	ticketGone // released or evicted
)

// Why a connection was not admitted.
const (
	gateStartupsFull    = "too many connections that have not authenticated (max_startups)"
	gateConnectionsFull = "too many connections (max_connections)"
)

func newGate(maxConns, maxStartups int) *gate {
	return &gate{maxConns: maxConns, maxStartups: maxStartups}
}

// sourceOf is the source a connection's startups are counted by: its IP
// address, or for IPv6 its /64 (one host's usual share).
func sourceOf(addr net.Addr) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String()
}

// admit takes conn in as a startup, making room as the type's comment
// says, or returns nil and why not. The caller closes a refused conn.
func (g *gate) admit(conn net.Conn) (*ticket, string) {
	src := sourceOf(conn.RemoteAddr())
	g.mu.Lock()
	defer g.mu.Unlock()
	// Choose whom to evict before evicting anyone: a newcomer that is
	// refused after all must not have cost another its place.
	var victim *ticket
	if len(g.startups) >= g.maxStartups {
		if victim = g.startupVictimLocked(src); victim == nil {
			return nil, gateStartupsFull
		}
	} else if g.conns >= g.maxConns {
		if len(g.penalty) > 0 {
			victim = g.penalty[0]
		} else if victim = g.startupVictimLocked(src); victim == nil {
			return nil, gateConnectionsFull
		}
	}
	if victim != nil {
		g.evictLocked(victim)
	}
	t := &ticket{conn: conn, source: src, evicted: make(chan struct{})}
	g.startups = append(g.startups, t)
	g.conns++
	return t, ""
}

// startupVictimLocked is the startup a newcomer from src may take the
// place of: the oldest of the source holding the most startups, if that
// is more than src holds; else nil.
func (g *gate) startupVictimLocked(src string) *ticket {
	count := map[string]int{}
	heaviest := 0
	for _, t := range g.startups {
		count[t.source]++
		heaviest = max(heaviest, count[t.source])
	}
	if heaviest <= count[src] {
		return nil
	}
	for _, t := range g.startups { // oldest first
		if count[t.source] == heaviest {
			return t
		}
	}
	return nil
}

// evictLocked closes t's connection and takes it out of the gate.
func (g *gate) evictLocked(t *ticket) {
	g.removeLocked(t)
	close(t.evicted)
	t.conn.Close()
}

// removeLocked takes t out of its list and the count.
func (g *gate) removeLocked(t *ticket) {
	switch t.state {
	case ticketStartup:
		g.startups = slices.DeleteFunc(g.startups, func(o *ticket) bool { return o == t })
	case ticketPenalty:
		g.penalty = slices.DeleteFunc(g.penalty, func(o *ticket) bool { return o == t })
	case ticketGone:
		return
	}
	t.state = ticketGone
	g.conns--
}

// authenticated moves t from the startups to the links; false means t was
// evicted meanwhile (its connection is closed).
func (g *gate) authenticated(t *ticket) bool { return g.move(t, ticketLink) }

// penalize moves t from the startups to the connections waiting out an
// authentication failure's delay; false means t was evicted meanwhile.
func (g *gate) penalize(t *ticket) bool { return g.move(t, ticketPenalty) }

func (g *gate) move(t *ticket, to ticketState) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.state != ticketStartup {
		return false
	}
	g.startups = slices.DeleteFunc(g.startups, func(o *ticket) bool { return o == t })
	t.state = to
	if to == ticketPenalty {
		g.penalty = append(g.penalty, t)
	}
	return true
}

// release takes t out of the gate once its connection is closed.
func (g *gate) release(t *ticket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removeLocked(t)
}

// counts reports the connections held in all and those not authenticated.
func (g *gate) counts() (conns, startups int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.conns, len(g.startups)
}
