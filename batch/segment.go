package batch

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// FormatVersion is the segment format this code writes by default and the
// newest it reads; it reads format 1 too. A segment with a higher major
// format is refused, never guessed at.
const FormatVersion = 2

// Skippable-frame constants. zstd decoders (including `zstd -dc`) skip
// frames with magic 0x184D2A50..0x184D2A5F, so metadata rides along without
// disturbing the record stream.
const (
	MetaFrameMagic uint32 = 0x184D2A5E
	metaTag               = "FERRYSEG"
	// MaxMetaSize caps the metadata frame before it is allocated.
	MaxMetaSize = 64 << 10
)

// MaxWindowSize is the largest zstd window a payload frame may declare.
// The decoder allocates the declared window before decoding a byte, so a
// forged frame header could otherwise cost 512 MiB per decode. 8 MiB is the
// limit the zstd specification recommends; Builder writes windows of at
// most 4 MiB.
const MaxWindowSize = 8 << 20

// DefaultMaxUncompressed caps the decompressed size of one segment when
// a reader is given no limit of its own; no reader accepts a larger one.
const DefaultMaxUncompressed = 2 << 30

// DefaultMaxSegmentBytes is the default limit readers (receive, restore,
// verify, cat, ...) set on a segment's size, compressed and uncompressed:
// max_segment_bytes. A shipper's segments stay under max_bytes plus one
// record (max_record_size): 20 MiB with the defaults, and 256 MiB leaves
// room for shippers configured well beyond them while keeping what one
// hostile segment can make a reader allocate to a known amount.
const DefaultMaxSegmentBytes = 256 << 20

// ErrNewerFormat is in the error for a segment or bundle of a format newer
// than this ferry reads: reading it again gives the same answer.
var ErrNewerFormat = errors.New("upgrade ferry")

// newerFormat is that error, in the words docs/FORMAT.md promises every
// reader says: "segment format 2 is newer than this ferry reads (1);
// upgrade ferry".
func newerFormat(what string, got, reads int) error {
	return fmt.Errorf("%s format %d is newer than this ferry reads (%d); %w", what, got, reads, ErrNewerFormat)
}

// ErrSegmentTooLarge marks a segment refused because its size, or the
// size it claims to decompress to, is over the reader's limit
// (max_segment_bytes). Nothing is allocated for it; reading it again
// gives the same answer, so it is never retried.
var ErrSegmentTooLarge = errors.New("segment over max_segment_bytes (raise it if shippers really make segments this large)")

// IsUnreadable reports whether err says a segment itself cannot be read
// (ErrCorrupt, ErrSegmentTooLarge, ErrNoKey: encrypted for keys the
// reader lacks, or ErrSignature: not signed by a key it trusts): reading
// the same bytes again gives the same answer, so a retry loop stops on it.
func IsUnreadable(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrSegmentTooLarge) || errors.Is(err, ErrNoKey) || errors.Is(err, ErrSignature)
}

// ZeroHash is the previous-segment hash of a stream's first segment.
var ZeroHash = hex.EncodeToString(make([]byte, sha256.Size))

// Meta is a segment's metadata, stored as JSON in the leading skippable
// frame. New fields may be added in later versions of format 1; readers
// ignore fields they do not know.
type Meta struct {
	Format           int       `json:"format"`
	Stream           string    `json:"stream"`
	Generation       uint32    `json:"generation"`
	FirstSeq         uint64    `json:"first_seq"`
	LastSeq          uint64    `json:"last_seq"`
	Records          uint64    `json:"records"`
	MinTime          time.Time `json:"min_time"`
	MaxTime          time.Time `json:"max_time"`
	UncompressedSize int64     `json:"uncompressed_size"`
	PayloadSize      int64     `json:"payload_size"`
	Compression      string    `json:"compression"`
	Encryption       string    `json:"encryption"`
	// Recipients are the fingerprints of the keys an encrypted payload
	// is encrypted for (absent when it is not).
	Recipients    []string  `json:"recipients,omitempty"`
	PayloadSHA256 string    `json:"payload_sha256"`
	PrevSHA256    string    `json:"prev_sha256"`
	SealedAt      time.Time `json:"sealed_at"`
	// SourceCursor is the shipper's source position after the segment's
	// last record (opaque; absent when the source has none). The shipper's
	// spool recovers it from its newest sealed segment; receivers ignore
	// it.
	SourceCursor []byte `json:"source_cursor,omitempty"`
	// Signature is the shipper's signature over every other field
	// (SignedBytes; absent when the shipper signs nothing). Its value is
	// batch/sign's: "ed25519:PUBLIC:SIGNATURE", base64.
	Signature string `json:"signature,omitempty"`
}

