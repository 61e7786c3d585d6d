// Package redact hides the secrets a string may carry before it is printed.
package redact

import "strings"

// Mark replaces a secret.
const Mark = "***"

// URL returns s with everything between "://" and the last "@" replaced
// by "***": the userinfo of s3://KEY:SECRET@bucket/prefix. It needs no
// parse, so it also hides the secret of a URL that does not parse, and it
// cuts at the last "@" of the whole string, not of the authority, because
// a secret may hold '/', '?', '#' or '@' (AWS secret keys hold '/'). A
// path with an "@" of its own is over-redacted, which is the safe way to
// be wrong. A string without "://" or "@" is returned as is.
func URL(s string) string {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return s
	}
	return s[:len(s)-len(rest)] + Mark + rest[at:]
}
