package tcp

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// Defaults for the timing fields of Server and ClientConfig.
const (
	DefaultIOTimeout         = 30 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	// minHeartbeat bounds how often a peer may ask to be sent heartbeats.
	minHeartbeat = 10 * time.Millisecond
)

// Server is the receiving end of the link. Set the fields, then call Serve
// or ListenAndServe; the zero values of the optional fields are the
// documented defaults. A Server must not be modified once serving.
//
// Each connection must complete the handshake (protocol version, token,
// stream, generation) before any segment is accepted. Each segment is
// verified (checksum, stream, generation, name) and put into Inbox; only
// once Inbox.Put returns nil is it acknowledged. A resent identical segment
// is acknowledged again; a different segment under an existing name is
// answered with a conflict.
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
	// receiver applies from it. Required.
	Inbox store.Store
	// Applied reports the receiver's applied watermark for a stream, sent
	// to shippers in acks and heartbeats. Nil reports 0.
	Applied func(stream string) uint64
	// Log receives connection events. Nil discards them.
	Log *slog.Logger

	// Stream and Generation, if set, are the only stream and generation
	// this server accepts; others are refused at the handshake.
	Stream     string
	Generation uint32

	// MaxSegment caps a SEGMENT frame's payload. Default DefaultMaxSegment.
	MaxSegment int64
	// IOTimeout is how long any read or write may make no progress; an
	// idle link stays open through heartbeats. Default 30s.
	IOTimeout time.Duration
	// HeartbeatInterval is how often an idle link is sent a heartbeat (or
	// more often, if the client asks). Default 5s; below IOTimeout.
	HeartbeatInterval time.Duration

	mu     sync.Mutex
	newest map[streamGen]newestSegment // per stream and generation
}

type streamGen struct {
	stream string
	gen    uint32
}

// newestSegment is the newest segment of a stream and generation in the
// inbox, as reported in WELCOME.
type newestSegment struct {
	name    string
	lastSeq uint64
	hash    string
}

// serverSettings is a validated copy of the Server's configuration.
type serverSettings struct {
	tls        *tls.Config
	token      [sha256.Size]byte
	needToken  bool
	maxSegment int64
	ioTimeout  time.Duration
	heartbeat  time.Duration
	log        *slog.Logger
}

// Check validates the configuration and reports the first problem, saying
// what to set. Serve and ListenAndServe call it first.
func (s *Server) Check() error {
	_, err := s.settings()
	return err
}

func (s *Server) settings() (serverSettings, error) {
	st := serverSettings{
		maxSegment: s.MaxSegment,
		ioTimeout:  s.IOTimeout,
		heartbeat:  s.HeartbeatInterval,
		log:        s.Log,
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
	if st.maxSegment == 0 {
		st.maxSegment = DefaultMaxSegment
	}
	if st.maxSegment < MaxControlFrame {
		return fail("max segment %d bytes is below the %d-byte minimum", st.maxSegment, MaxControlFrame)
	}
	if st.ioTimeout == 0 {
		st.ioTimeout = DefaultIOTimeout
	}
	if st.heartbeat == 0 {
		st.heartbeat = min(DefaultHeartbeatInterval, st.ioTimeout/3)
	}
	if st.ioTimeout < 0 || st.heartbeat < minHeartbeat || st.heartbeat >= st.ioTimeout {
		return fail("heartbeat interval %s must be at least %s and below the io timeout %s", st.heartbeat, minHeartbeat, st.ioTimeout)
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
	st.log.Info("tcp listener ready", "addr", ln.Addr().String(), "mode", mode, "inbox", s.Inbox.String())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
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
			// Out of file descriptors and the like: wait and try again.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			st.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		wg.Go(func() { s.serveConn(ctx, st, nc) })
	}
}

// session is the state of one authenticated link.
type session struct {
	stream   string
	gen      uint32
	log      *slog.Logger
	interval time.Duration // heartbeat interval: the server's, or the client's if shorter
	segments int
	bytes    int64
}

func (s *Server) serveConn(ctx context.Context, st serverSettings, nc net.Conn) {
	peer := nc.RemoteAddr().String()
	log := st.log.With("peer", peer)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	defer nc.Close()

	conn := nc
	if st.tls != nil {
		tc := tls.Server(nc, st.tls)
		hctx, hcancel := context.WithTimeout(ctx, st.ioTimeout)
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("TLS handshake failed; link closed", "err", err, "hint", tlsServerHint(err))
			}
			return
		}
		conn = tc
	}
	l := newLink(conn, st.ioTimeout, MaxControlFrame, nil, defaultChunk)
	sess, ok := s.handshake(ctx, st, l, log)
	if !ok {
		return
	}
	log = sess.log

	done := make(chan struct{})
	var hb sync.WaitGroup
	hb.Go(func() {
		err := l.heartbeat(done, sess.interval, func() []byte { return s.watermarks(sess) })
		if err != nil && ctx.Err() == nil {
			nc.Close() // wakes the reader below
		}
	})
	defer func() {
		close(done)
		nc.Close() // a heartbeat stuck writing to a peer that stopped reading
		hb.Wait()
	}()

	l.maxRead = st.maxSegment
	for {
		f, err := l.read()
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, io.EOF):
				log.Info("link closed by peer", "segments", sess.segments, "bytes", sess.bytes)
			case errors.Is(err, ErrProtocol):
				log.Warn("link closed: protocol violation", "err", err)
				s.fatal(ctx, l, codeProtocol, err.Error())
			default:
				log.Warn("link lost", "err", err, "segments", sess.segments, "bytes", sess.bytes)
			}
			return
		}
		switch f.typ {
		case frameHeartbeat:
		case frameSegment:
			err = s.receive(ctx, l, sess, f.payload)
		case frameFetch:
			err = s.fetch(ctx, l, sess, f)
		default:
			err = fmt.Errorf("frame %s not allowed from a shipper after the handshake: %w", typeName(f.typ), ErrProtocol)
		}
		if errors.Is(err, ErrProtocol) {
			log.Warn("link closed: protocol violation", "err", err)
			s.fatal(ctx, l, codeProtocol, err.Error())
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("link lost", "err", err)
			}
			return
		}
	}
}