// Name is the segment's file name, derived from its metadata.
func (m *Meta) Name() string { return SegmentName(m.Generation, m.FirstSeq, m.LastSeq) }

// Hash is the SHA-256 of a whole segment file, hex-encoded. The next segment
// of the stream carries it as PrevSHA256, chaining the stream.
func Hash(segment []byte) string {
	h := sha256.Sum256(segment)
	return hex.EncodeToString(h[:])
}

// Level selects the zstd compression level.
type Level string

// Levels accepted in config ("compression").
const (
	Fastest Level = "fastest"
	Default Level = "default"
	Better  Level = "better"
	Best    Level = "best"
)

func (l Level) zstd() (zstd.EncoderLevel, error) {
	switch l {
	case Fastest, "":
		return zstd.SpeedFastest, nil
	case Default:
		return zstd.SpeedDefault, nil
	case Better:
		return zstd.SpeedBetterCompression, nil
	case Best:
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("unknown compression level %q (want fastest, default, better or best)", l)
}

// ChunkSize is about how many uncompressed bytes of records Builder puts
// in one zstd frame. Each frame ends at a record boundary and is
// compressed on its own goroutine while the next one fills, so building a
// segment uses every core the machine gives it. On log data 2 MiB frames
// cost about 1% of ratio against one frame per segment.
const ChunkSize = 2 << 20

// windowSize is the zstd window Builder's frames declare. 1 MiB finds the
// same matches as larger windows at the fastest level (the encoder's hash
// tables forget older positions first) and keeps each encoder's history
// buffer small.
const windowSize = 1 << 20

// maxInFlight bounds the chunks being compressed at once, and so the raw
// bytes a Builder holds: (maxInFlight + 1) * ChunkSize (a batch that stays
// under smallChunk holds only what it holds).
var maxInFlight = min(max(runtime.GOMAXPROCS(0), 2), 4)

// encoders holds one EncodeAll encoder per level, shared by all Builders;
// EncodeAll is safe for concurrent use.
var encoders sync.Map // zstd.EncoderLevel -> *zstd.Encoder

func encoderFor(zl zstd.EncoderLevel) (*zstd.Encoder, error) {
	if e, ok := encoders.Load(zl); ok {
		return e.(*zstd.Encoder), nil
	}
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zl),
		zstd.WithEncoderConcurrency(maxInFlight),
		zstd.WithEncoderCRC(true),
		zstd.WithWindowSize(windowSize))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	actual, _ := encoders.LoadOrStore(zl, e)
	return actual.(*zstd.Encoder), nil
}

// freeList keeps up to cap(c) buffers of at least size bytes for reuse.
// Unlike a sync.Pool, which the garbage collector empties (every few
// seals under ship's memory limit), it keeps them for the life of the
// process: a buffer made anew is fresh memory, zeroed and faulted in
// page by page, and the scavenger gave the pages of the dropped one back
// to the operating system. Shipping 1 GiB of log lines remade 106 MB of
// chunk buffers that way.
type freeList struct {
	c    chan *[]byte
	size int
}

func newFreeList(n, size int) *freeList {
	return &freeList{c: make(chan *[]byte, n), size: size}
}

func (l *freeList) get() *[]byte {
	b, _ := l.take()
	return b
}

// take is get, also saying whether the buffer was made anew.
func (l *freeList) take() (*[]byte, bool) {
	select {
	case b := <-l.c:
		return b, false
	default:
		b := make([]byte, 0, l.size)
		return &b, true
	}
}

// put keeps b, emptied, unless the list is full.
func (l *freeList) put(b *[]byte) {
	*b = (*b)[:0]
	select {
	case l.c <- b:
	default: // enough kept; this one goes to the GC
	}
}

