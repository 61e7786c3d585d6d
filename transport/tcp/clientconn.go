package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// clientConn is one established link.
type clientConn struct {
	l       *link
	welcome welcomeMsg
	slots   chan struct{} // one per outstanding request (the in-flight window)
	sendMu  sync.Mutex    // orders a request's place in queue with its frame
	qmu     sync.Mutex
	queue   []*call // outstanding requests, oldest first: answers come in this order
	done    chan struct{}
	once    sync.Once
	err     error // why the link ended; set before done is closed
}

// call is one request waiting for its answer.
type call struct {
	resp chan frame // buffered: the reader never waits for the caller
}

// fail ends the link with err and reports whether this call ended it.
func (cc *clientConn) fail(err error) bool {
	first := false
	cc.once.Do(func() {
		cc.err = err
		cc.l.conn.Close()
		close(cc.done)
		first = true
	})
	return first
}

// answered hands f to the oldest outstanding request and frees its slot;
// false if no request is outstanding.
func (cc *clientConn) answered(f frame) bool {
	cc.qmu.Lock()
	if len(cc.queue) == 0 {
		cc.qmu.Unlock()
		return false
	}
	cl := cc.queue[0]
	cc.queue[0] = nil
	cc.queue = cc.queue[1:]
	cc.qmu.Unlock()
	cl.resp <- f
	<-cc.slots
	return true
}

// request sends one request frame, dialling first if needed, and passes
// the answer to accept. An ERROR answer becomes an error callers can branch
// on (see serverError) and accept is not called. An answer that breaks the
// protocol (accept returns an error wrapping ErrProtocol) ends the link, so
// that the retry redials.
func (c *Client) request(ctx context.Context, typ byte, prefix, body []byte, accept func(frame) error) error {
	return c.start(ctx, typ, prefix, body, accept)()
}

// start sends one request frame, dialling first if needed, and returns a
// function that waits for the answer and passes it to accept (see
// request). Requests started one after another from one goroutine go out
// in that order; start waits while the link's in-flight window is full.
func (c *Client) start(ctx context.Context, typ byte, prefix, body []byte, accept func(frame) error) func() error {
	cc, err := c.connect(ctx)
	if err != nil {
		return func() error { return err }
	}
	cl, err := c.send(ctx, cc, typ, prefix, body)
	if err != nil {
		return func() error { return err }
	}
	return func() error {
		f, err := c.await(ctx, cc, cl)
		if err != nil {
			return err
		}
		if f.typ == frameError {
			err = c.serverError(cc, f)
		} else {
			err = accept(f)
		}
		if errors.Is(err, ErrProtocol) {
			c.lost(cc, err)
		}
		return err
	}
}

