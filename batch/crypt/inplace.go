package crypt

import (
	"fmt"
	"io"
	"sync"

	"filippo.io/age"

	"github.com/ferry-dr/ferry/batch"
)

// Decrypting a payload held whole, over itself, on several goroutines.
//
// The body of an age file is a 16-byte nonce, then the plaintext in
// chunks of 64 KiB, each sealed with a 16-byte tag. age's
// DecryptReaderAt decrypts any chunk on its own and its ReadAt may be
// called concurrently, so contiguous ranges of chunks are decrypted on
// goroutines of their own. The plaintext is written over the payload
// from its start: plaintext chunk i at i*64 KiB, where its ciphertext
// sits at start+i*(64 KiB+16), start being the header's and nonce's
// size. Plaintext lands before its own ciphertext, so a goroutine that
// reads each chunk before writing it, in order (as ReadAt does), never
// overwrites ciphertext it has still to read. What it does overwrite of
// the chunks before its range, which other goroutines read, is copied
// aside before any starts, and read from there: a few bytes per range
// (start plus 16 bytes per chunk before it).

const (
	streamNonce = 16              // the body's nonce
	plainChunk  = 64 << 10        // plaintext bytes per chunk
	sealedChunk = plainChunk + 16 // a chunk and its Poly1305 tag
)

// rangeChunks is the fewest chunks (1 MiB) a goroutine decrypts; tests
// lower it to cut small payloads into many ranges.
var rangeChunks = 16

var _ batch.InPlaceDecrypter = (*Keyring)(nil)

// DecryptInPlace is batch.InPlaceDecrypter's: Decrypt's key lookup and
// errors, the plaintext written over ct on up to workers goroutines.
func (k *Keyring) DecryptInPlace(m *batch.Meta, ct []byte, workers int) ([]byte, error) {
	n, err := CheckHeader(ct)
	if err != nil {
		return nil, fmt.Errorf("segment %s/%s: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	fileKey, hdr, h, err := k.unwrap(m, ct[:n])
	if err != nil {
		return nil, err
	}
	plain, err := decryptOver(fileKey, hdr, ct, n, workers)
	switch {
	case err != nil && h != nil:
		return nil, fmt.Errorf("segment %s/%s: the file key of key epoch header %s does not decrypt the segment: %v: %w",
			m.Stream, m.Name(), h.Object, err, batch.ErrCorrupt)
	case err != nil:
		return nil, fmt.Errorf("segment %s/%s: age: %v: %w", m.Stream, m.Name(), err, batch.ErrCorrupt)
	}
	return plain, nil
}

// decryptOver decrypts the age file that is hdr followed by ct[n:] (ct's
// own header is ct[:n]) with fileKey, writing the plaintext over ct from
// its start on up to workers goroutines, and returns it.
func decryptOver(fileKey, hdr, ct []byte, n, workers int) ([]byte, error) {
	if len(ct)-n < streamNonce {
		return nil, fmt.Errorf("payload cut short in its nonce")
	}
	start := n + streamNonce
	chunks := (len(ct) - start + sealedChunk - 1) / sealedChunk
	per := max((chunks+workers-1)/workers, rangeChunks)
	src := &overlay{hdr: hdr, ct: ct, n: n}
	for a := per; a < chunks; a += per {
		src.save(a*plainChunk, start+a*sealedChunk)
	}
	// DecryptReaderAt reads the header and authenticates the last chunk,
	// which fixes the plaintext size, before anything is written.
	ra, size, err := age.DecryptReaderAt(src, src.size(), age.NewInjectedFileKeyIdentity(fileKey))
	if err != nil {
		return nil, err
	}
	out := ct[:size]
	ranges := (chunks + per - 1) / per
	errs := make([]error, ranges)
	var wg sync.WaitGroup
	for r := range ranges {
		lo, hi := int64(r*per*plainChunk), min(int64((r+1)*per*plainChunk), size)
		decrypt := func() {
			got, err := ra.ReadAt(out[lo:hi], lo)
			if err == io.EOF && hi == size {
				err = nil
			}
			if err == nil && got != int(hi-lo) {
				err = io.ErrUnexpectedEOF
			}
			errs[r] = err
		}
		if r == ranges-1 {
			decrypt() // on the caller's goroutine
		} else {
			wg.Go(decrypt)
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// overlay is the io.ReaderAt of the age file hdr followed by ct[n:], with
// the saved ranges of ct read from their copies.
type overlay struct {
	hdr   []byte
	ct    []byte
	n     int
	saved []saved // ascending, disjoint
}

// saved is a copy of ct[at:at+len(data)] taken before any writes.
type saved struct {
	at   int
	data []byte
}

// save copies ct[lo:hi] aside (clipped to ct), merged with the range
// before it if they overlap. Ranges are saved in ascending order of lo.
func (o *overlay) save(lo, hi int) {
	hi = min(hi, len(o.ct))
	if lo >= hi {
		return
	}
	if k := len(o.saved) - 1; k >= 0 && o.saved[k].at+len(o.saved[k].data) >= lo {
		last := &o.saved[k]
		if end := last.at + len(last.data); hi > end {
			last.data = append(last.data, o.ct[end:hi]...)
		}
		return
	}
	o.saved = append(o.saved, saved{at: lo, data: append([]byte(nil), o.ct[lo:hi]...)})
}

// size is the age file's size.
func (o *overlay) size() int64 { return int64(len(o.hdr) + len(o.ct) - o.n) }

// ReadAt reads the age file at off; safe for concurrent use while
// nothing writes to the ranges of ct it reads that are not saved.
func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("overlay: negative offset %d", off)
	}
	read := 0
	for len(p) > 0 && off < o.size() {
		var src []byte
		if off < int64(len(o.hdr)) {
			src = o.hdr[off:]
		} else {
			y := int(off) - len(o.hdr) + o.n
			src = o.ct[y:]
			for _, s := range o.saved {
				if y >= s.at && y < s.at+len(s.data) {
					src = s.data[y-s.at:]
					break
				}
				if s.at > y {
					src = src[:s.at-y] // up to the next saved range
					break
				}
			}
		}
		c := copy(p, src)
		p, off, read = p[c:], off+int64(c), read+c
	}
	if len(p) > 0 {
		return read, io.EOF
	}
	return read, nil
}