// rawPool recycles full-size chunk buffers: as many as one Builder
// compresses at once and fills.
var rawPool = newFreeList(2*maxInFlight+2, ChunkSize+64<<10)

// smallChunk is how far a Builder's chunk buffer grows on its own before
// it trades it for a full-size one from rawPool. A batch that stays small
// (one of many quiet streams, issue 23) holds what it holds, not a chunk:
// 100 open batches of a few KiB each held 2 MiB each before.
const smallChunk = 64 << 10

// pooledRaw says whether a chunk buffer belongs in rawPool: full-size,
// and not a huge record's.
func pooledRaw(b *[]byte) bool { return cap(*b) >= ChunkSize && cap(*b) <= 2*ChunkSize }

// outPool recycles the buffers chunks are compressed into: a segment's go
// back once Seal has copied them into the segment, or Reset dropped them.
// Compressing into a fresh nil slice instead grows it several times over.
// A 16 MiB segment has 8 chunks.
var outPool = newFreeList(16, ChunkSize/4)

func putOut(b *[]byte) {
	if b != nil && cap(*b) <= 2*ChunkSize { // a huge record's buffer is left to the GC
		outPool.put(b)
	}
}

// chunk is one frame's worth of records, compressed in the background.
type chunk struct {
	raw  *[]byte
	out  *[]byte // from outPool
	done chan struct{}
	// fresh says out is memory just allocated: new from outPool, or
	// regrown by the encoder (see Builder.PiecesFresh).
	fresh bool
}

// encodeOut compresses raw into a buffer from outPool and says whether
// that buffer is fresh memory (new, or regrown to fit).
func encodeOut(enc *zstd.Encoder, raw []byte) (*[]byte, bool) {
	out, fresh := outPool.take()
	c := cap(*out)
	*out = enc.EncodeAll(raw, (*out)[:0])
	return out, fresh || cap(*out) != c
}

// Builder accumulates records into one segment. Records are framed into a
// chunk buffer; each full chunk is compressed into its own zstd frame on a
// background goroutine while the next fills, so only compressed bytes and
// a few chunks of raw records are held in memory. A Builder is not safe
// for concurrent use. Reuse it across segments with Reset.
type Builder struct {
	enc    *zstd.Encoder
	raw    *[]byte  // the chunk being filled
	chunks []*chunk // submitted, in order
	// lastOut is the sealed segment's final chunk, which Seal compressed
	// itself (from outPool, like the chunks' outs).
	lastOut *[]byte
	fresh   bool // PiecesFresh
	meta    Meta
	crypt   Encrypter // nil: plaintext
	signer  Signer    // nil: unsigned
	hash    string    // the sealed segment's Hash
	err     error
	format  int   // of the segments it builds (FormatVersion unless SetFormat)
	prev    int64 // format 2: the time of the last record added
	framed  int64 // the records' FramedSize, which Size reports
	// last is how many raw bytes the last segment's final chunk held:
	// the size the next segment's chunk buffer starts at (see reserve).
	last int
}

// NewBuilder returns a Builder compressing at level l.
func NewBuilder(l Level) (*Builder, error) {
	zl, err := l.zstd()
	if err != nil {
		return nil, err
	}
	enc, err := encoderFor(zl)
	if err != nil {
		return nil, err
	}
	return &Builder{enc: enc, format: FormatVersion}, nil
}

// SetFormat makes the Builder write segments of format f (1 or 2) from
// its next Reset on: format 1 for readers older than format 2.
func (b *Builder) SetFormat(f int) error {
	if f < 1 || f > FormatVersion {
		return fmt.Errorf("segment format %d: this ferry writes 1 or %d", f, FormatVersion)
	}
	b.format = f
	return nil
}

// Reset starts a new, empty segment of stream in generation gen whose
// predecessor has hash prev (ZeroHash for the first segment; "" when not
// known yet, see SetPrev).
func (b *Builder) Reset(stream string, gen uint32, prev string) {
	b.release()
	b.err = nil
	b.hash = ""
	b.prev, b.framed = 0, 0
	b.meta = Meta{
		Format:      b.format,
		Stream:      stream,
		Generation:  gen,
		Compression: "zstd",
		Encryption:  "none",
		PrevSHA256:  prev,
	}
	if b.crypt != nil {
		b.meta.Encryption = b.crypt.Scheme()
		b.meta.Recipients = b.crypt.Recipients()
	}
}

