package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// ageKey is an X25519 identity in a file of its own (mode 600).
type ageKey struct {
	secret, public, file, fp string
}

func newAgeKey(t *testing.T, dir, name string) ageKey {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := id.Recipient().String()
	return ageKey{secret: id.String(), public: pub, file: file, fp: crypt.Fingerprint(pub)}
}

// withIdentity runs ferry with FERRY_AGE_IDENTITY_FILE set to file.
func withIdentity(file string) ferrytest.Cmd {
	return ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "FERRY_AGE_IDENTITY_FILE="+file)}
}

// storedSegments reads every segment file of stream in the directory
// store dir and checks it is encrypted for exactly fps and holds none of
// the plaintext marker.
func wantEncrypted(t *testing.T, dir, stream string, marker []byte, fps ...string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, stream))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".seg.zst") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, stream, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m, off, err := batch.ParseMeta(data)
		if err != nil {
			t.Fatalf("%s/%s: %v", dir, e.Name(), err)
		}
		if m.Encryption != "age" || strings.Join(m.Recipients, ",") != strings.Join(fps, ",") ||
			!bytes.HasPrefix(data[off:], []byte("age-encryption.org/v1\n")) {
			t.Fatalf("%s/%s: encryption %q for %v, want age for %v", dir, e.Name(), m.Encryption, m.Recipients, fps)
		}
		if bytes.Contains(data, marker) {
			t.Fatalf("%s/%s holds record data in the clear", dir, e.Name())
		}
		n++
	}
	if n == 0 {
		t.Fatalf("no segments of %s in %s", stream, dir)
	}
	return n
}

// A shipper with [encryption] recipients sends only ciphertext to every
// target (a directory store and a direct link, whose receiver's inbox
// holds ciphertext); readers with the identity get the records back,
// readers without it or with another are refused with an error naming
// the segment and the keys; keyless verify still checks checksums and
// the chain; no secret key reaches any output.
func TestEncryptedArchive(t *testing.T) {
	t.Parallel()
	s := newStream(t, "secret")
	keys := t.TempDir()
	k1, other := newAgeKey(t, keys, "k1.txt"), newAgeKey(t, keys, "other.txt")
	cfg := filepath.Join(s.dir, "ship.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", k1.public)), 0o644)

	addr := ferrytest.FreeAddr(t)
	linkState, linkReplica := filepath.Join(s.dir, "link-state"), filepath.Join(s.dir, "link.out")
	recv := withIdentity(k1.file).Start(t, nil, "receive", "--listen", addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--state", linkState, "--apply", "file:"+linkReplica, "--poll-min", "20ms", "--poll-max", "100ms")
	ferrytest.Eventually(t, 10*time.Second, "receiver listening", func() (bool, string) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})

	input := logLines(21, 1, 20000)
	marker := lines(input)[7] // one whole line of the input
	shipped := s.ship(input, "--config", cfg, "--max-bytes", "64KiB", "--also", "tcp://"+addr, "--insecure", "--token", linkToken)
	if !strings.Contains(shipped.Stderr, k1.fp) {
		t.Errorf("ship does not log the recipients' fingerprints:\n%s", shipped)
	}

	// Every target holds ciphertext only: the store, the link's inbox.
	n := wantEncrypted(t, s.store, s.name, marker, k1.fp)
	ferrytest.Eventually(t, 30*time.Second, "the link receiver applied everything", func() (bool, string) {
		got, _ := os.ReadFile(linkReplica)
		return bytes.Equal(got, input), fmt.Sprintf("%d of %d bytes", len(got), len(input))
	})
	if m := wantEncrypted(t, filepath.Join(linkState, "inbox"), s.name, marker, k1.fp); m != n {
		t.Errorf("the link's inbox holds %d segments, the store %d", m, n)
	}
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("link receiver exit %d:\n%s", code, recv)
	}
	outputs := []string{shipped.Output(), recv.Stderr() + recv.Stdout()}

	// No identity: refused, naming the segment and the key it needs.
	first := s.segments()[0]
	r := failFerry(t, nil, []string{first, k1.fp, "identity_file", "FERRY_AGE_IDENTITY_FILE"}, s.receiveArgs("--once")...)
	outputs = append(outputs, r.Output())
	// Another identity: refused, naming the keys needed and held.
	r = withIdentity(other.file).Run(t, nil, s.receiveArgs("--once")...)
	if r.Code == 0 || !strings.Contains(r.Output(), first) || !strings.Contains(r.Output(), k1.fp) || !strings.Contains(r.Output(), other.fp) {
		t.Fatalf("receive with another identity: want a failure naming %s, %s and %s:\n%s", first, k1.fp, other.fp, r)
	}
	outputs = append(outputs, r.Output())

	// The right one: the replica, cat and verify agree with the input.
	r = withIdentity(k1.file).Run(t, nil, s.receiveArgs("--once")...)
	if r.Code != 0 {
		t.Fatalf("receive with the identity:\n%s", r)
	}
	s.wantReplica(input, "decrypted")
	cat := withIdentity(k1.file).Run(t, nil, "cat", "--store", s.store, "--stream", s.name)
	if cat.Code != 0 || cat.Stdout != string(input) {
		t.Fatalf("cat with the identity: exit %d, %d bytes of %d", cat.Code, len(cat.Stdout), len(input))
	}
	v := withIdentity(k1.file).Run(t, nil, "verify", "--store", s.store, "--stream", s.name)
	if v.Code != 0 || !strings.Contains(v.Stdout, "hash chain ok") || strings.Contains(v.Stdout, "records were not") {
		t.Fatalf("verify with the identity:\n%s", v)
	}
	// Without it, verify checks what needs no key, and says so.
	v = mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
	if !strings.Contains(v.Stdout, "hash chain ok") || !strings.Contains(v.Stdout, "records were not") ||
		!strings.Contains(v.Stdout, "all "+fmt.Sprint(n)+" segments encrypted with age, for keys "+k1.fp) {
		t.Fatalf("keyless verify:\n%s", v)
	}
	ls := mustFerry(t, nil, "ls", "--store", s.store, "--stream", s.name)
	if !strings.Contains(ls.Stdout, "age:"+k1.fp) || !strings.Contains(ls.Stdout, "encryption: all") {
		t.Fatalf("ls does not show the encryption state:\n%s", ls)
	}
	outputs = append(outputs, v.Output(), ls.Output(), cat.Stderr)
	for _, out := range outputs {
		if strings.Contains(out, "AGE-SECRET-KEY") || strings.Contains(out, k1.secret) {
			t.Fatalf("a secret key reached the output:\n%s", out)
		}
	}
}

