package crypt

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
	"github.com/ferry-dr/ferry/batch"
)

// Re-wrapping a file key (docs/FORMAT.md, "Rotation"). An age file's body
// (nonce and chunks) depends only on its file key; the header holds the
// file key wrapped for each recipient and a MAC keyed by it. A new header
// for the same file key, wrapped for other recipients, with its MAC
// computed as the age spec (C2SP age) says, followed by the old body, is
// an age file those recipients decrypt. age has no API that builds a
// header for a given file key, so Rewrap writes one (stanzas from the
// public Recipient.Wrap) and checks it with age's own parser and MAC
// check (age.DecryptHeader).

// Rewrap unwraps the file key of the segment m's payload ct, whose age
// header is hdr (the embedded one or a key epoch's), with k's identities,
// checks that it decrypts the whole payload, and returns a new header
// wrapping it for e's recipients. The payload ct is not changed: the new
// header followed by ct without its own header is the segment's age file
// for e's recipients. No identity of k opens hdr: an error wrapping
// batch.ErrNoKey.
func (k *Keyring) Rewrap(m *batch.Meta, hdr, ct []byte, e *Encrypter) ([]byte, error) {
	n, err := CheckHeader(ct)
	if err != nil {
		return nil, fmt.Errorf("segment %s/%s: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	fileKey, err := age.DecryptHeader(hdr, k.ids...)
	var none *age.NoIdentityMatchError
	switch {
	case errors.As(err, &none):
		return nil, fmt.Errorf("segment %s/%s: identity file %s holds key %s, none of which opens its header: %w",
			m.Stream, m.Name(), k.file, list(k.fps), batch.ErrNoKey)
	case err != nil:
		return nil, fmt.Errorf("segment %s/%s: age header: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	body := ct[n:]
	if err := decryptsBody(fileKey, hdr, body); err != nil {
		return nil, fmt.Errorf("segment %s/%s: its file key does not decrypt it: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	out, err := e.header(fileKey)
	if err != nil {
		return nil, fmt.Errorf("segment %s/%s: new age header: %w", m.Stream, m.Name(), err)
	}
	// Checked with age itself, not with the code that wrote it.
	if got, err := age.DecryptHeader(out, age.NewInjectedFileKeyIdentity(fileKey)); err != nil || !bytes.Equal(got, fileKey) {
		return nil, fmt.Errorf("segment %s/%s: the new age header does not check: %v", m.Stream, m.Name(), err)
	}
	return out, nil
}

// decryptsBody decrypts the age body (nonce and chunks) with fileKey,
// behind its header hdr, to the end.
func decryptsBody(fileKey, hdr, body []byte) error {
	rd, err := age.Decrypt(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(body)), age.NewInjectedFileKeyIdentity(fileKey))
	if err == nil {
		_, err = io.Copy(io.Discard, rd)
	}
	return err
}

// header returns an age header wrapping fileKey for e's recipients: the
// intro line, one stanza per recipient (its body in base64 without
// padding, 64 columns a line, the last line shorter, so maybe empty), the
// "---" line and the MAC: HMAC-SHA256 keyed by HKDF-SHA256(file key, no
// salt, "header") of the header up to and including "---".
func (e *Encrypter) header(fileKey []byte) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("age-encryption.org/v1\n")
	for _, r := range e.recipients {
		stanzas, err := r.Wrap(fileKey)
		if err != nil {
			return nil, err
		}
		for _, s := range stanzas {
			b.WriteString("->")
			for _, a := range append([]string{s.Type}, s.Args...) {
				b.WriteString(" " + a)
			}
			b.WriteString("\n")
			body := base64.RawStdEncoding.EncodeToString(s.Body)
			for len(body) >= 64 {
				b.WriteString(body[:64] + "\n")
				body = body[64:]
			}
			b.WriteString(body + "\n")
		}
	}
	b.WriteString("---")
	key, err := hkdf.Key(sha256.New, fileKey, nil, "header", 32)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(b.Bytes())
	b.WriteString(" " + base64.RawStdEncoding.EncodeToString(mac.Sum(nil)) + "\n")
	return b.Bytes(), nil
}
