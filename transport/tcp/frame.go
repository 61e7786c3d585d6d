package tcp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

// ProtocolVersion is the major version of the link protocol this code
// speaks. A peer announcing a higher major version is refused.
const ProtocolVersion = 1

// ProtocolMinor is the minor version within ProtocolVersion: additions an
// older peer of the same major version can do without. Minor 1 adds the
// GENERATION frame (a shipper carries its stream's generation records to
// the receiver) and the shipper's identity in HELLO. Peers announce it in
// HELLO and WELCOME; absent means 0.
const ProtocolMinor = 1

// Frame types; see docs/PROTOCOL.md for who sends which.
const (
	frameHello     byte = 0x01
	frameWelcome   byte = 0x02
	frameRefuse    byte = 0x03
	frameSegment   byte = 0x04
	frameAck       byte = 0x05
	frameHeartbeat byte = 0x06
	frameError     byte = 0x07
	frameFetch     byte = 0x08
	// frameGeneration carries one generation record, shipper to
	// receiver, right after HELLO (protocol 1.1).
	frameGeneration byte = 0x09
)

const (
	// MaxControlFrame caps the payload of every frame except SEGMENT.
	MaxControlFrame = 64 << 10
	// MaxHelloFrame caps the first frame of a connection, the HELLO,
	// which a receiver reads before it knows who sent it: a peer that has
	// not authenticated cannot make it allocate more. A HELLO is a few
	// hundred bytes; its identity fields are at most 1.8 KiB in all
	// (maxIdentity, maxSpoolPath) and a stream name 128 bytes, which
	// leaves room for a token of several KiB. NewClient refuses a HELLO
	// over it.
	MaxHelloFrame = 8 << 10
	// DefaultMaxSegment is the default cap on a SEGMENT frame's payload
	// (name header plus segment bytes).
	DefaultMaxSegment = 1<<30 + 64<<10
	// DefaultStreamAbove is Server.StreamAbove's default: the stored size
	// above which the receiver also decodes a segment as it reads it.
	DefaultStreamAbove = 32 << 20
	// ServerMaxInFlight is the max_in_flight a receiver offers in WELCOME.
	// It answers requests one at a time, in order, reading the next only
	// after answering the last, so the shipper's extra requests wait in
	// the socket buffers and cost the receiver no memory.
	ServerMaxInFlight = 16
	// DefaultMaxInFlight is how many SEGMENTs a Client has outstanding at
	// most unless configured otherwise.
	DefaultMaxInFlight = 4
	// MaxHistoryRecords caps the generation records a shipper may send
	// in one handshake; the receiver refuses a HELLO announcing more
	// before it reads any.
	MaxHistoryRecords = 1024
	// MaxGenerationRecord caps a GENERATION frame's payload (one record;
	// real ones are a few hundred bytes). It is checked on the frame's
	// header, before anything is allocated.
	MaxGenerationRecord = 4 << 10
	// maxIdentity caps each of HELLO's client_id, site and host, and
	// maxSpoolPath its spool: they only name the shipper in logs and
	// refusals.
	maxIdentity  = 256
	maxSpoolPath = 1024

	frameHeaderSize  = 5 // u32 length + u8 type
	frameTrailerSize = 4 // CRC-32C
	// readStep is the first buffer a payload gets; it doubles as bytes
	// arrive, so a forged length costs memory only once the bytes are sent.
	readStep = 1 << 20
)

// ErrProtocol marks a peer that broke the framing or the message rules: an
// unknown frame type, a size over its cap, a bad checksum, a malformed
// payload, or a frame the protocol does not allow at that point.
var ErrProtocol = errors.New("link protocol violation")

// ErrRefused marks a handshake the receiver refused (bad token, protocol
// version, stream or generation). The error text carries the receiver's
// reason.
var ErrRefused = errors.New("link refused by the receiver")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frame is one decoded frame. payload is owned by the frame.
type frame struct {
	typ     byte
	payload []byte
}

func typeName(t byte) string {
	switch t {
	case frameHello:
		return "HELLO"
	case frameWelcome:
		return "WELCOME"
	case frameRefuse:
		return "REFUSE"
	case frameSegment:
		return "SEGMENT"
	case frameAck:
		return "ACK"
	case frameHeartbeat:
		return "HEARTBEAT"
	case frameError:
		return "ERROR"
	case frameFetch:
		return "FETCH"
	case frameGeneration:
		return "GENERATION"
	}
	return fmt.Sprintf("type %#02x", t)
}

// readFrame reads one frame from r. SEGMENT payloads may be up to
// maxSegment bytes, GENERATION payloads up to MaxGenerationRecord, all
// others up to MaxControlFrame; the caps are checked
// before anything is allocated, and the buffer then grows only as bytes
// arrive. A clean end of stream before the first byte returns io.EOF; a
// stream that ends inside a frame returns io.ErrUnexpectedEOF; damage
// returns an error wrapping ErrProtocol.
func readFrame(r io.Reader, maxSegment int64) (frame, error) {
	return readFrameInto(r, maxSegment, nil)
}

