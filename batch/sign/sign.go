// Package sign signs and verifies segments with ed25519 (crypto/ed25519)
// for package batch.
//
// A shipper with a signing key signs batch.SignedBytes of every segment it
// seals and stores the result in the metadata's signature field:
//
//	ed25519:PUBLIC:SIGNATURE
//
// PUBLIC is the signer's 32-byte public key and SIGNATURE the 64-byte
// ed25519 signature, both standard base64 with padding. A reader trusts a
// list of public keys (Trusted) and refuses a segment that is unsigned,
// signed by another key, or whose signature does not match.
//
// A public key's text form is "ferry-ed25519:" and the base64 of its 32
// bytes; its key id is the first 16 hex digits of the SHA-256 of that
// text, as an age recipient's fingerprint is of its "age1..." string. A
// private key file is PKCS#8 PEM ("PRIVATE KEY"), as `ferry keygen` and
// `openssl genpkey -algorithm ed25519` write it.
package sign

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/batch"
)

// PublicPrefix starts the text form of a public key.
const PublicPrefix = "ferry-ed25519:"

// sigPrefix starts the signature field's value.
const sigPrefix = "ed25519:"

// maxKeyFile bounds what is read of a key file or trusted keys file.
const maxKeyFile = 64 << 10

// MaxTrusted caps the keys a reader trusts.
const MaxTrusted = 64

// PublicKey is the text form of pub: "ferry-ed25519:BASE64".
func PublicKey(pub ed25519.PublicKey) string {
	return PublicPrefix + base64.StdEncoding.EncodeToString(pub)
}

// KeyID is the key id of pub: the first 16 hex digits of the SHA-256 of
// its text form.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256([]byte(PublicKey(pub)))
	return hex.EncodeToString(h[:8])
}

// ParsePublicKey parses the text form of a public key. Errors never quote
// s: a pasted private key must not reach a log.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "PRIVATE KEY") {
		return nil, errors.New("is a private key, not a public key (ferry-ed25519:...): a receiver needs only public keys")
	}
	rest, ok := strings.CutPrefix(s, PublicPrefix)
	if !ok {
		return nil, fmt.Errorf("is not an ed25519 public key in ferry's form (%sBASE64, as ferry keygen prints it)", PublicPrefix)
	}
	if len(rest) > 64 {
		return nil, errors.New("is too long for an ed25519 public key")
	}
	raw, err := decodeCanonical(rest)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("is not an ed25519 public key: want %d bytes of standard base64 after %s", ed25519.PublicKeySize, PublicPrefix)
	}
	return ed25519.PublicKey(raw), nil
}

// decodeCanonical decodes standard base64 written as EncodeToString
// writes it, and nothing else: the decoder alone (even Strict) skips
// '\r' and '\n' anywhere, so one key or signature would have many
// spellings.
func decodeCanonical(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break inside base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// Signature is a parsed signature field.
type Signature struct {
	Public ed25519.PublicKey
	Sig    []byte
}

// KeyID is the id of the key that made s.
func (s Signature) KeyID() string { return KeyID(s.Public) }

// String is the signature field's value.
func (s Signature) String() string {
	return sigPrefix + base64.StdEncoding.EncodeToString(s.Public) + ":" + base64.StdEncoding.EncodeToString(s.Sig)
}

// Parse parses a signature field. It refuses a value over
// batch.MaxSignatureSize before decoding anything.
func Parse(field string) (Signature, error) {
	if len(field) > batch.MaxSignatureSize {
		return Signature{}, fmt.Errorf("signature field is %d bytes, more than %d", len(field), batch.MaxSignatureSize)
	}
	rest, ok := strings.CutPrefix(field, sigPrefix)
	if !ok {
		return Signature{}, errors.New("signature field does not start with " + sigPrefix + " (an unknown algorithm)")
	}
	pub64, sig64, ok := strings.Cut(rest, ":")
	if !ok {
		return Signature{}, errors.New("signature field lacks the ':' between key and signature")
	}
	pub, err := decodeCanonical(pub64)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return Signature{}, fmt.Errorf("signature field's key is not %d bytes of base64", ed25519.PublicKeySize)
	}
	sig, err := decodeCanonical(sig64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Signature{}, fmt.Errorf("signature field's signature is not %d bytes of base64", ed25519.SignatureSize)
	}
	return Signature{Public: pub, Sig: sig}, nil
}

// Valid reports whether s is a signature by its own key over m. It says
// nothing about whether that key is trusted.
func (s Signature) Valid(m *batch.Meta) bool {
	return ed25519.Verify(s.Public, batch.SignedBytes(m), s.Sig)
}

// Signer signs with one private key. It is a batch.Signer.
type Signer struct {
	key ed25519.PrivateKey
	pub ed25519.PublicKey
}

var _ batch.Signer = (*Signer)(nil)

// NewSigner returns the Signer of key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, pub: key.Public().(ed25519.PublicKey)}
}

// Sign is the signature field of msg.
func (s *Signer) Sign(msg []byte) (string, error) {
	return Signature{Public: s.pub, Sig: ed25519.Sign(s.key, msg)}.String(), nil
}

// PublicKey is the text form of the signer's public key.
func (s *Signer) PublicKey() string { return PublicKey(s.pub) }