// handshake reads HELLO and answers WELCOME, or REFUSE and false.
func (s *Server) handshake(ctx context.Context, st serverSettings, l *link, log *slog.Logger) (*session, bool) {
	b, err := l.r.Peek(2)
	if err == nil && b[0] == 0x16 && b[1] == 0x03 {
		log.Warn("refused link: the peer started a TLS handshake but this listener is plaintext (insecure); configure TLS here or turn it off on the shipper")
		return nil, false
	}
	var f frame
	if err == nil {
		f, err = l.read()
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("link closed before a complete HELLO", "err", err)
		}
		return nil, false
	}
	refuse := func(code, msg string, args ...any) (*session, bool) {
		log.Warn("refused link", append([]any{"code", code, "reason", msg}, args...)...)
		l.writeJSON(ctx, frameRefuse, refuseMsg{Code: code, Message: msg})
		closeGracefully(l.conn)
		return nil, false
	}
	if f.typ != frameHello {
		return refuse(codeProtocol, fmt.Sprintf("expected HELLO, got %s; nothing is accepted before the handshake", typeName(f.typ)))
	}
	var h helloMsg
	if err := decodeJSON(f, &h); err != nil {
		return refuse(codeProtocol, err.Error())
	}
	who := []any{"client_id", h.ClientID, "stream", h.Stream, "generation", h.Generation}
	switch {
	case h.Version > ProtocolVersion:
		return refuse(codeVersion, fmt.Sprintf("shipper speaks link protocol %d; this receiver speaks %d; upgrade the receiver", h.Version, ProtocolVersion), who...)
	case h.Version < 1:
		return refuse(codeVersion, fmt.Sprintf("link protocol version %d is invalid", h.Version), who...)
	case st.needToken && h.Token == "":
		return refuse(codeAuth, "token missing: this receiver requires a token", who...)
	case st.needToken && !tokenEqual(st.token, h.Token):
		return refuse(codeAuth, "token rejected: the shipper's token does not match the receiver's", who...)
	}
	if err := batch.CheckStream(h.Stream); err != nil {
		return refuse(codeStream, err.Error(), who...)
	}
	if s.Stream != "" && h.Stream != s.Stream {
		return refuse(codeStream, fmt.Sprintf("this receiver accepts stream %q, not %q", s.Stream, h.Stream), who...)
	}
	if h.Generation == 0 {
		return refuse(codeGeneration, "generation 0 is invalid; generations start at 1", who...)
	}
	if s.Generation != 0 && h.Generation != s.Generation {
		return refuse(codeGeneration, fmt.Sprintf("this receiver accepts generation %d of stream %q, not %d", s.Generation, h.Stream, h.Generation), who...)
	}
	newest, err := s.newestSegment(ctx, st, h.Stream, h.Generation)
	if errors.Is(err, batch.ErrCorrupt) {
		return refuse(codeDamaged, err.Error(), who...)
	}
	if err != nil {
		return refuse(codeUnavailable, err.Error(), who...)
	}
	sess := &session{stream: h.Stream, gen: h.Generation, log: log.With("stream", h.Stream, "client_id", h.ClientID)}
	w := welcomeMsg{
		Version:        ProtocolVersion,
		HighestSeq:     newest.lastSeq,
		HighestSegment: newest.name,
		HighestHash:    newest.hash,
		AppliedSeq:     s.applied(h.Stream),
		MaxSegment:     st.maxSegment,
		HeartbeatMS:    st.heartbeat.Milliseconds(),
	}
	if err := l.writeJSON(ctx, frameWelcome, w); err != nil {
		log.Warn("link lost during the handshake", "err", err)
		return nil, false
	}
	if h.HeartbeatMS > 0 {
		st.heartbeat = max(min(st.heartbeat, time.Duration(h.HeartbeatMS)*time.Millisecond), minHeartbeat)
	}
	sess.interval = st.heartbeat
	sess.log.Info("link established", "generation", h.Generation, "highest_seq", newest.lastSeq)
	return sess, true
}

