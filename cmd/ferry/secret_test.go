package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/config"
)

const testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

// runFerry runs a verb in-process and returns its exit code and output.
func runFerry(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// A store URL carrying credentials, in a flag or the config file, is
// refused by every verb without printing them.
func TestStoreURLWithCredentialsNotEchoed(t *testing.T) {
	dir := t.TempDir()
	urls := []string{
		"s3://AKIAEXAMPLE:" + testSecret + "@bucket/prefix",
		"s3://AKIAEXAMPLE:plainsecret@bucket/prefix",
	}
	for _, u := range urls {
		conf := filepath.Join(dir, "ferry.toml")
		if err := os.WriteFile(conf, []byte("stream = \"app\"\nstore = \""+u+"\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"ls", "--store", u, "--stream", "app"},
			{"prune", "--store", u, "--stream", "app", "--keep-min", "1"},
			{"verify", "--config", conf},
			{"ship", "--store", filepath.Join(dir, "s"), "--also", u, "--stream", "app", "--spool", filepath.Join(dir, "sp")},
			{"receive", "--config", conf, "--state", filepath.Join(dir, "st"), "--apply", "stdout", "--once"},
		} {
			code, stdout, stderr := runFerry(args...)
			out := stdout + stderr
			if code == 0 {
				t.Errorf("ferry %s: exit 0, want a refusal", args[0])
			}
			if strings.Contains(out, "AKIAEXAMPLE") || strings.Contains(out, "secret") || strings.Contains(out, testSecret[:8]) {
				t.Errorf("ferry %s printed the credentials:\n%s", args[0], out)
			}
			if !strings.Contains(out, "s3://***@bucket") {
				t.Errorf("ferry %s: want the URL shown with its userinfo hidden:\n%s", args[0], out)
			}
		}
	}
}

// A config file holding a secret that group or others can read gets a
// warning naming the file and the key, never the secret; a private one
// does not. --token gets a warning that it shows in ps.
func TestSecretWarnings(t *testing.T) {
	dir := t.TempDir()
	const token = "warn-test-token-0123456789"
	conf := filepath.Join(dir, "ferry.toml")
	body := "stream = \"app\"\nstore = \"" + filepath.Join(dir, "store") + "\"\n[tcp]\ntoken = \"" + token + "\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, stderr := runFerry("ls", "--config", conf)
	if !strings.Contains(stderr, "group or others may read it") || !strings.Contains(stderr, "file="+conf) ||
		!strings.Contains(stderr, "keys=tcp.token") || !strings.Contains(stderr, "chmod 600") {
		t.Errorf("no warning naming the world-readable config and its key:\n%s", stderr)
	}
	if strings.Contains(stderr, token) {
		t.Errorf("the warning prints the token:\n%s", stderr)
	}
	if err := os.Chmod(conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, stderr := runFerry("ls", "--config", conf); strings.Contains(stderr, "may read it") {
		t.Errorf("a private config got the warning:\n%s", stderr)
	}

	// --token on a link: warned; the token itself never printed. (No TLS
	// and no --insecure: the shipper stops once its settings are read.)
	code, _, stderr := runFerry("ship", "--store", "tcp://127.0.0.1:1", "--token", token, "--stream", "app",
		"--spool", filepath.Join(dir, "spool"))
	if code == 0 || !strings.Contains(stderr, "--token shows the link token") || !strings.Contains(stderr, "--token-file, FERRY_TOKEN or tcp.token_file") {
		t.Errorf("exit %d; no warning that --token shows in ps:\n%s", code, stderr)
	}
	if strings.Contains(stderr, token) {
		t.Errorf("the token is printed:\n%s", stderr)
	}
}

// --tls-client-ca with --insecure is refused before anything starts.
func TestClientCAWithInsecureRefused(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runFerry("receive", "--listen", "127.0.0.1:0", "--token", "insecure-ca-token-0123", "--stream", "app",
		"--state", filepath.Join(dir, "state"), "--apply", "stdout", "--tls-client-ca", filepath.Join(dir, "ca.pem"), "--insecure")
	if code != exitUsage || !strings.Contains(stderr, "tcp.client_ca_file") || !strings.Contains(stderr, "insecure") {
		t.Fatalf("exit %d, want %d and an error naming tcp.client_ca_file and insecure:\n%s", code, exitUsage, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Fatal("the refused receiver created its state dir")
	}
}

// --token and --token-file exclude each other; FERRY_TOKEN is dropped
// from the environment once read, so exec: appliers do not inherit it.
func TestTokenFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "link.token")
	if err := os.WriteFile(file, []byte("file-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (*config.File, error) {
		c := newFlags("test", "test", "", new(bytes.Buffer))
		c.accept(receiverLinkFlags...)
		err := c.parse(append([]string{"--listen", "127.0.0.1:7000", "--stream", "app"}, args...), "")
		return c.cfg, err
	}
	if _, err := parse("--token", "flag-token-0123456789", "--token-file", file); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--token with --token-file: %v", err)
	}
	t.Setenv(config.TokenEnv, "env-token-0123456789")
	cfg, err := parse("--token-file", file)
	if err != nil || cfg.TCP.Token != "file-token-0123456789" || cfg.TCP.TokenSource != config.TokenFromFileFlag {
		t.Errorf("--token-file over FERRY_TOKEN: %q from %s, %v", cfg.TCP.Token, cfg.TCP.TokenSource, err)
	}
	if v, ok := os.LookupEnv(config.TokenEnv); ok {
		t.Errorf("FERRY_TOKEN=%q is still in the environment after parse", v)
	}
	t.Setenv(config.TokenEnv, "env-token-0123456789")
	if cfg, err := parse(); err != nil || cfg.TCP.Token != "env-token-0123456789" || cfg.TCP.TokenSource != config.TokenFromEnv {
		t.Errorf("FERRY_TOKEN: %q from %s, %v", cfg.TCP.Token, cfg.TCP.TokenSource, err)
	}
}
