package tcp

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// ClientConfig configures a Client. Zero durations and sizes mean the
// documented defaults.
type ClientConfig struct {
	Addr       string // receiver's host:port
	Stream     string // the stream this link carries
	Generation uint32 // default 1
	// Token is the shared secret the receiver checks. Required unless TLS
	// presents a client certificate (mutual TLS).
	Token string
	// TLS enables TLS (1.3 at least; lower MinVersions are raised). An
	// empty ServerName is taken from Addr. Required unless Insecure is set.
	TLS *tls.Config
	// Insecure permits a plaintext link when TLS is nil. The token then
	// crosses the network in clear.
	Insecure bool
	// BandwidthLimit caps the segment bytes sent per second; 0 = no cap.
	BandwidthLimit int64

	DialTimeout       time.Duration // TCP connect plus TLS handshake; default 10s
	IOTimeout         time.Duration // longest read or write without progress; default 30s
	HeartbeatInterval time.Duration // idle heartbeats; default 5s (at most IOTimeout/3)
	// ReconnectMin and ReconnectMax bound the jittered, doubling wait
	// before redialling after a failed dial or a lost link. Defaults 200ms
	// and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// MaxSegment caps a segment read back by Get. Default DefaultMaxSegment.
	MaxSegment int64
	// ClientID names this shipper in the receiver's logs. Default: the
	// host name.
	ClientID string
	// MaxInFlight caps the segments sent and not yet acknowledged (see
	// PutAsync); the receiver's WELCOME may lower it. Default
	// DefaultMaxInFlight; 1 is stop-and-wait.
	MaxInFlight int

	// History is the stream's generation records this shipper knows
	// (generation 1 has none), in any order; SetHistory replaces them.
	// Every handshake carries them to the receiver, which stores those
	// it lacks and refuses the link if one differs from its own
	// ("conflicting histories"). A shipper of generation G >= 2 must send
	// at least the records the receiver may lack, in practice all of
	// them: the receiver refuses a generation it has no record of. At
	// most MaxHistoryRecords, each of Stream and at most
	// MaxGenerationRecord bytes once encoded. A receiver older than
	// protocol 1.1 cannot take them: with records, linking to one fails
	// with an error wrapping store.ErrPermanent.
	History []batch.Generation

	// Site, Host, PID and Spool tell the receiver which shipper this is
	// (with ClientID): a receiver takes one shipper per stream at a time,
	// and names the one it has when it refuses another. A new link with
	// the same ClientID, Site, Host and Spool (the PID may differ) is the
	// same shipper reconnecting, and replaces its old link. Host defaults
	// to the host name and PID to this process's; Site and Spool (the
	// spool directory) are optional. ClientID, Site and Host are at most
	// 256 bytes, Spool 1024.
	Site  string
	Host  string
	PID   int
	Spool string
}

// Client is the shipping end of a link: a store.Store for one stream that
// sends segments to a Server. Put returns nil only once the receiver has
// stored the segment durably in its inbox. The link is dialled on first use
// and redialled, with backoff, after it breaks; a Put interrupted by a
// broken link returns a retryable error and is simply called again.
//
// Only the operations a shipper needs are supported: Put of a segment of
// the configured stream; List of "<stream>/", which reports at most one
// object, the newest segment of the stream and generation the receiver
// holds (from the handshake, advanced by acks; Size and ModTime are zero);
// and Get of a segment of the stream. Everything else fails with an error
// wrapping store.ErrPermanent.
//
// Requests share one connection. Up to MaxInFlight of them may be
// outstanding (PutAsync); the receiver answers in request order.
type Client struct {
	cfg     ClientConfig
	tls     *tls.Config
	log     *slog.Logger
	limiter *rate.Limiter
	chunk   int
	limitMu sync.Mutex    // guards own and window (limit.go)
	own     int64         // the client's own limit in bytes per second, 0: none
	window  int64         // the sending window's cap, 0: none
	dialMu  chan struct{} // held while connecting, so dials never race
	wg      sync.WaitGroup

	mu       sync.Mutex
	history  [][]byte    // the encoded generation records sent at each handshake
	conn     *clientConn // nil when not connected
	failures int         // consecutive failed dials or lost links
	nextDial time.Time
	known    bool   // a handshake has succeeded, so the watermarks are the receiver's
	received uint64 // watermarks from the latest WELCOME, ACK or heartbeat
	applied  uint64
	newest   string // newest segment name of the stream the receiver holds
	dials    int    // successful handshakes
	closed   bool
	wmCh     chan struct{} // closed (and replaced) when the watermarks change
}

