package crypt_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
)

// key is a fresh X25519 identity written to an identity file.
type key struct {
	id   *age.X25519Identity
	file string
	fp   string
}

func newKey(t testing.TB) key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "identity.txt")
	if err := os.WriteFile(file, []byte("# test key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return key{id: id, file: file, fp: crypt.Fingerprint(id.Recipient().String())}
}

func (k key) public() string { return k.id.Recipient().String() }

func keyring(t testing.TB, k key) *crypt.Keyring {
	t.Helper()
	kr, err := crypt.LoadIdentities(k.file)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func records(n int, size int) []batch.Record {
	recs := make([]batch.Record, n)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range recs {
		recs[i] = batch.Record{Seq: uint64(i + 1), Time: t0.Add(time.Duration(i) * time.Millisecond), Op: "put",
			Key: fmt.Appendf(nil, "k%d", i), Data: fmt.Appendf(nil, "secret-%d %0*d\n", i, size, i*7919)}
	}
	return recs
}

// seal builds one segment of recs, encrypted for keys (plaintext when none).
func seal(t testing.TB, recs []batch.Record, keys ...key) ([]byte, batch.Meta) {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		var pubs []string
		for _, k := range keys {
			pubs = append(pubs, k.public())
		}
		e, err := crypt.NewEncrypter(pubs)
		if err != nil {
			t.Fatal(err)
		}
		b.SetEncrypter(e)
	}
	b.Reset("app", 1, batch.ZeroHash)
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	data, m, err := b.Seal(time.Date(2025, 1, 2, 3, 5, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return data, m
}

// decode opens, decrypts and decodes data in memory.
func decode(data []byte, d batch.Decrypter) ([]batch.Record, error) {
	s, err := batch.Open(data)
	if err != nil {
		return nil, err
	}
	if err := s.Decrypt(d); err != nil {
		return nil, err
	}
	recs, err := s.Records(0)
	if err != nil {
		return nil, err
	}
	var out []batch.Record
	for _, r := range recs.All() {
		out = append(out, r)
	}
	return out, nil
}

// decodeStream decodes data as receive does segments over 32 MiB and
// fetch does all: streamed, never held.
func decodeStream(data []byte, d batch.Decrypter) ([]batch.Record, error) {
	sr, err := batch.NewSegmentReader(bytes.NewReader(data), 0, 1<<30)
	if err != nil {
		return nil, err
	}
	sr.Decrypter = d
	s, raw, err := sr.Decompress(nil, 2)
	if err != nil {
		return nil, err
	}
	recs, err := s.ParseRecords(raw, batch.Records{})
	if err != nil {
		return nil, err
	}
	var out []batch.Record
	for _, r := range recs.All() {
		out = append(out, r)
	}
	return out, nil
}

// scan decodes data as cat and verify do.
func scan(data []byte, d batch.Decrypter) ([]batch.Record, error) {
	s, err := batch.Open(data)
	if err != nil {
		return nil, err
	}
	if err := s.Decrypt(d); err != nil {
		return nil, err
	}
	var out []batch.Record
	err = s.Scan(0, func(r *batch.Record) error {
		c := *r
		c.Key, c.Data = bytes.Clone(r.Key), bytes.Clone(r.Data)
		out = append(out, c)
		return nil
	})
	return out, err
}

var readers = map[string]func([]byte, batch.Decrypter) ([]batch.Record, error){
	"memory": decode, "stream": decodeStream, "scan": scan, "in place": decodeInPlace(2),
}

func sameRecords(t *testing.T, got, want []batch.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Data, want[i].Data) || !bytes.Equal(got[i].Key, want[i].Key) ||
			got[i].Op != want[i].Op || !got[i].Time.Equal(want[i].Time) {
			t.Fatalf("record %d differs: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestRoundTrip(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	// Several 2 MiB chunks: several zstd frames inside one age file.
	recs := records(5000, 1000)
	data, m := seal(t, recs, k1, k2)
	if m.Encryption != "age" || len(m.Recipients) != 2 || m.Recipients[0] != k1.fp || m.Recipients[1] != k2.fp {
		t.Fatalf("metadata says encryption %q for %v, want age for [%s %s]", m.Encryption, m.Recipients, k1.fp, k2.fp)
	}
	_, off, err := batch.ParseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data[off:], []byte("age-encryption.org/v1\n")) {
		t.Fatal("payload is not an age file")
	}
	// Nothing of the records is visible: not the keys, not the data.
	if bytes.Contains(data, []byte("secret-0 ")) {
		t.Fatal("segment holds record bytes in the clear")
	}
	// The chain and checksum cover the ciphertext: checkable keyless.
	sum := sha256.Sum256(data[off:])
	if m.PayloadSHA256 != hex.EncodeToString(sum[:]) || m.PayloadSize != int64(len(data)-off) {
		t.Fatal("payload_sha256/payload_size do not describe the stored ciphertext")
	}
	for name, read := range readers {
		for _, k := range []key{k1, k2} {
			got, err := read(data, keyring(t, k))
			if err != nil {
				t.Fatalf("%s with key %s: %v", name, k.fp, err)
			}
			sameRecords(t, got, recs)
		}
	}
}

func TestWrongOrMissingIdentity(t *testing.T) {
	k1, k2, other := newKey(t), newKey(t), newKey(t)
	data, m := seal(t, records(10, 10), k1, k2)
	for name, read := range readers {
		_, err := read(data, keyring(t, other))
		if !errors.Is(err, batch.ErrNoKey) || errors.Is(err, batch.ErrCorrupt) || !batch.IsUnreadable(err) {
			t.Fatalf("%s, wrong key: %v, want ErrNoKey, not ErrCorrupt", name, err)
		}
		for _, want := range []string{"app/" + m.Name(), k1.fp, k2.fp, other.fp, other.file} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s, wrong key: %q does not name %s", name, err, want)
			}
		}
		_, err = read(data, nil)
		if !errors.Is(err, batch.ErrNoKey) {
			t.Fatalf("%s, no key: %v, want ErrNoKey", name, err)
		}
		for _, want := range []string{"app/" + m.Name(), k1.fp, k2.fp, "identity_file", "FERRY_AGE_IDENTITY_FILE"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s, no key: %q does not name %s", name, err, want)
			}
		}
		for _, secret := range []string{other.id.String(), k1.id.String()} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("%s: error quotes a secret key", name)
			}
		}
	}
}