// A receiver with require_encryption refuses a plaintext segment, naming
// it, and applies nothing of it; a shipper with recipients refuses a
// spool still holding a segment sealed in plaintext.
func TestRequireEncryption(t *testing.T) {
	t.Parallel()
	s := newStream(t, "plain")
	k := newAgeKey(t, t.TempDir(), "k.txt")
	input := logLines(22, 1, 500)
	s.ship(input)
	recvCfg := filepath.Join(s.dir, "receive.toml")
	os.WriteFile(recvCfg, []byte("[encryption]\nrequire_encryption = true\n"), 0o644)
	first := s.segments()[0]
	failFerry(t, nil, []string{first, "not encrypted", "require_encryption"}, s.receiveArgs("--once", "--config", recvCfg)...)
	if got := s.readReplica(); len(got) != 0 {
		t.Fatalf("%d bytes applied from a refused plaintext segment", len(got))
	}
	v := ferry(t, nil, "verify", "--store", s.store, "--stream", s.name, "--config", recvCfg)
	if v.Code == 0 || !strings.Contains(v.Stdout, first) || !strings.Contains(v.Stdout, "not encrypted") {
		t.Fatalf("verify with require_encryption of a plaintext stream: want a defect naming %s:\n%s", first, v)
	}

	// The same spool, now with recipients and a new target: the
	// plaintext history is not copied to it (backfill refuses it, naming
	// the segment), and nothing reaches the new target in the clear.
	shipCfg := filepath.Join(s.dir, "ship.toml")
	os.WriteFile(shipCfg, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", k.public)), 0o644)
	archive := filepath.Join(s.dir, "archive")
	r := ferry(t, bytes.NewReader([]byte("late\n")), s.shipArgs("--config", shipCfg, "--also", archive, "--shutdown-timeout", "2s")...)
	if !strings.Contains(r.Output(), "plaintext") || !strings.Contains(r.Output(), first) {
		t.Fatalf("ship with recipients over a plaintext history, new target: want a refusal naming %s:\n%s", first, r)
	}
	ents, _ := os.ReadDir(filepath.Join(archive, s.name))
	t.Logf("ship:\n%s", r)
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(archive, s.name, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if m, _, err := batch.ParseMeta(data); err == nil && !m.Encrypted() {
			t.Fatalf("the new target received plaintext segment %s", e.Name())
		}
	}
}
