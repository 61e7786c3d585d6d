package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/sign"
	"github.com/ferry-dr/ferry/config"
)

// signerFor is the Signer of cfg's [encryption] signing_key_file, nil
// when it is not set (unsigned segments).
func signerFor(cfg *config.File, log *slog.Logger) (batch.Signer, error) {
	if !cfg.Encryption.Signs() {
		return nil, nil
	}
	s, err := sign.LoadSigningKey(cfg.Encryption.SigningKeyFile)
	if err != nil {
		return nil, usageError{err}
	}
	if log != nil {
		log.Info("segments are signed with ed25519", "key_id", s.KeyID())
	}
	return s, nil
}

// verifierFor is the Trusted of cfg's [encryption] trusted_keys and
// trusted_keys_file, nil when neither is set (signatures are not
// required; verify still reports them).
func verifierFor(cfg *config.File) (*sign.Trusted, error) {
	en := &cfg.Encryption
	if !en.Verifies() {
		return nil, nil
	}
	t, err := sign.NewTrusted(en.TrustedKeys, en.TrustedKeysFile)
	if err != nil {
		return nil, usageError{err}
	}
	return t, nil
}

// batchVerifier is v as a batch.Verifier: nil stays an untyped nil.
func batchVerifier(v *sign.Trusted) batch.Verifier {
	if v == nil {
		return nil
	}
	return v
}

// checkSignature is what cat, fetch and verify do with a segment's
// signature: with trusted keys, v's verdict; without, only a signature
// that does not match the metadata it is in (changed after signing) is
// refused, since no key is trusted that an unsigned segment could lack.
func checkSignature(v *sign.Trusted, m *batch.Meta) error {
	if v != nil {
		return v.Verify(m)
	}
	if st := sign.State(m); strings.HasPrefix(st, "BAD:") {
		return fmt.Errorf("segment %s/%s: its signature (%s) does not match its metadata (changed after it was signed, or forged): %w",
			m.Stream, m.Name(), st, batch.ErrSignature)
	}
	return nil
}

// signatureTally counts a stream's segments by signature, for the
// per-stream line of ls and verify.
type signatureTally struct {
	unsigned, bad int
	keys          []string // ids of valid signers, in the order first seen
	signed        map[string]int
}

func (t *signatureTally) add(m *batch.Meta) string {
	st := sign.State(m)
	switch {
	case st == "unsigned":
		t.unsigned++
	case strings.HasPrefix(st, "BAD:"):
		t.bad++
	default:
		if t.signed == nil {
			t.signed = map[string]int{}
		}
		if !slices.Contains(t.keys, st) {
			t.keys = append(t.keys, st)
		}
		t.signed[st]++
	}
	return st
}

func (t *signatureTally) String() string {
	var parts []string
	for _, k := range t.keys {
		parts = append(parts, fmt.Sprintf("%d signed by key %s", t.signed[k], k))
	}
	if t.unsigned > 0 {
		parts = append(parts, fmt.Sprintf("%d unsigned", t.unsigned))
	}
	if t.bad > 0 {
		parts = append(parts, fmt.Sprintf("%d with a BAD signature (does not match the metadata)", t.bad))
	}
	if len(parts) == 0 {
		return "signatures: no segments"
	}
	return "signatures: " + strings.Join(parts, ", ")
}

// signatureCounts is signatureTally in verify --json.
type signatureCounts struct {
	ByKey    map[string]int `json:"by_key,omitempty"` // valid signatures, by key id
	Unsigned int            `json:"unsigned"`
	Bad      int            `json:"bad"`
}

func (t *signatureTally) counts() signatureCounts {
	return signatureCounts{ByKey: t.signed, Unsigned: t.unsigned, Bad: t.bad}
}

// verdict is the signature line of verify: the tally, and whether the
// signers were checked against trusted keys.
func (t *signatureTally) verdict(trusted *sign.Trusted) string {
	if trusted == nil {
		return t.String() + " (no trusted_keys: signers not checked)"
	}
	return t.String() + "; trusted keys: " + strings.Join(trusted.IDs(), ", ")
}

// signatureNote is the per-file note of verify FILE: what sign.State said.
func signatureNote(state string) string {
	switch {
	case state == "unsigned":
		return "unsigned"
	case strings.HasPrefix(state, "BAD:"):
		return "BAD signature (does not match the metadata)"
	}
	return "signed by key " + state
}

func trustedIDs(t *sign.Trusted) []string {
	if t == nil {
		return nil
	}
	return t.IDs()
}
