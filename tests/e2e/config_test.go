//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// ferryEnv runs the binary with these variables added to the environment.
func ferryEnv(t *testing.T, env []string, stdin []byte, args ...string) ferrytest.Result {
	t.Helper()
	var in *bytes.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	c := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), env...)}
	if in == nil {
		return c.Run(t, nil, args...)
	}
	return c.Run(t, in, args...)
}

// FERRY_CONFIG names the config file when --config does not: ship and ls
// read their settings from it, and ship's start-up log says which file it
// read and why. The FERRY_* variables override the file (here: how many
// records a segment holds, seen in the segments made), and flags override
// both.
func TestConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	s := newStream(t, "cfgenv")
	path := filepath.Join(s.dir, "ferry.toml")
	conf := fmt.Sprintf("stream = %q\nstore = %q\n[ship]\nspool = %q\nmax_records = 0\n", s.name, s.store, s.spool)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"FERRY_CONFIG=" + path}

	r := ferryEnv(t, env, numberedLines("line ", 1, 100), "ship")
	if r.Code != 0 {
		t.Fatalf("ship with FERRY_CONFIG:\n%s", r)
	}
	if want := fmt.Sprintf(`msg="config file" file=%s from=FERRY_CONFIG`, path); !strings.Contains(r.Stderr, want) {
		t.Errorf("the start-up log does not name the file and FERRY_CONFIG (%s):\n%s", want, r)
	}
	if n := len(s.segments()); n != 1 {
		t.Fatalf("the file's max_records = 0: %d segments, want 1", n)
	}

	// The environment over the file: 10 records a segment.
	r = ferryEnv(t, append(env, "FERRY_SHIP_MAX_RECORDS=10"), numberedLines("line ", 1, 100), "ship")
	if r.Code != 0 {
		t.Fatalf("ship with FERRY_SHIP_MAX_RECORDS:\n%s", r)
	}
	if n := len(s.segments()); n != 1+10 {
		t.Fatalf("FERRY_SHIP_MAX_RECORDS=10 over 100 records: %d segments in all, want 11", n)
	}
	// A flag over both: 50 a segment.
	r = ferryEnv(t, append(env, "FERRY_SHIP_MAX_RECORDS=10"), numberedLines("line ", 1, 100), "ship", "--max-records", "50")
	if r.Code != 0 {
		t.Fatalf("ship with --max-records:\n%s", r)
	}
	if n := len(s.segments()); n != 11+2 {
		t.Fatalf("--max-records 50 over FERRY_SHIP_MAX_RECORDS=10: %d segments in all, want 13", n)
	}
	// Other verbs read the same file.
	r = ferryEnv(t, env, nil, "verify")
	if r.Code != 0 || !strings.Contains(r.Output(), "300 records") {
		t.Fatalf("verify with FERRY_CONFIG:\n%s", r)
	}
	// A FERRY_CONFIG that names no file is an error, not the defaults.
	r = ferryEnv(t, []string{"FERRY_CONFIG=" + filepath.Join(s.dir, "missing.toml")}, nil, "verify")
	if r.Code == 0 || !strings.Contains(r.Stderr, "missing.toml") {
		t.Fatalf("FERRY_CONFIG naming a missing file:\n%s", r)
	}
}

// A FERRY_ variable that names no config key stops ferry before it does
// anything, naming the variable and the one that was meant; so does a
// value that does not parse.
func TestConfigUnknownVariableRefused(t *testing.T) {
	t.Parallel()
	s := newStream(t, "cfgtypo")
	r := ferryEnv(t, []string{"FERRY_SHIP_MAX_AGEE=5s"}, numberedLines("line ", 1, 10), s.shipArgs()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, "FERRY_SHIP_MAX_AGEE: unknown variable") ||
		!strings.Contains(r.Stderr, "did you mean FERRY_SHIP_MAX_AGE") {
		t.Fatalf("want a refusal naming FERRY_SHIP_MAX_AGEE and FERRY_SHIP_MAX_AGE:\n%s", r)
	}
	if _, err := os.Stat(s.store); err == nil {
		t.Error("the refused shipper created its store")
	}
	r = ferryEnv(t, []string{"FERRY_SHIP_MAX_AGE=5x"}, numberedLines("line ", 1, 10), s.shipArgs()...)
	if r.Code == 0 || !strings.Contains(r.Stderr, `FERRY_SHIP_MAX_AGE: invalid duration "5x"`) {
		t.Fatalf("want a refusal naming FERRY_SHIP_MAX_AGE and its value:\n%s", r)
	}
	// ferry's other variables are not settings, and not refused.
	r = ferryEnv(t, []string{"FERRY_MEMPROFILE=" + filepath.Join(s.dir, "mem.prof")}, numberedLines("line ", 1, 10), s.shipArgs()...)
	if r.Code != 0 {
		t.Fatalf("FERRY_MEMPROFILE refused:\n%s", r)
	}
}

