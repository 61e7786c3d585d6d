package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// identityFile writes the secret keys of keys into one identity file.
func identityFile(t *testing.T, dir, name string, keys ...ageKey) string {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.secret + "\n")
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// storeDigest hashes every segment file of the stream, by name.
func storeDigest(t *testing.T, s *stream) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, name := range s.segments() {
		data, err := os.ReadFile(s.segmentPath(name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = sha256.Sum256(data)
	}
	return out
}

// recipientsOf is the fingerprints a stored segment's metadata lists.
func recipientsOf(t *testing.T, s *stream, name string) string {
	t.Helper()
	data, err := os.ReadFile(s.segmentPath(name))
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := batch.ParseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(m.Recipients, ",")
}

// A change of recipients takes effect at a segment boundary: a shipper
// restarted with new recipients seals its next segment for them, never a
// segment for both. The old identity reads the old segments only, the new
// one the new segments only, a file holding both reads everything.
func TestRecipientChange(t *testing.T) {
	t.Parallel()
	s := newStream(t, "rotate")
	keys := t.TempDir()
	a, b := newAgeKey(t, keys, "a.txt"), newAgeKey(t, keys, "b.txt")
	cfgA, cfgB := filepath.Join(s.dir, "a.toml"), filepath.Join(s.dir, "b.toml")
	os.WriteFile(cfgA, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", a.public)), 0o644)
	os.WriteFile(cfgB, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", b.public)), 0o644)
	in1, in2 := logLines(31, 1, 4000), logLines(32, 4001, 4000)
	s.ship(in1, "--config", cfgA, "--max-bytes", "64KiB")
	old := s.segments()
	s.ship(in2, "--config", cfgB, "--max-bytes", "64KiB")
	all := s.segments()
	if len(all) <= len(old) || len(old) < 2 {
		t.Fatalf("%d segments before the change, %d after", len(old), len(all))
	}
	for i, name := range all {
		want := a.fp
		if i >= len(old) {
			want = b.fp
		}
		if got := recipientsOf(t, s, name); got != want {
			t.Fatalf("segment %s is encrypted for %q, want %q", name, got, want)
		}
	}
	for i, name := range all {
		for _, k := range []ageKey{a, b} {
			r := withIdentity(k.file).Run(t, nil, "cat", s.segmentPath(name))
			canRead := (i < len(old)) == (k == a)
			if (r.Code == 0) != canRead {
				t.Fatalf("cat %s with key %s: exit %d, want readable %v:\n%s", name, k.fp, r.Code, canRead, r.Stderr)
			}
		}
	}
	// The receiver keeps both keys: it reads the whole stream.
	both := identityFile(t, keys, "both.txt", a, b)
	if r := withIdentity(both).Run(t, nil, s.receiveArgs("--once")...); r.Code != 0 {
		t.Fatalf("receive with both keys:\n%s", r)
	}
	s.wantReplica(append(bytes.Clone(in1), in2...), "both keys")
}

// ferry rekey re-wraps every segment's file key for new recipients
// without changing a byte of any segment: the new key reads the whole
// archive through the key epoch's headers, a key that was removed no
// longer reads it through ferry; a second run does nothing; a stopped run
// resumes; damaged or foreign header objects are refused by name; a
// second rotation builds on the first.
func TestRekey(t *testing.T) {
	t.Parallel()
	s := newStream(t, "rekey")
	keys := t.TempDir()
	a, b, c, d := newAgeKey(t, keys, "a.txt"), newAgeKey(t, keys, "b.txt"), newAgeKey(t, keys, "c.txt"), newAgeKey(t, keys, "d.txt")
	cfgA, cfgB := filepath.Join(s.dir, "a.toml"), filepath.Join(s.dir, "b.toml")
	os.WriteFile(cfgA, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", a.public)), 0o644)
	os.WriteFile(cfgB, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", b.public)), 0o644)
	in1, in2 := logLines(41, 1, 3000), logLines(42, 3001, 3000)
	s.ship(in1, "--config", cfgA, "--max-bytes", "64KiB")
	s.ship(in2, "--config", cfgB, "--max-bytes", "64KiB")
	s.ship(nil, "--max-bytes", "64KiB") // no records: nothing sealed in plaintext
	input := append(bytes.Clone(in1), in2...)
	segs := s.segments()
	before := storeDigest(t, s)

	// Rekey for c, opening the segments with a and b.
	ab := identityFile(t, keys, "ab.txt", a, b)
	rekey := func(id string, want []string, extra ...string) string {
		t.Helper()
		r := withIdentity(id).Run(t, nil, append([]string{"rekey", "--store", s.store, "--stream", s.name}, extra...)...)
		if r.Code != 0 {
			t.Fatalf("rekey %v:\n%s", extra, r)
		}
		for _, w := range want {
			if !strings.Contains(r.Stdout, w) {
				t.Fatalf("rekey %v: output lacks %q:\n%s", extra, w, r)
			}
		}
		if strings.Contains(r.Output(), "AGE-SECRET-KEY") {
			t.Fatalf("rekey printed a secret key:\n%s", r)
		}
		return r.Stdout
	}
	rekey(ab, []string{"key epoch 1 (new", c.fp, fmt.Sprintf("%d segments: %d rekeyed now, 0 already", len(segs), len(segs))}, "--recipient", c.public)
	if got := storeDigest(t, s); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatal("rekey changed the stored segments")
	}
	hdrs, _ := filepath.Glob(filepath.Join(s.streamDir(), "keys", "00000001", "*.seg.zst.hdr"))
	if len(hdrs) != len(segs) {
		t.Fatalf("%d headers in key epoch 1, want one per segment (%d)", len(hdrs), len(segs))
	}
	// Idempotent: a second run writes nothing.
	rekey(ab, []string{"key epoch 1 (resumed", fmt.Sprintf("0 rekeyed now, %d already", len(segs))}, "--recipient", c.public)
	// Resumable: a run stopped before its last two headers finishes them.
	os.Remove(hdrs[len(hdrs)-1])
	os.Remove(hdrs[len(hdrs)-2])
	rekey(ab, []string{"key epoch 1 (resumed", fmt.Sprintf("2 rekeyed now, %d already", len(segs)-2)}, "--recipient", c.public)

	// c reads the whole archive: receive, cat, verify.
	cOnly := c.file
	if r := withIdentity(cOnly).Run(t, nil, s.receiveArgs("--once")...); r.Code != 0 {
		t.Fatalf("receive with the new key:\n%s", r)
	}
	s.wantReplica(input, "new key after rekey")
	if r := withIdentity(cOnly).Run(t, nil, "cat", "--store", s.store, "--stream", s.name); r.Code != 0 || r.Stdout != string(input) {
		t.Fatalf("cat with the new key: exit %d, %d of %d bytes\n%s", r.Code, len(r.Stdout), len(input), r.Stderr)
	}
	if v := withIdentity(cOnly).Run(t, nil, "verify", "--store", s.store, "--stream", s.name); v.Code != 0 || strings.Contains(v.Stdout, "records were not") {
		t.Fatalf("verify with the new key:\n%s", v)
	}
	// a and b were removed: through ferry they read nothing any more.
	for _, k := range []ageKey{a, b} {
		state := filepath.Join(s.dir, "state-"+k.fp)
		r := withIdentity(k.file).Run(t, nil, "receive", "--once", "--store", s.store, "--stream", s.name, "--state", state,
			"--apply", "file:"+filepath.Join(s.dir, "out-"+k.fp))
		if r.Code == 0 || !strings.Contains(r.Output(), "key epoch 1") || !strings.Contains(r.Output(), c.fp) || !strings.Contains(r.Output(), segs[0]) {
			t.Fatalf("receive with removed key %s: want a refusal naming %s, key epoch 1 and %s:\n%s", k.fp, segs[0], c.fp, r)
		}
	}

	// A header object holding another segment's file key, or one over
	// the size cap, is refused, naming it.
	victim := filepath.Join(s.streamDir(), "keys", "00000001", segs[1]+".hdr")
	good, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := os.ReadFile(filepath.Join(s.streamDir(), "keys", "00000001", segs[0]+".hdr"))
	for name, bad := range map[string][]byte{"foreign": foreign, "huge": bytes.Repeat([]byte("A"), 20<<10)} {
		os.WriteFile(victim, bad, 0o644)
		state := filepath.Join(s.dir, "state-"+name)
		r := withIdentity(cOnly).Run(t, nil, "receive", "--once", "--store", s.store, "--stream", s.name, "--state", state,
			"--apply", "file:"+filepath.Join(s.dir, "out-"+name))
		if r.Code == 0 || !strings.Contains(r.Output(), "keys/00000001/"+segs[1]+".hdr") {
			t.Fatalf("receive with a %s header object: want a refusal naming it:\n%s", name, r)
		}
	}
	os.WriteFile(victim, good, 0o644)

	// A second rotation, opened with c: epoch 2 for d.
	rekey(cOnly, []string{"key epoch 2 (new", d.fp, fmt.Sprintf("%d rekeyed now", len(segs))}, "--recipient", d.public)
	if r := withIdentity(d.file).Run(t, nil, "cat", "--store", s.store, "--stream", s.name); r.Code != 0 || r.Stdout != string(input) {
		t.Fatalf("cat with the key of epoch 2: exit %d\n%s", r.Code, r.Stderr)
	}
	if r := withIdentity(cOnly).Run(t, nil, "cat", "--store", s.store, "--stream", s.name); r.Code == 0 || !strings.Contains(r.Stderr, "key epoch 2") {
		t.Fatalf("cat with the key epoch 2 removed: want a refusal:\n%s", r)
	}
	// Without an identity rekey is refused before it touches anything.
	failFerry(t, nil, []string{"no identity", "--identity"}, "rekey", "--store", s.store, "--stream", s.name, "--recipient", c.public)
	if got := storeDigest(t, s); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatal("the stored segments changed")
	}
}

// Pruning a rekeyed stream deletes the key epoch headers of the segments
// it deletes with them and keeps those of the segments it keeps, which
// the new key still reads.
func TestPruneRekeyed(t *testing.T) {
	t.Parallel()
	s := newStream(t, "prunerekey")
	keys := t.TempDir()
	a, c := newAgeKey(t, keys, "a.txt"), newAgeKey(t, keys, "c.txt")
	cfgA := filepath.Join(s.dir, "a.toml")
	os.WriteFile(cfgA, []byte(fmt.Sprintf("[encryption]\nrecipients = [%q]\n", a.public)), 0o644)
	s.ship(logLines(43, 1, 3000), "--config", cfgA, "--max-bytes", "64KiB")
	segs := s.segments()
	if len(segs) < 4 {
		t.Fatalf("%d segments, want at least 4", len(segs))
	}
	if r := withIdentity(a.file).Run(t, nil, "rekey", "--store", s.store, "--stream", s.name, "--recipient", c.public); r.Code != 0 {
		t.Fatalf("rekey:\n%s", r)
	}
	headers := func() []string {
		hdrs, _ := filepath.Glob(filepath.Join(s.streamDir(), "keys", "00000001", "*.hdr"))
		var names []string
		for _, h := range hdrs {
			names = append(names, strings.TrimSuffix(filepath.Base(h), ".hdr"))
		}
		return names
	}
	if got := headers(); fmt.Sprint(got) != fmt.Sprint(segs) {
		t.Fatalf("headers after rekey for %v, want %v", got, segs)
	}
	out := mustFerry(t, nil, "prune", "--store", s.store, "--stream", s.name, "--keep-min", "2").Stdout
	kept := s.segments()
	if fmt.Sprint(kept) != fmt.Sprint(segs[len(segs)-2:]) {
		t.Fatalf("prune kept %v, want the newest 2 of %v", kept, segs)
	}
	if got := headers(); fmt.Sprint(got) != fmt.Sprint(kept) {
		t.Fatalf("key epoch headers after prune for %v, want only the kept segments' %v\n%s", got, kept, out)
	}
	if !strings.Contains(out, fmt.Sprintf("deleted %d key epoch header(s)", len(segs)-2)) {
		t.Fatalf("prune does not say it deleted the headers:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(s.streamDir(), "keys", "00000001.json")); err != nil {
		t.Fatalf("the key epoch itself went: %v", err)
	}
	if v := withIdentity(c.file).Run(t, nil, "verify", "--store", s.store, "--stream", s.name); v.Code != 0 {
		t.Fatalf("verify with the new key after prune:\n%s", v)
	}
}
