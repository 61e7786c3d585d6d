package tcp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
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

// session is the state of one authenticated link.
type session struct {
	streamGen // fixed by the handshake
	log       *slog.Logger
	interval  time.Duration // heartbeat interval: the server's, or the client's if shorter
	peer      string
	id        shipperID
	since     time.Time
	fork      uint64             // its generation's fork seq: its segments start above it
	cancel    context.CancelFunc // ends the link
	done      chan struct{}      // closed once the link no longer touches the inbox
	segments  int                // used by the link's own goroutine only
	bytes     int64
}

// errLinkFenced ends a link whose generation was fenced while it was
// established, after the ERROR saying so.
var errLinkFenced = errors.New("link fenced by a newer generation")

// serveConn runs one accepted connection: TLS, the handshake, then
// SEGMENT and FETCH requests until the link ends. t is its place in the
// server's gate.
func (s *Server) serveConn(ctx context.Context, st serverSettings, nc net.Conn, t *ticket) {
	peer := nc.RemoteAddr().String()
	log := st.log.With("peer", peer)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	defer nc.Close()

	// A peer that has not authenticated gets one handshake timeout for
	// its TLS handshake and its whole HELLO together, not one per read:
	// trickling bytes does not keep it connected.
	su := &startup{ticket: t, deadline: time.AfterFunc(st.handshakeTimeout, func() { nc.Close() })}
	defer su.deadline.Stop()
	conn := nc
	if st.tls != nil {
		tc := tls.Server(nc, st.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			if !su.logCut(ctx, st, peer, "tls", "TLS handshake not completed within the handshake timeout; link closed") {
				// One kind per hint: a port probe's failures do not hide
				// a shipper's missing certificate.
				hint := tlsServerHint(err)
				st.quiet.Log(slog.LevelWarn, "tls: "+hint, "TLS handshake failed; link closed", "peer", peer, "err", errText(err), "hint", hint)
			}
			return
		}
		conn = tc
	}
	l := newHandshakeLink(conn, st.handshakeTimeout)
	sess, ok := s.handshake(ctx, cancel, st, l, log, su)
	if !ok {
		return
	}
	defer s.releaseWriter(sess) // last: after the requests and the heartbeat
	log = sess.log

	done := make(chan struct{})
	var hb sync.WaitGroup
	hb.Go(func() {
		err := l.heartbeat(done, sess.interval, func() []byte { return s.watermarks(sess.streamGen) }, st.watermarkPoll, s.appliedWake)
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
	err := s.serveRequests(ctx, st, l, sess)
	switch {
	case ctx.Err() != nil:
	case errors.Is(err, io.EOF):
		log.Info("link closed by peer", "segments", sess.segments, "bytes", sess.bytes)
	case errors.Is(err, errLinkFenced):
		closeGracefully(l.conn)
	case errors.Is(err, ErrProtocol):
		log.Warn("link closed: protocol violation", "err", err)
		l.writeJSON(ctx, frameError, errorMsg{Code: codeProtocol, Message: err.Error(), Close: true})
		closeGracefully(l.conn)
	default:
		log.Warn("link lost", "err", err, "segments", sess.segments, "bytes", sess.bytes)
	}
}

// serveRequests answers the shipper's SEGMENT and FETCH frames until a read
// or write fails or the shipper breaks the protocol, and returns why.
func (s *Server) serveRequests(ctx context.Context, st serverSettings, l *link, sess *session) error {
	stager, _ := s.Inbox.(store.Stager)
	for {
		h, err := l.readHeader()
		if err != nil {
			return err
		}
		if h.typ == frameSegment && stager != nil && st.streamAbove >= 0 && h.n > st.streamAbove {
			if err := s.receiveStream(ctx, st, l, sess, newBodyReader(l.r, h), stager); err != nil {
				return err
			}
			continue
		}
		f, err := l.readBodyReusing(h) // each request is done with before the next is read
		if err != nil {
			return err
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
		if err != nil {
			return err
		}
	}
}

// startup is a connection's state until its peer has authenticated.
type startup struct {
	ticket   *ticket
	deadline *time.Timer // closes the connection at the handshake timeout
}

// evicted reports whether the gate closed the connection to make room.
func (su *startup) evicted() bool {
	select {
	case <-su.ticket.evicted:
		return true
	default:
		return false
	}
}

// logCut logs, through st.quiet, why a connection that failed before it
// authenticated was cut: the gate evicted it, or its handshake timeout
// (as timeoutMsg, of kind). It reports false, logging nothing, if neither
// did nor the server is stopping: the caller logs the failure itself.
func (su *startup) logCut(ctx context.Context, st serverSettings, peer, kind, timeoutMsg string) bool {
	switch {
	case ctx.Err() != nil:
	case su.evicted():
		st.quiet.Log(slog.LevelInfo, "evict", "unauthenticated connection closed to make room for another", "peer", peer)
	case !su.deadline.Stop():
		st.quiet.Log(slog.LevelWarn, kind, timeoutMsg, "peer", peer, "handshake_timeout", st.handshakeTimeout)
	default:
		return false
	}
	return true
}

// handshake reads HELLO (and the generation records after it) and answers
// WELCOME, or REFUSE and false. cancel ends the link.
func (s *Server) handshake(ctx context.Context, cancel context.CancelFunc, st serverSettings, l *link, log *slog.Logger, su *startup) (*session, bool) {
	h, recs, err := s.readHello(ctx, st, l, log, su)
	if err != nil {
		return nil, false
	}
	who := h.logArgs(maxLoggedShip)
	sess := &session{
		streamGen: streamGen{h.Stream, h.Generation},
		log:       log.With("stream", h.Stream, "client_id", peerText(h.ClientID, maxLoggedShip)),
		interval:  heartbeatInterval(st.heartbeat, h.HeartbeatMS),
		peer:      l.conn.RemoteAddr().String(),
		id:        h.shipper(),
		since:     time.Now(),
		cancel:    cancel,
		done:      make(chan struct{}),
	}
	w, err := s.admit(ctx, st, sess, recs)
	if err == nil {
		if err = l.writeJSON(ctx, frameWelcome, w); err != nil {
			s.releaseWriter(sess)
		}
	}
	var r *refusal
	switch {
	case errors.As(err, &r):
		log.Warn("refused link", append([]any{"code", r.code, "reason", peerText(r.msg, maxLoggedShip)}, who...)...)
		l.writeJSON(ctx, frameRefuse, refuseMsg{Code: r.code, Message: r.msg})
		closeGracefully(l.conn)
		return nil, false
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("link lost during the handshake", "err", errText(err))
		}
		return nil, false
	}
	sess.log.Info("link established", "generation", h.Generation, "highest_seq", w.HighestSeq,
		"site", peerText(h.Site, maxLoggedShip), "host", peerText(h.Host, maxLoggedShip), "pid", h.PID,
		"spool", peerText(h.Spool, maxLoggedShip), "records", len(recs))
	return sess, true
}

// logArgs names the shipper of h in a log line, its strings cut to max.
func (h helloMsg) logArgs(max int) []any {
	return []any{"client_id", peerText(h.ClientID, max), "site", peerText(h.Site, max), "stream", peerText(h.Stream, max), "generation", h.Generation}
}

// errHandshakeEnded is what readHello returns when the connection was
// closed by the handshake timeout or to make room for another.
var errHandshakeEnded = errors.New("connection closed before it authenticated")

// readHello reads and checks HELLO and reads the generation records that
// follow it. It answers a HELLO it refuses with REFUSE and closes the
// link; any error means the link is done with. Until the peer has
// authenticated, it reads one frame of at most MaxHelloFrame bytes within
// the handshake timeout, logs through st.quiet, and holds a peer whose
// token is wrong for st.authFailDelay before its REFUSE; then it moves
// the connection out of its startup slot and grows the link.
func (s *Server) readHello(ctx context.Context, st serverSettings, l *link, log *slog.Logger, su *startup) (helloMsg, []batch.Generation, error) {
	var h helloMsg
	peer := l.conn.RemoteAddr().String()
	b, err := l.r.Peek(2)
	if err == nil && b[0] == 0x16 && b[1] == 0x03 {
		st.quiet.Log(slog.LevelWarn, "refused tls", "refused link: the peer started a TLS handshake but this listener is plaintext (insecure); configure TLS here or turn it off on the shipper",
			"peer", peer)
		return h, nil, errors.New("TLS on a plaintext listener")
	}
	var f frame
	if err == nil {
		f, err = readHelloFrame(l.r)
	}
	if err != nil {
		if !su.logCut(ctx, st, peer, "hello", "no complete HELLO within the handshake timeout; link closed") {
			st.quiet.Log(slog.LevelWarn, "hello", "link closed before a complete HELLO", "peer", peer, "err", errText(err))
		}
		return h, nil, err
	}
	authenticated := false
	refuse := func(code, msg string, args ...any) (helloMsg, []batch.Generation, error) {
		if authenticated {
			log.Warn("refused link", append([]any{"code", code, "reason", peerText(msg, maxLoggedShip)}, args...)...)
		} else {
			st.quiet.Log(slog.LevelWarn, "refused "+code, "refused link", append([]any{"peer", peer, "code", code, "reason", peerText(msg, maxLoggedErr)}, args...)...)
		}
		l.writeJSON(ctx, frameRefuse, refuseMsg{Code: code, Message: msg})
		closeGracefully(l.conn)
		return h, nil, refuseWith(code, "%s", msg)
	}
	if f.typ != frameHello {
		return refuse(codeProtocol, fmt.Sprintf("expected HELLO, got %s; nothing is accepted before the handshake", typeName(f.typ)))
	}
	if err := decodeJSON(f, &h); err != nil {
		return refuse(codeProtocol, err.Error())
	}
	who := h.logArgs(maxLoggedPeer)
	switch {
	case h.Version > ProtocolVersion:
		return refuse(codeVersion, fmt.Sprintf("shipper speaks link protocol %d; this receiver speaks %d; upgrade the receiver", h.Version, ProtocolVersion), who...)
	case h.Version < 1:
		return refuse(codeVersion, fmt.Sprintf("link protocol version %d is invalid", h.Version), who...)
	case st.needToken && h.Token == "":
		return s.refuseAuth(ctx, st, l, su, "token missing: this receiver requires a token", who)
	case st.needToken && !tokenEqual(st.token, h.Token):
		return s.refuseAuth(ctx, st, l, su, "token rejected: the shipper's token does not match the receiver's", who)
	}
	// Authenticated (by token, or by its TLS client certificate).
	if !su.deadline.Stop() || !st.gate.authenticated(su.ticket) {
		return h, nil, errHandshakeEnded
	}
	l.grow(st.ioTimeout, MaxControlFrame)
	authenticated = true
	who = h.logArgs(maxLoggedShip)
	if err := h.shipper().check(); err != nil {
		return refuse(codeProtocol, "HELLO's "+err.Error(), who...)
	}
	if h.Generations < 0 || h.Generations > MaxHistoryRecords {
		return refuse(codeHistory, fmt.Sprintf("HELLO announces %d generation records; a receiver accepts at most %d", h.Generations, MaxHistoryRecords), who...)
	}
	if err := batch.CheckStream(h.Stream); err != nil {
		return refuse(codeStream, err.Error(), who...)
	}
	if s.Stream != "" && h.Stream != s.Stream {
		return refuse(codeStream, fmt.Sprintf("this receiver accepts stream %q, not %q", s.Stream, h.Stream), who...)
	}
	if s.Admit != nil {
		if err := s.Admit(h.Stream, h.Site); err != nil {
			return refuse(codeStream, err.Error(), who...)
		}
	}
	if h.Generation == 0 {
		return refuse(codeGeneration, "generation 0 is invalid; generations start at 1", who...)
	}
	recs, err := readGenerations(l, h.Stream, h.Generations)
	var r *refusal
	switch {
	case errors.As(err, &r):
		return refuse(r.code, r.msg, who...)
	case err != nil:
		if ctx.Err() == nil {
			log.Warn("link closed during the handshake", append([]any{"err", errText(err)}, who...)...)
		}
		return h, nil, err
	}
	return h, recs, nil
}

// refuseAuth refuses a HELLO whose token is missing or wrong: it holds
// the connection for st.authFailDelay, outside the startup slots but in
// the connection count (the gate may close it early to make room), then
// answers REFUSE auth and closes it.
func (s *Server) refuseAuth(ctx context.Context, st serverSettings, l *link, su *startup, msg string, who []any) (helloMsg, []batch.Generation, error) {
	err := refuseWith(codeAuth, "%s", msg)
	if !su.deadline.Stop() || !st.gate.penalize(su.ticket) {
		return helloMsg{}, nil, err
	}
	st.quiet.Log(slog.LevelWarn, "refused "+codeAuth, "refused link", append([]any{"peer", l.conn.RemoteAddr().String(), "code", codeAuth, "reason", msg,
		"delay", st.authFailDelay}, who...)...)
	if st.authFailDelay > 0 {
		delay := time.NewTimer(st.authFailDelay)
		defer delay.Stop()
		select {
		case <-delay.C:
		case <-su.ticket.evicted:
			return helloMsg{}, nil, err
		case <-ctx.Done():
			return helloMsg{}, nil, err
		}
	}
	l.writeJSON(ctx, frameRefuse, refuseMsg{Code: codeAuth, Message: msg})
	closeGracefully(l.conn)
	return helloMsg{}, nil, err
}

// admit admits sess to its stream: it stores the records the shipper sent
// that the history lacks, checks that sess's generation is the newest,
// makes sess the stream's writer and returns the WELCOME. A refusal is a
// *refusal; on success the caller must releaseWriter(sess) once done.
func (s *Server) admit(ctx context.Context, st serverSettings, sess *session, recs []batch.Generation) (welcomeMsg, error) {
	ss := s.stream(sess.stream)
	ss.admit.Lock()
	defer ss.admit.Unlock()
	hist, err := s.acceptHistory(ctx, ss, sess.stream, recs, sess.log)
	if err != nil {
		return welcomeMsg{}, err
	}
	if err := s.admitGeneration(ss, hist, sess.gen); err != nil {
		return welcomeMsg{}, err
	}
	if s.Generation != 0 && sess.gen != s.Generation {
		return welcomeMsg{}, refuseWith(codeGeneration, "this receiver accepts generation %d of stream %q, not %d", s.Generation, sess.stream, sess.gen)
	}
	if rec, ok := hist.Record(sess.gen); ok {
		sess.fork = rec.ForkSeq
	}
	if err := s.claimWriter(ctx, ss, sess, st.ioTimeout); err != nil {
		return welcomeMsg{}, err
	}
	newest, err := s.findNewest(ctx, st, sess.streamGen)
	if err != nil {
		s.releaseWriter(sess)
		if errors.Is(err, batch.ErrCorrupt) {
			return welcomeMsg{}, refuseWith(codeDamaged, "%v", err)
		}
		return welcomeMsg{}, refuseWith(codeUnavailable, "%v", err)
	}
	return welcomeMsg{
		Version:        ProtocolVersion,
		Minor:          ProtocolMinor,
		HighestSeq:     newest.lastSeq,
		HighestSegment: newest.name,
		HighestHash:    newest.hash,
		AppliedSeq:     s.applied(sess.stream, newest.lastSeq),
		MaxSegment:     st.maxSegment,
		HeartbeatMS:    st.heartbeat.Milliseconds(),
		MaxInFlight:    ServerMaxInFlight,
	}, nil
}

// receive verifies one SEGMENT, puts it into the inbox and answers ACK or
// ERROR. It returns an error only when the link must close.
func (s *Server) receive(ctx context.Context, l *link, sess *session, payload []byte) error {
	name, data, err := parseSegment(payload)
	if err != nil {
		return err
	}
	return s.store(ctx, l, sess, incoming{
		name:    name,
		size:    int64(len(data)),
		data:    data,
		content: bytes.NewReader(data),
		verify:  func() (*batch.Segment, error) { return batch.Open(data) },
		put:     func(ctx context.Context, key string) error { return s.Inbox.Put(ctx, key, data) },
	})
}

// incoming is a SEGMENT whose frame was read whole, its checksum checked,
// for store to decide on.
type incoming struct {
	name    string
	size    int64       // the segment's bytes
	data    []byte      // the segment, if it is held in memory
	content io.ReaderAt // the segment, to compare with a copy in the inbox
	// verify makes batch.Open's checks; put stores the segment under key
	// with Inbox.Put's contract.
	verify func() (*batch.Segment, error)
	put    func(ctx context.Context, key string) error
}

// store makes the checks on a received segment in.name (docs/PROTOCOL.md,
// "Segments (receiver side)"), in order, puts it into the inbox and
// answers ACK, or ERROR for the first check that fails. It returns an
// error only when the link must close.
func (s *Server) store(ctx context.Context, l *link, sess *session, in incoming) error {
	name := in.name
	key := batch.SegmentKey(sess.stream, name)
	reject := func(code, msg string) error {
		sess.log.Warn("segment rejected", "segment", name, "code", code, "reason", msg)
		return l.writeJSON(ctx, frameError, errorMsg{Code: code, Message: msg, Name: name})
	}
	if _, _, _, ok := batch.ParseSegmentName(name); !ok {
		return reject(codeMismatch, fmt.Sprintf("%q is not a segment name (GGGGGGGG-FFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLL%s)", name, batch.SegmentSuffix))
	}
	// A newer generation was admitted since this link's handshake.
	if err := s.fenced(sess); err != nil {
		sess.log.Warn("link closed: fenced", "segment", name, "reason", err.Error())
		if werr := l.writeJSON(ctx, frameError, errorMsg{Code: codeFenced, Message: err.Error(), Name: name, Close: true}); werr != nil {
			return werr
		}
		return errLinkFenced
	}
	seg, err := in.verify()
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
	case m.FirstSeq <= sess.fork:
		return reject(codeMismatch, fmt.Sprintf("segment %s starts at seq %d, but generation %d forked at seq %d (%s): its segments start above that",
			key, m.FirstSeq, sess.gen, sess.fork, batch.GenerationKey(sess.stream, sess.gen)))
	}
	this := storedSegment{name: name, firstSeq: m.FirstSeq, lastSeq: m.LastSeq, hash: seg.Hash}
	newest := s.newestOf(sess.streamGen)
	switch {
	case newest.name == "":
	case name > newest.name:
		// A shipper may have several segments outstanding; if one of them
		// failed, the ones behind it must not leave a hole in the inbox,
		// where the received watermark would claim records that are not
		// there.
		if m.FirstSeq <= newest.lastSeq {
			return reject(codeConflict, overlapMessage(sess.stream, this, newest))
		}
		if m.FirstSeq > newest.lastSeq+1 {
			return reject(codeGap, fmt.Sprintf("segment %s starts at seq %d, but the inbox's newest %s ends at %d; send from %d", key, m.FirstSeq, newest.name, newest.lastSeq, newest.lastSeq+1))
		}
	default:
		if code, msg := s.checkResend(ctx, sess, this, in.content, in.size); code != "" {
			if code == codeUnavailable && ctx.Err() != nil {
				return ctx.Err()
			}
			return reject(code, msg)
		}
	}
	err = in.put(ctx, key)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, store.ErrConflict):
		return reject(codeConflict, fmt.Sprintf("a different segment %s is already in the receiver's inbox (two shippers on one stream?): %v", key, err))
	case errors.Is(err, store.ErrPermanent):
		sess.log.Error("inbox refused a segment", "segment", name, "store", s.Inbox.String(), "err", err)
		return reject(codePermanent, fmt.Sprintf("receiver's inbox refused %s: %v", key, err))
	default:
		sess.log.Error("inbox write failed", "segment", name, "store", s.Inbox.String(), "err", err)
		return reject(codeUnavailable, fmt.Sprintf("receiver could not store %s: %v", key, err))
	}
	newest = s.remember(sess.streamGen, this)
	if s.Stored != nil {
		s.Stored(sess.stream, seg, in.size, in.data)
	}
	sess.segments++
	sess.bytes += in.size
	sess.log.Debug("segment stored", "segment", name, "seq", m.LastSeq, "bytes", in.size)
	return l.writeJSON(ctx, frameAck, ackMsg{Name: name, ReceivedSeq: newest.lastSeq, AppliedSeq: s.applied(sess.stream, newest.lastSeq)})
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

// tokenEqual compares a presented token with the configured one's hash in
// constant time; hashing first hides the length too.
func tokenEqual(want [sha256.Size]byte, got string) bool {
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], h[:]) == 1
}

// tlsServerHint explains the usual causes of a failed TLS handshake.
func tlsServerHint(err error) string {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return "the peer is not speaking TLS: is the shipper configured for plaintext (insecure)?"
	}
	if errors.Is(err, ErrClientName) {
		return "the certificate is signed by the client CA but not named in tls_client_names: add its name there if this shipper is to be let in"
	}
	if strings.Contains(err.Error(), "certificate") {
		return "the shipper's client certificate is missing or not signed by the configured client CA"
	}
	return "check the TLS settings on both ends"
}