// receive verifies one SEGMENT, puts it into the inbox and answers ACK or
// ERROR. It returns an error only when the link must close.
func (s *Server) receive(ctx context.Context, l *link, sess *session, payload []byte) error {
	name, data, err := parseSegment(payload)
	if err != nil {
		return err
	}
	key := batch.SegmentKey(sess.stream, name)
	log := sess.log.With("segment", name)
	reject := func(code, msg string) error {
		log.Warn("segment rejected", "code", code, "reason", msg)
		return l.writeJSON(ctx, frameError, errorMsg{Code: code, Message: msg, Name: name})
	}
	if _, _, _, ok := batch.ParseSegmentName(name); !ok {
		return reject(codeMismatch, fmt.Sprintf("%q is not a segment name (GGGGGGGG-FFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLL%s)", name, batch.SegmentSuffix))
	}
	seg, err := batch.Open(data)
	if err != nil {
		return reject(codeCorrupt, fmt.Sprintf("segment %s failed verification: %v; it is damaged in the shipper's spool", key, err))
	}
	m := &seg.Meta
	switch {
	case m.Stream != sess.stream:
		return reject(codeMismatch, fmt.Sprintf("segment %s belongs to stream %q, but this link carries %q", key, m.Stream, sess.stream))
	case m.Generation != sess.gen:
		return reject(codeMismatch, fmt.Sprintf("segment %s is of generation %d, but this link carries generation %d", key, m.Generation, sess.gen))
	case m.Name() != name:
		return reject(codeMismatch, fmt.Sprintf("segment sent as %s, but its metadata says %s", key, m.Name()))
	}
	err = s.Inbox.Put(ctx, key, data)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, store.ErrConflict):
		return reject(codeConflict, fmt.Sprintf("a different segment %s is already in the receiver's inbox (two shippers on one stream?): %v", key, err))
	case errors.Is(err, store.ErrPermanent):
		log.Error("inbox refused a segment", "store", s.Inbox.String(), "err", err)
		return reject(codePermanent, fmt.Sprintf("receiver's inbox refused %s: %v", key, err))
	default:
		log.Error("inbox write failed", "store", s.Inbox.String(), "err", err)
		return reject(codeUnavailable, fmt.Sprintf("receiver could not store %s: %v", key, err))
	}
	received := s.noteStored(sess, name, m.LastSeq, seg.Hash)
	sess.segments++
	sess.bytes += int64(len(data))
	log.Debug("segment stored", "seq", m.LastSeq, "bytes", len(data))
	return l.writeJSON(ctx, frameAck, ackMsg{Name: name, ReceivedSeq: received, AppliedSeq: s.applied(sess.stream)})
}

// fetch answers FETCH with the named segment of the link's stream.
func (s *Server) fetch(ctx context.Context, l *link, sess *session, f frame) error {
	var req fetchMsg
	if err := decodeJSON(f, &req); err != nil {
		return err
	}
	reply := func(code, msg string) error {
		return l.writeJSON(ctx, frameError, errorMsg{Code: code, Message: msg, Name: req.Name})
	}
	if _, _, _, ok := batch.ParseSegmentName(req.Name); !ok {
		return reply(codeMismatch, fmt.Sprintf("%q is not a segment name; only segments of stream %q can be fetched", req.Name, sess.stream))
	}
	key := batch.SegmentKey(sess.stream, req.Name)
	data, err := readObject(ctx, s.Inbox, key, l.maxRead-int64(len(req.Name))-2)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound):
		return reply(codeNotFound, fmt.Sprintf("segment %s is not in the receiver's inbox", key))
	case errors.Is(err, store.ErrPermanent), errors.Is(err, batch.ErrCorrupt):
		return reply(codePermanent, fmt.Sprintf("read %s from the receiver's inbox: %v", key, err))
	default:
		return reply(codeUnavailable, fmt.Sprintf("read %s from the receiver's inbox: %v", key, err))
	}
	return l.write(ctx, frameSegment, segmentHeader(req.Name), data)
}

