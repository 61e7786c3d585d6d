package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"unicode"
)

// TokenEnv is the environment variable that may carry the link token
// (systemd: EnvironmentFile=/etc/ferry/ship.env holding FERRY_TOKEN=...).
const TokenEnv = "FERRY_TOKEN"

// MinTokenBytes is the length below which a link token is refused: a
// shorter one could be guessed by a peer trying tokens.
const MinTokenBytes = 16

// maxTokenFile bounds what is read of a token_file: it holds one token.
const maxTokenFile = 4 << 10

// tokenAdvice says how to make a token; every refusal of one ends with it.
const tokenAdvice = "generate one with: openssl rand -hex 32 > /etc/ferry/link.token; chmod 600 /etc/ferry/link.token; and set tcp.token_file to that file"

// Where TCP.Token came from, as TCP.TokenSource says once ResolveToken has
// run. The flag setters set the first two.
const (
	TokenFromFlag     = "--token"
	TokenFromFileFlag = "--token-file"
	TokenFromEnv      = TokenEnv
	TokenFromFile     = "tcp.token_file"
	TokenFromConfig   = "tcp.token"
)

// ResolveToken sets t.Token from where the operator put it, in this order:
//
//  1. --token or --token-file on the command line (t.TokenSource already
//     says which; at most one of them);
//  2. otherwise exactly one of FERRY_TOKEN (read with getenv; empty counts
//     as unset), tcp.token_file and tcp.token: two of them set is an error
//     naming both, since one of the two secrets is then stale and ferry
//     cannot tell which.
//
// A token file must be a regular file (symlinks are followed) that group
// and others cannot read or write, holding the token; one trailing newline
// is dropped. ResolveToken records the source in t.TokenSource. It does
// not judge the token: Validate does.
func (t *TCP) ResolveToken(getenv func(string) string) error {
	switch t.TokenSource {
	case TokenFromFlag:
		return nil
	case TokenFromFileFlag:
		t.Token = ""
		return t.readTokenFile(TokenFromFileFlag)
	}
	env := getenv(TokenEnv)
	var set []string
	if env != "" {
		set = append(set, TokenEnv)
	}
	if t.TokenFile != "" {
		set = append(set, "tcp.token_file")
	}
	if t.Token != "" {
		set = append(set, "tcp.token")
	}
	if len(set) > 1 {
		return fmt.Errorf("the link token is given twice, by %s: keep one (precedence: --token or --token-file, then exactly one of FERRY_TOKEN, tcp.token_file, tcp.token)",
			strings.Join(set, " and "))
	}
	switch {
	case env != "":
		t.Token, t.TokenSource = env, TokenFromEnv
	case t.TokenFile != "":
		return t.readTokenFile(TokenFromFile)
	case t.Token != "":
		t.TokenSource = TokenFromConfig
	}
	return nil
}