// SetPrev sets the hash of the predecessor segment, replacing the one
// given to Reset. A caller that starts filling a Builder while the segment
// before it is still being sealed passes "" to Reset and calls SetPrev once
// that hash is known; Seal refuses a segment whose predecessor is not set.
func (b *Builder) SetPrev(prev string) { b.meta.PrevSHA256 = prev }

// SetSourceCursor records the source position after the segment's last
// record in its metadata (Meta.SourceCursor); nil leaves it out.
func (b *Builder) SetSourceCursor(c []byte) { b.meta.SourceCursor = c }

// release drops the chunks of the current segment, waiting for those
// still compressing so their buffers can be reused. A small chunk buffer
// stays with the Builder for its next segment (a quiet stream's every
// segment is one small chunk, issue 23): unless the segment used under a
// quarter of it, so that one busier segment does not leave a quiet
// stream holding more than it needs.
func (b *Builder) release() {
	n := len(b.chunks)
	for _, c := range b.chunks {
		<-c.done
	}
	b.releaseOuts()
	clear(b.chunks)
	b.chunks = b.chunks[:0]
	switch {
	case n > 0:
		b.last = ChunkSize // a busy segment
	case b.raw != nil && len(*b.raw) > 0:
		b.last = len(*b.raw)
	}
	if b.raw == nil {
		return
	}
	switch {
	case pooledRaw(b.raw):
		rawPool.put(b.raw)
		b.raw = nil
	case cap(*b.raw) > smallChunk || b.last < cap(*b.raw)/4:
		b.raw = nil // a huge record's, or more than the stream needs
	default:
		*b.raw = (*b.raw)[:0]
	}
}

// reserve makes room in the chunk buffer for n more bytes: a small buffer
// grows by doubling up to smallChunk, past it the bytes move to a
// full-size buffer from rawPool. The first buffer of a segment is sized
// for what the last segment's final chunk held, up to smallChunk: a
// stream whose segments stay small starts at their size (one allocation,
// not one per doubling), and a quiet segment after a busy one holds no
// full-size buffer until it needs one. A segment that has filled a chunk
// already is a busy one: its next chunk starts full-size (growing each
// one from 4 KiB made 128 KiB of garbage per 2 MiB chunk).
func (b *Builder) reserve(n int) {
	if b.raw == nil {
		b.raw = new([]byte)
	}
	have := len(*b.raw)
	if have+n <= cap(*b.raw) || cap(*b.raw) >= ChunkSize {
		return // room, or a full-size buffer (append grows it for a huge record)
	}
	var next *[]byte
	if have+n <= smallChunk && len(b.chunks) == 0 {
		c := max(2*cap(*b.raw), have+n, 4<<10)
		if cap(*b.raw) == 0 {
			c = max(c, b.last+b.last/8) // room for a little more than last time
		}
		buf := make([]byte, have, min(c, smallChunk))
		next = &buf
	} else {
		next = rawPool.get()
		*next = (*next)[:have]
	}
	copy(*next, *b.raw)
	b.raw = next
}

// Records is the number of records added since Reset.
func (b *Builder) Records() int { return int(b.meta.Records) }

// Size is the framed size (Record.FramedSize, what max_bytes measures) of
// the records added since Reset. In format 1 it is the size of the record
// stream; format 2 frames them in fewer bytes.
func (b *Builder) Size() int64 { return b.framed }

// FirstSeq is the sequence number of the first record added (0 if none).
func (b *Builder) FirstSeq() uint64 { return b.meta.FirstSeq }

// LastSeq is the sequence number of the last record added (0 if none).
func (b *Builder) LastSeq() uint64 { return b.meta.LastSeq }

