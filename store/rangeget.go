package store

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// RangeGetter is a Store that can read part of an object without reading
// the rest: a dir store reads the file at an offset (pread), an s3 store
// makes one ranged GET. Readers of bundles use it (docs/STREAMS.md, "How a
// single-stream reader finds its segments"): a bundle's index by a suffix
// range, a stream's part by an offset range.
//
// The caller owns the buffer: it decides how much it reads (after
// checking any size it took from the object against its own limits), and
// the store never allocates for a size the object or the server claims.
type RangeGetter interface {
	Store
	// GetRange fills p with the object's bytes from offset off (>= 0).
	// An object that ends before off+len(p) gives an error wrapping
	// io.ErrUnexpectedEOF (what the caller was told of its size was
	// wrong); a missing object one wrapping ErrNotFound.
	GetRange(ctx context.Context, name string, off int64, p []byte) error
	// GetSuffix reads the object's last min(len(p), size) bytes into
	// p[:n] and returns n and the object's size: one request for the end
	// of an object whose size the caller does not trust, or does not
	// know. A missing object gives an error wrapping ErrNotFound.
	GetSuffix(ctx context.Context, name string, p []byte) (n int, size int64, err error)
}

// ErrShortObject is wrapped with io.ErrUnexpectedEOF by GetRange errors
// for a range past the object's end.
var ErrShortObject = errors.New("object ends before the range")

// ShortObjectError is the error a RangeGetter returns for a range past the
// end of the object name.
func ShortObjectError(name string, off int64, n int, size int64) error {
	if size >= 0 {
		return fmt.Errorf("read %s: %d bytes at %d: %w (the object has %d bytes): %w", name, n, off, ErrShortObject, size, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read %s: %d bytes at %d: %w: %w", name, n, off, ErrShortObject, io.ErrUnexpectedEOF)
}

// GetRange fills p from offset off of the named object: by st's GetRange
// when st is a RangeGetter, else by reading the object from its start and
// passing over the first off bytes (a store that cannot read ranges).
func GetRange(ctx context.Context, st Store, name string, off int64, p []byte) error {
	if off < 0 {
		return fmt.Errorf("read %s: negative offset %d: %w", name, off, ErrPermanent)
	}
	if rg, ok := st.(RangeGetter); ok {
		return rg.GetRange(ctx, name, off, p)
	}
	rc, err := st.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		if errors.Is(err, io.EOF) {
			return ShortObjectError(name, off, len(p), -1)
		}
		return err
	}
	if _, err := io.ReadFull(rc, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ShortObjectError(name, off, len(p), -1)
		}
		return err
	}
	return nil
}
