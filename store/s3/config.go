package s3

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/ferry-dr/ferry/internal/redact"
	"github.com/ferry-dr/ferry/store"
)

// DefaultEndpoint is used when neither Config.Endpoint nor the AWS
// environment names one.
const DefaultEndpoint = "https://s3.amazonaws.com"

// DefaultCallTimeout bounds one S3 call when Config.CallTimeout is zero.
const DefaultCallTimeout = 60 * time.Second

// Config describes one bucket and prefix on an S3-compatible service. Only
// Bucket is required.
type Config struct {
	Bucket string // bucket name
	Prefix string // key prefix; leading, trailing and doubled slashes are removed

	// Endpoint is "https://host[:port]" or "http://host[:port]"; the scheme
	// decides TLS, and a bare "host[:port]" means HTTPS. Empty falls back to
	// $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, then DefaultEndpoint.
	Endpoint string
	// Region; empty falls back to $AWS_REGION, and if that is empty too the
	// client asks the server for the bucket's location.
	Region string
	// PathStyle forces path-style (true) or virtual-host-style (false)
	// bucket addressing; nil lets minio-go choose from the endpoint.
	PathStyle *bool

	CAFile             string // extra PEM CA certificates to trust, on top of the system pool
	InsecureSkipVerify bool   // accept any server certificate; for tests only

	StorageClass string // e.g. "STANDARD_IA"; empty uses the bucket default
	SSE          string // server-side encryption: "", "AES256" or "aws:kms"
	SSEKMSKeyID  string // KMS key for SSE "aws:kms"; empty uses the account default

	// Credentials are taken from the first source that has some: the static
	// AccessKey/SecretKey/SessionToken below, the AWS_* environment, the
	// shared AWS config/credentials files (Profile, else $AWS_PROFILE, else
	// "default"; an explicit Profile is tried before the environment), then
	// the EC2/ECS/EKS instance role.
	AccessKey    string
	SecretKey    string
	SessionToken string
	Profile      string

	// CallTimeout bounds each S3 request (DefaultCallTimeout if zero). For
	// Get and List it is an idle timeout: the call fails when no data has
	// arrived for that long, however large the object or listing.
	CallTimeout time.Duration

	// OnRequest, if set, is called once per HTTP request with its kind
	// (list, get, head, put, delete, ...), for metrics.
	OnRequest func(kind string)
}

// String describes cfg with secrets masked, so a Config is safe to print.
func (cfg Config) String() string {
	c := cfg
	c.SecretKey = mask(c.SecretKey)
	c.SessionToken = mask(c.SessionToken)
	type plain Config // drops this method, avoiding recursion
	return fmt.Sprintf("%+v", plain(c))
}

// LogValue keeps secrets out of structured logs.
func (cfg Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("bucket", cfg.Bucket),
		slog.String("prefix", cfg.Prefix),
		slog.String("endpoint", cfg.Endpoint),
		slog.String("region", cfg.Region),
		slog.String("access_key", cfg.AccessKey),
		slog.String("secret_key", mask(cfg.SecretKey)),
		slog.String("session_token", mask(cfg.SessionToken)),
		slog.String("profile", cfg.Profile),
	)
}

func mask(s string) string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// ParseURL splits "s3://bucket/some/prefix" into its bucket and normalised
// prefix ("some/prefix"; "" for "s3://bucket" or "s3://bucket/").
func ParseURL(u string) (bucket, prefix string, err error) {
	p, err := url.Parse(u)
	u = redact.URL(u) // from here on u is only printed
	if err != nil {
		return "", "", fmt.Errorf("store url %q is not a valid URL", u) // err quotes the URL unredacted
	}
	switch {
	case p.Scheme != "s3":
		return "", "", fmt.Errorf("store url %q: scheme must be s3://", u)
	case p.User != nil || p.RawQuery != "" || p.Fragment != "" || p.Opaque != "":
		return "", "", fmt.Errorf("store url %q: want s3://bucket/prefix, with no user, query or fragment", u)
	case p.Host == "":
		return "", "", fmt.Errorf("store url %q: no bucket", u)
	}
	if err := s3utils.CheckValidBucketName(p.Host); err != nil {
		return "", "", fmt.Errorf("store url %q: bucket %q: %v", u, p.Host, err)
	}
	prefix = normalizePrefix(p.Path)
	if prefix != "" {
		if err := store.CheckName(prefix); err != nil {
			return "", "", fmt.Errorf("store url %q: prefix: %v", u, err)
		}
	}
	return p.Host, prefix, nil
}

// normalizePrefix removes leading, trailing and repeated slashes.
func normalizePrefix(p string) string {
	var parts []string
	for _, el := range strings.Split(p, "/") {
		if el != "" {
			parts = append(parts, el)
		}
	}
	return strings.Join(parts, "/")
}

