package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/storetest"
)

// testLog sends store logs to the test log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tLogWriter struct{ t testing.TB }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// serverConfig is a Config for bucket on srv, reached through endpoint (the
// server itself or a fault proxy in front of it).
func serverConfig(srv *versitygw.Server, endpoint, bucket, prefix string) Config {
	return Config{
		Bucket:    bucket,
		Prefix:    prefix,
		Endpoint:  endpoint,
		Region:    "us-east-1",
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
	}
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(t.Context(), cfg, testLog(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// fixture is a running server with one bucket, optionally behind a fault
// proxy.
type fixture struct {
	srv    *versitygw.Server
	proxy  *versitygw.FaultProxy // nil unless withProxy
	bucket string
}

func newFixture(t *testing.T, withProxy bool) *fixture {
	t.Helper()
	f := &fixture{srv: versitygw.Start(t), bucket: "ferry-test"}
	f.srv.CreateBucket(t, f.bucket)
	if withProxy {
		f.proxy = versitygw.NewFaultProxy(f.srv.Endpoint)
		t.Cleanup(f.proxy.Close)
	}
	return f
}

// store returns a Store on prefix, through the proxy if there is one.
func (f *fixture) store(t testing.TB, prefix string, edit ...func(*Config)) *Store {
	t.Helper()
	endpoint := f.srv.Endpoint
	if f.proxy != nil {
		endpoint = f.proxy.URL
	}
	cfg := serverConfig(f.srv, endpoint, f.bucket, prefix)
	for _, e := range edit {
		e(&cfg)
	}
	return newStore(t, cfg)
}

// caps is what the S3 store declares to the conformance suite.
// Overlaps: only from above, and not between racing writers (see the
// package comment).
var caps = storetest.Caps{Swap: true}

// TestConformance runs the shared store suite, each store on its own
// prefix in one bucket.
func TestConformance(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	var n atomic.Int64
	storetest.RunWith(t, caps, func(t *testing.T) store.Store {
		return f.store(t, fmt.Sprintf("/conformance//%d/", n.Add(1)))
	})
}

// TestConformanceNoPrefix runs the suite with keys at the bucket root, each
// store in its own bucket.
func TestConformanceNoPrefix(t *testing.T) {
	t.Parallel()
	srv := versitygw.Start(t)
	var n atomic.Int64
	storetest.RunWith(t, caps, func(t *testing.T) store.Store {
		bucket := fmt.Sprintf("ferry-root-%d", n.Add(1))
		srv.CreateBucket(t, bucket)
		return newStore(t, serverConfig(srv, srv.Endpoint, bucket, ""))
	})
}

// TestKeyLayout checks where objects land and the checksum they carry.
func TestKeyLayout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	s := f.store(t, "/dr//site-a/")
	data := []byte("segment bytes")
	if err := s.Put(t.Context(), "app/seg1", data); err != nil {
		t.Fatal(err)
	}
	info, err := f.srv.Client(t).StatObject(t.Context(), f.bucket, "dr/site-a/app/seg1", minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("object not at dr/site-a/app/seg1: %v", err)
	}
	sum := sha256.Sum256(data)
	if got := info.Metadata.Get("X-Amz-Meta-Ferry-Sha256"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("x-amz-meta-ferry-sha256 = %q, want %x", got, sum)
	}
	if want := "s3://ferry-test/dr/site-a (" + f.srv.Endpoint + ")"; s.String() != want {
		t.Errorf("String() = %q, want %q", s.String(), want)
	}

	other := f.store(t, "dr/site-b")
	if n := len(listAll(t, other, "app/", "")); n != 0 {
		t.Errorf("store on another prefix lists %d objects, want 0", n)
	}
}

// TestPutExisting exercises the If-None-Match path: 412, then a checksum
// comparison from a HEAD (no GET), or from the bytes when the object was
// written by something other than ferry.
func TestPutExisting(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "p")
	ctx := t.Context()
	data := bytes.Repeat([]byte("abc"), 1000)
	if err := s.Put(ctx, "s/a", data); err != nil {
		t.Fatal(err)
	}

	f.proxy.ResetCounts()
	if err := s.Put(ctx, "s/a", bytes.Clone(data)); err != nil {
		t.Fatalf("identical Put: %v, want nil", err)
	}
	if c := f.proxy.Counts(); c[versitygw.Put] != 1 || c[versitygw.Head] != 1 || c[versitygw.Get] != 0 {
		t.Errorf("identical Put made requests %v, want 1 PUT (refused) and 1 HEAD", c)
	}

	different := bytes.Repeat([]byte("abd"), 1000)
	err := s.Put(ctx, "s/a", different)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("different Put: %v, want ErrConflict", err)
	}
	for _, want := range []string{"s3://ferry-test/p/s/a", "split brain"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("conflict error %q does not mention %q", err, want)
		}
	}
	if got := readAll(t, s, "s/a"); !bytes.Equal(got, data) {
		t.Errorf("after a refused Put the object holds %q…, want the original", got[:min(len(got), 12)])
	}

	// An object without ferry's checksum: compare the bytes.
	foreign := []byte("written by another tool")
	if _, err := f.srv.Client(t).PutObject(ctx, f.bucket, "p/s/foreign", bytes.NewReader(foreign),
		int64(len(foreign)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "s/foreign", bytes.Clone(foreign)); err != nil {
		t.Errorf("identical Put over an object without checksum: %v, want nil", err)
	}
	if err := s.Put(ctx, "s/foreign", []byte("written by another tooL")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("different Put over an object without checksum: %v, want ErrConflict", err)
	}
}