// readTokenFile reads t.TokenFile into t.Token. Errors name the file and
// the key or flag that gave it.
func (t *TCP) readTokenFile(key string) error {
	path := t.TokenFile
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s %s: "+format, append([]any{key, path}, args...)...)
	}
	if path == "" {
		return fmt.Errorf("%s: empty file name", key)
	}
	// Stat before opening: opening a FIFO would block.
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fail("no such file; %s", tokenAdvice)
		}
		return fail("%v", errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return fail("not a regular file (%s)", fi.Mode().Type())
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return fail("group or others may read or write it (mode %04o): chmod 600 %s, owned by the user ferry runs as", fi.Mode().Perm(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fail("%v", errors.Unwrap(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return fail("%v", err)
	}
	if len(data) > maxTokenFile {
		return fail("larger than %d bytes: a token file holds one token", maxTokenFile)
	}
	tok := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if tok == "" {
		return fail("empty; %s", tokenAdvice)
	}
	t.Token, t.TokenFile, t.TokenSource = tok, path, key
	return nil
}

// tokenProblem says what is wrong with token, or "" if nothing. It never
// quotes the token, which may be a real one with a typo.
func tokenProblem(token string) string {
	lower := strings.ToLower(token)
	for _, p := range []string{"change-me", "changeme", "change_me"} {
		if strings.Contains(lower, p) {
			return fmt.Sprintf("is the sample placeholder %q, not a secret; %s", p, tokenAdvice)
		}
	}
	if strings.TrimSpace(token) != token {
		return "begins or ends with white space (a stray space or a second newline in the token file?); remove it"
	}
	if strings.ContainsFunc(token, unicode.IsControl) {
		return "holds a control character (a token file holds the token on one line); remove it"
	}
	if len(token) < MinTokenBytes {
		return fmt.Sprintf("is %d bytes: a link token needs at least %d; %s", len(token), MinTokenBytes, tokenAdvice)
	}
	return ""
}

// tokenKey is the key or source Validate names in a problem with the
// token: the config key when the token came from the file, else the flag
// or variable.
func (t *TCP) tokenKey() string {
	switch t.TokenSource {
	case "":
		return TokenFromConfig
	case TokenFromFile:
		return "tcp.token_file " + t.TokenFile
	case TokenFromFileFlag:
		return "--token-file " + t.TokenFile
	}
	return t.TokenSource
}

// maxClientName bounds a tls_client_names entry: a DNS name is at most 253
// bytes.
const maxClientName = 253

// secretProblems checks how the link authenticates: the token, and the TLS
// settings that would otherwise be silently ignored.
func (t *TCP) secretProblems(verb string) []error {
	var ps []error
	add := func(key, format string, args ...any) {
		ps = append(ps, &problem{key: key, msg: fmt.Sprintf(format, args...)})
	}
	if t.Token != "" && t.TokenFile != "" && t.TokenSource == "" {
		add("tcp.token_file", "is set and so is tcp.token: keep one (token_file keeps the secret out of this file)")
	}
	if t.Token != "" {
		if p := tokenProblem(t.Token); p != "" {
			add(t.tokenKey(), "%s", p)
		}
	}
	if t.Insecure && t.ClientCAFile != "" {
		add("tcp.client_ca_file", "is set but tcp.insecure is true: mutual TLS needs TLS, which insecure turns off; remove one of them (--tls-client-ca, --insecure)")
	}
	for i, n := range t.TLSClientNames {
		if strings.TrimSpace(n) != n || n == "" || len(n) > maxClientName || strings.ContainsFunc(n, unicode.IsControl) {
			add("tcp.tls_client_names", "name %d is empty, longer than %d bytes, or holds white space at an end or a control character", i+1, maxClientName)
		}
	}
	if verb == "receive" && len(t.TLSClientNames) > 0 && t.ClientCAFile == "" {
		add("tcp.tls_client_names", "is set but tcp.client_ca_file is not: names are checked only on client certificates signed by that CA; set it (--tls-client-ca)")
	}
	return ps
}

// ExposedSecrets reports the secret keys (tcp.token, s3.secret_key,
// s3.session_token) that the config file at path sets, as Load read it
// into f, if group or others may read or write the file; nil if it sets
// none or is private. The caller warns: refusing would stop working
// installations, where a token file is refused outright (it exists only to
// hold the secret).
func ExposedSecrets(path string, f *File) (keys []string, mode fs.FileMode) {
	if runtime.GOOS == "windows" {
		return nil, 0 // permission bits say nothing there
	}
	for _, s := range []struct{ key, v string }{
		{"tcp.token", f.TCP.Token}, {"s3.secret_key", f.S3.SecretKey}, {"s3.session_token", f.S3.SessionToken},
	} {
		if s.v != "" && f.env[s.key] == "" { // a secret from the environment is not in the file
			keys = append(keys, s.key)
		}
	}
	if len(keys) == 0 {
		return nil, 0
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return nil, 0
	}
	return keys, fi.Mode().Perm()
}
