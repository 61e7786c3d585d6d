package crypt_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/crypt"
)

// decodeInPlace decodes a copy of data as the receiver does a segment it
// holds whole: decrypted over itself on workers goroutines.
func decodeInPlace(workers int) func([]byte, batch.Decrypter) ([]batch.Record, error) {
	return func(data []byte, d batch.Decrypter) ([]batch.Record, error) {
		s, err := batch.Open(bytes.Clone(data))
		if err != nil {
			return nil, err
		}
		if err := s.DecryptInPlace(d, workers); err != nil {
			return nil, err
		}
		raw, err := s.DecompressInto(nil, 1<<30, workers)
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
}

// noisy returns n records of size random bytes: a payload as large as
// its records, many age chunks.
func noisy(n, size int) []batch.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := records(n, 1)
	for i := range recs {
		recs[i].Data = make([]byte, size)
		for j := range recs[i].Data {
			recs[i].Data[j] = byte(rng.Uint32())
		}
	}
	return recs
}

// TestDecryptInPlace decrypts payloads of one chunk to many, cut into
// ranges of one chunk on up to 64 goroutines, with the embedded header
// and with a key epoch's of another length: every reading gives the
// records Decrypt gives, and a forged byte in any chunk is refused.
func TestDecryptInPlace(t *testing.T) {
	defer crypt.SetRangeChunks(1)()
	k, k2, k3 := newKey(t), newKey(t), newKey(t)
	for _, n := range []int{1, 40, 300, 1200} {
		recs := noisy(n, 1000) // about n/65 chunks
		data, _ := seal(t, recs, k)
		want, err := decode(data, keyring(t, k))
		if err != nil {
			t.Fatal(err)
		}
		sameRecords(t, want, recs)
		// A rekeyed header for two recipients is longer than the
		// embedded one: the ciphertext starts elsewhere in the age file
		// the goroutines read than in the payload they write.
		m, hdr, payload := splitAge(t, data)
		nh, err := keyring(t, k).Rewrap(m, hdr, payload, encrypter(t, k2, k3))
		if err != nil {
			t.Fatal(err)
		}
		for _, workers := range []int{1, 2, 3, 7, 64} {
			read := decodeInPlace(workers)
			got, err := read(data, keyring(t, k))
			if err != nil {
				t.Fatalf("%d records, %d workers: %v", n, workers, err)
			}
			sameRecords(t, got, recs)
			got, err = read(data, keyring(t, k3).WithHeaders(headerOf(nh, nil)))
			if err != nil {
				t.Fatalf("%d records, %d workers, key epoch header: %v", n, workers, err)
			}
			sameRecords(t, got, recs)
		}
		if _, err := decodeInPlace(4)(data, keyring(t, k2)); !errors.Is(err, batch.ErrNoKey) {
			t.Fatalf("wrong key: %v, want ErrNoKey", err)
		}
		// A byte flipped in each chunk in turn, checksum recomputed.
		_, off, _ := batch.ParseMeta(data)
		hdrLen, _ := crypt.CheckHeader(data[off:])
		for pos := off + hdrLen + 16 + 7; pos < len(data); pos += 64<<10 + 16 {
			flipped := bytes.Clone(data)
			flipped[pos] ^= 0x80
			forged := withPayload(t, data, flipped[off:])
			if _, err := decodeInPlace(64)(forged, keyring(t, k)); !errors.Is(err, batch.ErrCorrupt) {
				t.Fatalf("%d records, payload byte %d flipped: %v, want ErrCorrupt", n, pos-off, err)
			}
		}
	}
}
