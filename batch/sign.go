package batch

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Segment signatures. batch owns the format: the metadata field that
// holds a signature and the exact bytes it signs (SignedBytes); the keys
// and the algorithm (ed25519) are package batch/sign's. The signature
// lives in the metadata frame and covers every other metadata field,
// payload_sha256 and prev_sha256 included, so it vouches for the payload
// and, through the chain, for every segment before it. The chain hash of
// a segment is of the whole file, signature included; the signature never
// covers its own segment's hash, so nothing is circular
// (docs/FORMAT.md, "Signatures").

// MaxSignatureSize caps Meta.Signature, checked before anything decodes
// it: an ed25519 signature field is 141 bytes.
const MaxSignatureSize = 256

// ErrSignature marks a segment refused by its signature: unsigned,
// signed by a key the reader does not trust, or whose signature does not
// match its metadata. Reading it again gives the same answer.
var ErrSignature = errors.New("segment signature refused")

// A Signer signs segments as a Builder seals them. It must be safe for
// concurrent use.
type Signer interface {
	// Sign returns the Meta.Signature value for msg, the SignedBytes of
	// the segment's metadata.
	Sign(msg []byte) (string, error)
}

// A Verifier decides whether a reader accepts a segment by its
// signature. It must be safe for concurrent use.
type Verifier interface {
	// Verify checks m.Signature against SignedBytes(m). An error wraps
	// ErrSignature and names the segment, the key that signed it (if
	// any) and the keys the verifier trusts.
	Verify(m *Meta) error
}

// SetSigner makes the Builder sign every segment it seals (nil: none).
func (b *Builder) SetSigner(s Signer) { b.signer = s }

// signatureDomain starts the signed bytes, so that a signature over a
// segment can never be taken for a signature over anything else.
const signatureDomain = "ferry-segment-signature-v1\n"

// SignedBytes is what a segment's signature signs: every metadata field
// of format 1 but the signature, in the order of the JSON, one per line,
// as "name value\n". Integers are decimal; strings and byte strings are
// their length in bytes, a colon, then the bytes ("6:orders"); times are
// Unix seconds, a dot and nine digits of nanoseconds; recipients is the
// count followed by each fingerprint as a string, space-separated. Every
// value is length-delimited or a number, so two different metadata give
// two different byte strings. docs/FORMAT.md pins it with an example.
func SignedBytes(m *Meta) []byte {
	b := make([]byte, 0, 512+len(m.SourceCursor))
	b = append(b, signatureDomain...)
	num := func(name string, v uint64) {
		b = append(b, name...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, v, 10)
		b = append(b, '\n')
	}
	inum := func(name string, v int64) {
		b = append(b, name...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, v, 10)
		b = append(b, '\n')
	}
	str := func(s string) {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	field := func(name, s string) {
		b = append(b, name...)
		b = append(b, ' ')
		str(s)
		b = append(b, '\n')
	}
	tm := func(name string, t time.Time) {
		b = append(b, name...)
		b = append(b, ' ')
		b = strconv.AppendInt(b, t.Unix(), 10)
		b = fmt.Appendf(b, ".%09d\n", t.Nanosecond())
	}
	inum("format", int64(m.Format))
	field("stream", m.Stream)
	num("generation", uint64(m.Generation))
	num("first_seq", m.FirstSeq)
	num("last_seq", m.LastSeq)
	num("records", m.Records)
	tm("min_time", m.MinTime)
	tm("max_time", m.MaxTime)
	inum("uncompressed_size", m.UncompressedSize)
	inum("payload_size", m.PayloadSize)
	field("compression", m.Compression)
	field("encryption", m.Encryption)
	b = append(b, "recipients "...)
	b = strconv.AppendInt(b, int64(len(m.Recipients)), 10)
	for _, r := range m.Recipients {
		b = append(b, ' ')
		str(r)
	}
	b = append(b, '\n')
	field("payload_sha256", m.PayloadSHA256)
	field("prev_sha256", m.PrevSHA256)
	tm("sealed_at", m.SealedAt)
	field("source_cursor", string(m.SourceCursor))
	return b
}

// Signed reports whether m carries a signature (checked or not).
func (m *Meta) Signed() bool { return m.Signature != "" }
