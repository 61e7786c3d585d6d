// Package s3 stores segments in an S3-compatible object store (AWS S3,
// MinIO, Ceph RGW, versitygw, …) through minio-go.
//
// Object keys are "<prefix>/<name>" (just "<name>" with no prefix). Every
// object carries x-amz-meta-ferry-sha256, the hex SHA-256 of its content.
//
// Put never overwrites: it sends If-None-Match: * so the server refuses to
// replace an existing key (412). Put then compares checksums: the same
// content is an idempotent retry (nil), different content is a split brain
// (store.ErrConflict). Put makes the same comparison when a PUT gets no
// answer at all (reset, timeout): the object may have been stored with the
// answer lost, or refused with a 412 the HTTP client never saw because the
// server closed the connection mid-body. A server that ignores
// If-None-Match would silently overwrite, so use one that implements
// conditional writes (AWS since 2024-08, MinIO, versitygw, Ceph RGW).
//
// Overlapping segments (see store.Store's Put) are refused only in part.
// Before the PUT of a segment, Put makes one ListObjectsV2 request for the
// first two keys after every segment of its generation that starts below
// it (StartAfter, max-keys 2): a segment of the same generation among them
// that starts inside the new one's seq range is an overlap, refused with
// store.ErrConflict. So a segment Put costs two requests (LIST, then PUT)
// instead of one, both billed as the dearer class on AWS. Not refused:
//
//   - a stored segment that starts below the new one and reaches into it
//     (1..10 stored, 5..12 put): finding it would mean listing backwards,
//     which S3 cannot, or listing the whole generation;
//   - a segment another writer stores between this Put's LIST and its
//     PUT: S3 has no condition spanning two keys.
//
// Both take two writers on one stream, which the writer lease prevents;
// the receiver still applies each record once, following one hash-linked
// chain, and `ferry verify` reports the overlap.
//
// Store is also a store.Swapper: versions are ETags, Swap is a PUT with
// If-Match (If-None-Match: * to create), and the server checks the
// condition and replaces the object atomically; see Swap.
//
// Retries: minio-go makes one attempt per call; its own retry loop is
// switched off so that the caller's store.Retry is the only retry layer
// (it logs, backs off with jitter, and stops on store.ErrPermanent). Two
// nested loops would multiply attempts and hide outages from the logs.
// Errors retrying cannot fix (bad credentials, missing bucket, skewed clock,
// untrusted certificate) wrap store.ErrPermanent and say what to fix; they
// never contain the secret key or session token.
package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/encrypt"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// metaSHA256 is the user-metadata key holding the hex SHA-256 of an
// object's content (sent as x-amz-meta-ferry-sha256).
const metaSHA256 = "ferry-sha256"

// Store is a store.Store on one bucket and prefix. It is safe for
// concurrent use.
type Store struct {
	client       *minio.Client
	core         minio.Core // for an eager GetObject
	log          *slog.Logger
	desc         string // String()
	bucket       string
	prefix       string // normalised; "" for none
	endpoint     string // "scheme://host[:port]"
	timeout      time.Duration
	storageClass string
	sse          encrypt.ServerSide // nil for none
	secrets      []string           // masked in every error
}

var _ store.Store = (*Store)(nil)

// New returns a Store for cfg. It validates the configuration and reads
// the CA file, but makes no request: a shipper must be able to start and
// spool while S3 is unreachable. Configuration problems only the server
// can reveal (missing bucket, wrong keys) surface as store.ErrPermanent
// from the first call, or from Check. ctx is not retained.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := resolve(cfg)
	if err != nil {
		return nil, fmt.Errorf("s3 store: %w: %w", err, store.ErrPermanent)
	}
	secure := r.endpoint.Scheme == "https"
	tr, err := transport(cfg, secure)
	if err != nil {
		return nil, fmt.Errorf("s3 store: %w: %w", err, store.ErrPermanent)
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle != nil {
		lookup = minio.BucketLookupDNS
		if *cfg.PathStyle {
			lookup = minio.BucketLookupPath
		}
	}
	var rt http.RoundTripper = tr
	if cfg.OnRequest != nil {
		rt = countingTransport{next: tr, count: cfg.OnRequest}
	}
	client, err := minio.New(r.endpoint.Host, &minio.Options{
		Creds:        r.creds,
		Secure:       secure,
		Transport:    rt,
		Region:       r.region,
		BucketLookup: lookup,
		MaxRetries:   1, // one attempt: see the package comment
	})
	if err != nil {
		return nil, fmt.Errorf("s3 store: endpoint %s: %w: %w", r.endpoint, err, store.ErrPermanent)
	}
	s := &Store{
		client:       client,
		core:         minio.Core{Client: client},
		bucket:       r.bucket,
		prefix:       r.prefix,
		endpoint:     r.endpoint.String(),
		timeout:      r.timeout,
		storageClass: cfg.StorageClass,
		sse:          r.sse,
		secrets:      r.secrets,
	}
	s.desc = fmt.Sprintf("s3://%s (%s)", s.bucket, s.endpoint)
	if s.prefix != "" {
		s.desc = fmt.Sprintf("s3://%s/%s (%s)", s.bucket, s.prefix, s.endpoint)
	}
	s.log = log.With("store", s.desc)
	return s, nil
}