// withPayload replaces the payload of a segment, recomputing payload_size
// and payload_sha256 as a forger would.
func withPayload(t *testing.T, data []byte, payload []byte) []byte {
	t.Helper()
	m, _, err := batch.ParseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(payload)
	m.PayloadSHA256, m.PayloadSize = hex.EncodeToString(sum[:]), int64(len(payload))
	out, _, err := batch.Assemble(m, payload)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFlippedCiphertextRefused(t *testing.T) {
	k := newKey(t)
	data, _ := seal(t, records(3000, 100), k)
	_, off, _ := batch.ParseMeta(data)
	hdrLen, err := crypt.CheckHeader(data[off:])
	if err != nil {
		t.Fatal(err)
	}
	// In the header, the nonce, the first chunk, the last chunk and its tag.
	n := len(data) - off
	for _, pos := range []int{5, hdrLen - 3, hdrLen + 4, hdrLen + 20, n / 2, n - 20, n - 1} {
		for name, read := range readers {
			flipped := bytes.Clone(data)
			flipped[off+pos] ^= 0x01
			// As stored: payload_sha256 catches it before decryption.
			if _, err := read(flipped, keyring(t, k)); !errors.Is(err, batch.ErrCorrupt) {
				t.Fatalf("%s, byte %d of %d flipped: %v, want ErrCorrupt", name, pos, n, err)
			}
			// Checksum recomputed: age's authentication catches it.
			forged := withPayload(t, data, flipped[off:])
			_, err := read(forged, keyring(t, k))
			if !errors.Is(err, batch.ErrCorrupt) && !errors.Is(err, batch.ErrNoKey) {
				t.Fatalf("%s, byte %d of %d flipped, checksum recomputed: %v, want ErrCorrupt", name, pos, n, err)
			}
			if err == nil {
				t.Fatalf("%s: forged ciphertext decoded", name)
			}
		}
	}
	// A cut ciphertext (the last chunk dropped) is refused too.
	cut := withPayload(t, data, data[off:len(data)-1000])
	for name, read := range readers {
		if _, err := read(cut, keyring(t, k)); !errors.Is(err, batch.ErrCorrupt) {
			t.Fatalf("%s, truncated ciphertext: %v, want ErrCorrupt", name, err)
		}
	}
}

func TestHeaderCaps(t *testing.T) {
	k := newKey(t)
	data, m := seal(t, records(5, 5), k)
	_, off, _ := batch.ParseMeta(data)
	hdrLen, _ := crypt.CheckHeader(data[off:])
	hdr := data[off : off+hdrLen]
	body := data[off+hdrLen:]
	first := bytes.Index(hdr, []byte("\n-> ")) + 1
	stanzaEnd := bytes.Index(hdr, []byte("\n--- ")) + 1
	stanza := hdr[first:stanzaEnd]
	many := func(n int) []byte {
		var p []byte
		p = append(p, hdr[:first]...)
		for range n {
			p = append(p, stanza...)
		}
		p = append(p, hdr[stanzaEnd:]...)
		return append(p, body...)
	}
	if _, err := crypt.CheckHeader(many(batch.MaxRecipients)); err != nil {
		t.Fatalf("%d stanzas refused: %v", batch.MaxRecipients, err)
	}
	for _, c := range []struct {
		name    string
		payload []byte
		want    string
	}{
		{"too many stanzas", many(batch.MaxRecipients + 1), "recipient stanzas"},
		{"huge header", append(append(append([]byte{}, hdr[:first]...), bytes.Repeat([]byte("-> x\nAAAA\n"), 2000)...), hdr[stanzaEnd:]...), "over"},
		{"no stanza", append(append([]byte{}, hdr[:first]...), hdr[stanzaEnd:]...), "no recipient stanza"},
		{"not age", []byte("hello"), "not an age file"},
		{"cut", hdr[:first+10], "cut short"},
	} {
		if _, err := crypt.CheckHeader(c.payload); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		forged := withPayload(t, data, c.payload)
		for name, read := range readers {
			if _, err := read(forged, keyring(t, k)); !errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), m.Name()) {
				t.Fatalf("%s, %s: %v, want ErrCorrupt naming the segment", c.name, name, err)
			}
		}
	}
	// Metadata listing too many recipients is refused before anything.
	mm, _, _ := batch.ParseMeta(data)
	for range batch.MaxRecipients {
		mm.Recipients = append(mm.Recipients, k.fp)
	}
	forged, _, err := batch.Assemble(mm, data[off:])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := batch.ParseMeta(forged); !errors.Is(err, batch.ErrCorrupt) {
		t.Fatalf("metadata with %d recipients: %v, want ErrCorrupt", len(mm.Recipients), err)
	}
}

