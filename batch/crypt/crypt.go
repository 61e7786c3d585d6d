// Package crypt encrypts and decrypts segment payloads with age
// (filippo.io/age, age-encryption.org/v1) for package batch.
//
// An encrypted payload is one ordinary age file, X25519 recipients only:
// the header (one stanza per recipient wrapping a fresh 16-byte file key,
// and its MAC), a 16-byte nonce, then the zstd payload in 64 KiB
// ChaCha20-Poly1305 chunks. The stock age CLI decrypts it
// (docs/FORMAT.md, "Encryption"). A shipper holds only public keys
// (recipients) and cannot read what it wrote; readers hold identities.
//
// A recipient's fingerprint, which segment metadata lists, is the first 16
// hex digits of the SHA-256 of its "age1..." string: it says which key a
// segment needs without storing the key.
package crypt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch"
)

// MaxHeaderSize caps an age header a reader parses (batch.MaxHeaderSize).
const MaxHeaderSize = batch.MaxHeaderSize

// Fingerprint is the fingerprint of the recipient "age1..." string r.
func Fingerprint(r string) string {
	h := sha256.Sum256([]byte(r))
	return hex.EncodeToString(h[:8])
}

// Encrypter encrypts payloads for a fixed set of X25519 recipients. It is
// a batch.Encrypter.
type Encrypter struct {
	recipients []age.Recipient
	fps        []string
}

var _ batch.Encrypter = (*Encrypter)(nil)

// NewEncrypter returns an Encrypter for the "age1..." public keys keys
// (at least one, at most batch.MaxRecipients, no duplicates). Errors name
// the key by its position, as a key is a public value but a pasted secret
// key must not reach a log.
func NewEncrypter(keys []string) (*Encrypter, error) {
	if len(keys) == 0 {
		return nil, errors.New("no age recipients")
	}
	if len(keys) > batch.MaxRecipients {
		return nil, fmt.Errorf("%d age recipients, at most %d", len(keys), batch.MaxRecipients)
	}
	e := &Encrypter{}
	for i, k := range keys {
		k = strings.TrimSpace(k)
		if strings.HasPrefix(strings.ToUpper(k), "AGE-SECRET-KEY") {
			return nil, fmt.Errorf("recipient %d is an age secret key, not a public key: a shipper needs only public keys (age1...); remove it and keep it away from the shipper", i+1)
		}
		r, err := age.ParseX25519Recipient(k)
		if err != nil {
			return nil, fmt.Errorf("recipient %d: not an X25519 age public key (age1...): %v", i+1, err)
		}
		fp := Fingerprint(r.String())
		if slices.Contains(e.fps, fp) {
			return nil, fmt.Errorf("recipient %d (%s) is listed twice", i+1, fp)
		}
		e.recipients = append(e.recipients, r)
		e.fps = append(e.fps, fp)
	}
	return e, nil
}

// Scheme is batch.EncryptionAge.
func (e *Encrypter) Scheme() string { return batch.EncryptionAge }

// Recipients are the recipients' fingerprints, in the order given.
func (e *Encrypter) Recipients() []string { return slices.Clone(e.fps) }

// Encrypt appends the age file of the concatenation of plain to dst, under
// a fresh file key wrapped for every recipient.
func (e *Encrypter) Encrypt(dst []byte, plain [][]byte) ([]byte, error) {
	n := 0
	for _, p := range plain {
		n += len(p)
	}
	// age adds its header, a nonce and 16 bytes per 64 KiB chunk.
	buf := bytes.NewBuffer(slices.Grow(dst, n+n/(64<<10)*16+512+len(e.recipients)*128))
	w, err := age.Encrypt(buf, e.recipients...)
	if err != nil {
		return dst, err
	}
	for _, p := range plain {
		if _, err := w.Write(p); err != nil {
			return dst, err
		}
	}
	if err := w.Close(); err != nil {
		return dst, err
	}
	return buf.Bytes(), nil
}

// Keyring holds the identities a reader decrypts with. It is a
// batch.Decrypter.
type Keyring struct {
	ids  []age.Identity
	fps  []string // of the identities' recipients
	file string   // where they came from, for errors
	// lookup finds a segment's header of a key epoch (nil: none).
	lookup batch.KeyHeaderLookup
}

