package tcp

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// defaultChunk is the largest single write to the connection. Each write
// gets its own deadline, so a big segment needs steady progress, not to
// finish within one IOTimeout.
const defaultChunk = 64 << 10

// timeoutConn sets a fresh deadline before every Read and Write: "no
// progress for timeout" fails the call, however long the whole transfer.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c timeoutConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c timeoutConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// link is one framed connection. One goroutine reads; writers share the
// connection under wmu, one whole frame at a time.
type link struct {
	conn    net.Conn
	r       *bufio.Reader
	maxRead int64  // cap on SEGMENT frames read
	reuse   []byte // readReusing's buffer

	wmu       sync.Mutex
	w         *bufio.Writer
	werr      error // sticky: a frame written in part breaks the stream
	chunk     int
	limiter   *rate.Limiter // paces SEGMENT bodies; nil = unlimited
	lastWrite atomic.Int64  // unix nanos of the last complete frame
}

// linkReadBuffer is the read buffer of an established link.
const linkReadBuffer = 64 << 10

// handshakeBuffer is the read and write buffer of a receiver's link
// before the peer has authenticated (newHandshakeLink): a HELLO fits in
// two reads, and an unauthenticated peer costs little memory.
const handshakeBuffer = 4 << 10

func newLink(conn net.Conn, timeout time.Duration, maxRead int64, limiter *rate.Limiter, chunk int) *link {
	tc := timeoutConn{Conn: conn, timeout: timeout}
	l := &link{
		conn:    conn,
		r:       bufio.NewReaderSize(tc, linkReadBuffer),
		maxRead: maxRead,
		w:       bufio.NewWriterSize(tc, chunk),
		chunk:   chunk,
		limiter: limiter,
	}
	l.lastWrite.Store(time.Now().UnixNano())
	return l
}

// newHandshakeLink is the receiver's link before the peer has
// authenticated: small buffers, every read and write bounded by timeout
// (the handshake timeout), SEGMENT frames capped as HELLO is. Once the
// peer has authenticated, grow gives it the buffers and timeout of an
// established link.
func newHandshakeLink(conn net.Conn, timeout time.Duration) *link {
	tc := timeoutConn{Conn: conn, timeout: timeout}
	l := &link{
		conn:    conn,
		r:       bufio.NewReaderSize(tc, handshakeBuffer),
		maxRead: MaxHelloFrame,
		w:       bufio.NewWriterSize(tc, handshakeBuffer),
		chunk:   defaultChunk,
	}
	l.lastWrite.Store(time.Now().UnixNano())
	return l
}

// grow turns a handshake link into an established one: read and write
// buffers of full size, and timeout for every read and write. Bytes the
// small buffer already holds are read first. No frame may be being read
// or written.
func (l *link) grow(timeout time.Duration, maxRead int64) {
	tc := timeoutConn{Conn: l.conn, timeout: timeout}
	var r io.Reader = tc
	if n := l.r.Buffered(); n > 0 {
		b, _ := l.r.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), tc)
	}
	l.r = bufio.NewReaderSize(r, linkReadBuffer)
	l.maxRead = maxRead
	l.wmu.Lock()
	l.w = bufio.NewWriterSize(tc, l.chunk) // empty: every write flushes
	l.wmu.Unlock()
}

// read reads the next frame; only one goroutine may call it.
func (l *link) read() (frame, error) { return readFrame(l.r, l.maxRead) }

// maxReuse bounds the buffer readReusing keeps between frames.
const maxReuse = 64 << 20

// readReusing is read into the memory of the previous frame read this way:
// the payload is valid only until the next call. The receiver's request
// loop uses it, as a SEGMENT's bytes are stored before the next is read;
// fresh buffers for every segment cost more CPU (zeroing, growing) than
// checking them.
func (l *link) readReusing() (frame, error) {
	h, err := l.readHeader()
	if err != nil {
		return frame{}, err
	}
	return l.readBodyReusing(h)
}

// readHeader reads the next frame's header, checked against the caps.
func (l *link) readHeader() (frameHeader, error) {
	return readFrameHeader(l.r, l.maxRead, MaxControlFrame)
}

// readBodyReusing reads the rest of the frame whose header readHeader
// returned, as readReusing does.
func (l *link) readBodyReusing(h frameHeader) (frame, error) {
	f, err := readFrameBody(l.r, h, l.reuse)
	if err == nil && cap(f.payload) <= maxReuse {
		l.reuse = f.payload[:0]
	}
	return f, err
}