// send takes a slot of cc's in-flight window, queues a call and writes
// its request frame.
func (c *Client) send(ctx context.Context, cc *clientConn, typ byte, prefix, body []byte) (*call, error) {
	if size := int64(len(prefix) + len(body)); typ == frameSegment && size > cc.welcome.MaxSegment {
		return nil, fmt.Errorf("%w: segment frame is %d bytes; the receiver accepts at most %d (its max segment size)",
			store.ErrPermanent, size, cc.welcome.MaxSegment)
	}
	select {
	case cc.slots <- struct{}{}:
	case <-cc.done:
		return nil, fmt.Errorf("link lost before %s was sent; call again to resend: %w", typeName(typ), cc.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cl := &call{resp: make(chan frame, 1)}
	cc.sendMu.Lock()
	cc.qmu.Lock()
	cc.queue = append(cc.queue, cl) // before the frame: its answer may come at once
	cc.qmu.Unlock()
	err := cc.l.write(ctx, typ, prefix, body)
	cc.sendMu.Unlock()
	if err != nil {
		c.lost(cc, err)
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
			return nil, err // a frame abandoned half-written
		}
		return nil, fmt.Errorf("link lost while sending %s; call again to resend: %w", typeName(typ), cc.err)
	}
	return cl, nil
}

// await waits for cl's answer on cc. Giving up on it (ctx ends) ends the
// link, since the answer could no longer be told from the next one's.
func (c *Client) await(ctx context.Context, cc *clientConn, cl *call) (frame, error) {
	select {
	case f := <-cl.resp:
		return f, nil
	case <-cc.done:
		select {
		case f := <-cl.resp:
			return f, nil
		default:
		}
		return frame{}, fmt.Errorf("link lost before the receiver answered; call again to resend: %w", cc.err)
	case <-ctx.Done():
		c.lost(cc, ctx.Err())
		return frame{}, ctx.Err()
	}
}

// connect returns the live link, dialling one if there is none. Dials are
// serialised by c.dialMu, so they never race.
func (c *Client) connect(ctx context.Context) (*clientConn, error) {
	select {
	case c.dialMu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.dialMu }()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClientClosed
	}
	if cc := c.conn; cc != nil {
		select {
		case <-cc.done:
			c.conn = nil
		default:
			c.mu.Unlock()
			return cc, nil
		}
	}
	wait := time.Until(c.nextDial)
	c.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	cc, err := c.dial(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.failures++
		c.nextDial = time.Now().Add(c.backoff(c.failures))
		c.log.Debug("dial failed", "err", err, "attempt", c.failures)
		return nil, err
	}
	if c.closed {
		cc.fail(errClientClosed)
		return nil, errClientClosed
	}
	c.conn, c.failures = cc, 0
	c.dials++
	w := cc.welcome
	c.setWatermarksLocked(w.HighestSeq, w.AppliedSeq)
	c.newest, c.known = w.HighestSegment, true
	interval := heartbeatInterval(c.cfg.HeartbeatInterval, w.HeartbeatMS)
	c.log.Info("link established", "stream", c.cfg.Stream, "generation", c.cfg.Generation,
		"seq", w.HighestSeq, "segment", w.HighestSegment, "local", cc.l.conn.LocalAddr().String())
	c.wg.Go(func() { c.readLoop(cc) })
	c.wg.Go(func() {
		if err := cc.l.heartbeat(cc.done, interval, nil, 0, nil); err != nil {
			c.lost(cc, fmt.Errorf("send heartbeat: %w", err))
		}
	})
	return cc, nil
}