// Add appends r. Its Seq must follow the previous record's (any value for
// the first record of a segment). Sizes must already be checked.
func (b *Builder) Add(r *Record) error {
	if b.err != nil {
		return b.err
	}
	if b.meta.Records > 0 && r.Seq != b.meta.LastSeq+1 {
		return fmt.Errorf("builder: record seq %d does not follow %d", r.Seq, b.meta.LastSeq)
	}
	if r.Seq == 0 {
		return fmt.Errorf("builder: record seq must be >= 1")
	}
	// Track the time as the frame stores it, so MinTime/MaxTime agree with
	// what the decoder reads: a zero Time is framed as 0 (the Unix epoch).
	t := time.Unix(0, timeNanos(r.Time)).UTC()
	if !r.Time.IsZero() && !t.Equal(r.Time) {
		return fmt.Errorf("builder: record %d time %s is outside the framing's range (years 1678-2262)", r.Seq, r.Time.Format(time.RFC3339))
	}
	if b.meta.Records == 0 {
		b.meta.FirstSeq = r.Seq
		b.meta.MinTime, b.meta.MaxTime = t, t
	}
	b.meta.LastSeq = r.Seq
	b.meta.Records++
	if t.Before(b.meta.MinTime) {
		b.meta.MinTime = t
	}
	if t.After(b.meta.MaxTime) {
		b.meta.MaxTime = t
	}
	fs := r.FramedSize()
	b.framed += int64(fs)
	b.reserve(fs)
	n := len(*b.raw)
	if b.meta.Format >= 2 {
		*b.raw = AppendFrame2(*b.raw, r, b.prev)
		b.prev = timeNanos(r.Time)
	} else {
		*b.raw = AppendFrame(*b.raw, r)
	}
	b.meta.UncompressedSize += int64(len(*b.raw) - n)
	if len(*b.raw) >= ChunkSize {
		b.submit()
	}
	return nil
}

// submit hands the filled chunk to a compressing goroutine, first waiting
// for the oldest one still running when maxInFlight are.
func (b *Builder) submit() {
	running := 0
	for _, c := range b.chunks {
		select {
		case <-c.done:
		default:
			running++
		}
	}
	for _, c := range b.chunks {
		if running < maxInFlight {
			break
		}
		select {
		case <-c.done:
		default:
			<-c.done
			running--
		}
	}
	c := &chunk{raw: b.raw, done: make(chan struct{})}
	b.raw = nil
	b.chunks = append(b.chunks, c)
	go func(enc *zstd.Encoder) {
		c.out, c.fresh = encodeOut(enc, *c.raw)
		if pooledRaw(c.raw) { // a small one, or a huge record's, is left to the GC
			rawPool.put(c.raw)
		}
		c.raw = nil
		close(c.done)
	}(b.enc)
}

// Seal finishes the segment and returns its bytes (a fresh slice owned by
// the caller) and metadata. sealedAt is recorded in the metadata. The
// Builder must be Reset before reuse.
func (b *Builder) Seal(sealedAt time.Time) ([]byte, Meta, error) {
	payload, err := b.sealPayload(sealedAt)
	if err != nil {
		return nil, Meta{}, err
	}
	data, m, hash, err := assemble(b.meta, payload...)
	b.releaseOuts() // copied into data
	b.hash = hash
	return data, m, err
}

// SealPieces is Seal without the copy: it returns the segment as pieces
// whose concatenation is exactly what Seal returns (the metadata frame,
// then the payload's zstd frames, or its ciphertext), and sets Hash. The
// pieces are the Builder's buffers, reused from its next Reset on: the
// caller writes them out (a spool's seal) before that and keeps none.
// Assembling a 16 MiB segment's 2-3 MB into one fresh slice cost a copy,
// and fresh memory that the garbage collector and the kernel's first
// touch of each page charged for again on every seal.
func (b *Builder) SealPieces(sealedAt time.Time) ([][]byte, Meta, error) {
	payload, err := b.sealPayload(sealedAt)
	if err != nil {
		return nil, Meta{}, err
	}
	head, err := metaFrame(&b.meta)
	if err != nil {
		return nil, Meta{}, err
	}
	h := sha256.New()
	h.Write(head)
	pieces := make([][]byte, 0, len(payload)+1)
	pieces = append(pieces, head)
	for _, p := range payload {
		h.Write(p)
		pieces = append(pieces, p)
	}
	b.hash = hex.EncodeToString(h.Sum(nil))
	return pieces, b.meta, nil
}

// PiecesFresh says whether any of the pieces the last SealPieces returned
// is memory the process has just allocated (a new or regrown buffer, a
// ciphertext): a writer should copy such pieces through a long-lived
// buffer (fsutil.WriteBounced), because the kernel's first touch of fresh
// pages costs far more than the copy. The Builder's chunk buffers are
// otherwise reused from segment to segment, so they go to write(2) as
// they are.
func (b *Builder) PiecesFresh() bool { return b.fresh }

