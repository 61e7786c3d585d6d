package crypt_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
)

// splitAge returns the embedded age header and the whole payload of a
// sealed encrypted segment.
func splitAge(t *testing.T, data []byte) (*batch.Meta, []byte, []byte) {
	t.Helper()
	s, err := batch.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	n, err := crypt.CheckHeader(s.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return &s.Meta, s.Payload[:n], s.Payload
}

func encrypter(t *testing.T, keys ...key) *crypt.Encrypter {
	t.Helper()
	var pubs []string
	for _, k := range keys {
		pubs = append(pubs, k.public())
	}
	e, err := crypt.NewEncrypter(pubs)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// headerOf is a lookup that finds hdr for every segment.
func headerOf(hdr []byte, fps []string) batch.KeyHeaderLookup {
	return func(m *batch.Meta, fresh bool) (*batch.KeyHeader, error) {
		return &batch.KeyHeader{Object: "app/keys/00000001/" + m.Name() + ".hdr", Epoch: 1, Recipients: fps, Data: hdr}, nil
	}
}

// TestRewrap re-wraps a segment's file key for new recipients: they read
// it through the new header, the old key no longer does through it, and
// the segment's bytes are untouched.
func TestRewrap(t *testing.T) {
	old, k2, k3 := newKey(t), newKey(t), newKey(t)
	recs := records(3000, 100)
	data, _ := seal(t, recs, old)
	orig := bytes.Clone(data)
	m, hdr, payload := splitAge(t, data)
	e := encrypter(t, k2, k3)
	nh, err := keyring(t, old).Rewrap(m, hdr, payload, e)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(nh, hdr) || !bytes.HasPrefix(nh, []byte("age-encryption.org/v1\n")) {
		t.Fatalf("new header:\n%s", nh)
	}
	if !bytes.Equal(data, orig) {
		t.Fatal("Rewrap changed the segment")
	}
	lookup := headerOf(nh, e.Recipients())
	for _, k := range []key{k2, k3} {
		for name, read := range map[string]func([]byte, batch.Decrypter) ([]batch.Record, error){"decode": decode, "stream": decodeStream, "scan": scan} {
			got, err := read(data, keyring(t, k).WithHeaders(lookup))
			if err != nil {
				t.Fatalf("%s with new key %s: %v", name, k.fp, err)
			}
			sameRecords(t, got, recs)
		}
	}
	// The old key opens the embedded header only, not the new one.
	if _, err := decode(data, keyring(t, old)); err != nil {
		t.Fatalf("old key, embedded header: %v", err)
	}
	_, err = decode(data, keyring(t, old).WithHeaders(lookup))
	if !errors.Is(err, batch.ErrNoKey) || !strings.Contains(err.Error(), "key epoch 1") || !strings.Contains(err.Error(), k2.fp) {
		t.Fatalf("old key through the new header: %v", err)
	}
	// A key of neither cannot rewrap.
	if _, err := keyring(t, k2).Rewrap(m, hdr, payload, e); !errors.Is(err, batch.ErrNoKey) {
		t.Fatalf("rewrap with a key the header is not for: %v", err)
	}
	// Re-wrapping the re-wrapped header (a second rotation) works too.
	nh2, err := keyring(t, k3).Rewrap(m, nh, payload, encrypter(t, old))
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(data, keyring(t, old).WithHeaders(headerOf(nh2, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, recs)
}

// TestKeyHeaderRefused: a damaged header object, or one whose (valid) MAC
// is for another file key, is refused as damage naming the object, never
// taken for a missing key.
func TestKeyHeaderRefused(t *testing.T) {
	old, k2 := newKey(t), newKey(t)
	data, _ := seal(t, records(50, 10), old)
	m, hdr, payload := splitAge(t, data)
	nh, err := keyring(t, old).Rewrap(m, hdr, payload, encrypter(t, k2))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := seal(t, records(50, 11), old)
	om, ohdr, opayload := splitAge(t, other)
	foreign, err := keyring(t, old).Rewrap(om, ohdr, opayload, encrypter(t, k2))
	if err != nil {
		t.Fatal(err)
	}
	badMAC := bytes.Clone(nh)
	badMAC[len(badMAC)-3] ^= 'A' ^ 'B'
	if bytes.Equal(badMAC, nh) {
		badMAC[len(badMAC)-3] ^= 1
	}
	for name, h := range map[string][]byte{
		"bad MAC":         badMAC,
		"another segment": foreign,
		"trailing bytes":  append(bytes.Clone(nh), "x"...),
		"not age":         []byte("hello\n"),
		"huge":            append([]byte("age-encryption.org/v1\n-> X25519 "), bytes.Repeat([]byte("A"), crypt.MaxHeaderSize)...),
	} {
		_, err := decode(data, keyring(t, k2).WithHeaders(headerOf(h, nil)))
		if !errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), "app/keys/00000001/"+m.Name()+".hdr") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestLookupRefreshed: a reader whose listing predates a rekey lists the
// epochs again before it gives up on a segment.
func TestLookupRefreshed(t *testing.T) {
	old, k2 := newKey(t), newKey(t)
	recs := records(20, 10)
	data, _ := seal(t, recs, old)
	m, hdr, payload := splitAge(t, data)
	nh, err := keyring(t, old).Rewrap(m, hdr, payload, encrypter(t, k2))
	if err != nil {
		t.Fatal(err)
	}
	var calls []bool
	lookup := func(m *batch.Meta, fresh bool) (*batch.KeyHeader, error) {
		calls = append(calls, fresh)
		if !fresh {
			return nil, nil
		}
		return &batch.KeyHeader{Object: "h", Epoch: 1, Data: nh}, nil
	}
	got, err := decode(data, keyring(t, k2).WithHeaders(lookup))
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, recs)
	if len(calls) != 2 || calls[0] || !calls[1] {
		t.Fatalf("lookups: %v", calls)
	}
}
