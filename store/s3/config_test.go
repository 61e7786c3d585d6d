package s3

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, bucket, prefix string
	}{
		{"s3://bucket", "bucket", ""},
		{"s3://bucket/", "bucket", ""},
		{"s3://bucket/dr/site-a", "bucket", "dr/site-a"},
		{"s3://bucket//dr//site-a/", "bucket", "dr/site-a"},
		{"s3://my.bucket-1/p", "my.bucket-1", "p"},
	} {
		bucket, prefix, err := ParseURL(tc.in)
		if err != nil || bucket != tc.bucket || prefix != tc.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.in, bucket, prefix, err, tc.bucket, tc.prefix)
		}
	}
	for _, in := range []string{
		"", "bucket/prefix", "http://bucket/p", "s3:///p", "s3://b/p", "s3://bad_bucket!/p",
		"s3://bucket/p?x=1", "s3://bucket/p#f", "s3://user@bucket/p", "s3://bucket/a/../b", "s3://bucket/./a",
	} {
		if b, p, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) = %q, %q, nil; want an error", in, b, p)
		} else if in != "" && !strings.Contains(err.Error(), redact.URL(in)) {
			t.Errorf("ParseURL(%q) error %q does not quote the url", in, err)
		}
	}
	// Credentials are never echoed, even when they keep the URL from
	// parsing.
	for _, in := range []string{"s3://AKIAEXAMPLE:s3cr3tkey@bucket/p", "s3://AKIAEXAMPLE:s3cr3t/key@bucket/p", "s3://AKIAEXAMPLE:s3cr3t%key@bucket"} {
		_, _, err := ParseURL(in)
		if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "AKIAEXAMPLE") || !strings.Contains(err.Error(), "s3://***@") {
			t.Errorf("ParseURL(%q): %v, want an error showing the URL with its userinfo hidden", in, err)
		}
	}
}

func TestResolveEndpointAndRegion(t *testing.T) {
	// t.Setenv: not parallel.
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_REGION", "")
	check := func(cfg Config, endpoint, region string) {
		t.Helper()
		r, err := resolve(cfg)
		if err != nil {
			t.Fatalf("resolve(%+v): %v", cfg, err)
		}
		if r.endpoint.String() != endpoint || r.region != region {
			t.Errorf("resolve(%+v): endpoint %s, region %q; want %s, %q", cfg, r.endpoint, r.region, endpoint, region)
		}
	}
	cfg := Config{Bucket: "bucket"}
	check(cfg, "https://s3.amazonaws.com", "")
	t.Setenv("AWS_ENDPOINT_URL", "http://general:9000")
	t.Setenv("AWS_REGION", "eu-west-3")
	check(cfg, "http://general:9000", "eu-west-3")
	t.Setenv("AWS_ENDPOINT_URL_S3", "https://s3-specific")
	check(cfg, "https://s3-specific", "eu-west-3")
	check(Config{Bucket: "bucket", Endpoint: "minio.local:9000", Region: "here"}, "https://minio.local:9000", "here")
	check(Config{Bucket: "bucket", Endpoint: "http://127.0.0.1:9000/"}, "http://127.0.0.1:9000", "eu-west-3")

	for _, bad := range []Config{
		{},
		{Bucket: "bucket", Endpoint: "ftp://host"},
		{Bucket: "bucket", Endpoint: "http://host/path"},
		{Bucket: "bucket", SSE: "rot13"},
		{Bucket: "bucket", SSEKMSKeyID: "key"},
		{Bucket: "bucket", AccessKey: "only-the-access-key"},
		{Bucket: "bucket", Prefix: "a/../b"},
		{Bucket: "bucket", Endpoint: "https://user:hunter2@host"},
	} {
		if _, err := resolve(bad); err == nil {
			t.Errorf("resolve(%+v) succeeded, want an error", bad)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("resolve error shows the password from the endpoint: %v", err)
		}
	}
}

func TestConfigHidesSecrets(t *testing.T) {
	t.Parallel()
	cfg := Config{Bucket: "bucket", AccessKey: "AKIDEXAMPLE", SecretKey: "very-secret-key", SessionToken: "very-secret-token"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "s3", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "s3", cfg)
	for _, out := range []string{cfg.String(), buf.String()} {
		if strings.Contains(out, "very-secret") {
			t.Errorf("secret printed: %s", out)
		}
		if !strings.Contains(out, "AKIDEXAMPLE") {
			t.Errorf("access key missing from %s", out)
		}
	}
	s, err := New(t.Context(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "s3://bucket (https://s3.amazonaws.com)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestErrorClassification drives each kind of S3 error answer through the
// real HTTP path and checks permanent versus retryable, and the advice.
func TestErrorClassification(t *testing.T) {
	t.Parallel()
	f := newFixture(t, true)
	s := f.store(t, "classify")
	for _, tc := range []struct {
		status    int
		code      string
		permanent bool
		mention   string
	}{
		{403, "AccessDenied", true, "secret key"},
		{403, "InvalidAccessKeyId", true, "access key"},
		{403, "SignatureDoesNotMatch", true, "secret key"},
		{403, "RequestTimeTooSkewed", true, "clock"},
		{404, "NoSuchBucket", true, "create the bucket"},
		{400, "InvalidBucketName", true, "bucket name"},
		{400, "InvalidArgument", true, "rejected"},
		{400, "RequestTimeout", false, "RequestTimeout"},
		{400, "IncompleteBody", false, "IncompleteBody"},
		{400, "ExpiredToken", false, "ExpiredToken"},
		{409, "ConditionalRequestConflict", false, "concurrent write"},
		{429, "", false, "TooManyRequests"},
		{500, "", false, "InternalError"},
		{502, "", false, "HTTP 502"},
		{503, "SlowDown", false, "SlowDown"},
		{504, "", false, "HTTP 504"},
	} {
		f.proxy.Inject(versitygw.Put, 1, versitygw.Status(tc.status, tc.code))
		err := s.Put(t.Context(), "s/a", []byte("a"))
		t.Logf("%d %s: %v", tc.status, tc.code, err)
		switch {
		case err == nil:
			t.Errorf("%d %s: Put succeeded", tc.status, tc.code)
			continue
		case tc.permanent && !errors.Is(err, store.ErrPermanent):
			t.Errorf("%d %s: %v, want ErrPermanent", tc.status, tc.code, err)
		case !tc.permanent && !store.IsRetryable(err):
			t.Errorf("%d %s: %v, want a retryable error", tc.status, tc.code, err)
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%d %s: error %q does not mention %q", tc.status, tc.code, err, tc.mention)
		}
		if !strings.Contains(err.Error(), "s3://ferry-test/classify/s/a") {
			t.Errorf("%d %s: error %q does not name the key", tc.status, tc.code, err)
		}
	}
	if n := f.proxy.Pending(); n != 0 {
		t.Errorf("%d injected faults unused", n)
	}
}
