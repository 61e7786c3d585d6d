package dir

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/ferry-dr/ferry/store"
)

var _ store.Swapper = (*Store)(nil)

// Load reads the named object whole and returns it with its version, the
// hex SHA-256 of its content: identical content has an identical version.
// A missing object, or a name that is a directory here, gives an error
// wrapping store.ErrNotFound. Load takes no lock: Swap replaces objects by
// rename, so a reader sees one whole content or the other.
func (s *Store) Load(ctx context.Context, name string) ([]byte, string, error) {
	if err := checkName(name); err != nil {
		return nil, "", fmt.Errorf("load: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("load %s: %w", name, err)
	}
	data, err := readSmall(s.path(name))
	if isMissing(err) || errors.Is(err, syscall.EISDIR) {
		return nil, "", fmt.Errorf("load %s: %w: %w", name, store.ErrNotFound, err)
	}
	if err != nil {
		return nil, "", fail("load", name, err)
	}
	if err := store.CheckSwapSize("load "+name, int64(len(data))); err != nil {
		// Its version is that of what Swap compares: the first
		// MaxSwapSize+1 bytes (readSmall). Two oversize objects alike
		// there share it, which no Swap can write: only damaged objects.
		return nil, version(data), err
	}
	return data, version(data), nil
}

// readSmall reads the file at path, but at most one byte more than
// store.MaxSwapSize, so that an oversized object is seen and refused
// without being read whole.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, store.MaxSwapSize+1))
}

// Swap replaces the named object with data if it is at version old; see
// store.Swapper. Swaps of one object, across goroutines and processes
// sharing the root, are serialised by an flock(2) on its lock file (see
// lock.go), held while Swap reads the object, compares, writes a temp
// file, fsyncs it and renames it over the object. The directory's fsync
// follows once the lock is released. Delete takes the same lock, so a Swap
// never resurrects an object deleted after it was read.
func (s *Store) Swap(ctx context.Context, name string, data []byte, old string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("swap: %w", err)
	}
	if err := store.CheckSwapSize("swap "+name, int64(len(data))); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("swap %s: %w", name, err)
	}
	final := s.path(name)
	dir := filepath.Dir(final)
	if err := s.ensureDir(dir); err != nil {
		return "", fail("swap", name, err)
	}
	unlock, err := lock(ctx, swapLock(final), true)
	if errors.Is(err, os.ErrNotExist) {
		// A directory was removed behind the cache's back; recreate it once.
		s.dirs.Clear()
		if err = s.ensureDir(dir); err == nil {
			unlock, err = lock(ctx, swapLock(final), true)
		}
	}
	if err != nil {
		return "", fail("swap", name, err)
	}
	replaced, err := s.swapLocked(ctx, name, final, data, old)
	unlock()
	if err != nil {
		return "", err
	}
	if replaced {
		if err := fsutil.SyncPath(dir); err != nil {
			// A retry finds data in place and syncs again.
			return "", fail("swap", name, err)
		}
	}
	return version(data), nil
}

// swapLocked is Swap's critical section. replaced reports whether it
// renamed a new file over final, which then still needs its directory
// fsynced.
func (s *Store) swapLocked(ctx context.Context, name, final string, data []byte, old string) (replaced bool, err error) {
	cur, err := readSmall(final)
	exists := err == nil
	switch {
	case exists && bytes.Equal(cur, data):
		// Already in place, perhaps by this very Swap's earlier attempt
		// whose fsync failed: make sure it is durable.
		fileErr, dirErr := fsutil.SyncWithDir(func() error { return fsutil.SyncPath(final) }, filepath.Dir(final))
		if err := cmp.Or(fileErr, dirErr); err != nil {
			return false, fail("swap", name, err)
		}
		return false, nil
	case exists:
	case errors.Is(err, syscall.EISDIR):
		return false, fmt.Errorf("swap %s: %s is a directory, not an object: %w", name, final, store.ErrPermanent)
	case !isMissing(err):
		return false, fail("swap", name, err)
	}
	now := ""
	if exists {
		now = version(cur)
	}
	if now != old {
		return false, fmt.Errorf("swap %s: %w: expected %s, found %s; load it again",
			name, store.ErrChanged, describeVersion(old), describeVersion(now))
	}
	f, err := writeTemp(filepath.Dir(final), filepath.Base(final), data)
	if err != nil {
		return false, fail("swap", name, err)
	}
	if err := syncClose(f); err != nil {
		return false, fail("swap", name, err)
	}
	err = ctx.Err()
	if err == nil {
		err = os.Rename(f.Name(), final)
	}
	if err != nil {
		os.Remove(f.Name())
		return false, fail("swap", name, err)
	}
	return true, nil
}

// version is the version of an object holding data.
func version(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// describeVersion names a version in an error.
func describeVersion(v string) string {
	if v == "" {
		return "no object"
	}
	if len(v) > 16 {
		v = v[:16] + "…"
	}
	return "version " + v
}
