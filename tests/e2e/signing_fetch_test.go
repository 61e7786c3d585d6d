//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/sign"
)

// fetch and verify FILE... check signatures as every other reader does:
// a pushed file whose segment was re-signed by a key the reader does not
// trust is refused by fetch with trusted_keys (DEST untouched, the
// segment and both keys named), though its content is intact and fetch
// without trusted_keys gives it; verify FILE... says who signed each
// file and, with trusted_keys, reports the re-signed one as a defect.
func TestFetchAndVerifyFilesCheckSignatures(t *testing.T) {
	t.Parallel()
	s := newStream(t, "pg-signed")
	keys := t.TempDir()
	k, attacker := keygen(t, keys, "signing.key"), keygen(t, keys, "attacker.key")
	shipCfg := signConfig(t, keys, "ship.toml", k, "")
	recvCfg := trustConfig(t, keys, "recv.toml", "", k)
	wal := filepath.Join(s.dir, "pg_wal")
	walSeg := "000000010000000000000001"
	data := writeRandomFile(t, wal, walSeg, 200<<10, 7)
	mustFerry(t, nil, s.pushArgs("--config", shipCfg, filepath.Join(wal, walSeg))...)
	names := s.segments()
	if len(names) != 1 {
		t.Fatalf("push wrote %d segments, want 1", len(names))
	}
	victim := names[0]
	out := filepath.Join(s.dir, "restore", "RECOVERYXLOG")
	os.MkdirAll(filepath.Dir(out), 0o755)
	mustFerry(t, nil, s.fetchArgs("--config", recvCfg, walSeg, out)...)
	wantFileContent(t, out, data)
	os.Remove(out)
	pristine := filepath.Join(s.dir, "pristine.seg.zst")
	orig, err := os.ReadFile(s.segmentPath(victim))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(pristine, orig, 0o644)

	// Re-signed by the attacker, records unchanged.
	signer, err := sign.LoadSigningKey(attacker.file)
	if err != nil {
		t.Fatal(err)
	}
	rewriteFrom(t, s, names, 0, func([]batch.Record) {}, func(m *batch.Meta) string {
		m.Signature = ""
		v, _ := signer.Sign(batch.SignedBytes(m))
		return v
	})
	r := failFerry(t, nil, []string{s.name + "/" + victim, "signed by key " + attacker.id, "not trusted", "trusted: " + k.id},
		s.fetchArgs("--config", recvCfg, walSeg, out)...)
	if strings.Count(r.Stderr, victim) != 1 || strings.Contains(r.Stderr, "scanning") {
		t.Errorf("fetch names the segment %d times, want once, without scanning the stream (the refusal would not change):\n%s",
			strings.Count(r.Stderr, victim), r.Stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("fetch of a refused segment wrote %s (%v)", out, err)
	}
	// The refusal is the signature's: without trusted_keys the (intact)
	// content is fetched.
	mustFerry(t, nil, s.fetchArgs(walSeg, out)...)
	wantFileContent(t, out, data)

	// verify FILE...: the signer of each; with trusted_keys, a defect.
	forged := s.segmentPath(victim)
	v := mustFerry(t, nil, "verify", pristine, forged)
	for _, want := range []string{pristine + ": ok, signed by key " + k.id, forged + ": ok, signed by key " + attacker.id} {
		if !strings.Contains(v.Stdout, want) {
			t.Fatalf("verify FILE... without trusted_keys lacks %q:\n%s", want, v)
		}
	}
	v = ferry(t, nil, "verify", "--config", recvCfg, pristine, forged)
	if v.Code == 0 || !strings.Contains(v.Stdout, pristine+": ok, signed by key "+k.id) ||
		!strings.Contains(v.Stdout, forged+": segment "+s.name+"/"+victim+" is signed by key "+attacker.id+", which is not trusted") {
		t.Fatalf("verify FILE... with trusted_keys:\n%s", v)
	}
	// And cat names the refused segment once.
	c := failFerry(t, nil, []string{victim, attacker.id}, "cat", "--config", recvCfg, "--store", s.store, "--stream", s.name)
	if n := strings.Count(c.Stderr, victim); n != 1 {
		t.Errorf("cat names the segment %d times, want once:\n%s", n, c.Stderr)
	}
}