// readFrameInto is readFrame reading the payload into buf's memory when it
// is large enough (it still grows only with the bytes actually received).
func readFrameInto(r io.Reader, maxSegment int64, buf []byte) (frame, error) {
	return readFrameWithin(r, maxSegment, MaxControlFrame, buf)
}

// readHelloFrame reads the first frame of a connection, whatever its
// type, capped at MaxHelloFrame.
func readHelloFrame(r io.Reader) (frame, error) {
	return readFrameWithin(r, MaxHelloFrame, MaxHelloFrame, nil)
}

// readFrameWithin is readFrameInto with the frames other than SEGMENT
// capped at maxControl (GENERATION at MaxGenerationRecord if lower).
func readFrameWithin(r io.Reader, maxSegment, maxControl int64, buf []byte) (frame, error) {
	h, err := readFrameHeader(r, maxSegment, maxControl)
	if err != nil {
		return frame{}, err
	}
	return readFrameBody(r, h, buf)
}

// frameHeader is a frame's type and payload length, read and checked
// against the caps before anything is allocated for the payload.
type frameHeader struct {
	typ byte
	n   int64
}

// readFrameHeader reads a frame's header and checks its type and length
// as readFrameWithin does.
func readFrameHeader(r io.Reader, maxSegment, maxControl int64) (frameHeader, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frameHeader{}, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[:4]))
	typ := hdr[4]
	if typ < frameHello || typ > frameGeneration {
		return frameHeader{}, fmt.Errorf("frame %s unknown: %w", typeName(typ), ErrProtocol)
	}
	limit := maxControl
	switch typ {
	case frameSegment:
		limit = maxSegment
	case frameGeneration:
		limit = min(MaxGenerationRecord, maxControl)
	}
	if n > limit {
		return frameHeader{}, fmt.Errorf("%s frame of %d bytes is over the %d-byte limit: %w", typeName(typ), n, limit, ErrProtocol)
	}
	return frameHeader{typ: typ, n: n}, nil
}

// readFrameBody reads the payload and checksum of the frame whose header
// h was read, the payload into buf's memory (grown only as bytes arrive).
func readFrameBody(r io.Reader, h frameHeader, buf []byte) (frame, error) {
	payload, err := readN(r, int(h.n), buf)
	var trailer [frameTrailerSize]byte
	if err == nil {
		_, err = io.ReadFull(r, trailer[:])
	}
	if err != nil {
		return frame{}, cutShort(h.typ, err)
	}
	sum := crc32.Update(crc32.Update(0, castagnoli, []byte{h.typ}), castagnoli, payload)
	if err := checkSum(h.typ, trailer, sum); err != nil {
		return frame{}, err
	}
	return frame{typ: h.typ, payload: payload}, nil
}

// cutShort is the error of a frame of type typ whose reading failed with
// err after its header: a stream that ended is io.ErrUnexpectedEOF.
func cutShort(typ byte, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %s frame: %w", typeName(typ), err)
}

// checkSum compares a frame's trailer with the checksum computed over its
// type and payload.
func checkSum(typ byte, trailer [frameTrailerSize]byte, sum uint32) error {
	if got := binary.BigEndian.Uint32(trailer[:]); got != sum {
		return fmt.Errorf("%s frame checksum %08x, computed %08x: %w", typeName(typ), got, sum, ErrProtocol)
	}
	return nil
}

// bodyReader reads the payload of a frame whose header was read as a
// stream, for a payload too large to hold: it counts the payload's
// checksum as it goes, and finish reads the rest and the trailer and
// checks it. Its first read error sticks.
type bodyReader struct {
	r    io.Reader
	h    frameHeader
	left int64 // payload bytes not read yet
	sum  uint32
	err  error
}

func newBodyReader(r io.Reader, h frameHeader) *bodyReader {
	return &bodyReader{r: r, h: h, left: h.n, sum: crc32.Update(0, castagnoli, []byte{h.typ})}
}

// Read reads from the payload; io.EOF is its end.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.sum = crc32.Update(b.sum, castagnoli, p[:n])
	b.left -= int64(n)
	if err == io.EOF && b.left == 0 {
		err = nil
	}
	if err != nil {
		b.err = cutShort(b.h.typ, err)
		return n, b.err
	}
	return n, nil
}

// finish reads what is left of the payload through buf, discarding it,
// then the trailer, and checks the frame's checksum: a frame whose
// payload was consumed in part is done with, the stream at the next
// frame.
func (b *bodyReader) finish(buf []byte) error {
	for b.left > 0 && b.err == nil {
		b.Read(buf)
	}
	if b.err != nil {
		return b.err
	}
	var trailer [frameTrailerSize]byte
	if _, err := io.ReadFull(b.r, trailer[:]); err != nil {
		b.err = cutShort(b.h.typ, err)
		return b.err
	}
	return checkSum(b.h.typ, trailer, b.sum)
}

