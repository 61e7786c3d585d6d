package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/sign"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// signingKey is a key pair made by ferry keygen --signing.
type signingKey struct {
	file, public, id string
}

// keygen runs the built ferry keygen and checks what it wrote.
func keygen(t *testing.T, dir, name string) signingKey {
	t.Helper()
	file := filepath.Join(dir, name)
	r := mustFerry(t, nil, "keygen", "--signing", file, "--json")
	var raw map[string]map[string]string
	if err := json.Unmarshal([]byte(r.Stdout), &raw); err != nil {
		t.Fatalf("keygen --json: %v\n%s", err, r)
	}
	s := raw["signing"]
	k := signingKey{file: s["key_file"], public: s["public_key"], id: s["key_id"]}
	if k.file != file || !strings.HasPrefix(k.public, "ferry-ed25519:") || len(k.id) != 16 || s["public_key_file"] != file+".pub" {
		t.Fatalf("keygen --json: %s", r.Stdout)
	}
	for _, p := range []string{file, file + ".pub"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v, want 0600", p, err, fi.Mode().Perm())
		}
	}
	pub, _ := os.ReadFile(file + ".pub")
	if strings.TrimSpace(string(pub)) != k.public {
		t.Fatalf("%s.pub holds %q, keygen printed %q", file, pub, k.public)
	}
	return k
}

