package tcp

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Server is the receiving end of the link. Set the fields, then call Serve
// or ListenAndServe; the zero values of the optional fields are the
// documented defaults. A Server must not be modified once serving.
//
// Each connection must complete the handshake (protocol version, token,
// stream, generation) before any segment is accepted. In it the shipper
// may send its stream's generation records; the server stores those
// missing from Records and refuses one that differs from its own
// (conflicting histories). It admits only a shipper of the newest
// generation of the history in Records (an older one is fenced), and only
// one shipper per stream at a time: another one is refused while the first
// is connected, a new link of the same shipper replaces its old one, and
// one of a newer generation fences it.
//
// Each segment is verified (checksum, stream, generation, name) and put
// into Inbox; only once Inbox.Put returns nil is it acknowledged. A resent
// identical segment is acknowledged again; a segment overlapping one the
// inbox has or had (a different one under an existing name, or other
// boundaries over the same seqs) is answered with a conflict, and so is
// every segment of a link whose generation a newer one has since fenced.
type Server struct {
	Addr string // ListenAndServe's address, e.g. ":7070"

	// Token is the shared secret shippers must present. Required unless
	// TLS verifies client certificates (ClientAuth RequireAndVerifyClientCert).
	Token string
	// TLS enables TLS (1.3 at least; lower MinVersions are raised).
	// Required unless Insecure is set.
	TLS *tls.Config
	// Insecure permits plaintext links when TLS is nil.
	Insecure bool

	// Inbox is where segments are stored durably before the ack; the
	// receiver applies from it. Required. Its Put must not keep the data
	// slice after it returns: the link reads the next segment into it.
	Inbox store.Store
	// Records is where the streams' generation records are read and
	// created (<stream>/generations/, docs/FORMAT.md): the history the
	// server fences shippers by. Nil means Inbox. Records are create-only,
	// so a torn one could never be replaced: Records must keep the
	// ordinary crash contract, not publish before it syncs
	// (dir.Options.PublishBeforeSync). ferry receive opens a second dir
	// store on the inbox directory for it.
	Records store.Store
	// Applied reports the receiver's applied watermark for a stream, sent
	// to shippers in acks and heartbeats. A segment over seqs at or below
	// it that the inbox no longer holds to compare with is refused as an
	// overlap (see Server). Nil reports 0.
	Applied func(stream string) uint64
	// Stored, if set, is called after a segment is durably in the inbox
	// (before the ACK) with its stream, its verified parse (batch.Open),
	// its size as stored and its bytes, so the receiver applying from the
	// inbox can look at once instead of at its next poll, need not list
	// the inbox to find it, and may apply from a copy instead of reading
	// it back. A segment streamed into the inbox (see StreamAbove) was
	// never in memory: data is nil, and so is seg.Payload. seg and data
	// are valid only during the call (the read buffer is reused). It must
	// not block.
	Stored func(stream string, seg *batch.Segment, size int64, data []byte)
	// Log receives connection events. Nil discards them.
	Log *slog.Logger

	// Stream and Generation, if set, are the only stream and generation
	// this server accepts; others are refused at the handshake. Whatever
	// Generation says, a generation older than the newest of the
	// stream's history is refused as fenced, and one the history does not
	// hold as unknown.
	Stream     string
	Generation uint32
	// Admit, if set, is asked about every authenticated HELLO with its
	// stream and the site the shipper says it is (HELLO's site): an error
	// refuses the link (code "stream"), its text the REFUSE's message.
	// ferry sync admits each peer to its own stream only.
	Admit func(stream, site string) error

	// MaxSegment caps a SEGMENT frame's payload. Default DefaultMaxSegment.
	MaxSegment int64
	// StreamAbove is the SEGMENT payload size above which the server, if
	// Inbox is a store.Stager, writes the segment into the inbox as it
	// arrives, verifying it as it goes, and names it there once the whole
	// frame is in, its checksum and the segment checked: a segment near
	// MaxSegment then costs the server a fixed buffer, not its size
	// (the receiver decoding it needs its record stream). Smaller ones
	// are read into memory first, which is faster. Default
	// DefaultStreamAbove; negative: never.
	StreamAbove int64
	// RecentSegments is how many of each stream and generation's newest
	// segments the server remembers (name, seqs, hash) to refuse a
	// segment that overlaps one of them without reading the inbox; older
	// resends are checked against the inbox. Default
	// DefaultRecentSegments.
	RecentSegments int
	// IOTimeout is how long any read or write may make no progress; an
	// idle link stays open through heartbeats. Default 30s.
	IOTimeout time.Duration
	// HeartbeatInterval is how often an idle link is sent a heartbeat (or
	// more often, if the client asks). Default 5s; below IOTimeout.
	HeartbeatInterval time.Duration
	// WatermarkPoll is how often each link checks whether the watermarks
	// it reports (received and applied seq) changed when AppliedChanged
	// has not woken it: a change is sent at once in a heartbeat, so a
	// shipper waiting for ack "applied" learns of it within this even if
	// the receiver does not announce its applies. Default 10ms.
	WatermarkPoll time.Duration

	// Limits on peers that have not authenticated (docs/PROTOCOL.md
	// "Limits"; the zero values are the defaults).
	//
	// MaxStartups caps the connections in their TLS handshake or before
	// their HELLO's token is checked (DefaultMaxStartups). One over it is
	// closed at once, unless it comes from another source than the one
	// holding the most, whose oldest is then closed instead (see gate).
	MaxStartups int
	// MaxConnections caps connections in all (DefaultMaxConnections).
	// Serve lowers it if the file descriptor limit would leave fewer than
	// FDReserve (DefaultFDReserve) descriptors for the receiver's own
	// files with that many connections open.
	MaxConnections int
	FDReserve      int
	// HandshakeTimeout bounds the TLS handshake and the HELLO together,
	// from the accept (DefaultHandshakeTimeout, or IOTimeout if shorter).
	HandshakeTimeout time.Duration
	// AuthFailDelay is how long a connection whose token is missing or
	// wrong waits for its REFUSE (DefaultAuthFailDelay; negative: none).
	AuthFailDelay time.Duration
	// LogInterval is how often at most each kind of event about peers
	// that have not authenticated is logged; the rest are counted
	// (default 10s).
	LogInterval time.Duration

	mu      sync.Mutex
	recent  map[streamGen]*segMemory // per stream and generation; see overlap.go
	streams map[string]*streamState  // history and writer per stream; see history.go
	// appliedCh is closed (and replaced) by AppliedChanged.
	appliedCh chan struct{}
}