// ferry config check prints the effective settings (file, environment,
// flags) as TOML that decodes, never a secret, whether the file or the
// environment holds it; a bad setting exits non-zero naming where it is.
func TestConfigCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const fileSecret, envSecret, envToken = "file-secret-4f1d9c0e77", "env-session-9a8b7c6d55", "env-link-token-0123456789abcdef"
	path := filepath.Join(dir, "ferry.toml")
	conf := fmt.Sprintf(`stream = "app"
store = "s3://bucket/prefix"
[ship]
spool = %q
max_age = "3s"
[s3]
access_key = "AKIAFILE"
secret_key = %q
`, filepath.Join(dir, "spool"), fileSecret)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r := ferryEnv(t, []string{"FERRY_S3_SESSION_TOKEN=" + envSecret, "FERRY_TCP_TOKEN=" + envToken, "FERRY_SHIP_MAX_AGE=5s"},
		nil, "config", "check", "--config", path, "--stream", "from-flag")
	if r.Code != 0 {
		t.Fatalf("config check:\n%s", r)
	}
	for _, secret := range []string{fileSecret, envSecret, envToken, "AKIAFILE"} {
		if strings.Contains(r.Output(), secret) {
			t.Errorf("config check prints the secret %q:\n%s", secret, r)
		}
	}
	var got struct {
		Stream string
		Ship   struct {
			MaxAge string `toml:"max_age"`
		}
		S3 struct {
			AccessKey    string `toml:"access_key"`
			SecretKey    string `toml:"secret_key"`
			SessionToken string `toml:"session_token"`
		}
		TCP struct{ Token string }
	}
	if _, err := toml.Decode(r.Stdout, &got); err != nil {
		t.Fatalf("the output is not TOML: %v\n%s", err, r.Stdout)
	}
	if got.Stream != "from-flag" || got.Ship.MaxAge != "5s" || got.S3.AccessKey != "***" || got.S3.SecretKey != "***" ||
		got.S3.SessionToken != "***" || got.TCP.Token != "***" {
		t.Errorf("effective settings %+v, want stream from the flag, max_age from the environment, secrets masked:\n%s", got, r.Stdout)
	}
	for _, want := range []string{path + " (from --config)", "ship.max_age set by FERRY_SHIP_MAX_AGE"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the header does not say %q:\n%s", want, r.Stdout)
		}
	}

	// Problems: the file's line, the variable, or the verb's required key.
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("stream = \"app\"\n[ship]\nmax_byts = \"1MiB\"\n"), 0o600)
	r = ferryEnv(t, nil, nil, "config", "check", "--config", bad)
	if r.Code != 1 || !strings.Contains(r.Stderr, bad+`:3: unknown key "ship.max_byts" (did you mean "ship.max_bytes"?)`) || r.Stdout != "" {
		t.Errorf("config check of a file with a misspelt key, want exit 1 naming the line:\n%s", r)
	}
	r = ferryEnv(t, []string{"FERRY_SHIP_MAX_BYTES=10B"}, nil, "config", "check", "--config", path)
	if r.Code != 1 || !strings.Contains(r.Stderr, "FERRY_SHIP_MAX_BYTES: ship.max_bytes: 10B is out of range") {
		t.Errorf("config check with a bad variable, want exit 1 naming it:\n%s", r)
	}
	r = ferryEnv(t, nil, nil, "config", "check", "--config", path, "--for", "receive")
	if r.Code != 2 || !strings.Contains(r.Stderr, "receive.state: required for receive") {
		t.Errorf("config check --for receive of a shipper's file, want exit 2 naming receive.state:\n%s", r)
	}
	r = ferryEnv(t, nil, nil, "config", "chek")
	if r.Code != 2 || !strings.Contains(r.Stderr, `unknown subcommand "chek"`) {
		t.Errorf("config chek:\n%s", r)
	}
}

// A push-only shipper (source "none", from etc/ferry-pg.toml, with the
// store and spool moved by FERRY_* variables) runs without stdin, takes
// what ferry push hands it through push.sock, and stops cleanly (exit 0,
// a service stop) on SIGTERM.
func TestPushOnlyShipper(t *testing.T) {
	t.Parallel()
	s := newStream(t, "pg-wal")
	sample, err := filepath.Abs("../../etc/ferry-pg.toml")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "FERRY_CONFIG="+sample, "FERRY_STORE="+s.store, "FERRY_SHIP_SPOOL="+s.spool)
	// No stdin at all: the child's is /dev/null, which a stdin shipper
	// would read to its end at once and exit.
	ship := ferrytest.Cmd{Bin: ferryBin, Env: env}.Start(t, nil, "ship")
	sock := filepath.Join(s.spool, "push.sock")
	ferrytest.Eventually(t, 20*time.Second, "the shipper serves push.sock", func() (bool, string) {
		if ship.Exited() {
			t.Fatalf("the push-only shipper exited:\n%s", ship)
		}
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})
	wal := filepath.Join(s.dir, "pg_wal")
	data := writeRandomFile(t, wal, "000000010000000000000001", 3<<20, 7)
	push := ferrytest.Cmd{Bin: ferryBin, Env: env}.Run(t, nil, "push", filepath.Join(wal, "000000010000000000000001"))
	if push.Code != 0 || !strings.Contains(push.Stderr, "by the running shipper (pid") {
		t.Fatalf("push to the push-only shipper:\n%s", push)
	}
	time.Sleep(300 * time.Millisecond) // still serving after the push
	if ship.Exited() {
		t.Fatalf("the push-only shipper exited after a push:\n%s", ship)
	}
	if err := ship.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, ok := ship.Wait(30 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("push-only shipper on SIGTERM: exit %d (ended %v), want 0:\n%s", code, ok, ship)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("push.sock left behind")
	}
	out := filepath.Join(s.dir, "out")
	mustFerry(t, nil, s.fetchArgs("000000010000000000000001", out)...)
	wantFileContent(t, out, data)
}