var (
	_ store.Pipeliner    = (*Client)(nil)
	_ store.SegmentsOnly = (*Client)(nil)
)

// errClientClosed is returned by calls after Close.
var errClientClosed = fmt.Errorf("%w: tcp client closed", store.ErrPermanent)

// NewClient checks cfg and returns a Client. It does not dial. log may be
// nil.
func NewClient(cfg ClientConfig, log *slog.Logger) (*Client, error) {
	fail := func(format string, args ...any) (*Client, error) {
		return nil, fmt.Errorf("tcp target tcp://%s: "+format, append([]any{cfg.Addr}, args...)...)
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return fail("address must be host:port")
	}
	if err := batch.CheckStream(cfg.Stream); err != nil {
		return fail("%v", err)
	}
	if cfg.Generation == 0 {
		cfg.Generation = 1
	}
	c := &Client{log: log, dialMu: make(chan struct{}, 1), chunk: defaultChunk}
	switch {
	case cfg.TLS != nil:
		c.tls = cfg.TLS.Clone()
		c.tls.MinVersion = max(c.tls.MinVersion, tls.VersionTLS13)
		if c.tls.ServerName == "" {
			c.tls.ServerName = host
		}
	case !cfg.Insecure:
		return fail("no TLS configured; configure TLS (a CA to verify the receiver, and a certificate and key for mutual TLS), or set insecure = true to send in plaintext")
	}
	hasCert := c.tls != nil && (len(c.tls.Certificates) > 0 || c.tls.GetClientCertificate != nil)
	if cfg.Token == "" && !hasCert {
		return fail("a token is required unless a client certificate is configured (mutual TLS); set token")
	}
	if cfg.BandwidthLimit < 0 {
		return fail("bandwidth limit %d is negative", cfg.BandwidthLimit)
	}
	c.own = cfg.BandwidthLimit
	if cfg.BandwidthLimit > 0 {
		// Small chunks at low rates, so each write finishes well within
		// IOTimeout and the receiver sees steady progress.
		c.chunk = int(min(max(cfg.BandwidthLimit/8, 1<<10), defaultChunk))
		c.limiter = rate.NewLimiter(rate.Limit(cfg.BandwidthLimit), c.chunk)
	} else {
		c.limiter = rate.NewLimiter(rate.Inf, c.chunk) // until SetWindowLimit caps it
	}
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, defaultDialTimeout)
	cfg.ReconnectMin = cmp.Or(cfg.ReconnectMin, 200*time.Millisecond)
	cfg.ReconnectMax = max(cmp.Or(cfg.ReconnectMax, 30*time.Second), cfg.ReconnectMin)
	cfg.MaxSegment = cmp.Or(cfg.MaxSegment, DefaultMaxSegment)
	cfg.MaxInFlight = cmp.Or(cfg.MaxInFlight, DefaultMaxInFlight)
	if cfg.DialTimeout < 0 || cfg.ReconnectMin < 0 || cfg.MaxSegment < 0 || cfg.MaxInFlight < 0 {
		return fail("timeouts and sizes must not be negative")
	}
	if cfg.IOTimeout, cfg.HeartbeatInterval, err = timing(cfg.IOTimeout, cfg.HeartbeatInterval); err != nil {
		return fail("%v", err)
	}
	if cfg.ClientID == "" {
		cfg.ClientID, _ = os.Hostname()
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	if cfg.PID == 0 {
		cfg.PID = os.Getpid()
	}
	if err := (shipperID{ClientID: cfg.ClientID, Site: cfg.Site, Host: cfg.Host, PID: cfg.PID, Spool: cfg.Spool}).check(); err != nil {
		return fail("%v", err)
	}
	if c.history, err = encodeHistory(cfg.Stream, cfg.History); err != nil {
		return fail("%v", err)
	}
	cfg.History = nil // c.history has them
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.cfg = cfg
	// The history's length is at most 4 digits.
	if hello, _ := json.Marshal(c.hello(MaxHistoryRecords)); len(hello) > MaxHelloFrame {
		return fail("the HELLO would be %d bytes, over the %d bytes a receiver reads before the shipper has authenticated; shorten the token (%d bytes), client id, site, host or spool path",
			len(hello), MaxHelloFrame, len(cfg.Token))
	}
	c.log = c.log.With("store", c.String())
	return c, nil
}