// String returns "s3://bucket/prefix (endpoint)". It contains no secrets.
func (s *Store) String() string { return s.desc }

// Check lists at most one key under the prefix to learn whether the bucket
// exists and the credentials may list it. It returns nil if so, an error
// wrapping store.ErrPermanent for a missing bucket or rejected credentials,
// and a plain error if the server could not be reached.
func (s *Store) Check(ctx context.Context) error {
	cctx, cancel := s.callContext(ctx)
	defer cancel()
	opts := minio.ListObjectsOptions{Prefix: s.key(""), MaxKeys: 1, FetchOwner: new(bool)}
	for obj := range s.client.ListObjectsIter(cctx, s.bucket, opts) {
		if obj.Err != nil {
			return s.fail(ctx, "check", s.desc, obj.Err)
		}
		break
	}
	if err := context.Cause(cctx); err != nil {
		return s.fail(ctx, "check", s.desc, err)
	}
	return nil
}

// Put stores data under name unless the key already exists; see the
// package comment and store.Store. An identical existing object gives nil,
// a different one an error wrapping store.ErrConflict.
func (s *Store) Put(ctx context.Context, name string, data []byte) error {
	if err := store.CheckName(name); err != nil {
		return fmt.Errorf("s3 put: %w: %w", err, store.ErrPermanent)
	}
	key := s.key(name)
	if seg, ok := store.ParseSegmentObject(name); ok {
		if err := s.checkOverlap(ctx, seg); err != nil {
			return err
		}
	}
	opts, sumHex := s.putOptions(data)
	opts.SetMatchETagExcept("*") // If-None-Match: *

	cctx, cancel := s.callContext(ctx)
	// A bytes.Reader is seekable, so each attempt resends identical bytes.
	_, err := s.client.PutObject(cctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), opts)
	cancel()
	if err == nil {
		return nil
	}
	code, status := errorCode(err)
	switch {
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return s.compareExisting(ctx, key, data, sumHex, nil)
	case code == "ConditionalRequestConflict":
		return fmt.Errorf("s3 put %s: a concurrent write to the same key is in progress (ConditionalRequestConflict); retry", s.target(key))
	case status == 0 && ctx.Err() == nil && !s.isPermanent(err):
		// No answer at all. Either the server stored the object and the
		// answer was lost, or it refused the PUT (412) as soon as it saw
		// the headers and closed the connection while the body was still
		// being written, in which case Go's HTTP client reports the write
		// error and drops the 412. Only the object itself can tell; if it
		// is absent, the original error stands and a retry will resend.
		return s.compareExisting(ctx, key, data, sumHex, s.fail(ctx, "put", s.target(key), err))
	}
	return s.fail(ctx, "put", s.target(key), err)
}

// overlapListKeys is how many keys checkOverlap asks for: the segment's own
// name, if a retry finds it stored, and the one after it.
const overlapListKeys = 2

// checkOverlap refuses a Put of seg, with store.OverlapError, if a stored
// segment of the same generation starts inside seg's seq range. It makes
// one ListObjectsV2 request for the first keys after every segment that
// starts below seg (StartAfter), which is all S3 can do cheaply: see the
// package comment for what escapes it. If seg's own name is stored, it
// refuses nothing, and Put compares the contents.
func (s *Store) checkOverlap(ctx context.Context, seg store.SegmentObject) error {
	dir := seg.Name[:strings.LastIndexByte(seg.Name, '/')+1]
	after := dir + fmt.Sprintf("%08x-", seg.Gen) // sorts before every segment of seg.Gen
	if seg.First > 0 {
		after = dir + batch.NameAfter(seg.Gen, seg.First-1)
	}
	opts := minio.ListObjectsOptions{
		Prefix:     s.key(dir),
		StartAfter: s.key(after),
		MaxKeys:    overlapListKeys,
		FetchOwner: new(bool),
	}
	cctx, cancel := s.callContext(ctx)
	defer cancel()
	var stored *store.SegmentObject
	n := 0
	for obj := range s.client.ListObjectsIter(cctx, s.bucket, opts) {
		if obj.Err != nil {
			return s.fail(ctx, "put: list neighbours of", s.target(s.key(seg.Name)), obj.Err)
		}
		name := s.name(obj.Key)
		if name == seg.Name {
			return nil
		}
		if o, ok := store.ParseSegmentObject(name); ok && stored == nil && seg.Overlaps(o) {
			stored = &o
		}
		if n++; n == overlapListKeys {
			break // one page: never ask for the next
		}
	}
	if cause := context.Cause(cctx); cause != nil {
		return s.fail(ctx, "put: list neighbours of", s.target(s.key(seg.Name)), cause)
	}
	if stored != nil {
		return store.OverlapError(seg, *stored)
	}
	return nil
}

