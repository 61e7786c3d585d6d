package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/ferry-dr/ferry/store"
)

// errCallTimeout is the cancellation cause of a call that exceeded
// CallTimeout. It is deliberately not a context error: a slow server is
// worth retrying, whereas a cancelled caller context means "stop".
var errCallTimeout = errors.New("call timed out")

// permanentCodes are S3 error codes that no retry can fix, with what the
// operator should do about each.
var permanentCodes = map[string]string{
	"AccessDenied":                 "check the access key, the secret key, and that they may read, write, list and delete in this bucket and prefix",
	"InvalidAccessKeyId":           "check the access key: the server does not know it",
	"XAdminUserNotFound":           "check the access key: the server does not know it", // versitygw
	"SignatureDoesNotMatch":        "check the secret key (and session token) that go with the access key",
	"InvalidToken":                 "check the session token",
	"NoSuchBucket":                 "create the bucket or fix the bucket name",
	"InvalidBucketName":            "fix the bucket name",
	"RequestTimeTooSkewed":         "fix this machine's clock (run NTP): it is too far from the server's",
	"AuthorizationHeaderMalformed": "fix the region setting",
	"InvalidRegion":                "fix the region setting",
	"PermanentRedirect":            "fix the endpoint or region: the bucket lives elsewhere",
	"AllAccessDisabled":            "the bucket or account is disabled; ask its owner",
	"AccountProblem":               "the storage account has a problem; ask its owner",
	"KMS.NotFoundException":        "fix the SSE KMS key id",
	"KMS.DisabledException":        "enable the SSE KMS key or use another one",
	"InvalidStorageClass":          "fix the storage class",
}

// retryableCodes are S3 codes worth retrying even though some of them come
// with a 4xx status.
var retryableCodes = map[string]bool{
	"RequestTimeout":             true, // 400 from AWS when an upload stalls
	"IncompleteBody":             true, // the connection broke mid-upload
	"BadDigest":                  true, // body corrupted in transit
	"XAmzContentSHA256Mismatch":  true,
	"ExpiredToken":               true, // temporary credentials are refreshed on the next try
	"ExpiredTokenException":      true,
	"SlowDown":                   true,
	"SlowDownRead":               true,
	"SlowDownWrite":              true,
	"Throttling":                 true,
	"ThrottlingException":        true,
	"RequestLimitExceeded":       true,
	"RequestThrottled":           true,
	"TooManyRequests":            true,
	"InternalError":              true,
	"ServiceUnavailable":         true,
	"OperationAborted":           true, // 409: a conflicting bucket operation is in progress
	"ConditionalRequestConflict": true, // 409: a concurrent conditional write; ask again
}

// fail turns an error from minio-go into the error a Store method returns:
// "s3 <op> <target>: <what happened>[: <what to do>]". It wraps
// store.ErrPermanent for errors retrying cannot fix and the caller's
// context error when the caller cancelled; anything else is a plain,
// retryable error. The minio-go error itself is not wrapped, only its
// text, with any secret masked.
func (s *Store) fail(ctx context.Context, op, target string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("s3 %s %s: %w", op, target, ctxErr)
	}
	msg, hint, permanent := s.explain(err)
	msg = s.redact(msg)
	switch {
	case permanent:
		return fmt.Errorf("s3 %s %s: %s: %s: %w", op, target, msg, hint, store.ErrPermanent)
	case hint != "":
		return fmt.Errorf("s3 %s %s: %s: %s", op, target, msg, hint)
	default:
		return fmt.Errorf("s3 %s %s: %s", op, target, msg)
	}
}

// isPermanent reports whether err, as returned by minio-go, is one that
// retrying cannot fix.
func (s *Store) isPermanent(err error) bool {
	_, _, permanent := s.explain(err)
	return permanent
}

// explain describes err and decides whether it is permanent.
func (s *Store) explain(err error) (msg, hint string, permanent bool) {
	if errors.Is(err, errCallTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Our own call timeout fired (the caller's context is still live).
		return fmt.Sprintf("no answer from %s within %s", s.endpoint, s.timeout), "", false
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code != "" || resp.StatusCode != 0) {
		return s.explainResponse(resp)
	}
	if certErr := certificateError(err); certErr != "" {
		return certErr, "fix ca_file (or the server certificate); insecure_skip_verify is for tests only", true
	}
	text := err.Error()
	if strings.Contains(text, "server gave HTTP response to HTTPS client") {
		return text, "the endpoint speaks plain HTTP: use an http:// endpoint", true
	}
	// Network errors (refused, reset, EOF, DNS) are retryable: the server
	// may be restarting or the path may heal.
	return text, "", false
}

func (s *Store) explainResponse(resp minio.ErrorResponse) (msg, hint string, permanent bool) {
	var details []string
	if resp.Code == "" || resp.Code[0] >= '0' && resp.Code[0] <= '9' {
		// No S3 error body (a HEAD, or a proxy's answer): minio-go puts
		// the HTTP status line in Code.
		msg = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		if resp.Message != "" && resp.Message != resp.Code {
			msg += ": " + resp.Message
		}
	} else {
		msg = strings.TrimSuffix(resp.Message, ".")
		if msg == "" {
			msg = resp.Code
		}
		details = append(details, resp.Code)
		if resp.StatusCode != 0 {
			details = append(details, fmt.Sprintf("HTTP %d", resp.StatusCode))
		}
	}
	if resp.RequestID != "" && resp.RequestID != "minio" {
		details = append(details, "request id "+resp.RequestID)
	}
	if len(details) > 0 {
		msg += " (" + strings.Join(details, ", ") + ")"
	}

	if h, ok := permanentCodes[resp.Code]; ok {
		if resp.Code == "NoSuchBucket" {
			h = fmt.Sprintf("bucket %q does not exist at %s: %s", s.bucket, s.endpoint, h)
		}
		return msg, h, true
	}
	if retryableCodes[resp.Code] {
		return msg, "", false
	}
	switch st := resp.StatusCode; {
	case st == 0, st >= 500:
		return msg, "", false
	case st == http.StatusRequestTimeout, st == http.StatusConflict, st == http.StatusTooManyRequests, st == 499:
		return msg, "", false
	case st == http.StatusForbidden:
		return msg, permanentCodes["AccessDenied"], true
	case st == http.StatusNotFound:
		return msg, fmt.Sprintf("check the endpoint and that bucket %q exists", s.bucket), true
	case st >= 400:
		return msg, "the server rejected the request; check the endpoint, region and bucket settings", true
	}
	return msg, "", false
}

// certificateError describes a TLS certificate verification failure, or
// returns "" if err is not one.
func certificateError(err error) string {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknown):
		return "TLS: server certificate signed by an unknown authority"
	case errors.As(err, &hostname):
		return "TLS: " + hostname.Error()
	case errors.As(err, &invalid):
		return "TLS: " + invalid.Error()
	case errors.As(err, &verify):
		return "TLS: " + verify.Err.Error()
	}
	return ""
}

// redact masks every configured secret in msg. Error texts come partly
// from the server and the network stack, so they are never trusted to be
// free of them.
func (s *Store) redact(msg string) string {
	for _, secret := range s.secrets {
		msg = strings.ReplaceAll(msg, secret, "[REDACTED]")
	}
	return msg
}

// errorCode returns the S3 error code and HTTP status of err, if it carries
// a response from the server.
func errorCode(err error) (string, int) {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		return resp.Code, resp.StatusCode
	}
	return "", 0
}