var _ batch.Decrypter = (*Keyring)(nil)

// LoadIdentities reads an age identity file (AGE-SECRET-KEY-1... lines,
// # comments; several keys for a reader that keeps old ones to read old
// segments). Errors name the file and never quote a key.
func LoadIdentities(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity file: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("age identity file %s: %v", path, err)
	}
	k := &Keyring{ids: ids, file: path}
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			k.fps = append(k.fps, Fingerprint(id.Recipient().String()))
		default:
			return nil, fmt.Errorf("age identity file %s: only X25519 identities (AGE-SECRET-KEY-1...) are supported", path)
		}
	}
	return k, nil
}

// Fingerprints are those of the identities' public keys.
func (k *Keyring) Fingerprints() []string { return slices.Clone(k.fps) }

// Decrypt checks the age header of ct against MaxHeaderSize and
// batch.MaxRecipients before age parses it, unwraps the file key with
// one of k's identities and returns the plaintext reader. No matching
// identity is an error wrapping batch.ErrNoKey naming the segment, the
// fingerprints it needs and those k holds. With a header lookup
// (WithHeaders), a header of the newest key epoch that has one for the
// segment replaces the embedded one.
func (k *Keyring) Decrypt(m *batch.Meta, ct io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(ct, MaxHeaderSize+64)
	head, _ := br.Peek(MaxHeaderSize + 64)
	n, err := CheckHeader(head)
	if err != nil {
		return nil, fmt.Errorf("segment %s/%s: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	embedded := bytes.Clone(head[:n]) // head is br's buffer, which reading refills
	fileKey, hdr, h, err := k.unwrap(m, embedded)
	if err != nil {
		return nil, err
	}
	if _, err := br.Discard(len(embedded)); err != nil {
		return nil, fmt.Errorf("segment %s/%s: age: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	rd, err := age.Decrypt(io.MultiReader(bytes.NewReader(hdr), br), age.NewInjectedFileKeyIdentity(fileKey))
	if err != nil {
		return nil, fmt.Errorf("segment %s/%s: age: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	if h == nil {
		return rd, nil
	}
	return &headerErrors{rd: rd, m: m, h: h}, nil
}

// WithHeaders returns a Keyring with k's identities that decrypts each
// segment with the header lookup finds for it, if any, instead of the
// header embedded in the segment.
func (k *Keyring) WithHeaders(lookup batch.KeyHeaderLookup) *Keyring {
	c := *k
	c.lookup = lookup
	return &c
}

// unwrap finds the header the segment m is decrypted with, that of the
// newest key epoch holding one (with a lookup) or else embedded, the
// header at the start of its payload, and unwraps its file key with k's
// identities. h is the key epoch header used, nil for the embedded one.
func (k *Keyring) unwrap(m *batch.Meta, embedded []byte) (fileKey, hdr []byte, h *batch.KeyHeader, err error) {
	if k.lookup == nil {
		fileKey, hdr, err = k.unwrapFrom(m, embedded, nil)
		return fileKey, hdr, nil, err
	}
	for fresh := false; ; fresh = true {
		h, err := k.lookup(m, fresh)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("segment %s/%s: key epochs: %w", m.Stream, m.Name(), err)
		}
		fileKey, hdr, err := k.unwrapFrom(m, embedded, h)
		// A rekey may have run since the epochs were listed: list them
		// again before saying no key opens the segment.
		if fresh || !errors.Is(err, batch.ErrNoKey) {
			return fileKey, hdr, h, err
		}
	}
}

// unwrapFrom unwraps the file key of the segment m from its key epoch
// header h or, if h is nil, from embedded, its own header, and returns it
// with the header it came from.
func (k *Keyring) unwrapFrom(m *batch.Meta, embedded []byte, h *batch.KeyHeader) (fileKey, hdr []byte, err error) {
	hdr, needs, from := embedded, m.Recipients, ""
	if h != nil {
		if n, err := CheckHeader(h.Data); err != nil || n != len(h.Data) {
			if err == nil {
				err = errors.New("bytes after the header")
			}
			return nil, nil, fmt.Errorf("segment %s/%s: key epoch header %s: %v: %w", m.Stream, m.Name(), h.Object, err, batch.ErrCorrupt)
		}
		hdr, needs = h.Data, h.Recipients
		from = fmt.Sprintf(" (rekeyed in key epoch %d, header %s)", h.Epoch, h.Object)
	}
	fileKey, err = age.DecryptHeader(hdr, k.ids...)
	var none *age.NoIdentityMatchError
	switch {
	case errors.As(err, &none):
		return nil, nil, fmt.Errorf("segment %s/%s is encrypted with age for key %s%s; identity file %s holds key %s, none of them: %w",
			m.Stream, m.Name(), list(needs), from, k.file, list(k.fps), batch.ErrNoKey)
	case err != nil && h != nil:
		return nil, nil, fmt.Errorf("segment %s/%s: key epoch header %s: age: %v: %w", m.Stream, m.Name(), h.Object, err, batch.ErrCorrupt)
	case err != nil:
		return nil, nil, fmt.Errorf("segment %s/%s: age: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	return fileKey, hdr, nil
}

// headerErrors names the key epoch header in the errors of reading a
// payload decrypted with the file key it holds: a header whose key does
// not decrypt its segment is damage or forgery of the header object.
type headerErrors struct {
	rd io.Reader
	m  *batch.Meta
	h  *batch.KeyHeader
}

func (e *headerErrors) Read(p []byte) (int, error) {
	n, err := e.rd.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("segment %s/%s: the file key of key epoch header %s does not decrypt the segment: %v: %w",
			e.m.Stream, e.m.Name(), e.h.Object, err, batch.ErrCorrupt)
	}
	return n, err
}

func list(fps []string) string {
	if len(fps) == 0 {
		return "(none listed)"
	}
	return strings.Join(fps, ", ")
}

// CheckHeader checks the start of an age file, p (the first MaxHeaderSize
// bytes or more, or the whole file if shorter), for a header that ends
// within MaxHeaderSize and has 1 to batch.MaxRecipients stanzas, and
// returns its length. It parses nothing else: age does, after it.
func CheckHeader(p []byte) (int, error) {
	const intro = "age-encryption.org/v1\n"
	if !bytes.HasPrefix(p, []byte(intro)) {
		return 0, errors.New("payload is not an age file (no age-encryption.org/v1 header)")
	}
	end := bytes.Index(p, []byte("\n--- "))
	if end < 0 || end > MaxHeaderSize {
		if len(p) < MaxHeaderSize {
			return 0, errors.New("age header is cut short")
		}
		return 0, fmt.Errorf("age header is over %d bytes", MaxHeaderSize)
	}
	nl := bytes.IndexByte(p[end+1:], '\n')
	if nl < 0 || end+1+nl+1 > MaxHeaderSize {
		return 0, errors.New("age header MAC line is cut short or too long")
	}
	stanzas := bytes.Count(p[len(intro)-1:end+1], []byte("\n-> "))
	if stanzas == 0 {
		return 0, errors.New("age header has no recipient stanza")
	}
	if stanzas > batch.MaxRecipients {
		return 0, fmt.Errorf("age header has %d recipient stanzas, more than %d", stanzas, batch.MaxRecipients)
	}
	return end + 1 + nl + 1, nil
}

// LoadRecipients returns the Encrypter for the public keys keys plus those
// in file (one "age1..." per line, # comments; "" for none). Errors name
// the file and line and never quote a line, which may be a pasted secret.
func LoadRecipients(keys []string, file string) (*Encrypter, error) {
	all := slices.Clone(keys)
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("age recipients file: %w", err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !strings.HasPrefix(line, "age1") {
				return nil, fmt.Errorf("age recipients file %s line %d: not an X25519 age public key (age1...)", file, i+1)
			}
			all = append(all, line)
		}
	}
	e, err := NewEncrypter(all)
	if err != nil && file != "" {
		return nil, fmt.Errorf("[encryption] recipients and %s: %w", file, err)
	}
	return e, err
}