// putOptions are the options of every PUT of data, and the hex SHA-256
// they carry in metaSHA256.
func (s *Store) putOptions(data []byte) (minio.PutObjectOptions, string) {
	sum := sha256.Sum256(data)
	sumHex := hex.EncodeToString(sum[:])
	return minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		UserMetadata:         map[string]string{metaSHA256: sumHex},
		StorageClass:         s.storageClass,
		ServerSideEncryption: s.sse,
		DisableMultipart:     true, // one request: conditions apply to it, and a retry resends it whole
		SendContentMd5:       true, // the server rejects a body damaged in transit
	}, sumHex
}

// compareExisting decides a Put that found key occupied (or may have): nil
// if the stored object has the same content, an error wrapping
// store.ErrConflict if not. If the object does not exist it returns
// ifMissing, or a retryable error when ifMissing is nil.
func (s *Store) compareExisting(ctx context.Context, key string, data []byte, sumHex string, ifMissing error) error {
	cctx, cancel := s.callContext(ctx)
	info, err := s.client.StatObject(cctx, s.bucket, key, minio.StatObjectOptions{})
	cancel()
	if err != nil {
		switch code, _ := errorCode(err); {
		case ifMissing != nil:
			return ifMissing // the error that made us look is the one to report
		case code == "NoSuchKey":
			// Refused because it existed, and now it is gone (a concurrent
			// Delete): the next attempt can simply write it.
			return fmt.Errorf("s3 put %s: object was deleted while being written; retry", s.target(key))
		}
		return s.fail(ctx, "put: stat existing", s.target(key), err)
	}
	same := false
	switch stored := info.Metadata.Get("X-Amz-Meta-" + metaSHA256); {
	case info.Size != int64(len(data)):
	case stored != "":
		same = strings.EqualFold(stored, sumHex)
	default:
		// Written by something other than ferry: compare the bytes.
		same, err = s.sameBytes(ctx, key, data)
		if err != nil {
			return err
		}
	}
	if !same {
		return fmt.Errorf("s3 put %s: %w: another writer owns this stream (split brain?); the stored object was left untouched",
			s.target(key), store.ErrConflict)
	}
	s.log.Debug("object already stored with identical content", "key", key)
	return nil
}

func (s *Store) sameBytes(ctx context.Context, key string, data []byte) (bool, error) {
	rc, err := s.open(ctx, key)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	stored, err := io.ReadAll(io.LimitReader(rc, int64(len(data))+1))
	if err != nil {
		return false, err // already "s3 read <key>: …"
	}
	return bytes.Equal(stored, data), nil
}

// Get opens the named object. The first request is made before Get
// returns, so a missing object gives an error wrapping store.ErrNotFound
// here rather than at the first Read. Reads fail if no data arrives for
// CallTimeout; Close releases the connection.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := store.CheckName(name); err != nil {
		return nil, fmt.Errorf("s3 get: %w: %w", err, store.ErrPermanent)
	}
	return s.open(ctx, s.key(name))
}

func (s *Store) open(ctx context.Context, key string) (io.ReadCloser, error) {
	r, _, err := s.openInfo(ctx, "get", key)
	return r, err
}

// openInfo is open that also returns what the GET's answer says about the
// object (its ETag, say); op names the operation in errors.
func (s *Store) openInfo(ctx context.Context, op, key string) (io.ReadCloser, minio.ObjectInfo, error) {
	wd := newWatchdog(ctx, s.timeout)
	body, info, _, err := s.core.GetObject(wd.ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		wd.stop()
		if code, status := errorCode(err); code == "NoSuchKey" || (code == "" && status == http.StatusNotFound) {
			return nil, info, fmt.Errorf("s3 %s %s: %w", op, s.target(key), store.ErrNotFound)
		}
		return nil, info, s.fail(ctx, op, s.target(key), err)
	}
	wd.kick()
	return &objectReader{body: body, wd: wd, s: s, parent: ctx, key: key}, info, nil
}

// objectReader reads an object body, keeping the idle watchdog fed and
// giving read errors the same shape as call errors.
type objectReader struct {
	body   io.ReadCloser
	wd     *watchdog
	s      *Store
	parent context.Context
	key    string
}

func (r *objectReader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if n > 0 {
		r.wd.kick()
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(r.wd.ctx); cause != nil {
			err = cause
		}
		err = r.s.fail(r.parent, "read", r.s.target(r.key), err)
	}
	return n, err
}