// write sends one frame whose payload is prefix followed by body. The body
// goes out in chunks, each paced by the limiter (SEGMENT only) and each
// with its own write deadline; ctx is checked between chunks. An error
// leaves the stream unusable: the caller must close the connection.
func (l *link) write(ctx context.Context, typ byte, prefix, body []byte) error {
	n := len(prefix) + len(body)
	if uint64(n) > math.MaxUint32 {
		return fmt.Errorf("%s frame of %d bytes does not fit the 32-bit length", typeName(typ), n)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.werr != nil {
		return l.werr
	}
	err := l.writeLocked(ctx, typ, prefix, body)
	if err != nil {
		l.werr = err
		return err
	}
	l.lastWrite.Store(time.Now().UnixNano())
	return nil
}

// writeLocked streams one frame through l.w: header and prefix, then the
// body in chunks of at most l.chunk, each paced by the limiter (SEGMENT
// only), then the checksum. l.w holds at most l.chunk bytes, so every write
// to the connection is at most one chunk. l.w's errors are sticky: a
// failed write shows again in the next Write or the Flush.
func (l *link) writeLocked(ctx context.Context, typ byte, prefix, body []byte) error {
	var hdr [frameHeaderSize]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(prefix)+len(body)))
	hdr[4] = typ
	sum := crc32.Update(crc32.Update(0, castagnoli, hdr[4:]), castagnoli, prefix)
	l.w.Write(hdr[:])
	if _, err := l.w.Write(prefix); err != nil {
		return err
	}
	for rest := body; len(rest) > 0; {
		k := min(len(rest), l.chunk)
		if err := ctx.Err(); err != nil {
			return err
		}
		if l.limiter != nil && typ == frameSegment {
			if err := l.limiter.WaitN(ctx, k); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				// The limiter refuses early when the deadline is too near.
				return fmt.Errorf("bandwidth limit: %w: %w", context.DeadlineExceeded, err)
			}
		}
		sum = crc32.Update(sum, castagnoli, rest[:k])
		if _, err := l.w.Write(rest[:k]); err != nil {
			return err
		}
		rest = rest[k:]
	}
	var trailer [frameTrailerSize]byte
	binary.BigEndian.PutUint32(trailer[:], sum)
	l.w.Write(trailer[:])
	return l.w.Flush()
}

// writeJSON sends a control frame with v as its JSON payload.
func (l *link) writeJSON(ctx context.Context, typ byte, v any) error {
	js, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", typeName(typ), err)
	}
	return l.write(ctx, typ, js, nil)
}

// Defaults for the timing fields of Server and ClientConfig.
const (
	defaultIOTimeout         = 30 * time.Second
	defaultHeartbeatInterval = 5 * time.Second
	defaultDialTimeout       = 10 * time.Second
	// minHeartbeat bounds how often a peer may ask to be sent heartbeats.
	minHeartbeat = 10 * time.Millisecond
)

// timing applies the defaults to an I/O timeout and a heartbeat interval
// (5s, or a third of the I/O timeout if that is shorter) and checks them.
func timing(ioTimeout, heartbeat time.Duration) (time.Duration, time.Duration, error) {
	ioTimeout = cmp.Or(ioTimeout, defaultIOTimeout)
	if ioTimeout < 0 {
		return 0, 0, fmt.Errorf("io timeout %s is negative", ioTimeout)
	}
	heartbeat = cmp.Or(heartbeat, min(defaultHeartbeatInterval, ioTimeout/3))
	if heartbeat < minHeartbeat || heartbeat >= ioTimeout {
		return 0, 0, fmt.Errorf("heartbeat interval %s must be at least %s and below the io timeout %s", heartbeat, minHeartbeat, ioTimeout)
	}
	return ioTimeout, heartbeat, nil
}

// heartbeatInterval is how often a side sends heartbeats: its own
// interval, or the one the peer announced (in milliseconds; 0 = none) if
// that is shorter, but never below minHeartbeat.
func heartbeatInterval(own time.Duration, peerMS int64) time.Duration {
	if peerMS <= 0 {
		return own
	}
	return max(min(own, time.Duration(peerMS)*time.Millisecond), minHeartbeat)
}

// defaultWatermarkPoll is Server.WatermarkPoll's default.
const defaultWatermarkPoll = 10 * time.Millisecond

// heartbeat sends a HEARTBEAT whenever nothing has been written for
// interval, until done is closed or a write fails. payload, if not nil,
// supplies the frame's payload, and a payload that differs from the last
// one sent is sent without waiting for the interval: it is looked at every
// poll (which must then be > 0) and whenever the channel wake returns is
// closed (wake, if not nil, says the payload may have changed).
func (l *link) heartbeat(done <-chan struct{}, interval time.Duration, payload func() []byte, poll time.Duration,
	wake func() <-chan struct{}) error {
	tick := max(interval/2, time.Millisecond)
	woken := func() <-chan struct{} { return nil }
	if wake != nil {
		woken = wake
	}
	var last []byte
	next := woken() // before the payload is read, so no change slips by
	if payload != nil {
		tick = min(tick, poll)
		last = payload() // the handshake or ack told the peer this much
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-t.C:
		case <-next:
		}
		next = woken()
		var p []byte
		if payload != nil {
			p = payload()
		}
		idle := time.Since(time.Unix(0, l.lastWrite.Load())) >= interval
		if !idle && (payload == nil || bytes.Equal(p, last)) {
			continue
		}
		if err := l.write(context.Background(), frameHeartbeat, p, nil); err != nil {
			return err
		}
		last = p
	}
}

// closeGracefully ends a connection after a final REFUSE or ERROR: it
// half-closes the write side so the peer reads the frame and an EOF, then
// discards what the peer still sends for a moment, because closing with
// unread input makes the kernel send a reset that can destroy the frame
// before the peer reads it.
func closeGracefully(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		conn.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
	}
	conn.Close()
}