// AppliedChanged tells the server the receiver's applied watermark moved:
// every link sends its heartbeat with the new watermarks at once, so a
// shipper waiting for ack "applied" does not wait for the next poll. It
// does not block.
func (s *Server) AppliedChanged() {
	s.mu.Lock()
	if s.appliedCh != nil {
		close(s.appliedCh)
		s.appliedCh = nil
	}
	s.mu.Unlock()
}

// appliedWake returns a channel AppliedChanged closes.
func (s *Server) appliedWake() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appliedCh == nil {
		s.appliedCh = make(chan struct{})
	}
	return s.appliedCh
}

// Defaults of the Server's limits on peers that have not authenticated.
const (
	DefaultMaxStartups      = 16
	DefaultMaxConnections   = 64
	DefaultFDReserve        = 64
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultAuthFailDelay    = time.Second
)

// serverSettings is a validated copy of the Server's configuration.
type serverSettings struct {
	tls              *tls.Config
	token            [sha256.Size]byte
	needToken        bool
	maxSegment       int64
	streamAbove      int64 // < 0: never
	ioTimeout        time.Duration
	heartbeat        time.Duration
	watermarkPoll    time.Duration
	handshakeTimeout time.Duration
	authFailDelay    time.Duration
	maxConns         int
	maxStartups      int
	fdReserve        int
	logEvery         time.Duration
	log              *slog.Logger

	// Set by Serve.
	gate  *gate
	quiet *logLimiter // for events about unauthenticated peers
}

// Check validates the configuration and reports the first problem, saying
// what to set. Serve and ListenAndServe call it first.
func (s *Server) Check() error {
	_, err := s.settings()
	return err
}