// KeyID is the id of the signer's public key.
func (s *Signer) KeyID() string { return KeyID(s.pub) }

// LoadSigningKey reads a private key file: PKCS#8 PEM holding an ed25519
// key. The file must be a regular file that group and others cannot read
// or write, as ferry requires of every file holding a secret. Errors name
// the file and never quote it.
func LoadSigningKey(path string) (*Signer, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("signing key file %s: "+format, append([]any{path}, args...)...)
	}
	fi, err := os.Stat(path) // before opening: a FIFO would block
	if err != nil {
		return nil, fail("%v", errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fail("not a regular file (%s)", fi.Mode().Type())
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fail("group or others may read or write it (mode %04o): chmod 600 %s, owned by the user ferry runs as", fi.Mode().Perm(), path)
	}
	data, err := readCapped(path)
	if err != nil {
		return nil, fail("%v", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fail("no PEM \"PRIVATE KEY\" block (make one with: ferry keygen --signing FILE)")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fail("not a PKCS#8 private key: %v", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fail("holds a %T, not an ed25519 key", k)
	}
	return NewSigner(key), nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFile)
	}
	return data, nil
}

// Trusted is the set of public keys a reader accepts segments from. It is
// a batch.Verifier.
type Trusted struct {
	keys map[string]ed25519.PublicKey // by key id
	ids  []string                     // in the order given
}

var _ batch.Verifier = (*Trusted)(nil)

// NewTrusted returns the Trusted of the public keys keys (text form) and
// those in file (one per line, # comments; "" for none). At least one key
// is needed. Errors name the entry or the file and line, never quoting
// them.
func NewTrusted(keys []string, file string) (*Trusted, error) {
	t := &Trusted{keys: map[string]ed25519.PublicKey{}}
	add := func(where, k string) error {
		pub, err := ParsePublicKey(k)
		if err != nil {
			return fmt.Errorf("%s %w", where, err)
		}
		id := KeyID(pub)
		if _, dup := t.keys[id]; dup {
			return nil // the same key twice trusts it once
		}
		if len(t.ids) == MaxTrusted {
			return fmt.Errorf("more than %d trusted keys", MaxTrusted)
		}
		t.keys[id] = pub
		t.ids = append(t.ids, id)
		return nil
	}
	for i, k := range keys {
		if err := add(fmt.Sprintf("[encryption] trusted_keys entry %d", i+1), k); err != nil {
			return nil, err
		}
	}
	if file != "" {
		data, err := readCapped(file)
		if err != nil {
			return nil, fmt.Errorf("trusted keys file: %w", err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := add(fmt.Sprintf("trusted keys file %s line %d", file, i+1), line); err != nil {
				return nil, err
			}
		}
	}
	if len(t.ids) == 0 {
		return nil, errors.New("no trusted keys ([encryption] trusted_keys or trusted_keys_file is empty)")
	}
	return t, nil
}

// IDs are the key ids of the trusted keys, in the order given.
func (t *Trusted) IDs() []string { return slices.Clone(t.ids) }

// Verify accepts m only if it is signed, by a trusted key, and the
// signature matches SignedBytes(m). Errors wrap batch.ErrSignature and
// name the segment, the key it was signed with and the trusted keys.
func (t *Trusted) Verify(m *batch.Meta) error {
	// Built for an error only: Verify runs on every segment read.
	label := func() string { return m.Stream + "/" + m.Name() }
	trusted := func() string { return strings.Join(t.ids, ", ") }
	if !m.Signed() {
		return fmt.Errorf("segment %s is not signed, and trusted_keys requires a signature by key %s: %w", label(), trusted(), batch.ErrSignature)
	}
	s, err := Parse(m.Signature)
	if err != nil {
		return fmt.Errorf("segment %s: %v: %w", label(), err, batch.ErrSignature)
	}
	id := s.KeyID()
	pub, ok := t.keys[id]
	if !ok || !pub.Equal(s.Public) {
		return fmt.Errorf("segment %s is signed by key %s, which is not trusted (trusted: %s): %w", label(), id, trusted(), batch.ErrSignature)
	}
	if !s.Valid(m) {
		return fmt.Errorf("segment %s: its signature by key %s does not match its metadata (changed after it was signed, or forged): %w",
			label(), id, batch.ErrSignature)
	}
	return nil
}

// State describes m's signature for listings without judging the key:
// "unsigned", "KEYID" (a signature valid for the key it names), or
// "BAD:..." (malformed, or not matching the metadata).
func State(m *batch.Meta) string {
	if !m.Signed() {
		return "unsigned"
	}
	s, err := Parse(m.Signature)
	if err != nil {
		return "BAD:malformed"
	}
	if !s.Valid(m) {
		return "BAD:" + s.KeyID()
	}
	return s.KeyID()
}

// Generate makes a new key pair.
func Generate() (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	return key, err
}

// MarshalPrivateKey is the private key file of key: comment lines giving
// its public key and id, then the PKCS#8 PEM block.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	head := fmt.Sprintf("# ferry ed25519 signing key ([encryption] signing_key_file); keep it secret, mode 600\n# public key: %s\n# key id: %s\n",
		PublicKey(pub), KeyID(pub))
	return append([]byte(head), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
}
