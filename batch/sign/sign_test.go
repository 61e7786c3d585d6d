package sign_test

import (
	"bytes"
	"crypto/ed25519"
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
	"github.com/ferry-dr/ferry/batch/sign"
)

func newSigner(t testing.TB) *sign.Signer {
	t.Helper()
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return sign.NewSigner(key)
}

func trust(t testing.TB, signers ...*sign.Signer) *sign.Trusted {
	t.Helper()
	var keys []string
	for _, s := range signers {
		keys = append(keys, s.PublicKey())
	}
	tr, err := sign.NewTrusted(keys, "")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func records(first, n int) []batch.Record {
	recs := make([]batch.Record, n)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range recs {
		seq := first + i
		recs[i] = batch.Record{Seq: uint64(seq), Time: t0.Add(time.Duration(seq) * time.Millisecond), Op: "put",
			Key: fmt.Appendf(nil, "k%d", seq), Data: fmt.Appendf(nil, "line %d\n", seq)}
	}
	return recs
}

// seal builds one segment of stream holding recs, after prev.
func seal(t testing.TB, stream string, prev string, recs []batch.Record, s batch.Signer, e batch.Encrypter) ([]byte, batch.Meta) {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.SetSigner(s)
	b.SetEncrypter(e)
	b.Reset(stream, 1, prev)
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	data, m, err := b.Seal(time.Date(2025, 1, 2, 3, 5, 0, 7, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return data, m
}

func meta(t testing.TB, data []byte) batch.Meta {
	t.Helper()
	m, _, err := batch.ParseMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func wantRefused(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil || !errors.Is(err, batch.ErrSignature) || !batch.IsUnreadable(err) {
		t.Fatalf("got %v, want an error wrapping batch.ErrSignature", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not name %q", err, p)
		}
	}
}

func TestSignedSegmentVerifies(t *testing.T) {
	s := newSigner(t)
	age1, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := crypt.NewEncrypter([]string{age1.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []batch.Encrypter{nil, enc} {
		data, sealed := seal(t, "app", batch.ZeroHash, records(1, 50), s, e)
		m := meta(t, data)
		if m.Signature == "" || m.Signature != sealed.Signature {
			t.Fatalf("signature %q stored, Seal returned %q", m.Signature, sealed.Signature)
		}
		if err := trust(t, s).Verify(&m); err != nil {
			t.Fatalf("encrypted %v: %v", e != nil, err)
		}
		if st := sign.State(&m); st != s.KeyID() {
			t.Fatalf("State = %q, want the key id %s", st, s.KeyID())
		}
		// The chain hash covers the signature: the file as stored.
		if _, err := batch.Open(data); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRewrittenSegmentRefused is the attack signing exists for: someone
// who can write the store changes a record, recompresses, recomputes the
// payload checksum and the chain after it. Every variant is refused.
func TestRewrittenSegmentRefused(t *testing.T) {
	s, attacker := newSigner(t), newSigner(t)
	tr := trust(t, s)
	seg1, _ := seal(t, "app", batch.ZeroHash, records(1, 10), s, nil)
	seg2, m2 := seal(t, "app", batch.Hash(seg1), records(11, 10), s, nil)
	forged := records(1, 10)
	forged[3].Data = []byte("transfer 1000000 to mallory\n")

	// Re-signed by the attacker's own key: not trusted.
	f1, _ := seal(t, "app", batch.ZeroHash, forged, attacker, nil)
	m := meta(t, f1)
	wantRefused(t, tr.Verify(&m), "app/", m.Name(), "signed by key "+attacker.KeyID(), "not trusted", s.KeyID())

	// The old signature kept: it does not match the new payload checksum.
	m.Signature = meta(t, seg1).Signature
	wantRefused(t, tr.Verify(&m), m.Name(), "does not match", s.KeyID())
	if st := sign.State(&m); st != "BAD:"+s.KeyID() {
		t.Fatalf("State = %q, want BAD", st)
	}

	// The signature removed.
	m.Signature = ""
	wantRefused(t, tr.Verify(&m), m.Name(), "not signed", s.KeyID())

	// The next segment, chained to the forgery with its prev_sha256
	// recomputed, no longer matches its own signature either.
	f1data, _, err := batch.Assemble(m, f1[len(f1)-int(m.PayloadSize):])
	if err != nil {
		t.Fatal(err)
	}
	m2.PrevSHA256 = batch.Hash(f1data)
	wantRefused(t, tr.Verify(&m2), m2.Name(), "does not match")
	if _, err := batch.Open(seg2); err != nil {
		t.Fatal(err)
	}
}

// TestSignatureBindsEveryField changes each metadata field in turn: the
// signed bytes change, and the signature no longer verifies.
func TestSignatureBindsEveryField(t *testing.T) {
	s := newSigner(t)
	tr := trust(t, s)
	data, _ := seal(t, "app", batch.ZeroHash, records(1, 5), s, nil)
	base := meta(t, data)
	base.SourceCursor = nil
	sig, _ := s.Sign(batch.SignedBytes(&base))
	base.Signature = sig
	if err := tr.Verify(&base); err != nil {
		t.Fatal(err)
	}
	changes := map[string]func(m *batch.Meta){
		"format":            func(m *batch.Meta) { m.Format = 1 },
		"stream":            func(m *batch.Meta) { m.Stream = "other" },
		"generation":        func(m *batch.Meta) { m.Generation = 2 },
		"first_seq":         func(m *batch.Meta) { m.FirstSeq++; m.LastSeq++ },
		"last_seq":          func(m *batch.Meta) { m.LastSeq++ },
		"records":           func(m *batch.Meta) { m.Records++ },
		"min_time":          func(m *batch.Meta) { m.MinTime = m.MinTime.Add(time.Nanosecond) },
		"max_time":          func(m *batch.Meta) { m.MaxTime = m.MaxTime.Add(-time.Second) },
		"uncompressed_size": func(m *batch.Meta) { m.UncompressedSize++ },
		"payload_size":      func(m *batch.Meta) { m.PayloadSize-- },
		"compression":       func(m *batch.Meta) { m.Compression = "zstd2" },
		"encryption":        func(m *batch.Meta) { m.Encryption = "" },
		"recipients":        func(m *batch.Meta) { m.Recipients = []string{""} },
		"payload_sha256":    func(m *batch.Meta) { m.PayloadSHA256 = strings.Repeat("0", 64) },
		"prev_sha256":       func(m *batch.Meta) { m.PrevSHA256 = strings.Repeat("1", 64) },
		"sealed_at":         func(m *batch.Meta) { m.SealedAt = m.SealedAt.Add(time.Hour) },
		"source_cursor":     func(m *batch.Meta) { m.SourceCursor = []byte{0} },
	}
	for name, change := range changes {
		m := base
		change(&m)
		if bytes.Equal(batch.SignedBytes(&m), batch.SignedBytes(&base)) {
			t.Errorf("%s: changing it leaves the signed bytes as they were", name)
		}
		wantRefused(t, tr.Verify(&m), "does not match")
	}
	// Length prefixes keep a value from running into the next field.
	a, b := base, base
	a.Recipients = []string{"ab", "c"}
	b.Recipients = []string{"a", "bc"}
	if bytes.Equal(batch.SignedBytes(&a), batch.SignedBytes(&b)) {
		t.Error("recipients ab,c and a,bc sign the same bytes")
	}
	// A time in another zone is the same instant: same bytes.
	c := base
	c.MinTime = c.MinTime.In(time.FixedZone("x", 3600))
	if !bytes.Equal(batch.SignedBytes(&c), batch.SignedBytes(&base)) {
		t.Error("the same instant in another zone signs other bytes")
	}
}

// TestSignedBytesExample pins the signed bytes for docs/FORMAT.md.
func TestSignedBytesExample(t *testing.T) {
	m := batch.Meta{Format: 1, Stream: "app", Generation: 1, FirstSeq: 1, LastSeq: 4, Records: 4,
		MinTime:          time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
		MaxTime:          time.Date(2025, 1, 2, 3, 4, 5, 2000006, time.UTC),
		UncompressedSize: 152, PayloadSize: 146, Compression: "zstd", Encryption: "none",
		PayloadSHA256: strings.Repeat("a", 64), PrevSHA256: batch.ZeroHash,
		SealedAt: time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC)}
	want := "ferry-segment-signature-v1\n" +
		"format 1\n" +
		"stream 3:app\n" +
		"generation 1\n" +
		"first_seq 1\n" +
		"last_seq 4\n" +
		"records 4\n" +
		"min_time 1735787045.000000006\n" +
		"max_time 1735787045.002000006\n" +
		"uncompressed_size 152\n" +
		"payload_size 146\n" +
		"compression 4:zstd\n" +
		"encryption 4:none\n" +
		"recipients 0\n" +
		"payload_sha256 64:" + strings.Repeat("a", 64) + "\n" +
		"prev_sha256 64:" + batch.ZeroHash + "\n" +
		"sealed_at 1735787046.000000000\n" +
		"source_cursor 0:\n"
	if got := string(batch.SignedBytes(&m)); got != want {
		t.Fatalf("signed bytes:\n%s\nwant:\n%s", got, want)
	}
	m.Encryption, m.Recipients, m.SourceCursor = "age", []string{"0123456789abcdef", "fedcba9876543210"}, []byte("c\n")
	got := string(batch.SignedBytes(&m))
	for _, line := range []string{"encryption 3:age\n", "recipients 2 16:0123456789abcdef 16:fedcba9876543210\n", "source_cursor 2:c\n\n"} {
		if !strings.Contains(got, line) {
			t.Fatalf("signed bytes lack %q:\n%s", line, got)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	old, cur, other := newSigner(t), newSigner(t), newSigner(t)
	tr := trust(t, old, cur)
	d1, _ := seal(t, "app", batch.ZeroHash, records(1, 3), old, nil)
	d2, _ := seal(t, "app", batch.Hash(d1), records(4, 3), cur, nil)
	for _, d := range [][]byte{d1, d2} {
		m := meta(t, d)
		if err := tr.Verify(&m); err != nil {
			t.Fatal(err)
		}
	}
	d3, _ := seal(t, "app", batch.Hash(d2), records(7, 3), other, nil)
	m := meta(t, d3)
	wantRefused(t, tr.Verify(&m), other.KeyID(), old.KeyID()+", "+cur.KeyID())
	if got := tr.IDs(); len(got) != 2 || got[0] != old.KeyID() || got[1] != cur.KeyID() {
		t.Fatalf("IDs = %v", got)
	}
}

func TestParseSignature(t *testing.T) {
	s := newSigner(t)
	field, _ := s.Sign([]byte("x"))
	got, err := sign.Parse(field)
	if err != nil || got.String() != field || got.KeyID() != s.KeyID() {
		t.Fatalf("Parse(%q) = %v, %v", field, got, err)
	}
	if len(field) != 141 {
		t.Fatalf("signature field is %d bytes, FORMAT.md says 141", len(field))
	}
	pub, sig, _ := strings.Cut(strings.TrimPrefix(field, "ed25519:"), ":")
	for _, bad := range []string{
		"", "ed25519:", "rsa:" + pub + ":" + sig, "ed25519:" + pub, "ed25519:" + pub + ":" + sig[:len(sig)-4],
		"ed25519:" + pub[:len(pub)-4] + ":" + sig, "ed25519:" + pub + ":" + sig + "AAAA", "ed25519:" + pub + ":" + strings.Repeat("A", 300),
		"ed25519:" + pub + ":" + sig[:85] + "B==", // non-zero padding bits: not canonical
	} {
		if _, err := sign.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	// Over the cap: refused by ParseMeta before anything decodes it.
	data, _ := seal(t, "app", batch.ZeroHash, records(1, 2), nil, nil)
	m := meta(t, data)
	m.Signature = "ed25519:" + strings.Repeat("A", batch.MaxSignatureSize)
	forged, _, err := batch.Assemble(m, data[len(data)-int(m.PayloadSize):])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := batch.ParseMeta(forged); !errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("ParseMeta of an oversized signature: %v", err)
	}
	m.Signature = "ed25519:!!"
	wantRefused(t, trust(t, s).Verify(&m), "signature field")
	if sign.State(&m) != "BAD:malformed" {
		t.Fatal(sign.State(&m))
	}
}

func TestLoadSigningKey(t *testing.T) {
	key, err := sign.Generate()
	if err != nil {
		t.Fatal(err)
	}
	data, err := sign.MarshalPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := sign.LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID() != sign.KeyID(key.Public().(ed25519.PublicKey)) {
		t.Fatal("loaded another key")
	}
	if !strings.Contains(string(data), "# public key: "+s.PublicKey()) {
		t.Fatal("the key file does not say its public key")
	}
	os.Chmod(path, 0o640)
	if _, err := sign.LoadSigningKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("mode 640: %v", err)
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("AGE-SECRET-KEY-1XYZ\n"), 0o600)
	_, err = sign.LoadSigningKey(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "AGE-SECRET") {
		t.Fatalf("not a PEM key: %v", err)
	}
}

func TestNewTrusted(t *testing.T) {
	a, b := newSigner(t), newSigner(t)
	file := filepath.Join(t.TempDir(), "trusted.txt")
	os.WriteFile(file, []byte("# the new key\n"+b.PublicKey()+"\n\n"+a.PublicKey()+"\n"), 0o644)
	tr, err := sign.NewTrusted([]string{a.PublicKey()}, file)
	if err != nil {
		t.Fatal(err)
	}
	if ids := tr.IDs(); len(ids) != 2 || ids[0] != a.KeyID() || ids[1] != b.KeyID() {
		t.Fatalf("IDs = %v", ids)
	}
	key, _ := sign.Generate()
	pem, _ := sign.MarshalPrivateKey(key)
	for _, c := range []struct {
		keys []string
		file string
		want string
	}{
		{[]string{string(pem)}, "", "entry 1 is a private key"},
		{[]string{a.PublicKey(), "ssh-ed25519 AAAA"}, "", "entry 2 is not an ed25519 public key"},
		{[]string{"ferry-ed25519:AAAA"}, "", "want 32 bytes"},
		{nil, "", "no trusted keys"},
	} {
		_, err := sign.NewTrusted(c.keys, c.file)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "PRIVATE KEY-----") {
			t.Errorf("%v: %v, want %q", c.keys, err, c.want)
		}
	}
	os.WriteFile(file, []byte(a.PublicKey()+"\n# x\nnot-a-key\n"), 0o644)
	if _, err := sign.NewTrusted(nil, file); err == nil || !strings.Contains(err.Error(), file+" line 3") {
		t.Fatalf("bad line: %v", err)
	}
}

// FuzzParseSignature: Parse never panics, accepts only fields within the
// cap, and what it accepts it writes back byte for byte (one encoding per
// signature).
func FuzzParseSignature(f *testing.F) {
	s := newSigner(f)
	field, _ := s.Sign([]byte("seed"))
	f.Add(field)
	f.Add("ed25519::")
	f.Add("ed25519:" + strings.Repeat("A", 44) + ":" + strings.Repeat("=", 88))
	f.Fuzz(func(t *testing.T, in string) {
		sig, err := sign.Parse(in)
		if err != nil {
			return
		}
		if len(in) > batch.MaxSignatureSize || sig.String() != in {
			t.Fatalf("accepted %q (%d bytes), writes back %q", in, len(in), sig.String())
		}
		m := batch.Meta{Stream: "app", FirstSeq: 1, LastSeq: 1, Records: 1, Signature: in}
		_ = sign.State(&m)
	})
}

// A key or a signature has one spelling: the base64 decoder alone skips
// line breaks anywhere, so a field or a key with one inside was accepted
// (and a signature field then wrote back differently: the fuzz corpus
// entry d75282172b829e3f).
func TestLineBreakInsideBase64Refused(t *testing.T) {
	s := newSigner(t)
	pub := s.PublicKey()
	b64 := strings.TrimPrefix(pub, sign.PublicPrefix)
	if _, err := sign.ParsePublicKey(pub); err != nil {
		t.Fatalf("ParsePublicKey(%q): %v", pub, err)
	}
	for _, brk := range []string{"\n", "\r", "\r\n"} {
		bad := sign.PublicPrefix + b64[:20] + brk + b64[20:]
		if _, err := sign.ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted a line break inside the key", bad)
		}
		field, err := s.Sign([]byte("msg"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sign.Parse(field); err != nil {
			t.Fatalf("Parse(%q): %v", field, err)
		}
		badField := field[:len(field)-10] + brk + field[len(field)-10:]
		if _, err := sign.Parse(badField); err == nil {
			t.Errorf("Parse(%q) accepted a line break inside the signature", badField)
		}
	}
}