// resolved is Config after defaults, environment fallbacks and validation.
type resolved struct {
	bucket, prefix string
	endpoint       *url.URL // scheme + host[:port], no path
	region         string
	timeout        time.Duration
	sse            encrypt.ServerSide
	creds          *credentials.Credentials
	secrets        []string // values that must never appear in an error
}

func resolve(cfg Config) (*resolved, error) {
	r := &resolved{
		bucket:  cfg.Bucket,
		prefix:  normalizePrefix(cfg.Prefix),
		region:  firstNonEmpty(cfg.Region, os.Getenv("AWS_REGION")),
		timeout: cfg.CallTimeout,
	}
	if r.bucket == "" {
		return nil, fmt.Errorf("no bucket configured")
	}
	if err := s3utils.CheckValidBucketName(r.bucket); err != nil {
		return nil, fmt.Errorf("bucket %q: %v", r.bucket, err)
	}
	if r.prefix != "" {
		if err := store.CheckName(r.prefix); err != nil {
			return nil, fmt.Errorf("prefix: %v", err)
		}
	}
	if r.timeout <= 0 {
		r.timeout = DefaultCallTimeout
	}

	ep := firstNonEmpty(cfg.Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"), DefaultEndpoint)
	u, err := parseEndpoint(ep)
	if err != nil {
		return nil, err
	}
	r.endpoint = u

	switch strings.ToUpper(cfg.SSE) {
	case "":
	case "AES256":
		r.sse = encrypt.NewSSE()
	case "AWS:KMS":
		if r.sse, err = encrypt.NewSSEKMS(cfg.SSEKMSKeyID, nil); err != nil {
			return nil, fmt.Errorf("sse aws:kms key %q: %v", cfg.SSEKMSKeyID, err)
		}
	default:
		return nil, fmt.Errorf("sse %q: want \"\", \"AES256\" or \"aws:kms\"", cfg.SSE)
	}
	if cfg.SSEKMSKeyID != "" && !strings.EqualFold(cfg.SSE, "aws:kms") {
		return nil, fmt.Errorf("sse_kms_key_id is set but sse is %q, not \"aws:kms\"", cfg.SSE)
	}

	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, fmt.Errorf("set both access key and secret key, or neither")
	}
	r.creds = credentialChain(cfg)
	for _, s := range []string{cfg.SecretKey, cfg.SessionToken,
		os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN"), os.Getenv("AWS_SECURITY_TOKEN")} {
		if len(s) >= 4 { // masking shorter strings would mangle ordinary words
			r.secrets = append(r.secrets, s)
		}
	}
	return r, nil
}

// parseEndpoint accepts "scheme://host[:port]" or a bare "host[:port]"
// (HTTPS), and rejects paths, which minio-go cannot use.
func parseEndpoint(ep string) (*url.URL, error) {
	raw := ep
	if !strings.Contains(ep, "://") {
		raw = "https://" + ep
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(ep, "@"):
		return nil, fmt.Errorf("endpoint is not a valid URL") // it may hold a password: don't echo it
	case err != nil:
		return nil, fmt.Errorf("endpoint %q: %v", ep, err)
	case u.User != nil:
		return nil, fmt.Errorf("endpoint %s: put credentials in the access and secret key settings, not the URL", u.Redacted())
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("endpoint %q: scheme must be http or https", ep)
	case u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "":
		return nil, fmt.Errorf("endpoint %q: want scheme://host[:port] with no path or query", ep)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// credentialChain builds the lookup order documented on Config.
func credentialChain(cfg Config) *credentials.Credentials {
	var chain []credentials.Provider
	if cfg.AccessKey != "" {
		chain = append(chain, &credentials.Static{Value: credentials.Value{
			AccessKeyID:     cfg.AccessKey,
			SecretAccessKey: cfg.SecretKey,
			SessionToken:    cfg.SessionToken,
			SignerType:      credentials.SignatureV4,
		}})
	}
	file := &credentials.FileAWSCredentials{Profile: cfg.Profile}
	if cfg.Profile != "" {
		chain = append(chain, file, &credentials.EnvAWS{})
	} else {
		chain = append(chain, &credentials.EnvAWS{}, file)
	}
	chain = append(chain, &credentials.IAM{})
	return credentials.NewChainCredentials(chain)
}

// transport is minio-go's default transport with our TLS policy: TLS 1.2 or
// newer, the system roots plus cfg.CAFile, and verification skipped only
// when the configuration explicitly asks for it.
func transport(cfg Config, secure bool) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pemData, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err) // *PathError names the file
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("CA file %s: no PEM certificates in it", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	} else if tr.TLSClientConfig != nil {
		tlsCfg.RootCAs = tr.TLSClientConfig.RootCAs // honours $SSL_CERT_FILE
	}
	tr.TLSClientConfig = tlsCfg
	return tr, nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
