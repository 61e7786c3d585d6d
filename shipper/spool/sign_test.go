package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/batch/sign"
)

// A spool with a Signer signs what it seals, the records journaled
// before signing was configured included; one still holding a segment
// sealed unsigned refuses to open, naming it, as one with an Encrypter
// refuses a plaintext one.
func TestSpoolSigns(t *testing.T) {
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	signer := sign.NewSigner(key)
	trusted, err := sign.NewTrusted([]string{signer.PublicKey()}, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("unsigned", 5), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchtest.Records("journaled", 3), "") // not sealed
	sp.Close()
	unsigned := sealedFiles(t, cfg.Dir)
	if len(unsigned) != 1 || unsigned[0].Meta.Signed() {
		t.Fatalf("want one unsigned segment sealed, got %d", len(unsigned))
	}

	cfg.Signer = signer
	_, err = Open(cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "sealed/"+unsigned[0].Name+" ") || !strings.Contains(err.Error(), "unsigned") ||
		!strings.Contains(err.Error(), "signing_key_file") {
		t.Fatalf("Open with signing over an unsigned sealed segment: %v, want a refusal naming sealed/%s", err, unsigned[0].Name)
	}

	// Once it is gone (confirmed and dropped), the spool opens and signs
	// everything it seals, the journaled records included.
	if err := os.Remove(filepath.Join(cfg.Dir, "sealed", unsigned[0].Name)); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("new", 2), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	segs := sealedFiles(t, cfg.Dir)
	if len(segs) != 2 {
		t.Fatalf("%d segments sealed, want the journaled records' and the new ones'", len(segs))
	}
	for _, s := range segs {
		if err := trusted.Verify(&s.Meta); err != nil {
			t.Fatalf("sealed/%s: %v", s.Name, err)
		}
	}
}