// dial connects, runs the TLS handshake and the link handshake.
func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err // "dial tcp ADDR: ..." says it all
	}
	conn := nc
	if c.tls != nil {
		tc := tls.Client(nc, c.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, c.handshakeError(ctx, err)
		}
		conn = tc
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	l := newLink(conn, c.cfg.IOTimeout, c.cfg.MaxSegment, c.limiter, c.chunk)
	c.mu.Lock()
	history := c.history
	c.mu.Unlock()
	var f frame
	err = l.writeJSON(ctx, frameHello, c.hello(len(history)))
	// The records follow at once: the receiver answers once it has them.
	for _, rec := range history {
		if err != nil {
			break
		}
		err = l.write(ctx, frameGeneration, rec, nil)
	}
	if err == nil {
		f, err = l.read()
	}
	if err != nil {
		nc.Close()
		return nil, c.handshakeError(ctx, err)
	}
	switch f.typ {
	case frameWelcome:
		var w welcomeMsg
		if err := decodeJSON(f, &w); err != nil {
			nc.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		if w.Version != ProtocolVersion {
			nc.Close()
			return nil, fmt.Errorf("%w: receiver answered with link protocol %d; this shipper speaks %d", store.ErrPermanent, w.Version, ProtocolVersion)
		}
		if len(history) > 0 && w.Minor < 1 {
			// It took the GENERATION frames for requests and is closing.
			nc.Close()
			return nil, fmt.Errorf("%w: the receiver speaks link protocol %d.%d, which cannot take the stream's generation records; "+
				"upgrade the receiver (to protocol %d.%d) before shipping generation %d to it",
				store.ErrPermanent, w.Version, w.Minor, ProtocolVersion, ProtocolMinor, c.cfg.Generation)
		}
		window := min(max(w.MaxInFlight, 1), c.cfg.MaxInFlight)
		return &clientConn{l: l, welcome: w, slots: make(chan struct{}, window), done: make(chan struct{})}, nil
	case frameRefuse:
		closeGracefully(conn)
		var r refuseMsg
		if err := decodeJSON(f, &r); err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
		c.log.Error("receiver refused the link", "addr", c.cfg.Addr, "code", r.Code, "reason", r.Message)
		return nil, codeError(r.Code, fmt.Errorf("%w (code %s): %s", ErrRefused, r.Code, r.Message))
	}
	nc.Close()
	return nil, fmt.Errorf("handshake: %s frame in answer to HELLO: %w", typeName(f.typ), ErrProtocol)
}

// handshakeError explains a failure during the TLS or link handshake.
func (c *Client) handshakeError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return fmt.Errorf("%w: TLS: the receiver's certificate does not verify: %w; check the CA and server name", store.ErrPermanent, err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		return fmt.Errorf("%w: TLS: the receiver rejected the handshake: %w; if it requires a client certificate, configure one signed by its client CA (and named in its tls_client_names, if it has that list)",
			store.ErrPermanent, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
		hint := "see the receiver's log"
		if c.tls == nil {
			hint = "does the receiver expect TLS? this shipper is set to insecure plaintext"
		}
		return fmt.Errorf("handshake: the receiver closed the link without answering (%s): %w", hint, err)
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return fmt.Errorf("handshake: the receiver is not speaking TLS (is it set to insecure plaintext?): %w", err)
	}
	return fmt.Errorf("handshake: %w", err)
}

// readLoop reads the receiver's frames until the link ends: heartbeats
// update the watermarks; answers go to the oldest request outstanding, and
// an answer when none is outstanding ends the link.
func (c *Client) readLoop(cc *clientConn) {
	for {
		f, err := cc.l.read()
		if err != nil {
			c.lost(cc, err)
			return
		}
		switch f.typ {
		case frameHeartbeat:
			if len(f.payload) == 0 {
				continue
			}
			var w watermarkMsg
			if err := decodeJSON(f, &w); err != nil {
				c.lost(cc, err)
				return
			}
			c.mu.Lock()
			c.setWatermarksLocked(w.ReceivedSeq, w.AppliedSeq)
			c.mu.Unlock()
		case frameAck, frameSegment, frameError:
			if !cc.answered(f) {
				c.lost(cc, fmt.Errorf("%s frame with no request outstanding: %w", typeName(f.typ), ErrProtocol))
				return
			}
		default:
			c.lost(cc, fmt.Errorf("%s frame not allowed from a receiver after the handshake: %w", typeName(f.typ), ErrProtocol))
			return
		}
	}
}

// lost ends cc with err (if it has not ended yet) and schedules the next
// dial after a backoff.
func (c *Client) lost(cc *clientConn, err error) {
	if !cc.fail(err) {
		return
	}
	c.mu.Lock()
	if c.conn == cc {
		c.conn = nil
	}
	closed := c.closed
	if !closed {
		c.failures++
		c.nextDial = time.Now().Add(c.backoff(c.failures))
	}
	c.mu.Unlock()
	switch {
	case closed || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		c.log.Debug("link closed", "err", err)
	default:
		c.log.Warn("link to receiver lost; will reconnect", "addr", c.cfg.Addr, "err", err)
	}
}

// serverError turns an ERROR frame into an error callers can branch on,
// and ends cc if the receiver said it closes the link.
func (c *Client) serverError(cc *clientConn, f frame) error {
	var m errorMsg
	if err := decodeJSON(f, &m); err != nil {
		return err
	}
	err := fmt.Errorf("receiver: %s (code %s)", m.Message, m.Code)
	if m.Close {
		c.lost(cc, fmt.Errorf("receiver closed the link: %w", err))
	}
	return codeError(m.Code, err)
}

// codeError wraps err, a REFUSE or ERROR with code, in the sentinels
// callers branch on: store.ErrConflict, store.ErrNotFound, or
// store.ErrPermanent for codes no retry can fix; a fenced link also wraps
// batch.ErrFenced, so the shipper stops instead of retrying.
func codeError(code string, err error) error {
	switch code {
	case codeConflict:
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	case codeNotFound:
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	case codeFenced:
		return fmt.Errorf("%w: %w: %w", store.ErrPermanent, batch.ErrFenced, err)
	case codeVersion, codeAuth, codeStream, codeGeneration, codeDamaged, codeCorrupt, codeMismatch, codePermanent, codeHistory:
		return fmt.Errorf("%w: %w", store.ErrPermanent, err)
	}
	return err
}

// backoff is the wait before the next dial after n consecutive failures:
// ReconnectMin doubling up to ReconnectMax, jittered by ±50%.
func (c *Client) backoff(n int) time.Duration {
	return store.RetryPolicy{Min: c.cfg.ReconnectMin, Max: c.cfg.ReconnectMax, Jitter: 0.5}.Backoff(n)
}

// isReset reports a connection the peer reset or stopped reading from.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