func TestNewEncrypterRefuses(t *testing.T) {
	k := newKey(t)
	for _, c := range []struct {
		keys []string
		want string
	}{
		{nil, "no age recipients"},
		{[]string{k.id.String()}, "secret key"},
		{[]string{"age1notakey"}, "recipient 1: not an X25519"},
		{[]string{k.public(), k.public()}, "listed twice"},
	} {
		_, err := crypt.NewEncrypter(c.keys)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: %v, want %q", c.keys, err, c.want)
		}
		if strings.Contains(fmt.Sprint(err), k.id.String()) {
			t.Fatal("error quotes the secret key")
		}
	}
}

func TestLoadIdentitiesRefuses(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte(k.id.String()+"x\n"), 0o600)
	_, err := crypt.LoadIdentities(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), k.id.String()) {
		t.Fatalf("damaged identity file: %v, want an error naming it and not quoting the key", err)
	}
	if _, err := crypt.LoadIdentities(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing identity file: %v", err)
	}
}

// An identity file may hold old and new keys: a reader keeps the old
// ones to read segments encrypted before a rotation.
func TestRotatedKeysBothReadable(t *testing.T) {
	old, cur := newKey(t), newKey(t)
	both := filepath.Join(t.TempDir(), "ids.txt")
	os.WriteFile(both, []byte(old.id.String()+"\n"+cur.id.String()+"\n"), 0o600)
	kr, err := crypt.LoadIdentities(both)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(20, 20)
	for _, k := range []key{old, cur} {
		data, _ := seal(t, recs, k)
		got, err := decode(data, kr)
		if err != nil {
			t.Fatalf("segment for %s: %v", k.fp, err)
		}
		sameRecords(t, got, recs)
	}
}

func TestPlaintextUnchanged(t *testing.T) {
	recs := records(10, 10)
	data, m := seal(t, recs)
	if m.Encrypted() || m.Recipients != nil || bytes.Contains(data, []byte("recipients")) {
		t.Fatalf("plaintext segment says encryption %q recipients %v", m.Encryption, m.Recipients)
	}
	s, err := batch.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := s.Decompress(0); err != nil || !bytes.Contains(raw, []byte("secret-0 ")) { // what TestRoundTrip looks for
		t.Fatalf("record bytes not found in a plaintext segment's record stream (%v)", err)
	}
	got, err := decode(data, keyring(t, newKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, recs)
}

func FuzzCheckHeader(f *testing.F) {
	k := newKey(f)
	data, _ := seal(f, records(3, 3), k)
	_, off, _ := batch.ParseMeta(data)
	f.Add(data[off:])
	f.Add([]byte("age-encryption.org/v1\n-> X25519 abc\nAAAA\n--- xyz\n"))
	f.Add([]byte("age-encryption.org/v1\n--- \n"))
	kr := keyring(f, k)
	f.Fuzz(func(t *testing.T, p []byte) {
		n, err := crypt.CheckHeader(p)
		if err != nil {
			return
		}
		if n > crypt.MaxHeaderSize || n > len(p) || bytes.Count(p[:n], []byte("\n-> ")) > batch.MaxRecipients {
			t.Fatalf("accepted a header of %d bytes with %d stanzas", n, bytes.Count(p[:n], []byte("\n-> ")))
		}
		// What passes the check goes to age, which must not panic either.
		m := batch.Meta{Stream: "app", Generation: 1, FirstSeq: 1, LastSeq: 1}
		if rd, err := kr.Decrypt(&m, bytes.NewReader(p)); err == nil {
			var buf [4096]byte
			for {
				if _, err := rd.Read(buf[:]); err != nil {
					break
				}
			}
		}
	})
}
