package versitygw

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func TestStartRestart(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if !strings.HasPrefix(s.Endpoint, "http://127.0.0.1:") || s.AccessKey == "" || s.SecretKey == "" {
		t.Fatalf("Server = %+v", s)
	}
	s.CreateBucket(t, "bucket-1")
	c := s.Client(t)
	ctx := t.Context()
	if _, err := c.PutObject(ctx, "bucket-1", "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	endpoint := s.Endpoint
	s.Stop()
	if s.Running() {
		t.Error("Running after Stop")
	}
	if _, err := http.Get(endpoint); err == nil {
		t.Error("server still answers after Stop")
	}
	s.Stop() // idempotent
	s.Restart(t)
	if s.Endpoint != endpoint || !s.Running() {
		t.Fatalf("after Restart: endpoint %s (was %s), running %v", s.Endpoint, endpoint, s.Running())
	}
	obj, err := c.GetObject(ctx, "bucket-1", "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	if got, err := io.ReadAll(obj); err != nil || string(got) != "v" {
		t.Errorf("after Restart the object reads %q, %v; want \"v\"", got, err)
	}
}

// TestParallelServers: two servers have their own ports, keys and data.
func TestParallelServers(t *testing.T) {
	t.Parallel()
	a, b := Start(t), Start(t)
	if a.Endpoint == b.Endpoint || a.Dir == b.Dir || a.SecretKey == b.SecretKey {
		t.Fatalf("servers share an endpoint, directory or key: %s %s", a.Endpoint, b.Endpoint)
	}
	a.CreateBucket(t, "only-a")
	if ok, err := b.Client(t).BucketExists(t.Context(), "only-a"); err != nil || ok {
		t.Errorf("b sees a's bucket: %v, %v", ok, err)
	}
}

func TestStartTLS(t *testing.T) {
	t.Parallel()
	s := StartTLS(t)
	if !strings.HasPrefix(s.Endpoint, "https://") || s.CAFile == "" {
		t.Fatalf("Server = %+v", s)
	}
	s.CreateBucket(t, "tls")
}

func TestMissingBinaryFails(t *testing.T) {
	t.Setenv("FERRY_VERSITYGW", filepath.Join(t.TempDir(), "no-such-versitygw"))
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil && r != errFatal {
				panic(r)
			}
		}()
		Start(ft)
	}()
	if !strings.Contains(ft.msg, "go install github.com/versity/versitygw") {
		t.Errorf("Start without the binary: Fatalf(%q), want install instructions", ft.msg)
	}
}

var errFatal = errors.New("fatal")

// fatalRecorder records Fatalf instead of failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(errFatal)
}

// proxyClient is a minio client for srv that goes through p and makes a
// single attempt per call, so each fault shows.
func proxyClient(t *testing.T, srv *Server, p *FaultProxy) *minio.Client {
	t.Helper()
	c, err := minio.New(p.Addr, &minio.Options{
		Creds:        credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFaultProxy(t *testing.T) {
	t.Parallel()
	srv := Start(t)
	srv.CreateBucket(t, "bkt")
	p := NewFaultProxy(srv.Endpoint)
	t.Cleanup(p.Close)
	c := proxyClient(t, srv, p)
	ctx := t.Context()
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	put := func(key string) error {
		_, err := c.PutObject(ctx, "bkt", key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
		return err
	}
	status := func(err error) int { return minio.ToErrorResponse(err).StatusCode }

	if err := put("k"); err != nil {
		t.Fatalf("PUT through the proxy: %v", err)
	}
	p.Inject(Put, 1, Status(http.StatusInternalServerError, ""))
	if err := put("k"); status(err) != 500 {
		t.Errorf("PUT with a 500 injected: %v", err)
	}
	bodies := p.Bodies("bkt/k")
	if len(bodies) != 2 || !bytes.Equal(bodies[0], data) || !bytes.Equal(bodies[1], data) {
		t.Errorf("recorded %d bodies for bkt/k, want 2 equal to the data (aws-chunked decoded)", len(bodies))
	}

	p.Inject(Head, 1, SlowDown())
	if _, err := c.StatObject(ctx, "bkt", "k", minio.StatObjectOptions{}); status(err) != 503 {
		t.Errorf("HEAD with SlowDown injected: %v", err)
	}

	p.Inject(Get, 1, DropResponse(1000))
	obj, err := c.GetObject(ctx, "bkt", "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err == nil || len(got) >= len(data) {
		t.Errorf("GET with a cut response read %d bytes, err %v; want an error", len(got), err)
	}

	p.Inject(Put, 1, DropRequest(1000))
	if err := put("cut"); err == nil {
		t.Error("PUT with the connection cut mid-body succeeded")
	}
	if n := len(p.Bodies("bkt/cut")); n != 0 {
		t.Errorf("recorded %d bodies for a cut upload, want 0", n)
	}

	p.Inject(Put, 1, LoseResponse())
	if err := put("lost"); err == nil {
		t.Error("PUT with the response lost succeeded")
	}
	if _, err := srv.Client(t).StatObject(ctx, "bkt", "lost", minio.StatObjectOptions{}); err != nil {
		t.Errorf("object behind a lost response was not stored: %v", err)
	}

	p.Inject(Delete, 1, Stall(300*time.Millisecond))
	start := time.Now()
	if err := c.RemoveObject(ctx, "bkt", "lost", minio.RemoveObjectOptions{}); err != nil {
		t.Errorf("DELETE after a stall: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("stalled DELETE took only %v", d)
	}

	p.ResetCounts()
	for obj := range c.ListObjectsIter(ctx, "bkt", minio.ListObjectsOptions{Prefix: "k"}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
	}
	reqs := p.Requests()
	if len(reqs) != 1 || reqs[0].Kind != List || reqs[0].Query.Get("prefix") != "k" {
		t.Errorf("listing recorded as %+v, want one LIST with prefix=k", reqs)
	}

	p.Inject(Get, 5, Status(http.StatusTooManyRequests, ""))
	if n := p.Pending(); n != 5 {
		t.Errorf("Pending = %d, want 5", n)
	}
	p.ClearFaults()
	if n := p.Pending(); n != 0 {
		t.Errorf("Pending after ClearFaults = %d", n)
	}
}

func TestDecodePayload(t *testing.T) {
	t.Parallel()
	chunked := "5;chunk-signature=aaaa\r\nhello\r\n6;chunk-signature=bbbb\r\n world\r\n0;chunk-signature=cccc\r\n\r\n"
	h := http.Header{"X-Amz-Content-Sha256": {"STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}}
	if got := decodePayload(h, []byte(chunked)); string(got) != "hello world" {
		t.Errorf("decodePayload = %q, want %q", got, "hello world")
	}
	if got := decodePayload(http.Header{}, []byte(chunked)); string(got) != chunked {
		t.Errorf("plain body altered: %q", got)
	}
	if got := decodePayload(h, []byte("zz;\r\n")); string(got) != "zz;\r\n" {
		t.Errorf("malformed body altered: %q", got)
	}
}
