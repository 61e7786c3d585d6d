package batch

import (
	"testing"
	"time"
)

// fixedSigner signs every segment with the same value: enough to put a
// signature in the metadata the segment hash covers.
type fixedSigner struct{}

func (fixedSigner) Sign([]byte) (string, error) { return "ed25519:test:test", nil }

// TestBuilderHashIsSegmentHash checks the hash Seal computes while copying
// the segment is the SHA-256 of the bytes it returns (what the next
// segment chains to), for small and multi-chunk segments, signed or not,
// and that Reset clears it.
func TestBuilderHashIsSegmentHash(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		signed bool
	}{
		{"one record", 1, false},
		{"one chunk", 300 << 10, false},
		{"several chunks", 3*ChunkSize + 12345, false},
		{"signed", 3*ChunkSize + 12345, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(t)
			if tc.signed {
				b.SetSigner(fixedSigner{})
			}
			seg, m := build(t, b, "app", 1, ZeroHash, logRecords(tc.size), time.Unix(1, 0))
			if got, want := b.Hash(), Hash(seg); got != want {
				t.Fatalf("Builder.Hash() = %s, Hash(segment) = %s (%d bytes, %d records)", got, want, len(seg), m.Records)
			}
			b.Reset("app", 1, Hash(seg))
			if h := b.Hash(); h != "" {
				t.Fatalf("Builder.Hash() after Reset = %q, want empty", h)
			}
		})
	}
}