func (s *Server) settings() (serverSettings, error) {
	st := serverSettings{
		maxSegment:    cmp.Or(s.MaxSegment, DefaultMaxSegment),
		streamAbove:   cmp.Or(s.StreamAbove, DefaultStreamAbove),
		watermarkPoll: cmp.Or(s.WatermarkPoll, defaultWatermarkPoll),
		authFailDelay: max(cmp.Or(s.AuthFailDelay, DefaultAuthFailDelay), 0),
		maxConns:      cmp.Or(s.MaxConnections, DefaultMaxConnections),
		maxStartups:   cmp.Or(s.MaxStartups, DefaultMaxStartups),
		fdReserve:     cmp.Or(s.FDReserve, DefaultFDReserve),
		logEvery:      cmp.Or(s.LogInterval, defaultLogEvery),
		log:           s.Log,
	}
	fail := func(format string, args ...any) (serverSettings, error) {
		prefix := "tcp listener"
		if s.Addr != "" {
			prefix += " " + s.Addr
		}
		return serverSettings{}, fmt.Errorf(prefix+": "+format, args...)
	}
	if s.Inbox == nil {
		return fail("no inbox store configured")
	}
	if s.TLS == nil && !s.Insecure {
		return fail("no TLS configured; configure a TLS certificate and key, or set insecure = true to accept plaintext links")
	}
	if s.TLS != nil {
		if len(s.TLS.Certificates) == 0 && s.TLS.GetCertificate == nil && s.TLS.GetConfigForClient == nil {
			return fail("TLS config has no certificate; configure a certificate and key")
		}
		st.tls = s.TLS.Clone()
		st.tls.MinVersion = max(st.tls.MinVersion, tls.VersionTLS13)
	}
	mtls := s.TLS != nil && s.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	if s.Token == "" && !mtls {
		return fail("a token is required unless clients are verified by certificate (mutual TLS with a client CA); set token")
	}
	if s.Token != "" {
		st.needToken = true
		st.token = sha256.Sum256([]byte(s.Token))
	}
	if s.Stream != "" {
		if err := batch.CheckStream(s.Stream); err != nil {
			return fail("%v", err)
		}
	}
	if s.RecentSegments < 0 {
		return fail("recent segments %d is negative", s.RecentSegments)
	}
	if st.maxSegment < MaxControlFrame {
		return fail("max segment %d bytes is below the %d-byte minimum", st.maxSegment, MaxControlFrame)
	}
	var err error
	if st.ioTimeout, st.heartbeat, err = timing(s.IOTimeout, s.HeartbeatInterval); err != nil {
		return fail("%v", err)
	}
	if st.watermarkPoll < 0 {
		return fail("watermark poll %s is negative", st.watermarkPoll)
	}
	st.handshakeTimeout = cmp.Or(s.HandshakeTimeout, min(DefaultHandshakeTimeout, st.ioTimeout))
	switch {
	case st.maxConns < 2:
		return fail("max connections %d is below 2: the shipper's link and one connection to replace it", st.maxConns)
	case st.maxStartups < 1 || st.maxStartups >= st.maxConns:
		return fail("max startups %d is out of range: at least 1 and below max connections (%d)", st.maxStartups, st.maxConns)
	case st.handshakeTimeout < 0:
		return fail("handshake timeout %s is negative", st.handshakeTimeout)
	case st.fdReserve < 0:
		return fail("file descriptor reserve %d is negative", st.fdReserve)
	case st.logEvery < 0:
		return fail("log interval %s is negative", st.logEvery)
	}
	if st.log == nil {
		st.log = slog.New(slog.DiscardHandler)
	}
	return st, nil
}

// ListenAndServe listens on Addr and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := s.Check(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("tcp listener: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts links on ln until ctx ends, then closes ln and every link,
// waits for their handlers, and returns nil. It returns an error for an
// invalid configuration or if ln fails for another reason. Serve takes
// ownership of ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	st, err := s.settings()
	if err != nil {
		ln.Close()
		return err
	}
	mode := "plaintext (insecure)"
	if st.tls != nil {
		mode = "TLS"
		if st.tls.ClientAuth == tls.RequireAndVerifyClientCert {
			mode = "mutual TLS"
		}
	}
	st.maxConns = s.fileBudget(st)
	st.maxStartups = min(st.maxStartups, st.maxConns-1)
	st.gate = newGate(st.maxConns, st.maxStartups)
	st.quiet = newLogLimiter(st.log, st.logEvery)
	st.log.Info("tcp listener ready", "addr", ln.Addr().String(), "mode", mode, "inbox", s.Inbox.String(),
		"max_connections", st.maxConns, "max_startups", st.maxStartups, "handshake_timeout", st.handshakeTimeout)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer st.quiet.Close()
	defer wg.Wait()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("tcp listener %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors and the like: wait and try again,
			// as net/http does, rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			st.quiet.Log(slog.LevelWarn, "accept", "accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		t, why := st.gate.admit(nc)
		if t == nil {
			nc.Close()
			conns, startups := st.gate.counts()
			st.quiet.Log(slog.LevelWarn, "drop", "connection closed at once: "+why,
				"peer", nc.RemoteAddr().String(), "connections", conns, "startups", startups)
			continue
		}
		wg.Go(func() {
			defer st.gate.release(t)
			s.serveConn(ctx, st, nc, t)
		})
	}
}

// fileBudget is how many connections the server may hold: MaxConnections,
// or fewer if the process's file descriptor limit would leave less than
// FDReserve descriptors for the receiver's own files (inbox, state,
// applier) once they were all open. It logs a warning when the limit
// forces it below MaxConnections.
func (s *Server) fileBudget(st serverSettings) int {
	limit, open, ok := fileLimit()
	if !ok {
		return st.maxConns
	}
	// One more for a connection accepted only to be closed.
	budget := limit - open - st.fdReserve - 1
	if budget >= st.maxConns {
		return st.maxConns
	}
	n := max(budget, 2)
	st.log.Warn("the file descriptor limit lowers max connections", "limit", limit, "open", open,
		"fd_reserve", st.fdReserve, "max_connections", n,
		"hint", "raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to at least open + fd_reserve + max_connections")
	return n
}