func TestListUsesStartAfter(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "list")
	ctx := t.Context()
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("s/%016x.seg", i))
		if err := s.Put(ctx, names[i], []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, "s/watermarks/r1", []byte("w")); err != nil {
		t.Fatal(err)
	}

	f.proxy.ResetCounts()
	got := listAll(t, s, "s/", names[15])
	if want := names[16:]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List(s/, after %s) = %v, want %v", names[15], got, want)
	}
	reqs := f.proxy.Requests()
	if len(reqs) != 1 || reqs[0].Kind != versitygw.List {
		t.Fatalf("listing made requests %+v, want exactly one LIST", reqs)
	}
	q := reqs[0].Query
	if q.Get("start-after") != "list/"+names[15] || q.Get("prefix") != "list/s/" || q.Get("delimiter") != "/" {
		t.Errorf("LIST query %v, want start-after=list/%s prefix=list/s/ delimiter=/", q, names[15])
	}

	f.proxy.ResetCounts()
	_ = listAll(t, s, "s/", "")
	if q := f.proxy.Requests()[0].Query; q.Has("start-after") {
		t.Errorf("List with after=\"\" sent start-after=%q", q.Get("start-after"))
	}
	if c := f.proxy.Counts(); c[versitygw.Head] != 0 || c[versitygw.Get] != 0 {
		t.Errorf("listing made per-object requests: %v", c)
	}
}

// TestGetIsEager: a missing object is reported by Get itself, with one
// request.
func TestGetIsEager(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "g")
	f.proxy.ResetCounts()
	rc, err := s.Get(t.Context(), "s/missing")
	if !errors.Is(err, store.ErrNotFound) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("Get of a missing object: %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "s3://ferry-test/g/s/missing") {
		t.Errorf("error %q does not name the key", err)
	}
	if c := f.proxy.Counts(); c[versitygw.Get] != 1 || len(f.proxy.Requests()) != 1 {
		t.Errorf("Get of a missing object made requests %v, want one GET", f.proxy.Requests())
	}
}

func listAll(t testing.TB, s *Store, dir, after string) []string {
	t.Helper()
	var names []string
	err := s.List(t.Context(), dir, after, func(o store.Object) error {
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, %q): %v", dir, after, err)
	}
	return names
}

func readAll(t testing.TB, s *Store, name string) []byte {
	t.Helper()
	return readAllCtx(t, t.Context(), s, name)
}

func readAllCtx(t testing.TB, ctx context.Context, s *Store, name string) []byte {
	t.Helper()
	rc, err := s.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", name, err)
	}
	return data
}

// TestPutSegmentListsFirst: a segment Put is one LIST for its neighbours,
// then the PUT; other objects are PUT alone. A failed LIST fails the Put
// retryably without a PUT.
func TestPutSegmentListsFirst(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "ov")
	ctx := t.Context()
	seg := "app/" + batch.SegmentName(1, 0x10, 0x1f)

	f.proxy.ResetCounts()
	if err := s.Put(ctx, seg, []byte("a")); err != nil {
		t.Fatal(err)
	}
	reqs := f.proxy.Requests()
	if len(reqs) != 2 || reqs[0].Kind != versitygw.List || reqs[1].Kind != versitygw.Put {
		t.Fatalf("segment Put made requests %+v, want LIST then PUT", reqs)
	}
	q := reqs[0].Query
	if want := "ov/app/" + batch.NameAfter(1, 0x0f); q.Get("start-after") != want || q.Get("max-keys") != "2" || q.Get("prefix") != "ov/app/" {
		t.Errorf("LIST query %v, want start-after=%s max-keys=2 prefix=ov/app/", q, want)
	}

	f.proxy.ResetCounts()
	if err := s.Put(ctx, seg, []byte("a")); err != nil {
		t.Fatalf("identical re-Put: %v", err)
	}
	if c := f.proxy.Counts(); c[versitygw.List] != 1 || c[versitygw.Put] != 1 || c[versitygw.Head] != 1 || len(f.proxy.Requests()) != 3 {
		t.Errorf("identical re-Put made requests %v, want LIST, PUT (refused), HEAD", c)
	}

	f.proxy.ResetCounts()
	zero := "app/" + batch.SegmentName(2, 0, 3)
	if err := s.Put(ctx, zero, []byte("z")); err != nil {
		t.Fatal(err)
	}
	if q := f.proxy.Requests()[0].Query; q.Get("start-after") != "ov/app/00000002-" {
		t.Errorf("LIST for a segment starting at seq 0: start-after=%q, want ov/app/00000002-", q.Get("start-after"))
	}

	f.proxy.ResetCounts()
	if err := s.Put(ctx, "app/watermarks/r1", []byte("w")); err != nil {
		t.Fatal(err)
	}
	if c := f.proxy.Counts(); c[versitygw.List] != 0 || c[versitygw.Put] != 1 {
		t.Errorf("non-segment Put made requests %v, want one PUT", c)
	}

	f.proxy.ResetCounts()
	f.proxy.Inject(versitygw.List, 1, versitygw.Status(http.StatusInternalServerError, ""))
	next := "app/" + batch.SegmentName(1, 0x20, 0x2f)
	checkRetryable(t, "segment Put whose LIST failed", s.Put(ctx, next, []byte("b")))
	if c := f.proxy.Counts(); c[versitygw.Put] != 0 {
		t.Errorf("segment Put whose LIST failed made requests %v, want no PUT", c)
	}
	if err := putWithRetry(t, s, next, []byte("b")); err != nil {
		t.Fatalf("Put under Retry after a failed LIST: %v", err)
	}
}
