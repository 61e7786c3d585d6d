package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/batch/crypt"
)

func testEncrypter(t *testing.T) (*crypt.Encrypter, *crypt.Keyring) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "id.txt")
	os.WriteFile(file, []byte(id.String()+"\n"), 0o600)
	kr, err := crypt.LoadIdentities(file)
	if err != nil {
		t.Fatal(err)
	}
	e, err := crypt.NewEncrypter([]string{id.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	return e, kr
}

// A spool with an Encrypter seals only ciphertext, the records journaled
// before encryption was configured included; one still holding a segment
// sealed in plaintext refuses to open, naming it.
func TestSpoolEncrypts(t *testing.T) {
	enc, kr := testEncrypter(t)
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("plain", 5), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchtest.Records("journaled", 3), "") // not sealed
	sp.Close()
	plain := sealedFiles(t, cfg.Dir)
	if len(plain) != 1 || plain[0].Meta.Encrypted() {
		t.Fatalf("want one plaintext segment sealed, got %d", len(plain))
	}

	cfg.Encrypter = enc
	_, err := Open(cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), plain[0].Name) || !strings.Contains(err.Error(), "plaintext") {
		t.Fatalf("Open with encryption over a plaintext sealed segment: %v, want a refusal naming %s", err, plain[0].Name)
	}

	// Once it is gone (confirmed and dropped), the spool opens and seals
	// the journaled records encrypted.
	if err := os.Remove(filepath.Join(cfg.Dir, "sealed", plain[0].Name)); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("new", 2), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	// Recovery seals the journaled records as a segment of their own.
	ents, _ := os.ReadDir(filepath.Join(cfg.Dir, "sealed"))
	var got []string
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(cfg.Dir, "sealed", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		seg, err := batch.Open(data)
		if err != nil {
			t.Fatal(err)
		}
		if !seg.Meta.Encrypted() {
			t.Fatalf("sealed/%s is plaintext", e.Name())
		}
		if err := seg.Decrypt(kr); err != nil {
			t.Fatal(err)
		}
		recs, err := seg.Records(0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs.All() {
			got = append(got, string(r.Data))
		}
	}
	want := append(batchtest.Lines("journaled", 1, 3), batchtest.Lines("new", 1, 2)...)
	if strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("records %q, want %q", got, want)
	}
}