// sealPayload finishes the segment's payload: it compresses the last
// chunk, waits for the others, encrypts, and fills in the metadata's
// payload fields and signature. The payload's pieces are the Builder's
// (releaseOuts or Reset give them back). Afterwards the Builder refuses
// records until Reset.
func (b *Builder) sealPayload(sealedAt time.Time) ([][]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	if b.meta.Records == 0 {
		return nil, errors.New("builder: seal of an empty segment")
	}
	if b.meta.PrevSHA256 == "" {
		return nil, errors.New("builder: predecessor hash not set (Reset or SetPrev)")
	}
	// The last chunk is compressed here, not on a goroutine of its own:
	// Seal would only wait for it, and a quiet stream's segment is one
	// small chunk, whose goroutine cost as much as compressing it. Its
	// raw buffer stays with the Builder (release).
	b.fresh = false
	if b.raw != nil && len(*b.raw) > 0 {
		b.lastOut, b.fresh = encodeOut(b.enc, *b.raw)
	}
	payload := make([][]byte, len(b.chunks), len(b.chunks)+1)
	for i, c := range b.chunks {
		<-c.done
		payload[i] = *c.out
		b.fresh = b.fresh || c.fresh
	}
	if b.lastOut != nil {
		payload = append(payload, *b.lastOut)
	}
	if b.meta.Encrypted() {
		// Compress, then encrypt: the payload is the ciphertext.
		if b.crypt == nil || b.crypt.Scheme() != b.meta.Encryption {
			return nil, errors.New("builder: encrypter changed since Reset")
		}
		ct, err := b.crypt.Encrypt(nil, payload)
		if err != nil {
			return nil, fmt.Errorf("encrypt segment: %w", err)
		}
		payload = [][]byte{ct}
		b.fresh = true
	}
	h := sha256.New()
	var size int64
	for _, p := range payload {
		h.Write(p)
		size += int64(len(p))
	}
	b.meta.PayloadSHA256 = hex.EncodeToString(h.Sum(nil))
	b.meta.PayloadSize = size
	b.meta.SealedAt = sealedAt.UTC()
	b.meta.Signature = ""
	if b.signer != nil {
		sig, err := b.signer.Sign(SignedBytes(&b.meta))
		if err != nil {
			return nil, fmt.Errorf("sign segment: %w", err)
		}
		b.meta.Signature = sig
	}
	b.err = errors.New("builder: sealed; Reset before reuse")
	return payload, nil
}

// releaseOuts gives the compressed chunks of a sealed segment back to
// outPool once nothing refers to them any more.
func (b *Builder) releaseOuts() {
	for _, c := range b.chunks {
		putOut(c.out)
		c.out = nil
	}
	putOut(b.lastOut)
	b.lastOut = nil
}

// Hash is the SHA-256 of the segment the last successful Seal returned,
// hex-encoded: what batch.Hash of its bytes gives, computed while Seal
// copied them, so a sealer need not read the segment again for the
// stream's hash chain. It is "" after Reset.
func (b *Builder) Hash() string { return b.hash }

// Assemble prefixes payload with the metadata frame for m. It is exported
// for tools that re-wrap payloads (and for tests that forge segments).
func Assemble(m Meta, payload []byte) ([]byte, Meta, error) {
	out, m, _, err := assemble(m, payload)
	return out, m, err
}

// assemble returns the segment of metadata m and payload, and its Hash.
// Each piece is hashed right after it is copied, while it is still in the
// CPU cache: the copy and the hash are one pass over memory.
func assemble(m Meta, payload ...[]byte) ([]byte, Meta, string, error) {
	head, err := metaFrame(&m)
	if err != nil {
		return nil, Meta{}, "", err
	}
	size := len(head)
	for _, p := range payload {
		size += len(p)
	}
	out := make([]byte, 0, size)
	out = append(out, head...)
	h := sha256.New()
	h.Write(out)
	for _, p := range payload {
		// In pieces of at most 256 KiB, hashed as soon as copied.
		for len(p) > 0 {
			n := min(len(p), 256<<10)
			out = append(out, p[:n]...)
			h.Write(p[:n])
			p = p[n:]
		}
	}
	return out, m, hex.EncodeToString(h.Sum(nil)), nil
}

