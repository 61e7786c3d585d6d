package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ferry-dr/ferry/store"
)

var _ store.Swapper = (*Store)(nil)

// Load GETs the named object and returns its content and its ETag as the
// version. A missing object gives an error wrapping store.ErrNotFound.
// One request.
func (s *Store) Load(ctx context.Context, name string) ([]byte, string, error) {
	if err := store.CheckName(name); err != nil {
		return nil, "", fmt.Errorf("s3 load: %w: %w", err, store.ErrPermanent)
	}
	return s.load(ctx, s.key(name))
}

func (s *Store) load(ctx context.Context, key string) ([]byte, string, error) {
	rc, info, err := s.openInfo(ctx, "load", key)
	if err != nil {
		return nil, "", err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, store.MaxSwapSize+1))
	if err != nil {
		return nil, "", err // already "s3 read <key>: …"
	}
	if err := store.CheckSwapSize("s3 load "+s.target(key), int64(len(data))); err != nil {
		return nil, info.ETag, err // its version from the headers: a Swap may replace it
	}
	if info.ETag == "" {
		return nil, "", fmt.Errorf("s3 load %s: the server sent no ETag, so it cannot compare-and-swap; use another S3 server: %w",
			s.target(key), store.ErrPermanent)
	}
	return data, info.ETag, nil
}

// Swap PUTs data under name on the condition that the object's ETag is old
// (If-Match), or that there is no object when old is "" (If-None-Match: *),
// and returns the new ETag. One request, plus a GET when the server refuses
// (412 PreconditionFailed; 404 NoSuchKey for If-Match on a missing object;
// 409 ConditionalRequestConflict when another conditional write to the key
// is under way) or does not answer: if the object then holds exactly data,
// this Swap (or an earlier attempt of it) stored it, and Swap returns its
// ETag; see store.Swapper. Otherwise a refusal gives an error wrapping
// store.ErrChanged, and no answer the original, retryable error.
//
// The condition is checked and the object replaced atomically by the
// server: AWS S3 since 2024-11, MinIO, versitygw (by flock on the posix
// backend); a server that ignores If-Match would let two writers both win.
// ETags are MD5 digests of the content on most servers (not with SSE-KMS
// or SSE-C), so identical content usually has an identical version.
func (s *Store) Swap(ctx context.Context, name string, data []byte, old string) (string, error) {
	if err := store.CheckName(name); err != nil {
		return "", fmt.Errorf("s3 swap: %w: %w", err, store.ErrPermanent)
	}
	key := s.key(name)
	if err := store.CheckSwapSize("s3 swap "+s.target(key), int64(len(data))); err != nil {
		return "", err
	}
	opts, _ := s.putOptions(data)
	if old == "" {
		opts.SetMatchETagExcept("*") // If-None-Match: *
	} else {
		opts.SetMatchETag(old) // If-Match: "<old>"
	}
	cctx, cancel := s.callContext(ctx)
	info, err := s.client.PutObject(cctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	cancel()
	if err == nil {
		if info.ETag == "" {
			return "", fmt.Errorf("s3 swap %s: stored, but the server sent no ETag, so it cannot compare-and-swap; use another S3 server: %w",
				s.target(key), store.ErrPermanent)
		}
		return info.ETag, nil
	}
	switch code, status := errorCode(err); {
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed,
		code == "NoSuchKey" && old != "",
		code == "ConditionalRequestConflict":
		return s.swapCheck(ctx, key, data, old, nil)
	case status == 0 && ctx.Err() == nil && !s.isPermanent(err):
		// No answer: stored with the answer lost, refused, or never
		// received. See Put.
		return s.swapCheck(ctx, key, data, old, s.fail(ctx, "swap", s.target(key), err))
	}
	return "", s.fail(ctx, "swap", s.target(key), err)
}

// swapCheck reads key after a Swap of data from version old that was
// refused (unanswered is nil) or went unanswered: if key holds exactly
// data, it returns its version. Otherwise it returns unanswered, or an
// error wrapping store.ErrChanged.
func (s *Store) swapCheck(ctx context.Context, key string, data []byte, old string, unanswered error) (string, error) {
	stored, etag, err := s.load(ctx, key)
	if errors.Is(err, store.ErrPermanent) && etag != "" {
		err = nil // too large to be data: another content, at etag
	}
	switch {
	case err == nil && bytes.Equal(stored, data):
		s.log.Debug("swap: object already holds the new content", "key", key)
		return etag, nil
	case unanswered != nil:
		return "", unanswered
	case errors.Is(err, store.ErrNotFound):
		etag = ""
	case err != nil:
		return "", err // retryable or not, as the GET's error is
	}
	return "", fmt.Errorf("s3 swap %s: %w: expected %s, found %s; load it again",
		s.target(key), store.ErrChanged, describeVersion(old), describeVersion(etag))
}

// describeVersion names a version (an ETag) in an error.
func describeVersion(v string) string {
	if v == "" {
		return "no object"
	}
	return "ETag " + v
}