// readN reads exactly n bytes into buf's memory, growing it by doubling
// from readStep so that memory follows the bytes actually received.
func readN(r io.Reader, n int, buf []byte) ([]byte, error) {
	buf = buf[:0]
	if cap(buf) < min(n, readStep) {
		buf = make([]byte, 0, min(n, readStep))
	}
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), len(buf)))
		}
		end := min(cap(buf), n)
		k, err := io.ReadFull(r, buf[len(buf):end])
		buf = buf[:len(buf)+k]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// segmentHeader is the start of a SEGMENT payload: u16 name length, name.
func segmentHeader(name string) []byte {
	h := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(name)), uint16(len(name)))
	return append(h, name...)
}

// parseSegment splits a SEGMENT payload into the segment name and bytes.
func parseSegment(p []byte) (name string, data []byte, err error) {
	if len(p) < 2 {
		return "", nil, fmt.Errorf("SEGMENT payload of %d bytes has no name header: %w", len(p), ErrProtocol)
	}
	n := int(binary.BigEndian.Uint16(p))
	if n == 0 || len(p)-2 < n {
		return "", nil, fmt.Errorf("SEGMENT name length %d does not fit its %d-byte payload: %w", n, len(p), ErrProtocol)
	}
	return string(p[2 : 2+n]), p[2+n:], nil
}

// Control messages. Fields are JSON; a reader ignores fields it does not
// know, so minor additions need no new protocol version.
type (
	helloMsg struct {
		Version     int    `json:"version"`
		Stream      string `json:"stream"`
		Generation  uint32 `json:"generation"`
		Token       string `json:"token,omitempty"`
		ClientID    string `json:"client_id,omitempty"`
		HeartbeatMS int64  `json:"heartbeat_ms,omitempty"`
		// Protocol 1.1. Minor is the shipper's ProtocolMinor;
		// Generations is how many GENERATION frames follow the HELLO.
		Minor       int `json:"minor,omitempty"`
		Generations int `json:"generations,omitempty"`
		// The shipper's identity, for the one-writer rule and messages.
		Site  string `json:"site,omitempty"`
		Host  string `json:"host,omitempty"`
		PID   int    `json:"pid,omitempty"`
		Spool string `json:"spool,omitempty"`
	}
	welcomeMsg struct {
		Version        int    `json:"version"`
		Minor          int    `json:"minor,omitempty"` // the receiver's ProtocolMinor; absent = 0
		HighestSeq     uint64 `json:"highest_seq"`
		HighestSegment string `json:"highest_segment"`
		HighestHash    string `json:"highest_hash"`
		AppliedSeq     uint64 `json:"applied_seq"`
		MaxSegment     int64  `json:"max_segment"`
		HeartbeatMS    int64  `json:"heartbeat_ms"`
		// MaxInFlight is how many requests the shipper may have
		// outstanding; answers come in request order. Absent (0) means 1,
		// as receivers before this field answered one at a time.
		MaxInFlight int `json:"max_in_flight,omitempty"`
	}
	refuseMsg struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	ackMsg struct {
		Name        string `json:"name"`
		ReceivedSeq uint64 `json:"received_seq"`
		AppliedSeq  uint64 `json:"applied_seq"`
	}
	// watermarkMsg is the optional payload of a receiver's HEARTBEAT.
	watermarkMsg struct {
		ReceivedSeq uint64 `json:"received_seq"`
		AppliedSeq  uint64 `json:"applied_seq"`
	}
	errorMsg struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Name    string `json:"name,omitempty"`
		Close   bool   `json:"close,omitempty"`
	}
	fetchMsg struct {
		Name string `json:"name"`
	}
)

// Codes carried by REFUSE and ERROR frames.
const (
	codeVersion     = "version"     // refuse: protocol major version not spoken
	codeAuth        = "auth"        // refuse: token missing or wrong
	codeStream      = "stream"      // refuse: stream name invalid or not served here
	codeGeneration  = "generation"  // refuse: generation invalid or not served here
	codeDamaged     = "damaged"     // refuse: the inbox's newest segment is unreadable
	codeProtocol    = "protocol"    // refuse/error: framing or message rules broken
	codeUnavailable = "unavailable" // refuse/error: the inbox failed; retry later
	codeCorrupt     = "corrupt"     // error: segment fails verification
	codeMismatch    = "mismatch"    // error: segment name, stream or generation disagree
	codeConflict    = "conflict"    // error: a different segment has that name
	codeGap         = "gap"         // error: the segment does not continue the inbox's newest; resend from there
	codeNotFound    = "not_found"   // error: FETCH of a missing segment
	codePermanent   = "permanent"   // error: the inbox refuses for good (read-only, ...)
	codeFenced      = "fenced"      // refuse/error: a newer generation of the stream exists
	codeHistory     = "history"     // refuse: the shipper's generation records are invalid or conflict with the receiver's
	codeBusy        = "busy"        // refuse: another shipper is connected for the stream; retry later
)

// decodeJSON parses a control payload into v.
func decodeJSON(f frame, v any) error {
	if err := json.Unmarshal(f.payload, v); err != nil {
		return fmt.Errorf("%s payload: %v: %w", typeName(f.typ), err, ErrProtocol)
	}
	return nil
}