// metaFrame is the skippable frame holding m that starts a segment.
func metaFrame(m *Meta) ([]byte, error) {
	js, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode segment metadata: %w", err)
	}
	frameLen := len(metaTag) + len(js)
	if frameLen > MaxMetaSize {
		return nil, fmt.Errorf("segment metadata is %d bytes, limit %d", frameLen, MaxMetaSize)
	}
	out := make([]byte, 0, 8+frameLen)
	out = binary.LittleEndian.AppendUint32(out, MetaFrameMagic)
	out = binary.LittleEndian.AppendUint32(out, uint32(frameLen))
	out = append(out, metaTag...)
	return append(out, js...), nil
}

// ParseMeta decodes the metadata frame at the front of a segment and returns
// it with the offset where the payload starts. It checks framing only, not
// the payload; use Open for that.
func ParseMeta(data []byte) (Meta, int, error) {
	var m Meta
	if len(data) < 8 {
		return m, 0, fmt.Errorf("segment is %d bytes, shorter than its header: %w", len(data), ErrCorrupt)
	}
	if magic := binary.LittleEndian.Uint32(data); magic != MetaFrameMagic {
		return m, 0, fmt.Errorf("segment starts with %#08x, not ferry's metadata frame %#08x: %w", magic, MetaFrameMagic, ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(data[4:])
	if n < uint32(len(metaTag)) || n > MaxMetaSize {
		return m, 0, fmt.Errorf("metadata frame size %d out of range: %w", n, ErrCorrupt)
	}
	if uint64(len(data)-8) < uint64(n) {
		return m, 0, fmt.Errorf("metadata frame truncated: %w", ErrCorrupt)
	}
	frame := data[8 : 8+n]
	if string(frame[:len(metaTag)]) != metaTag {
		return m, 0, fmt.Errorf("metadata frame lacks the %s tag: %w", metaTag, ErrCorrupt)
	}
	if err := json.Unmarshal(frame[len(metaTag):], &m); err != nil {
		return m, 0, fmt.Errorf("metadata: %v: %w", err, ErrCorrupt)
	}
	if m.Format < 1 {
		return m, 0, fmt.Errorf("metadata format %d invalid: %w", m.Format, ErrCorrupt)
	}
	if m.Format > FormatVersion {
		// Format 1 readers say this too: "segment format 2 is newer than
		// this ferry reads (1); upgrade ferry".
		return m, 0, newerFormat("segment", m.Format, FormatVersion)
	}
	if m.Records == 0 || m.FirstSeq == 0 || m.LastSeq < m.FirstSeq || m.LastSeq-m.FirstSeq+1 != m.Records {
		return m, 0, fmt.Errorf("metadata seq range %d..%d does not match %d records: %w", m.FirstSeq, m.LastSeq, m.Records, ErrCorrupt)
	}
	if len(m.Recipients) > MaxRecipients {
		return m, 0, fmt.Errorf("metadata lists %d recipients, more than %d: %w", len(m.Recipients), MaxRecipients, ErrCorrupt)
	}
	if len(m.Signature) > MaxSignatureSize {
		return m, 0, fmt.Errorf("metadata signature is %d bytes, more than %d: %w", len(m.Signature), MaxSignatureSize, ErrCorrupt)
	}
	if m.UncompressedSize < 0 || m.PayloadSize < 0 {
		return m, 0, fmt.Errorf("metadata sizes negative: %w", ErrCorrupt)
	}
	return m, int(8 + n), nil
}

// Segment is a parsed segment whose payload checksum has been verified.
type Segment struct {
	Meta    Meta
	Hash    string // SHA-256 of the whole segment
	Payload []byte // the bytes after the metadata frame (aliases the input); after Decrypt, the compressed plaintext
	// decrypted says Payload holds the plaintext of an encrypted payload.
	decrypted bool
}

// Open parses a complete segment and verifies its payload size and
// checksum. Any damage yields an error wrapping ErrCorrupt.
func Open(data []byte) (*Segment, error) {
	s, err := OpenPayload(data)
	if err != nil {
		return nil, err
	}
	s.Hash = Hash(data)
	return s, nil
}

// OpenPayload is Open without the segment's own hash, which only a reader
// that follows the hash chain needs: the Segment's Hash is "". It makes
// every check Open makes, and hashes the segment's bytes once where Open
// hashes the payload twice (its checksum, and within the whole segment).
func OpenPayload(data []byte) (*Segment, error) {
	m, off, err := ParseMeta(data)
	if err != nil {
		return nil, err
	}
	payload := data[off:]
	if int64(len(payload)) != m.PayloadSize {
		return nil, fmt.Errorf("payload is %d bytes, metadata says %d (truncated or extended): %w", len(payload), m.PayloadSize, ErrCorrupt)
	}
	sum := sha256.Sum256(payload)
	if got := hex.EncodeToString(sum[:]); got != m.PayloadSHA256 {
		return nil, fmt.Errorf("payload sha256 %s does not match metadata %s: %w", got[:16], short(m.PayloadSHA256), ErrCorrupt)
	}
	return &Segment{Meta: m, Payload: payload}, nil
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

var decoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(DefaultMaxUncompressed),
		zstd.WithDecoderMaxWindow(MaxWindowSize))
	if err != nil {
		panic(err) // only fails on invalid options
	}
	return d
}}