func (r *objectReader) Close() error {
	r.wd.stop()
	return r.body.Close()
}

var _ store.DirLister = (*Store)(nil)

// ListDirs calls fn for each common prefix directly under dir; see
// store.DirLister. Like List it issues ListObjectsV2 requests only.
func (s *Store) ListDirs(ctx context.Context, dir string, fn func(name string) error) error {
	if err := store.CheckDir(dir); err != nil {
		return fmt.Errorf("s3 list: %w: %w", err, store.ErrPermanent)
	}
	opts := minio.ListObjectsOptions{Prefix: s.key(dir), FetchOwner: new(bool)}
	return s.listObjects(ctx, opts, func(obj minio.ObjectInfo) error {
		name := s.name(obj.Key)
		if !strings.HasSuffix(obj.Key, "/") || !strings.HasPrefix(name, dir) || name == dir {
			return nil // an object, not a common prefix
		}
		return fn(name)
	})
}

// List calls fn for each object directly under dir whose name sorts after
// after; see store.Store. It issues ListObjectsV2 requests only (delimiter
// "/", StartAfter when after is inside or beyond dir), never a HEAD or GET
// per object. A listing fails if no page arrives for CallTimeout; the time
// fn takes is not counted.
func (s *Store) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	if err := store.CheckDir(dir); err != nil {
		return fmt.Errorf("s3 list: %w: %w", err, store.ErrPermanent)
	}
	opts := minio.ListObjectsOptions{
		Prefix:     s.key(dir),
		Recursive:  false,
		FetchOwner: new(bool), // false: less work for the server
	}
	if after > dir {
		opts.StartAfter = s.key(after)
	}
	return s.listObjects(ctx, opts, func(obj minio.ObjectInfo) error {
		if strings.HasSuffix(obj.Key, "/") {
			return nil // a sub-"directory" (common prefix)
		}
		name := s.name(obj.Key)
		if name <= after || !strings.HasPrefix(name, dir) {
			return nil // a server that ignores StartAfter
		}
		return fn(store.Object{Name: name, Size: obj.Size, ModTime: obj.LastModified})
	})
}

// listObjects runs the ListObjectsV2 listing opts describes and calls fn
// for each entry, common prefixes included, stopping at fn's first error.
// It fails if no page arrives for CallTimeout; the time fn takes is not
// counted.
func (s *Store) listObjects(ctx context.Context, opts minio.ListObjectsOptions, fn func(minio.ObjectInfo) error) error {
	wd := newWatchdog(ctx, s.timeout)
	defer wd.stop()
	for obj := range s.client.ListObjectsIter(wd.ctx, s.bucket, opts) {
		if obj.Err != nil {
			if cause := context.Cause(wd.ctx); cause != nil {
				obj.Err = cause
			}
			return s.fail(ctx, "list", s.target(opts.Prefix), obj.Err)
		}
		wd.pause()
		err := fn(obj)
		wd.kick()
		if err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 list %s: %w", s.target(opts.Prefix), err)
	}
	if cause := context.Cause(wd.ctx); cause != nil {
		return s.fail(ctx, "list", s.target(opts.Prefix), cause)
	}
	return nil
}

// Delete removes the named object. A missing object is not an error.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := store.CheckName(name); err != nil {
		return fmt.Errorf("s3 delete: %w: %w", err, store.ErrPermanent)
	}
	key := s.key(name)
	cctx, cancel := s.callContext(ctx)
	defer cancel()
	err := s.client.RemoveObject(cctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err == nil {
		return nil
	}
	if code, _ := errorCode(err); code == "NoSuchKey" {
		return nil
	}
	return s.fail(ctx, "delete", s.target(key), err)
}

// key maps a store name (or a dir ending in "/") to an object key.
func (s *Store) key(name string) string {
	if s.prefix == "" {
		return name
	}
	return s.prefix + "/" + name
}

// name maps an object key back to a store name.
func (s *Store) name(key string) string {
	if s.prefix == "" {
		return key
	}
	return strings.TrimPrefix(key, s.prefix+"/")
}

// target names an object key in errors: "s3://bucket/key".
func (s *Store) target(key string) string {
	return "s3://" + s.bucket + "/" + key
}

// callContext bounds one request by CallTimeout.
func (s *Store) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, s.timeout, errCallTimeout)
}

// countingTransport reports every request by kind: list, get, head, put,
// delete or the method for anything else.
type countingTransport struct {
	next  http.RoundTripper
	count func(kind string)
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := strings.ToLower(req.Method)
	if req.Method == http.MethodGet && (req.URL.Query().Has("list-type") || req.URL.Query().Has("prefix")) {
		kind = "list"
	}
	t.count(kind)
	return t.next.RoundTrip(req)
}
