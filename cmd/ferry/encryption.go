package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// encrypterFor is the Encrypter of cfg's [encryption] recipients, nil
// when there are none (plaintext segments).
func encrypterFor(cfg *config.File, log *slog.Logger) (batch.Encrypter, error) {
	en := &cfg.Encryption
	if !en.Encrypts() {
		return nil, nil
	}
	e, err := crypt.LoadRecipients(en.Recipients, en.RecipientsFile)
	if err != nil {
		return nil, usageError{err}
	}
	if log != nil {
		log.Info("segments are encrypted with age", "recipients", e.Recipients())
	}
	return e, nil
}

// decrypterFor is the Keyring of cfg's [encryption] identity_file, or of
// the file FERRY_AGE_IDENTITY_FILE names when that is not set; nil when
// neither is (encrypted segments are then refused, naming their keys).
// Readers of a store wrap it with withKeyEpochs.
func decrypterFor(cfg *config.File) (batch.Decrypter, error) {
	k, err := keyringFor(cfg)
	if k == nil || err != nil {
		return nil, err
	}
	return k, nil
}

// keyringFor is decrypterFor's Keyring.
func keyringFor(cfg *config.File) (*crypt.Keyring, error) {
	path := cfg.Encryption.IdentityFile
	if path == "" {
		path = os.Getenv(config.IdentityEnv)
	}
	if path == "" {
		return nil, nil
	}
	return crypt.LoadIdentities(path)
}

// withKeyEpochs makes dec, from decrypterFor, decrypt the segments of
// stream in st with their headers of the newest key epoch that has one
// (ferry rekey; docs/FORMAT.md, "Rotation"). A tcp:// link holds no key
// epochs; dec is then returned as it is.
func withKeyEpochs(ctx context.Context, dec batch.Decrypter, st store.Store, stream string) batch.Decrypter {
	k, ok := dec.(*crypt.Keyring)
	if !ok || st == nil || store.IsSegmentsOnly(st) {
		return dec
	}
	return k.WithHeaders(catalog.NewKeyHeaders(ctx, st, stream).Lookup)
}

// encryptionTally counts a stream's segments by encryption, for the
// per-stream line of ls and verify.
type encryptionTally struct {
	plain, encrypted int
	keys             []string // fingerprints, in the order first seen
}

func (t *encryptionTally) add(m *batch.Meta) {
	if !m.Encrypted() {
		t.plain++
		return
	}
	t.encrypted++
	for _, k := range m.Recipients {
		if !slices.Contains(t.keys, k) {
			t.keys = append(t.keys, k)
		}
	}
}

func (t *encryptionTally) String() string {
	switch {
	case t.encrypted == 0:
		return fmt.Sprintf("encryption: none (%d plaintext segments)", t.plain)
	case t.plain == 0:
		return fmt.Sprintf("encryption: all %d segments encrypted with age, for keys %s", t.encrypted, strings.Join(t.keys, ", "))
	}
	return fmt.Sprintf("encryption: %d segments encrypted with age (keys %s), %d PLAINTEXT", t.encrypted, strings.Join(t.keys, ", "), t.plain)
}

// recvEncryptionFile is where a receiver reports, in its state dir, how
// it decrypts: a report for ferry status, not state (not fsynced).
const recvEncryptionFile = "encryption.json"

// recvEncryption is the content of recvEncryptionFile and the
// "encryption" of `status --json` for a receiver.
type recvEncryption struct {
	// Identities are the fingerprints of the keys the identity file holds
	// (none: encrypted segments are refused).
	Identities        []string  `json:"identities"`
	IdentityFile      string    `json:"identity_file,omitempty"`
	RequireEncryption bool      `json:"require_encryption"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// writeRecvEncryption publishes how the receiver with state dir state
// decrypts (temp file and rename).
func writeRecvEncryption(state string, cfg *config.File, dec batch.Decrypter) error {
	e := recvEncryption{Identities: []string{}, RequireEncryption: cfg.Encryption.RequireEncryption, UpdatedAt: time.Now().UTC()}
	if k, ok := dec.(*crypt.Keyring); ok {
		e.Identities = k.Fingerprints()
		if e.IdentityFile = cfg.Encryption.IdentityFile; e.IdentityFile == "" {
			e.IdentityFile = config.IdentityEnv
		}
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(state, "."+recvEncryptionFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(state, recvEncryptionFile))
}

// readRecvEncryption reads a receiver's report; nil if it has none (it
// has not run with this version).
func readRecvEncryption(state string) (*recvEncryption, error) {
	raw, err := readStateFile(filepath.Join(state, recvEncryptionFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e recvEncryption
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("%s: %v", filepath.Join(state, recvEncryptionFile), err)
	}
	return &e, nil
}

// String is the receiver's encryption line of ferry status.
func (e *recvEncryption) String() string {
	req := "plaintext segments accepted"
	if e.RequireEncryption {
		req = "plaintext segments refused (require_encryption)"
	}
	if len(e.Identities) == 0 {
		return "no identity: encrypted segments are refused; " + req
	}
	return fmt.Sprintf("decrypts with key %s (%s); %s", strings.Join(e.Identities, ", "), e.IdentityFile, req)
}
