package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

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