// hello is the HELLO the client sends, announcing records generation
// records.
func (c *Client) hello(records int) helloMsg {
	return helloMsg{
		Version:     ProtocolVersion,
		Minor:       ProtocolMinor,
		Stream:      c.cfg.Stream,
		Generation:  c.cfg.Generation,
		Token:       c.cfg.Token,
		ClientID:    c.cfg.ClientID,
		HeartbeatMS: c.cfg.HeartbeatInterval.Milliseconds(),
		Generations: records,
		Site:        c.cfg.Site,
		Host:        c.cfg.Host,
		PID:         c.cfg.PID,
		Spool:       c.cfg.Spool,
	}
}

// SetHistory replaces the generation records sent to the receiver (see
// ClientConfig.History). They go with the next handshake: call it before
// the first request, or the link already established keeps what the
// receiver was told.
func (c *Client) SetHistory(recs []batch.Generation) error {
	enc, err := encodeHistory(c.cfg.Stream, recs)
	if err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	c.mu.Lock()
	c.history = enc
	c.mu.Unlock()
	return nil
}

// encodeHistory checks and encodes the generation records of stream for
// GENERATION frames.
func encodeHistory(stream string, recs []batch.Generation) ([][]byte, error) {
	if len(recs) > MaxHistoryRecords {
		return nil, fmt.Errorf("%d generation records; a link carries at most %d", len(recs), MaxHistoryRecords)
	}
	enc := make([][]byte, 0, len(recs))
	for _, r := range recs {
		if r.Stream != stream {
			return nil, fmt.Errorf("generation record %s is of stream %q, not %q", batch.GenerationName(r.Generation), r.Stream, stream)
		}
		data, err := batch.MarshalGeneration(r)
		if err != nil {
			return nil, err
		}
		if len(data) > MaxGenerationRecord {
			return nil, fmt.Errorf("generation record %s is %d bytes encoded; a link carries at most %d", batch.GenerationName(r.Generation), len(data), MaxGenerationRecord)
		}
		enc = append(enc, data)
	}
	return enc, nil
}

// String returns "tcp://" and the receiver's address; never the token.
func (c *Client) String() string { return "tcp://" + c.cfg.Addr }

// Watermarks returns the receiver's watermarks from the latest handshake,
// ack or heartbeat: the last seq of the newest segment of the stream in
// its inbox (received) and the last seq its receiver applied (applied).
func (c *Client) Watermarks() (received, applied uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received, c.applied
}

// LinkWatermarks is Watermarks with ok false until a handshake has told
// this client anything (then both are 0 because they are unknown, not
// because the receiver reported 0).
func (c *Client) LinkWatermarks() (received, applied uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received, c.applied, c.known
}

// WatermarksChanged returns a channel that is closed when the watermarks
// LinkWatermarks reports next change, so a shipper waiting for an ack
// learns of it at once instead of polling.
func (c *Client) WatermarksChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wmCh == nil {
		c.wmCh = make(chan struct{})
	}
	return c.wmCh
}

// setWatermarksLocked records the receiver's watermarks and wakes
// WatermarksChanged waiters if they moved. c.mu held.
func (c *Client) setWatermarksLocked(received, applied uint64) {
	if received == c.received && applied == c.applied && c.known {
		return
	}
	c.received, c.applied = received, applied
	if c.wmCh != nil {
		close(c.wmCh)
		c.wmCh = nil
	}
}

// Close ends the link and waits for its goroutines. Later calls fail with
// an error wrapping store.ErrPermanent.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cc := c.conn
	c.conn = nil
	c.mu.Unlock()
	if cc != nil {
		cc.fail(errClientClosed)
	}
	c.wg.Wait()
	return nil
}

// Put sends the segment named key ("<stream>/<segment name>") and returns
// nil once the receiver has it durably. A receiver that already holds an
// identical copy also answers nil; one holding different content under
// that name gives an error wrapping store.ErrConflict. A segment the
// receiver finds damaged or mislabelled gives store.ErrPermanent. A lost
// link gives a retryable error.
func (c *Client) Put(ctx context.Context, key string, data []byte) error {
	return c.PutAsync(ctx, key, data)()
}

