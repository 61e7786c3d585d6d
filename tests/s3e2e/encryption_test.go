package s3e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch/crypt"
)

// ageKey writes a fresh X25519 identity to a file of its own.
func ageKey(t *testing.T, dir, name string) (file, public, fp string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	public = id.Recipient().String()
	return file, public, crypt.Fingerprint(public)
}

// An encrypted stream through S3: ship with recipients, receive with the
// identity, rekey for a new key (key epoch objects in the bucket, the
// segments untouched), then receive, cat and verify with the new key
// alone; the old key is refused through ferry.
func TestEncryptedRekeyThroughS3(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("enc", "app")
	keys := t.TempDir()
	oldFile, oldPub, oldFP := ageKey(t, keys, "old.txt")
	newFile, newPub, newFP := ageKey(t, keys, "new.txt")
	cfg := h.writeConfig("ship.toml", fmt.Sprintf("[encryption]\nrecipients = [%q]\n", oldPub))
	input := numbered(1, 50_000)
	s.ship(input, "--config", cfg, "--max-bytes", "128KiB")
	names := s.segments()
	if len(names) < 3 {
		t.Fatalf("%d segments, want several", len(names))
	}
	withID := func(file string) []string { return h.env("FERRY_AGE_IDENTITY_FILE=" + file) }
	if r := h.run(withID(oldFile), nil, s.receiveArgs("--once")...); r.Code != 0 {
		t.Fatalf("receive with the identity:\n%s", r)
	}
	s.wantReplica(input, "decrypted from S3")
	before := map[string]string{}
	for _, n := range names {
		before[n] = string(h.object(s.dirKey() + n))
	}

	r := h.run(withID(oldFile), nil, "rekey", "--store", s.url(), "--stream", s.name, "--recipient", newPub)
	if r.Code != 0 || !strings.Contains(r.Stdout, fmt.Sprintf("%d rekeyed now", len(names))) {
		t.Fatalf("rekey through S3:\n%s", r)
	}
	if got := h.objects(s.dirKey() + "keys/00000001/"); len(got) != len(names) {
		t.Fatalf("key epoch 1 holds %d headers in the bucket, want %d: %v", len(got), len(names), got)
	}
	for _, n := range names {
		if string(h.object(s.dirKey()+n)) != before[n] {
			t.Fatalf("rekey changed segment %s in the bucket", n)
		}
	}
	r = h.run(withID(oldFile), nil, "rekey", "--store", s.url(), "--stream", s.name, "--recipient", newPub)
	if r.Code != 0 || !strings.Contains(r.Stdout, fmt.Sprintf("0 rekeyed now, %d already", len(names))) {
		t.Fatalf("second rekey through S3:\n%s", r)
	}

	state2, replica2 := filepath.Join(t.TempDir(), "state"), filepath.Join(t.TempDir(), "replica")
	if r := h.run(withID(newFile), nil, "receive", "--once", "--store", s.url(), "--stream", s.name,
		"--state", state2, "--apply", "file:"+replica2); r.Code != 0 {
		t.Fatalf("receive with the new key:\n%s", r)
	}
	if got, _ := os.ReadFile(replica2); string(got) != string(input) {
		t.Fatalf("replica with the new key: %s", describeDiff(input, got))
	}
	if c := h.run(withID(newFile), nil, "cat", "--store", s.url(), "--stream", s.name); c.Code != 0 || c.Stdout != string(input) {
		t.Fatalf("cat with the new key: exit %d\n%s", c.Code, c.Stderr)
	}
	if v := h.run(withID(newFile), nil, "verify", "--store", s.url(), "--stream", s.name); v.Code != 0 || strings.Contains(v.Stdout, "records were not") {
		t.Fatalf("verify with the new key:\n%s", v)
	}
	c := h.run(withID(oldFile), nil, "cat", "--store", s.url(), "--stream", s.name)
	if c.Code == 0 || !strings.Contains(c.Stderr, "key epoch 1") || !strings.Contains(c.Stderr, newFP) || !strings.Contains(c.Stderr, oldFP) {
		t.Fatalf("cat with the retired key: want a refusal naming key epoch 1, %s and %s:\n%s", newFP, oldFP, c)
	}
	h.checkNoSecrets()
}
