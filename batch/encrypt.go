package batch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Payload encryption. batch owns the format (which metadata fields say
// what, where the ciphertext sits, what the hashes cover) and leaves the
// cipher to a package implementing Encrypter and Decrypter
// (batch/crypt, with age). The payload is compressed first, then
// encrypted; payload_size and payload_sha256 describe the ciphertext, so
// a segment's checksum and the stream's hash chain stay checkable by
// anyone holding the segments, without a key.

// EncryptionAge is Meta.Encryption of a payload that is one age file
// (age-encryption.org/v1) whose plaintext is the zstd payload.
const EncryptionAge = "age"

// MaxRecipients caps the recipients one segment may be encrypted for: the
// fingerprints in its metadata and the stanzas of its age header. A
// reader refuses more before it unwraps anything.
const MaxRecipients = 64

// ErrNoKey marks a segment that cannot be decrypted with the identities a
// reader holds (or holds none). Reading it again gives the same answer.
var ErrNoKey = errors.New("no identity for this segment")

// An Encrypter encrypts a segment's compressed payload for a fixed set of
// recipients. It must be safe for concurrent use.
type Encrypter interface {
	// Scheme is the Meta.Encryption it writes (EncryptionAge).
	Scheme() string
	// Recipients are the fingerprints of the keys it encrypts for, as
	// Meta.Recipients lists them (at most MaxRecipients).
	Recipients() []string
	// Encrypt appends to dst the ciphertext of the concatenation of
	// plain, under a fresh file key.
	Encrypt(dst []byte, plain [][]byte) ([]byte, error)
}

// A Decrypter turns an encrypted payload back into the compressed one.
// It must be safe for concurrent use.
type Decrypter interface {
	// Decrypt returns the plaintext of the payload read from ct, a
	// segment with metadata m. An error wrapping ErrNoKey says none of
	// its identities opens the segment; damage or forgery of the
	// ciphertext is found as the returned reader is read and wraps
	// ErrCorrupt.
	Decrypt(m *Meta, ct io.Reader) (io.Reader, error)
}

// An InPlaceDecrypter is a Decrypter that can also decrypt a payload
// held whole over its own memory, on several goroutines at once
// (Segment.DecryptInPlace).
type InPlaceDecrypter interface {
	Decrypter
	// DecryptInPlace decrypts ct, the whole payload of the segment m,
	// on up to workers goroutines, writing the plaintext over ct's
	// memory, and returns it (a prefix of ct). Its errors are Decrypt's
	// and those of reading Decrypt's reader. ct holds neither the
	// ciphertext nor the plaintext after an error other than one
	// wrapping ErrNoKey, which comes before anything is written.
	DecryptInPlace(m *Meta, ct []byte, workers int) ([]byte, error)
}

// Encrypted reports whether m's payload is encrypted.
func (m *Meta) Encrypted() bool { return m.Encryption != "" && m.Encryption != "none" }

// EncryptionState is a one-word description of the payload's protection
// for listings: "none", or the scheme followed by the recipients'
// fingerprints.
func (m *Meta) EncryptionState() string {
	if !m.Encrypted() {
		return "none"
	}
	if len(m.Recipients) == 0 {
		return m.Encryption
	}
	return m.Encryption + ":" + strings.Join(m.Recipients, ",")
}

// SetEncrypter makes the Builder encrypt every segment it seals from the
// next Reset on (nil: plaintext). A Builder encrypts a whole segment or
// none of it.
func (b *Builder) SetEncrypter(e Encrypter) { b.crypt = e }

// Decrypt replaces s.Payload, if it is encrypted, by the compressed
// payload d decrypts it to, for Decompress, Records and Scan. s.Hash and
// s.Meta keep describing the segment as stored. A nil d fails on an
// encrypted payload with an error wrapping ErrNoKey, naming the segment
// and the keys it is encrypted for. A plaintext segment is left as it is.
func (s *Segment) Decrypt(d Decrypter) error {
	if !s.Meta.Encrypted() || s.decrypted {
		return nil
	}
	if err := s.Meta.canDecrypt(d); err != nil {
		return err
	}
	rd, err := d.Decrypt(&s.Meta, bytes.NewReader(s.Payload))
	if err != nil {
		return err
	}
	// The plaintext is shorter than the ciphertext: one allocation.
	plain := bytes.NewBuffer(make([]byte, 0, len(s.Payload)))
	if _, err := io.Copy(plain, io.LimitReader(rd, int64(len(s.Payload))+1)); err != nil {
		return decryptError(&s.Meta, err)
	}
	if plain.Len() > len(s.Payload) {
		return fmt.Errorf("segment %s: decrypted payload longer than its ciphertext: %w", s.Meta.label(), ErrCorrupt)
	}
	s.Payload, s.decrypted = plain.Bytes(), true
	return nil
}

// DecryptInPlace is Decrypt for a reader that owns s.Payload's memory
// and needs only the records: if d is an InPlaceDecrypter, the plaintext
// is written over the ciphertext on up to workers goroutines, without
// memory of its own. The stored bytes are gone after it, failed or not
// (unless for ErrNoKey); s.Hash and s.Meta still describe them. Any other
// d decrypts as Decrypt does.
func (s *Segment) DecryptInPlace(d Decrypter, workers int) error {
	ip, ok := d.(InPlaceDecrypter)
	if !ok || !s.Meta.Encrypted() || s.decrypted {
		return s.Decrypt(d)
	}
	if err := s.Meta.canDecrypt(d); err != nil {
		return err
	}
	plain, err := ip.DecryptInPlace(&s.Meta, s.Payload, max(workers, 1))
	if err != nil {
		return decryptError(&s.Meta, err)
	}
	s.Payload, s.decrypted = plain, true
	return nil
}

// canDecrypt says whether a reader with d can try to decrypt m's payload.
func (m *Meta) canDecrypt(d Decrypter) error {
	if m.Encryption != EncryptionAge {
		return fmt.Errorf("segment %s: payload is encrypted (%s); this ferry cannot decrypt it", m.label(), m.Encryption)
	}
	if d == nil {
		return fmt.Errorf("segment %s is encrypted with age for key %s and no identity is configured "+
			"([encryption] identity_file or FERRY_AGE_IDENTITY_FILE): %w", m.label(), m.recipientList(), ErrNoKey)
	}
	return nil
}

// decryptError is the error of reading a decrypting reader: damage
// unless it already says what it is.
func decryptError(m *Meta, err error) error {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNoKey) {
		return err
	}
	return fmt.Errorf("segment %s: decrypt: %v: %w", m.label(), err, ErrCorrupt)
}

// label names the segment in errors: stream/name.
func (m *Meta) label() string { return m.Stream + "/" + m.Name() }

func (m *Meta) recipientList() string {
	if len(m.Recipients) == 0 {
		return "(none listed)"
	}
	return strings.Join(m.Recipients, ", ")
}

// decryptingReader wraps rd, the ciphertext of m, with d's decryption.
func decryptingReader(m *Meta, d Decrypter, rd io.Reader) (io.Reader, error) {
	if err := m.canDecrypt(d); err != nil {
		return nil, err
	}
	return d.Decrypt(m, rd)
}
