package s3

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/versitygw"
	"github.com/ferry-dr/ferry/store"
)

// checkPermanent fails unless err wraps store.ErrPermanent and mentions
// every string in wants.
func checkPermanent(t *testing.T, what string, err error, wants ...string) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	if !errors.Is(err, store.ErrPermanent) {
		t.Errorf("%s: %v, want ErrPermanent", what, err)
		return
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not mention %q", what, err, w)
		}
	}
}

// TestWrongCredentials: rejected keys are permanent, reported at once, and
// the error text never holds the secret key or session token.
func TestWrongCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false)
	ctx := t.Context()
	good := f.store(t, "creds")
	if err := good.Put(ctx, "s/a", []byte("a")); err != nil {
		t.Fatal(err)
	}

	const wrongSecret = "wrong-secret-8c1f2e9a7b"
	const token = "session-token-5d3e1a0b9c"
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"wrong secret", func(c *Config) { c.SecretKey = wrongSecret }, "secret key"},
		{"unknown access key", func(c *Config) { c.AccessKey = "nobody"; c.SecretKey = wrongSecret }, "access key"},
		{"wrong secret and a token", func(c *Config) { c.SecretKey = wrongSecret; c.SessionToken = token }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := f.store(t, "creds", tc.edit)
			start := time.Now()
			errs := map[string]error{"put": s.Put(ctx, "s/b", []byte("b"))}
			_, errs["get"] = s.Get(ctx, "s/a")
			errs["list"] = s.List(ctx, "s/", "", func(store.Object) error { return nil })
			errs["delete"] = s.Delete(ctx, "s/a")
			errs["check"] = s.Check(ctx)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("five calls with bad credentials took %v, want well under 5s", d)
			}
			for op, err := range errs {
				checkPermanent(t, op, err, tc.want)
				if err == nil {
					continue
				}
				for _, secret := range []string{wrongSecret, token, f.srv.SecretKey} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("%s error contains a secret: %q", op, err)
					}
				}
			}
			if strings.Contains(s.String(), wrongSecret) {
				t.Errorf("String() = %q contains the secret", s.String())
			}
		})
	}
	if got := readAll(t, good, "s/a"); string(got) != "a" {
		t.Errorf("s/a holds %q after calls with bad credentials", got)
	}
}

// TestMissingBucket: a missing bucket is permanent and the error names it.
func TestMissingBucket(t *testing.T) {
	t.Parallel()
	srv := versitygw.Start(t)
	for _, region := range []string{"us-east-1", ""} { // "" makes minio-go look the bucket up first
		s := newStore(t, Config{
			Bucket: "no-such-bucket", Endpoint: srv.Endpoint, Region: region,
			AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		})
		ctx := t.Context()
		checkPermanent(t, "put", s.Put(ctx, "s/a", []byte("a")), `"no-such-bucket"`, "create the bucket")
		_, err := s.Get(ctx, "s/a")
		checkPermanent(t, "get", err, "no-such-bucket")
		checkPermanent(t, "list", s.List(ctx, "s/", "", func(store.Object) error { return nil }), "no-such-bucket")
		checkPermanent(t, "check", s.Check(ctx), "no-such-bucket")
	}
}

// TestTLS: an HTTPS endpoint works with its CA in CAFile; an untrusted
// certificate is permanent and says what to fix.
func TestTLS(t *testing.T) {
	t.Parallel()
	srv := versitygw.StartTLS(t)
	srv.CreateBucket(t, "tls")
	ctx := t.Context()
	cfg := serverConfig(srv, srv.Endpoint, "tls", "p")

	trusted := cfg
	trusted.CAFile = srv.CAFile
	s := newStore(t, trusted)
	if err := s.Put(ctx, "s/a", []byte("over tls")); err != nil {
		t.Fatalf("Put over TLS with the CA file: %v", err)
	}
	if got := readAll(t, s, "s/a"); string(got) != "over tls" {
		t.Errorf("Get over TLS = %q", got)
	}

	checkPermanent(t, "put without the CA", newStore(t, cfg).Put(ctx, "s/b", []byte("b")), "certificate", "ca_file")

	insecure := cfg
	insecure.InsecureSkipVerify = true
	if err := newStore(t, insecure).Put(ctx, "s/c", []byte("c")); err != nil {
		t.Errorf("Put with InsecureSkipVerify: %v", err)
	}

	plain := cfg
	plain.Endpoint = strings.Replace(srv.Endpoint, "https://", "http://", 1)
	err := newStore(t, plain).Put(ctx, "s/d", []byte("d"))
	t.Logf("http:// to a TLS server: %v", err) // the server answers 400 to plain HTTP
	if err == nil {
		t.Error("plain HTTP to a TLS endpoint succeeded")
	}
}

func TestCAFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, file := range []string{garbage, missing} {
		_, err := New(t.Context(), Config{Bucket: "bucket", Endpoint: "https://127.0.0.1:1", CAFile: file}, nil)
		checkPermanent(t, "New with CA file "+filepath.Base(file), err, file)
	}
}
