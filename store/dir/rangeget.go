package dir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ferry-dr/ferry/store"
)

var _ store.RangeGetter = (*Store)(nil)

// GetRange reads p from offset off of the named object's file (pread);
// see store.RangeGetter.
func (s *Store) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	if off < 0 {
		return fmt.Errorf("get %s: negative offset %d: %w", name, off, store.ErrPermanent)
	}
	f, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := f.(*os.File).ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return store.ShortObjectError(name, off, len(p), size(f.(*os.File)))
	}
	return fail("get", name, err)
}

// GetSuffix reads the last min(len(p), size) bytes of the named object's
// file; see store.RangeGetter.
func (s *Store) GetSuffix(ctx context.Context, name string, p []byte) (int, int64, error) {
	f, err := s.Get(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.(*os.File).Stat()
	if err != nil {
		return 0, 0, fail("get", name, err)
	}
	sz := fi.Size()
	want := int(min(int64(len(p)), sz))
	n, err := f.(*os.File).ReadAt(p[:want], sz-int64(want))
	if n == want {
		return n, sz, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		// Truncated while read: what it says of its size is wrong.
		return 0, 0, store.ShortObjectError(name, sz-int64(want), want, -1)
	}
	return 0, 0, fail("get", name, err)
}

// size is f's size, or -1 if it cannot be told.
func size(f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		return -1
	}
	return fi.Size()
}
