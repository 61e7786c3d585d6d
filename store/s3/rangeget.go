package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/store"
)

var _ store.RangeGetter = (*Store)(nil)

// GetRange reads p from offset off of the named object with one ranged GET
// (Range: bytes=off-(off+len(p)-1)); see store.RangeGetter. The answer's
// Content-Range must be exactly the range asked for: a server that
// ignored the Range header would send the whole object, which is never
// read past len(p).
func (s *Store) GetRange(ctx context.Context, name string, off int64, p []byte) error {
	if err := store.CheckName(name); err != nil {
		return fmt.Errorf("s3 get: %w: %w", err, store.ErrPermanent)
	}
	if off < 0 {
		return fmt.Errorf("s3 get %s: negative offset %d: %w", name, off, store.ErrPermanent)
	}
	if len(p) == 0 {
		return nil
	}
	key := s.key(name)
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+int64(len(p))-1); err != nil {
		return fmt.Errorf("s3 get %s: %w: %w", s.target(key), err, store.ErrPermanent)
	}
	start, _, size, err := s.getRange(ctx, key, opts, p, false)
	switch {
	case errors.Is(err, errRangePastEnd):
		return store.ShortObjectError(s.target(key), off, len(p), size)
	case err != nil:
		return err
	case start != off:
		return fmt.Errorf("s3 get %s: asked for %d bytes at %d, the server sent them from %d", s.target(key), len(p), off, start)
	}
	return nil
}

// GetSuffix reads the last min(len(p), size) bytes of the named object with
// one ranged GET (Range: bytes=-len(p)); see store.RangeGetter.
func (s *Store) GetSuffix(ctx context.Context, name string, p []byte) (int, int64, error) {
	if err := store.CheckName(name); err != nil {
		return 0, 0, fmt.Errorf("s3 get: %w: %w", err, store.ErrPermanent)
	}
	if len(p) == 0 {
		return 0, 0, fmt.Errorf("s3 get %s: empty suffix range: %w", name, store.ErrPermanent)
	}
	key := s.key(name)
	var opts minio.GetObjectOptions
	if err := opts.SetRange(0, -int64(len(p))); err != nil {
		return 0, 0, fmt.Errorf("s3 get %s: %w: %w", s.target(key), err, store.ErrPermanent)
	}
	start, n, size, err := s.getRange(ctx, key, opts, p, true)
	switch {
	case errors.Is(err, errRangePastEnd):
		// Only an empty object has no suffix to send.
		return 0, 0, nil
	case err != nil:
		return 0, 0, err
	case start+int64(n) != size:
		return 0, 0, fmt.Errorf("s3 get %s: asked for its last %d bytes, the server sent %d from %d of %d", s.target(key), len(p), n, start, size)
	}
	return n, size, nil
}

// errRangePastEnd: the server answered 416, the range lies past the end.
var errRangePastEnd = errors.New("range not satisfiable")

// getRange makes the ranged GET of key in opts and reads its body into p:
// at most len(p) bytes, which must be exactly what its Content-Range says
// it sent. It returns where that range starts, its length and the
// object's size from Content-Range (the size the server claims, for the
// caller to check; nothing is allocated for it).
func (s *Store) getRange(ctx context.Context, key string, opts minio.GetObjectOptions, p []byte, suffix bool) (start int64, n int, size int64, err error) {
	wd := newWatchdog(ctx, s.timeout)
	defer wd.stop()
	body, _, h, err := s.core.GetObject(wd.ctx, s.bucket, key, opts)
	if err != nil {
		code, status := errorCode(err)
		switch {
		case code == "NoSuchKey" || (code == "" && status == http.StatusNotFound):
			return 0, 0, 0, fmt.Errorf("s3 get %s: %w", s.target(key), store.ErrNotFound)
		case code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable:
			return 0, 0, -1, errRangePastEnd
		}
		return 0, 0, 0, s.fail(ctx, "get", s.target(key), err)
	}
	defer body.Close()
	first, last, size, ok := parseContentRange(h.Get("Content-Range"))
	if !ok || last-first+1 > int64(len(p)) {
		return 0, 0, 0, fmt.Errorf("s3 get %s: the server answered a %d-byte range request with Content-Range %q (does it support ranged GETs?)",
			s.target(key), len(p), h.Get("Content-Range"))
	}
	want := int(last - first + 1)
	r := &objectReader{body: body, wd: wd, s: s, parent: ctx, key: key}
	wd.kick()
	got, err := io.ReadFull(r, p[:want])
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, 0, fmt.Errorf("s3 get %s: %d of the %d bytes of range %d-%d arrived: %w", s.target(key), got, want, first, last, io.ErrUnexpectedEOF)
		}
		return 0, 0, 0, err
	}
	if !suffix && want < len(p) {
		if first+int64(want) < size {
			// Fewer bytes than asked for, the object going on past
			// them: not the range asked for.
			return 0, 0, 0, fmt.Errorf("s3 get %s: asked for %d bytes, the server sent %d of %d", s.target(key), len(p), want, size)
		}
		return first, want, size, errRangePastEnd // the object ends inside the range
	}
	return first, want, size, nil
}

// parseContentRange parses "bytes FIRST-LAST/SIZE".
func parseContentRange(v string) (first, last, size int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, total, found := strings.Cut(rest, "/")
	a, b, found2 := strings.Cut(rng, "-")
	if !found || !found2 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseInt(a, 10, 64)
	last, err2 = strconv.ParseInt(b, 10, 64)
	size, err3 = strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || last < first || size <= last {
		return 0, 0, 0, false
	}
	return first, last, size, true
}