// trustConfig is a reader's config trusting keys.
func trustConfig(t *testing.T, dir, name string, extra string, keys ...signingKey) string {
	t.Helper()
	var q []string
	for _, k := range keys {
		q = append(q, fmt.Sprintf("%q", k.public))
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("[encryption]\ntrusted_keys = ["+strings.Join(q, ", ")+"]\n"+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// signConfig is a shipper's config signing with k.
func signConfig(t *testing.T, dir, name string, k signingKey, extra string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(fmt.Sprintf("[encryption]\nsigning_key_file = %q\n%s", k.file, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ferry keygen writes keys 0600, prints the public parts (the age
// recipient and the ed25519 public key), and never overwrites a file.
func TestKeygen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ageFile, sigFile := filepath.Join(dir, "age.key"), filepath.Join(dir, "signing.key")
	r := mustFerry(t, nil, "keygen", "--age", ageFile, "--signing", sigFile)
	id, _ := os.ReadFile(ageFile)
	key, _ := os.ReadFile(sigFile)
	if !strings.Contains(string(id), "AGE-SECRET-KEY-1") || !strings.Contains(string(key), "BEGIN PRIVATE KEY") {
		t.Fatalf("key files:\n%s\n%s", id, key)
	}
	if strings.Contains(r.Output(), "AGE-SECRET-KEY") || strings.Contains(r.Output(), "PRIVATE KEY---") {
		t.Fatalf("keygen printed a secret:\n%s", r)
	}
	var recipient, public string
	for _, line := range strings.Split(r.Stdout, "\n") {
		switch {
		case strings.HasPrefix(line, "age1"):
			recipient = line
		case strings.HasPrefix(line, "ferry-ed25519:"):
			public = line
		}
	}
	if !strings.Contains(string(id), "# public key: "+recipient) || recipient == "" {
		t.Fatalf("keygen printed recipient %q; the identity file says:\n%s", recipient, id)
	}
	if s, err := sign.LoadSigningKey(sigFile); err != nil || s.PublicKey() != public {
		t.Fatalf("keygen printed %q; the key file holds %v (%v)", public, s, err)
	}
	for _, f := range []string{ageFile, sigFile, sigFile + ".pub"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", f, fi.Mode().Perm(), err)
		}
	}
	// Never over an existing file, and nothing written when one exists.
	failFerry(t, nil, []string{sigFile, "already exists"}, "keygen", "--signing", sigFile)
	fresh := filepath.Join(dir, "fresh.key")
	failFerry(t, nil, []string{ageFile, "already exists"}, "keygen", "--signing", fresh, "--age", ageFile)
	if _, err := os.Stat(fresh); err == nil {
		t.Fatal("keygen wrote a key before refusing")
	}
	if again, _ := os.ReadFile(sigFile); !bytes.Equal(again, key) {
		t.Fatal("keygen changed an existing key file")
	}
	failFerry(t, nil, []string{"--age", "--signing"}, "keygen")
	// The key file is a secret: group-readable is refused by the shipper.
	os.Chmod(sigFile, 0o640)
	s := newStream(t, "keymode")
	cfg := signConfig(t, dir, "ship.toml", signingKey{file: sigFile}, "")
	failFerry(t, bytes.NewReader([]byte("x\n")), []string{"signing key file " + sigFile, "chmod 600"}, s.shipArgs("--config", cfg)...)
}

// A shipper with signing_key_file and age recipients signs every segment
// it seals; the link carries them unchanged (the receiver's inbox holds
// the same bytes as the store) and the link receiver, with trusted_keys,
// verifies and applies them. ls and verify show who signed.
func TestSignedEncryptedLink(t *testing.T) {
	t.Parallel()
	s := newStream(t, "signed")
	keys := t.TempDir()
	k := keygen(t, keys, "signing.key")
	ak := newAgeKey(t, keys, "age.txt")
	shipCfg := signConfig(t, keys, "ship.toml", k, fmt.Sprintf("recipients = [%q]\n", ak.public))
	recvCfg := trustConfig(t, keys, "recv.toml", fmt.Sprintf("identity_file = %q\n", ak.file), k)

	addr := ferrytest.FreeAddr(t)
	linkState, linkReplica := filepath.Join(s.dir, "link-state"), filepath.Join(s.dir, "link.out")
	recv := startFerry(t, nil, "receive", "--config", recvCfg, "--listen", addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--state", linkState, "--apply", "file:"+linkReplica, "--poll-min", "20ms", "--poll-max", "100ms")
	ferrytest.Eventually(t, 10*time.Second, "receiver listening", func() (bool, string) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	input := logLines(31, 1, 8000)
	shipped := s.ship(input, "--config", shipCfg, "--max-bytes", "64KiB", "--also", "tcp://"+addr, "--insecure", "--token", linkToken)
	if !strings.Contains(shipped.Stderr, k.id) {
		t.Errorf("ship does not log the signing key id:\n%s", shipped)
	}
	ferrytest.Eventually(t, 30*time.Second, "the link receiver applied everything", func() (bool, string) {
		got, _ := os.ReadFile(linkReplica)
		return bytes.Equal(got, input), fmt.Sprintf("%d of %d bytes", len(got), len(input))
	})
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("link receiver exit %d:\n%s", code, recv)
	}
	names := s.segments()
	if len(names) < 3 {
		t.Fatalf("%d segments, want several", len(names))
	}
	for _, name := range names {
		data, err := os.ReadFile(s.segmentPath(name))
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := batch.ParseMeta(data)
		if err != nil || m.Encryption != "age" || sign.State(&m) != k.id {
			t.Fatalf("%s: encryption %q, signature %q (%v), want age and key %s", name, m.Encryption, sign.State(&m), err, k.id)
		}
		inbox, err := os.ReadFile(filepath.Join(linkState, "inbox", s.name, name))
		if err != nil || !bytes.Equal(inbox, data) {
			t.Fatalf("the link's inbox copy of %s differs from the store's (%v)", name, err)
		}
	}
	// Readers of the store with the key trusted: all accepted.
	s.receiveOnce("--config", recvCfg)
	s.wantReplica(input, "signed and encrypted")
	cat := mustFerry(t, nil, "cat", "--config", recvCfg, "--store", s.store, "--stream", s.name)
	if cat.Stdout != string(input) {
		t.Fatal("cat with trusted_keys does not give the input")
	}
	v := mustFerry(t, nil, "verify", "--config", recvCfg, "--store", s.store, "--stream", s.name)
	if !strings.Contains(v.Stdout, fmt.Sprintf("signatures: %d signed by key %s; trusted keys: %s", len(names), k.id, k.id)) {
		t.Fatalf("verify does not report the signatures:\n%s", v)
	}
	v = mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
	if !strings.Contains(v.Stdout, fmt.Sprintf("%d signed by key %s (no trusted_keys: signers not checked)", len(names), k.id)) {
		t.Fatalf("verify without trusted_keys:\n%s", v)
	}
	ls := mustFerry(t, nil, "ls", "--store", s.store, "--stream", s.name)
	rows := 0
	for _, line := range strings.Split(ls.Stdout, "\n") {
		if strings.Contains(line, ".seg.zst") && strings.HasPrefix(strings.TrimSpace(line), "1 ") {
			rows++
			if f := strings.Fields(line); len(f) < 2 || f[len(f)-2] != k.id {
				t.Fatalf("ls row does not name the signer %s before the segment: %q", k.id, line)
			}
		}
	}
	if !strings.Contains(ls.Stdout, "SIGNED") || rows != len(names) ||
		!strings.Contains(ls.Stdout, fmt.Sprintf("signatures: %d signed by key %s", len(names), k.id)) {
		t.Fatalf("ls does not show the signer of each segment:\n%s", ls)
	}
	for _, si := range s.lsJSONSigned() {
		if si != k.id {
			t.Fatalf("ls --json signed_by %q, want %s", si, k.id)
		}
	}
}

// lsJSONSigned is the signed_by of every segment in ls --json.
func (s *stream) lsJSONSigned() []string {
	s.t.Helper()
	r := mustFerry(s.t, nil, "ls", "--json", "--store", s.store, "--stream", s.name)
	var out []string
	dec := json.NewDecoder(strings.NewReader(r.Stdout))
	for dec.More() {
		var si struct {
			SignedBy string `json:"signed_by"`
		}
		if err := dec.Decode(&si); err != nil {
			s.t.Fatal(err)
		}
		out = append(out, si.SignedBy)
	}
	return out
}

// rewriteFrom rewrites segments names[i:] in place as an attacker with
// write access to the store would: segment i gets the records forge
// makes of its own, recompressed, with its payload checksum recomputed;
// every segment after it gets prev_sha256 recomputed so the chain holds.
// sig says what becomes of each signature: it is given the rebuilt
// metadata and returns the signature field to store.
func rewriteFrom(t *testing.T, s *stream, names []string, i int, forge func([]batch.Record), sig func(m *batch.Meta) string) {
	t.Helper()
	data, err := os.ReadFile(s.segmentPath(names[i]))
	if err != nil {
		t.Fatal(err)
	}
	seg, recs, err := batch.Decode(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]batch.Record, recs.Len())
	for j := range all {
		all[j] = recs.At(j) // records alias the segment's buffer, which stays
	}
	forge(all)
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset(seg.Meta.Stream, seg.Meta.Generation, seg.Meta.PrevSHA256)
	for j := range all {
		if err := b.Add(&all[j]); err != nil {
			t.Fatal(err)
		}
	}
	forged, _, err := b.Seal(seg.Meta.SealedAt)
	if err != nil {
		t.Fatal(err)
	}
	prev := ""
	for j := i; j < len(names); j++ {
		if j > i {
			if forged, err = os.ReadFile(s.segmentPath(names[j])); err != nil {
				t.Fatal(err)
			}
		}
		m, off, err := batch.ParseMeta(forged)
		if err != nil {
			t.Fatal(err)
		}
		if prev != "" {
			m.PrevSHA256 = prev
		} else {
			m.Signature = seg.Meta.Signature // the one the segment had
		}
		m.Signature = sig(&m)
		out, _, err := batch.Assemble(m, forged[off:])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.segmentPath(names[j]), out, 0o644); err != nil {
			t.Fatal(err)
		}
		prev = batch.Hash(out)
	}
}

// The attack signing exists for: someone who can write the store
// rewrites a segment (a changed record, recompressed, payload checksum
// and the whole chain after it recomputed). Without trusted_keys the
// forgery is applied and verify finds nothing wrong; with them every
// reader refuses it, naming the segment and the keys, whether the
// signature was kept, removed, or made with the attacker's own key. A
// segment of another stream signed by the same key is refused too, and a
// receiver trusting an old and a new key accepts both (rotation).
func TestForgedSegmentRefused(t *testing.T) {
	t.Parallel()
	s := newStream(t, "forged")
	keys := t.TempDir()
	k, attacker := keygen(t, keys, "signing.key"), keygen(t, keys, "attacker.key")
	shipCfg := signConfig(t, keys, "ship.toml", k, "")
	recvCfg := trustConfig(t, keys, "recv.toml", "", k)
	input := logLines(32, 1, 3000)
	s.ship(input, "--config", shipCfg, "--max-bytes", "32KiB")
	names := s.segments()
	if len(names) < 4 {
		t.Fatalf("%d segments, want at least 4", len(names))
	}
	mustFerry(t, nil, "verify", "--config", recvCfg, "--store", s.store, "--stream", s.name)
	pristine := map[string][]byte{}
	for _, n := range names {
		pristine[n], _ = os.ReadFile(s.segmentPath(n))
	}
	restoreStore := func() {
		for n, d := range pristine {
			os.WriteFile(s.segmentPath(n), d, 0o644)
		}
	}
	target := 2
	victim := names[target]
	forge := func(recs []batch.Record) { recs[1].Data = []byte("transfer 1000000 to mallory\n") }
	// What was applied before the forged segment: the records of the
	// segments before it.
	_, lastGood := segmentSeqs(t, names[target-1])
	before := prefixLines(input, int(lastGood))

	attackerSigner, err := sign.LoadSigningKey(attacker.file)
	if err != nil {
		t.Fatal(err)
	}
	variants := []struct {
		name string
		sig  func(m *batch.Meta) string
		want []string
	}{
		{"signature removed", func(*batch.Meta) string { return "" }, []string{"is not signed", k.id}},
		{"signature kept", func(m *batch.Meta) string { return m.Signature }, []string{"does not match its metadata", k.id}},
		{"re-signed by the attacker", func(m *batch.Meta) string {
			m.Signature = ""
			v, _ := attackerSigner.Sign(batch.SignedBytes(m))
			return v
		}, []string{"signed by key " + attacker.id, "not trusted", "trusted: " + k.id}},
	}
	for _, v := range variants {
		restoreStore()
		rewriteFrom(t, s, names, target, forge, v.sig)
		if v.name == "signature removed" {
			// Without trusted_keys nothing looks wrong: the chain holds.
			ok := mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)
			if !strings.Contains(ok.Stdout, "hash chain ok") {
				t.Fatalf("%s: verify without trusted_keys:\n%s", v.name, ok)
			}
			plain := newStream(t, s.name)
			plain.store = s.store
			plain.receiveOnce()
			if !bytes.Contains(plain.readReplica(), []byte("mallory")) {
				t.Fatalf("%s: a receiver without trusted_keys did not apply the forgery: the test forges nothing", v.name)
			}
		}
		os.RemoveAll(s.state)
		os.Remove(s.replica)
		want := append([]string{s.name + "/" + victim}, v.want...)
		failFerry(t, nil, want, s.receiveArgs("--once", "--config", recvCfg)...)
		s.wantReplica(before, v.name+": applied up to the forged segment")
		failFerry(t, nil, want, "cat", "--config", recvCfg, "--store", s.store, "--stream", s.name)
		ver := ferry(t, nil, "verify", "--config", recvCfg, "--store", s.store, "--stream", s.name)
		if ver.Code == 0 || !strings.Contains(ver.Stdout, "DEFECT segment "+s.name+"/"+victim) {
			t.Fatalf("%s: verify with trusted_keys:\n%s", v.name, ver)
		}
		restored := filepath.Join(s.dir, "restored-"+strings.ReplaceAll(v.name, " ", "-"))
		failFerry(t, nil, want, "restore", "--config", recvCfg, "--store", s.store, "--stream", s.name,
			"--state", restored+".state", "--apply", "file:"+restored)
	}

	// A segment of another stream, signed by the same key, over this
	// stream's segment of the same seq range: refused by the stream the
	// signature binds it to.
	restoreStore()
	other := newStream(t, "forged-other")
	other.store = s.store
	other.ship(input, "--config", shipCfg, "--max-bytes", "32KiB")
	if on := other.segments(); len(on) <= target || on[target] != victim {
		t.Fatalf("the other stream's segments %v do not line up with %v", on, names)
	}
	swapped, _ := os.ReadFile(other.segmentPath(victim))
	os.WriteFile(s.segmentPath(victim), swapped, 0o644)
	os.RemoveAll(s.state)
	os.Remove(s.replica)
	failFerry(t, nil, []string{victim, `belongs to stream "forged-other"`}, s.receiveArgs("--once", "--config", recvCfg)...)
	s.wantReplica(before, "applied up to the swapped segment")

	// Rotation: the shipper's key changes mid-stream; a receiver trusting
	// both keys applies everything, one trusting only the new key refuses
	// the first segment signed by the old one.
	restoreStore()
	rot := newStream(t, "rotated")
	rot.store = s.store
	first, second := logLines(33, 1, 1000), logLines(34, 1001, 1000)
	rot.ship(first, "--config", shipCfg, "--max-bytes", "32KiB")
	newKey := keygen(t, keys, "new.key")
	rot.ship(second, "--config", signConfig(t, keys, "ship-new.toml", newKey, ""), "--max-bytes", "32KiB")
	rot.receiveOnce("--config", trustConfig(t, keys, "both.toml", "", k, newKey))
	rot.wantReplica(append(append([]byte{}, first...), second...), "signed by the old and the new key")
	rn := rot.segments()
	m := batch.Meta{}
	if data, err := os.ReadFile(rot.segmentPath(rn[len(rn)-1])); err == nil {
		m, _, _ = batch.ParseMeta(data)
	}
	if sign.State(&m) != newKey.id {
		t.Fatalf("the newest segment is signed by %q, want the new key %s", sign.State(&m), newKey.id)
	}
	os.RemoveAll(rot.state)
	os.Remove(rot.replica)
	failFerry(t, nil, []string{rot.name + "/" + rn[0], "signed by key " + k.id, "trusted: " + newKey.id},
		rot.receiveArgs("--once", "--config", trustConfig(t, keys, "new-only.toml", "", newKey))...)
}