// fatal sends a final ERROR and closes the link.
func (s *Server) fatal(ctx context.Context, l *link, code, msg string) {
	l.writeJSON(ctx, frameError, errorMsg{Code: code, Message: msg, Close: true})
	closeGracefully(l.conn)
}

// newestSegment finds the newest segment of stream and generation gen in
// the inbox. Its hash is cached, so the segment is read at most once per
// process (and not at all once this server stored it).
func (s *Server) newestSegment(ctx context.Context, st serverSettings, stream string, gen uint32) (newestSegment, error) {
	dir := batch.StreamDir(stream)
	var name string
	errStop := errors.New("stop")
	err := s.Inbox.List(ctx, dir, dir+batch.SegmentName(gen, 0, 0), func(o store.Object) error {
		n := strings.TrimPrefix(o.Name, dir)
		g, _, _, ok := batch.ParseSegmentName(n)
		if !ok {
			return nil
		}
		if g != gen {
			return errStop
		}
		name = n
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return newestSegment{}, fmt.Errorf("list %s in the receiver's inbox: %w", dir, err)
	}
	if name == "" {
		return newestSegment{}, nil
	}
	k := streamGen{stream, gen}
	s.mu.Lock()
	cached := s.newest[k]
	s.mu.Unlock()
	if cached.name == name {
		return cached, nil
	}
	key := batch.SegmentKey(stream, name)
	data, err := readObject(ctx, s.Inbox, key, st.maxSegment)
	if err != nil {
		return newestSegment{}, fmt.Errorf("read newest segment %s from the receiver's inbox: %w", key, err)
	}
	seg, err := batch.Open(data)
	if err != nil {
		return newestSegment{}, fmt.Errorf("newest segment %s in the receiver's inbox %s: %w", key, s.Inbox, err)
	}
	n := newestSegment{name: name, lastSeq: seg.Meta.LastSeq, hash: seg.Hash}
	s.mu.Lock()
	if s.newest == nil {
		s.newest = map[streamGen]newestSegment{}
	}
	if s.newest[k].name < name {
		s.newest[k] = n
	}
	s.mu.Unlock()
	return n, nil
}

// noteStored records a stored segment and returns the received watermark:
// the last seq of the newest segment of the stream the inbox holds.
func (s *Server) noteStored(sess *session, name string, lastSeq uint64, hash string) uint64 {
	k := streamGen{sess.stream, sess.gen}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.newest == nil {
		s.newest = map[streamGen]newestSegment{}
	}
	if cur := s.newest[k]; cur.name < name {
		s.newest[k] = newestSegment{name: name, lastSeq: lastSeq, hash: hash}
	}
	return s.newest[k].lastSeq
}

// watermarks is the payload of the server's heartbeats.
func (s *Server) watermarks(sess *session) []byte {
	s.mu.Lock()
	received := s.newest[streamGen{sess.stream, sess.gen}].lastSeq
	s.mu.Unlock()
	js, _ := json.Marshal(watermarkMsg{ReceivedSeq: received, AppliedSeq: s.applied(sess.stream)})
	return js
}

func (s *Server) applied(stream string) uint64 {
	if s.Applied == nil {
		return 0
	}
	return s.Applied(stream)
}

// tokenEqual compares a presented token with the configured one's hash in
// constant time; hashing first hides the length too.
func tokenEqual(want [sha256.Size]byte, got string) bool {
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], h[:]) == 1
}

// readObject reads a whole object from st, refusing more than limit bytes.
func readObject(ctx context.Context, st store.Store, key string, limit int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return batch.ReadAll(bufio.NewReader(rc), limit)
}

// tlsServerHint explains the usual causes of a failed TLS handshake.
func tlsServerHint(err error) string {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return "the peer is not speaking TLS: is the shipper configured for plaintext (insecure)?"
	}
	if strings.Contains(err.Error(), "certificate") {
		return "the shipper's client certificate is missing or not signed by the configured client CA"
	}
	return "check the TLS settings on both ends"
}