// PutAsync sends the segment named key and returns a function that waits
// for the receiver's answer and returns what Put would. It returns once the
// segment is written to the link, waiting first while MaxInFlight segments
// are outstanding. Segments started in sequence order from one goroutine
// reach the receiver in that order; if one fails, the receiver refuses the
// ones behind it that would leave a gap (a retryable error), so the caller
// resends from the first that failed.
func (c *Client) PutAsync(ctx context.Context, key string, data []byte) func() error {
	name, err := c.segmentName("put", key)
	if err != nil {
		return func() error { return err }
	}
	wait := c.start(ctx, frameSegment, segmentHeader(name), data, func(f frame) error {
		if f.typ != frameAck {
			return fmt.Errorf("%s frame in answer to SEGMENT: %w", typeName(f.typ), ErrProtocol)
		}
		var a ackMsg
		if err := decodeJSON(f, &a); err != nil {
			return err
		}
		if a.Name != name {
			return fmt.Errorf("ACK for %s, expected %s: %w", a.Name, name, ErrProtocol)
		}
		c.mu.Lock()
		c.setWatermarksLocked(a.ReceivedSeq, a.AppliedSeq)
		c.newest = max(c.newest, name)
		c.mu.Unlock()
		return nil
	})
	return func() error {
		if err := wait(); err != nil {
			return fmt.Errorf("%s: put %s: %w", c, key, err)
		}
		return nil
	}
}

// MaxInFlight is how many PutAsync calls may be outstanding at once
// (the configured cap; a receiver may offer fewer, and PutAsync then waits).
func (c *Client) MaxInFlight() int { return c.cfg.MaxInFlight }

// Get fetches the segment named key ("<stream>/<segment name>") from the
// receiver's inbox. A missing segment gives an error wrapping
// store.ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := c.segmentName("get", key)
	if err != nil {
		return nil, err
	}
	req, _ := json.Marshal(fetchMsg{Name: name})
	var data []byte
	err = c.request(ctx, frameFetch, req, nil, func(f frame) error {
		if f.typ != frameSegment {
			return fmt.Errorf("%s frame in answer to FETCH: %w", typeName(f.typ), ErrProtocol)
		}
		got, seg, err := parseSegment(f.payload)
		if err != nil {
			return err
		}
		if got != name {
			return fmt.Errorf("SEGMENT %s in answer to FETCH %s: %w", got, name, ErrProtocol)
		}
		data = seg
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: get %s: %w", c, key, err)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// List reports the newest segment of the stream and generation that the
// receiver holds, if its name sorts after after; see Client. dir must be
// "<stream>/".
func (c *Client) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	want := batch.StreamDir(c.cfg.Stream)
	if dir != want {
		return fmt.Errorf("%s: list %s: %w: a tcp link lists only %s", c, dir, store.ErrPermanent, want)
	}
	_, err := c.connect(ctx)
	c.mu.Lock()
	newest := c.newest
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: list %s: %w", c, dir, err)
	}
	if newest == "" || dir+newest <= after {
		return nil
	}
	return fn(store.Object{Name: dir + newest})
}

// Delete is not supported over a link: the inbox is pruned on the
// receiving host. It returns an error wrapping store.ErrPermanent.
func (c *Client) Delete(ctx context.Context, key string) error {
	return fmt.Errorf("%s: delete %s: %w: a tcp link cannot delete; prune the receiver's inbox on its host", c, key, store.ErrPermanent)
}

// SegmentsOnly reports true: a link carries only the stream's segments,
// and the receiver prunes its inbox (store.SegmentsOnly).
func (c *Client) SegmentsOnly() bool { return true }

// segmentName checks that key is a segment of the link's stream and
// returns the segment name.
func (c *Client) segmentName(op, key string) (string, error) {
	name, ok := strings.CutPrefix(key, batch.StreamDir(c.cfg.Stream))
	if ok {
		_, _, _, ok = batch.ParseSegmentName(name)
	}
	if !ok {
		return "", fmt.Errorf("%s: %s %s: %w: a tcp link carries only segments of stream %q (%s<segment name>)",
			c, op, key, store.ErrPermanent, c.cfg.Stream, batch.StreamDir(c.cfg.Stream))
	}
	return name, nil
}
