package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	goodToken  = "0123456789abcdef0123" // 20 bytes
	otherToken = "fedcba9876543210fedc"
)

// writeToken writes a token file with the given mode and returns its path.
func writeToken(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "link.token")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// The token comes from the one place it is given: a flag beats everything;
// otherwise FERRY_TOKEN, token_file and token exclude each other.
func TestResolveTokenPrecedence(t *testing.T) {
	file := writeToken(t, goodToken+"\n", 0o600)
	withEnv := env(map[string]string{TokenEnv: otherToken})
	for _, tc := range []struct {
		name      string
		tcp       TCP
		getenv    func(string) string
		token     string
		source    string
		errsNamed []string // the error names all of these; nil: no error
	}{
		{"config token", TCP{Token: goodToken}, env(nil), goodToken, TokenFromConfig, nil},
		{"token_file, newline trimmed", TCP{TokenFile: file}, env(nil), goodToken, TokenFromFile, nil},
		{"FERRY_TOKEN", TCP{}, withEnv, otherToken, TokenFromEnv, nil},
		{"empty FERRY_TOKEN is unset", TCP{TokenFile: file}, env(map[string]string{TokenEnv: ""}), goodToken, TokenFromFile, nil},
		{"--token beats FERRY_TOKEN and the file", TCP{Token: goodToken, TokenSource: TokenFromFlag}, withEnv, goodToken, TokenFromFlag, nil},
		{"--token-file beats FERRY_TOKEN", TCP{TokenFile: file, TokenSource: TokenFromFileFlag}, withEnv, goodToken, TokenFromFileFlag, nil},
		{"FERRY_TOKEN and token_file", TCP{TokenFile: file}, withEnv, "", "", []string{"FERRY_TOKEN", "tcp.token_file", "keep one"}},
		{"FERRY_TOKEN and token", TCP{Token: goodToken}, withEnv, "", "", []string{"FERRY_TOKEN", "tcp.token", "keep one"}},
		{"none", TCP{}, env(nil), "", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcp := tc.tcp
			err := tcp.ResolveToken(tc.getenv)
			if tc.errsNamed != nil {
				if err == nil {
					t.Fatalf("resolved to %q from %s, want an error", tcp.Token, tcp.TokenSource)
				}
				for _, w := range tc.errsNamed {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %s", err, w)
					}
				}
				if strings.Contains(err.Error(), goodToken) || strings.Contains(err.Error(), otherToken) {
					t.Errorf("error prints a token: %v", err)
				}
				return
			}
			if err != nil || tcp.Token != tc.token || tcp.TokenSource != tc.source {
				t.Fatalf("token %q from %q, %v; want %q from %q", tcp.Token, tcp.TokenSource, err, tc.token, tc.source)
			}
		})
	}
}

// A token file that others can read, that is not a regular file, or that
// holds no token is refused with an error naming it.
func TestTokenFileRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	private := writeToken(t, goodToken, 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"group-readable", writeToken(t, goodToken, 0o640), "chmod 600"},
		{"world-readable", writeToken(t, goodToken, 0o644), "mode 0644"},
		{"group-writable", writeToken(t, goodToken, 0o620), "chmod 600"},
		{"missing", filepath.Join(dir, "none"), "openssl rand"},
		{"directory", dir, "not a regular file"},
		{"fifo", fifo, "not a regular file"},
		{"empty", writeToken(t, "\n", 0o600), "empty"},
		{"huge", writeToken(t, strings.Repeat("a", 5000), 0o600), "one token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcp := TCP{TokenFile: tc.path}
			err := tcp.ResolveToken(env(nil))
			if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "tcp.token_file") {
				t.Fatalf("got %v, want an error naming tcp.token_file %s and saying %q", err, tc.path, tc.want)
			}
			if strings.Contains(err.Error(), goodToken) {
				t.Fatalf("error prints the token: %v", err)
			}
		})
	}
	// A symlink to a private file is followed (secret mounts are symlinks).
	tcp := TCP{TokenFile: link}
	if err := tcp.ResolveToken(env(nil)); err != nil || tcp.Token != goodToken {
		t.Fatalf("token file through a symlink: %q, %v", tcp.Token, err)
	}
}

// Short tokens, the samples' placeholder and stray white space are
// refused wherever the token came from, naming the source and saying how
// to make one, without printing the token.
func TestWeakTokensRefused(t *testing.T) {
	for _, tc := range []struct {
		name, token, want string
	}{
		{"15 bytes", "0123456789abcde", "is 15 bytes"},
		{"placeholder", "change-me", "sample placeholder"},
		{"long placeholder", "CHANGE-ME-0123456789", "sample placeholder"},
		{"second newline in the file", goodToken + "\n", "white space"},
		{"two lines", "0123456789\nabcdef0123", "control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// In the config file: the error names the file and line.
			path := writeConfig(t, "stream = \"app\"\n[tcp]\ntoken = "+tomlQuote(tc.token)+"\n")
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path+":3: tcp.token") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error at %s:3 naming tcp.token and saying %q", err, path, tc.want)
			}
			checkNoToken(t, err, tc.token)
			if tc.want != "white space" && tc.want != "control character" && !strings.Contains(err.Error(), "openssl rand") {
				t.Errorf("the error does not say how to make a token: %v", err)
			}
			// From FERRY_TOKEN and from a token file: named by source.
			f := Defaults()
			f.TCP.TokenSource, f.TCP.Token = TokenFromEnv, tc.token
			if err := f.Validate(""); err == nil || !strings.Contains(err.Error(), "FERRY_TOKEN: ") {
				t.Errorf("from FERRY_TOKEN: %v, want an error naming FERRY_TOKEN", err)
			} else {
				checkNoToken(t, err, tc.token)
			}
			file := writeToken(t, tc.token+"\n", 0o600)
			f = Defaults()
			f.TCP.TokenFile = file
			if err := f.TCP.ResolveToken(env(nil)); err != nil {
				t.Fatal(err)
			}
			if err := f.Validate(""); err == nil || !strings.Contains(err.Error(), "tcp.token_file "+file) {
				t.Errorf("from a token file: %v, want an error naming %s", err, file)
			}
		})
	}
	f := Defaults()
	f.TCP.Token = strings.Repeat("k", MinTokenBytes)
	if err := f.Validate(""); err != nil {
		t.Fatalf("a %d-byte token: %v", MinTokenBytes, err)
	}
}

func tomlQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

func checkNoToken(t *testing.T, err error, token string) {
	t.Helper()
	if token != "change-me" && strings.Contains(err.Error(), strings.TrimSpace(token)) {
		t.Errorf("the error prints the token: %v", err)
	}
}

// token and token_file in one file contradict each other.
func TestTokenAndTokenFileInOneFile(t *testing.T) {
	path := writeConfig(t, "stream = \"app\"\n[tcp]\ntoken = \""+goodToken+"\"\ntoken_file = \"/etc/ferry/link.token\"\n")
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path+":4: tcp.token_file") || !strings.Contains(err.Error(), "keep one") {
		t.Fatalf("Load: %v, want an error at line 4 naming tcp.token_file", err)
	}
}

// A config file holding a secret is reported when group or others may
// read it; a private one, or one without secrets, is not.
func TestExposedSecrets(t *testing.T) {
	secret := "stream = \"app\"\n[tcp]\ntoken = \"" + goodToken + "\"\n[s3]\naccess_key = \"AKIA\"\nsecret_key = \"s3cr3t\"\n"
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    []string
	}{
		{"world-readable with secrets", secret, 0o644, []string{"tcp.token", "s3.secret_key"}},
		{"group-readable with a token", "[tcp]\ntoken = \"" + goodToken + "\"\n", 0o640, []string{"tcp.token"}},
		{"private with secrets", secret, 0o600, nil},
		{"world-readable without secrets", "stream = \"app\"\n[tcp]\ntoken_file = \"/etc/ferry/link.token\"\n", 0o644, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.content)
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			f, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			keys, mode := ExposedSecrets(path, f)
			if strings.Join(keys, ",") != strings.Join(tc.want, ",") || (keys != nil && mode != tc.mode) {
				t.Fatalf("ExposedSecrets = %q, %04o; want %q, %04o", keys, mode, tc.want, tc.mode)
			}
		})
	}
}

// Mutual TLS settings that would be silently ignored are refused.
func TestMutualTLSContradictions(t *testing.T) {
	path := writeConfig(t, "stream = \"app\"\n[tcp]\ninsecure = true\nclient_ca_file = \"/etc/ca.pem\"\n")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+":4: tcp.client_ca_file") || !strings.Contains(err.Error(), "insecure") {
		t.Fatalf("insecure with client_ca_file: %v, want an error at line 4 naming tcp.client_ca_file", err)
	}
	f := Defaults()
	f.Stream, f.Store, f.Receive.State, f.Receive.Apply = "app", "tcp://:7000", "/s", "stdout"
	f.TCP.Token = goodToken
	f.TCP.TLSClientNames = []string{"primary-a"}
	if err := f.Validate("receive"); err == nil || !strings.Contains(err.Error(), "tcp.tls_client_names") || !strings.Contains(err.Error(), "client_ca_file") {
		t.Fatalf("tls_client_names without client_ca_file: %v", err)
	}
	f.TCP.ClientCAFile = "/etc/ca.pem"
	if err := f.Validate("receive"); err != nil {
		t.Fatalf("tls_client_names with client_ca_file: %v", err)
	}
	f.TCP.TLSClientNames = []string{"ok", " padded", ""}
	if err := f.Validate("receive"); err == nil || !strings.Contains(err.Error(), "name 2") || !strings.Contains(err.Error(), "name 3") {
		t.Fatalf("bad names: %v, want errors for names 2 and 3", err)
	}
}

// A store URL with credentials is refused, and the error shows it with
// the userinfo hidden, also when the secret keeps it from parsing.
func TestStoreURLCredentialsRedacted(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	for _, tc := range []struct{ key, line string }{
		{"store", `store = "s3://AKIAEXAMPLE:` + secret + `@bucket/prefix"`},
		{"store", `store = "s3://AKIAEXAMPLE:plain` + secret[:6] + `@bucket/prefix"`},
		{"store", `store = "tcp://u:` + secret + `@dr:7000"`},
		{"ship.targets[0].store", "[[ship.targets]]\nstore = \"s3://AKIAEXAMPLE:" + secret + "@bucket\""},
		{"s3.endpoint", "[s3]\nendpoint = \"https://AKIAEXAMPLE:" + secret + "@s3.example.com\""},
	} {
		path := writeConfig(t, "stream = \"app\"\n"+tc.line+"\n")
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), tc.key+": ") {
			t.Errorf("%s: %v, want an error naming %s", tc.line, err, tc.key)
			continue
		}
		if strings.Contains(err.Error(), secret[:6]) || strings.Contains(err.Error(), "AKIAEXAMPLE") {
			t.Errorf("%s: the error prints the credentials: %v", tc.line, err)
		}
		if tc.key != "s3.endpoint" && (!strings.Contains(err.Error(), "***@") || !strings.Contains(err.Error(), "credentials")) {
			t.Errorf("%s: %v, want the URL shown redacted and the reason", tc.line, err)
		}
	}
}
