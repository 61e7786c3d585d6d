package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/internal/redact"
)

// S3 configures the s3:// store. Every field is optional; an unset field
// falls back to the AWS environment (AWS_ENDPOINT_URL_S3, AWS_REGION,
// AWS_ACCESS_KEY_ID, ...) or the store's own default.
//
// AccessKey, SecretKey and SessionToken are secrets. S3 formats itself with
// them masked under every fmt verb, in slog and in JSON; use the fields
// directly to read them.
type S3 struct {
	// Endpoint is the S3 API URL, e.g. "https://s3.example.com".
	// Default: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS.
	Endpoint string `toml:"endpoint"`

	// Region is the bucket's region. Default: AWS_REGION.
	Region string `toml:"region"`

	// PathStyle forces path-style requests (https://host/bucket/key), which
	// most self-hosted S3 servers need. Nil means unset: the store decides.
	// Use UsePathStyle to read it.
	PathStyle *bool `toml:"path_style"`

	// CAFile is a PEM file of extra CA certificates to trust. Default none.
	CAFile string `toml:"ca_file"`

	// InsecureSkipVerify disables TLS certificate checks. Default false;
	// for tests only.
	InsecureSkipVerify bool `toml:"insecure_skip_verify"`

	// StorageClass is set on every uploaded object, e.g. "STANDARD_IA".
	// Default: the bucket's default class.
	StorageClass string `toml:"storage_class"`

	// SSE is server-side encryption: "" (none requested), "AES256" or
	// "aws:kms". Default "".
	SSE string `toml:"sse"`

	// SSEKMSKeyID is the KMS key for SSE "aws:kms". Default: the bucket's key.
	SSEKMSKeyID string `toml:"sse_kms_key_id"`

	// AccessKey, SecretKey and SessionToken are static credentials. Secret.
	// Default: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
	// or Profile. Prefer the environment: a config file is often world-readable.
	AccessKey    string `toml:"access_key"`
	SecretKey    string `toml:"secret_key"`
	SessionToken string `toml:"session_token"`

	// Profile is the shared-credentials profile to use. Default: AWS_PROFILE.
	Profile string `toml:"profile"`
}

// UsePathStyle reports whether path_style was set to true.
func (s S3) UsePathStyle() bool { return s.PathStyle != nil && *s.PathStyle }

// Redacted returns a copy of s with every set secret replaced by "***"; an
// unset secret stays "", so an operator can still see whether one was set.
// The copy does not share PathStyle with s.
func (s S3) Redacted() S3 {
	mask := func(v string) string {
		if v == "" {
			return ""
		}
		return redact.Mark
	}
	s.AccessKey = mask(s.AccessKey)
	s.SecretKey = mask(s.SecretKey)
	s.SessionToken = mask(s.SessionToken)
	if s.PathStyle != nil {
		v := *s.PathStyle
		s.PathStyle = &v
	}
	return s
}

// fields lists s's settings in file order with TOML names, secrets masked.
func (s S3) fields() []slog.Attr {
	r := s.Redacted()
	ps := slog.String("path_style", "unset")
	if r.PathStyle != nil {
		ps = slog.Bool("path_style", *r.PathStyle)
	}
	return []slog.Attr{
		slog.String("endpoint", r.Endpoint),
		slog.String("region", r.Region),
		ps,
		slog.String("ca_file", r.CAFile),
		slog.Bool("insecure_skip_verify", r.InsecureSkipVerify),
		slog.String("storage_class", r.StorageClass),
		slog.String("sse", r.SSE),
		slog.String("sse_kms_key_id", r.SSEKMSKeyID),
		slog.String("access_key", r.AccessKey),
		slog.String("secret_key", r.SecretKey),
		slog.String("session_token", r.SessionToken),
		slog.String("profile", r.Profile),
	}
}

// String formats s as {key=value ...} with secrets masked.
func (s S3) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, a := range s.fields() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.Key)
		b.WriteByte('=')
		if a.Value.Kind() == slog.KindString {
			b.WriteString(strconv.Quote(a.Value.String()))
		} else {
			b.WriteString(a.Value.String())
		}
	}
	b.WriteByte('}')
	return b.String()
}

// GoString formats s as Go syntax with secrets masked (the %#v verb).
func (s S3) GoString() string {
	r := s.Redacted()
	ps := "nil"
	if r.PathStyle != nil {
		ps = "&" + strconv.FormatBool(*r.PathStyle)
	}
	return fmt.Sprintf("config.S3{Endpoint:%q, Region:%q, PathStyle:%s, CAFile:%q, "+
		"InsecureSkipVerify:%t, StorageClass:%q, SSE:%q, SSEKMSKeyID:%q, "+
		"AccessKey:%q, SecretKey:%q, SessionToken:%q, Profile:%q}",
		r.Endpoint, r.Region, ps, r.CAFile, r.InsecureSkipVerify, r.StorageClass,
		r.SSE, r.SSEKMSKeyID, r.AccessKey, r.SecretKey, r.SessionToken, r.Profile)
}

// Format implements fmt.Formatter so that no verb or flag (%v, %+v, %s,
// %q, %x, ...) prints a secret: %#v is GoString, every other verb formats
// String.
func (s S3) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	if verb == 'v' {
		verb = 's'
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
}

// LogValue implements slog.LogValuer: s logs as a group, secrets masked.
func (s S3) LogValue() slog.Value { return slog.GroupValue(s.fields()...) }

// MarshalJSON writes s with secrets masked, so a config dumped as JSON
// (for example by a JSON log handler) does not leak them.
func (s S3) MarshalJSON() ([]byte, error) {
	type plain S3 // no methods: no recursion
	return json.Marshal(plain(s.Redacted()))
}