// checkClaim checks what a decompression of s needs before it starts: a
// payload this ferry can read, and an uncompressed size claim within limit
// (DefaultMaxUncompressed if limit <= 0). It returns the claim.
func (s *Segment) checkClaim(limit int64) (int64, error) {
	if limit <= 0 {
		limit = DefaultMaxUncompressed
	}
	if s.Meta.Encrypted() && !s.decrypted {
		if err := s.Meta.canDecrypt(nil); err != nil {
			return 0, err
		}
	}
	if s.Meta.Compression != "zstd" {
		return 0, fmt.Errorf("unknown compression %q: %w", s.Meta.Compression, ErrCorrupt)
	}
	if claimed := s.Meta.UncompressedSize; claimed > limit {
		return 0, fmt.Errorf("claims %d uncompressed bytes (%s), over the limit of %d (%s): %w",
			claimed, sizeString(claimed), limit, sizeString(limit), ErrSegmentTooLarge)
	}
	// Format 2 frames a record in as little as one byte. The limit also
	// holds its records to what they would take framed in format 1 (a
	// shipper's max_bytes measures that), so that what reading them
	// holds besides the stream (IndexNeed) stays what it was.
	if n := s.Meta.Records; s.Meta.Format >= 2 && n > uint64(limit/RecordOverhead) {
		return 0, fmt.Errorf("claims %d records, at least %d bytes framed, over the limit of %d (%s): %w",
			n, n*RecordOverhead, limit, sizeString(limit), ErrSegmentTooLarge)
	}
	return s.Meta.UncompressedSize, nil
}

// Decompress returns the record stream of s, refusing a claim over limit
// bytes (DefaultMaxUncompressed if limit <= 0) and anything other than
// exactly the size the metadata claims. The claim is allocated once, up
// front: a payload that decompresses to more is refused, not made room for.
func (s *Segment) Decompress(limit int64) ([]byte, error) {
	claimed, err := s.checkClaim(limit)
	if err != nil {
		return nil, err
	}
	return s.decompressStream(nil, claimed)
}

// Records decompresses s and decodes every record, checking that they are
// exactly FirstSeq..LastSeq in order and within MinTime..MaxTime. Records
// alias one buffer owned by the caller.
func (s *Segment) Records(limit int64) (Records, error) {
	raw, err := s.Decompress(limit)
	if err != nil {
		return Records{}, err
	}
	return s.ParseRecords(raw, Records{})
}

// Decode is Open followed by Records: the whole verification of one
// segment file, holding its records in memory. Scan verifies a segment
// without holding them.
func Decode(data []byte, limit int64) (*Segment, Records, error) {
	s, err := Open(data)
	if err != nil {
		return nil, Records{}, err
	}
	recs, err := s.Records(limit)
	if err != nil {
		return s, Records{}, err
	}
	return s, recs, nil
}

// sizeString is n in the largest binary unit that keeps it >= 1.
func sizeString(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/1024, 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[u])
}
