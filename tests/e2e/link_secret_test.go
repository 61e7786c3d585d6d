package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
)

// The link token from the environment and from a token file: a receiver
// given FERRY_TOKEN (as the systemd unit's EnvironmentFile does) and a
// shipper whose config names a token_file link up and replicate; the
// receiver's exec: applier does not inherit FERRY_TOKEN; a token file
// others can read, and a short token, are refused before anything starts.
func TestLinkTokenFromEnvAndFile(t *testing.T) {
	t.Parallel()
	const token = "env-and-file-token-3b9f0c1e"
	s := newStream(t, "tokensrc")
	addr := ferrytest.FreeAddr(t)
	envDump := filepath.Join(s.dir, "applier.env")
	withToken := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "FERRY_TOKEN="+token)}
	recv := withToken.Start(t, nil, "receive", "--listen", addr, "--insecure", "--stream", s.name, "--state", s.state,
		"--apply", "exec:env > "+envDump+"; cat >> "+s.replica, "--poll-min", "20ms", "--poll-max", "100ms")
	waitListening(t, recv, addr)

	tokenFile := filepath.Join(s.dir, "link.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(s.dir, "ship.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "stream = %q\nstore = \"tcp://%s\"\n[ship]\nspool = %q\n[tcp]\ninsecure = true\ntoken_file = %q\n",
		s.name, addr, s.spool, tokenFile), 0o644); err != nil {
		t.Fatal(err)
	}
	data := logLines(31, 1, 3000)
	r := mustFerry(t, bytes.NewReader(data), "ship", "--config", conf, "--max-bytes", "16KiB", "--ack", "applied")
	if strings.Contains(r.Output(), "may read it") {
		t.Errorf("a config without a secret in it got the permissions warning:\n%s", r)
	}
	if got := s.readReplica(); !bytes.Equal(got, data) {
		t.Fatalf("replica after an --ack applied ship: %s", describeDiff(data, got))
	}
	env, err := os.ReadFile(envDump)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte("FERRY_TOKEN")) || bytes.Contains(env, []byte(token)) {
		t.Errorf("the exec: applier inherited the token:\n%s", env)
	}
	if !bytes.Contains(env, []byte("FERRY_STREAM="+s.name)) {
		t.Errorf("the applier's environment dump lacks FERRY_STREAM: not written by the applier?\n%s", env)
	}

	// A token file group or others can read is refused, naming it.
	if err := os.Chmod(tokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := failFerry(t, bytes.NewReader([]byte("x\n")), []string{"tcp.token_file", tokenFile, "chmod 600"},
		"ship", "--config", conf, "--spool", filepath.Join(s.dir, "spool-bad"))
	if bad.Code != 2 || strings.Contains(bad.Output(), token) {
		t.Errorf("want exit 2 without the token in the output:\n%s", bad)
	}
	// FERRY_TOKEN and a token_file in the config: one is stale; refused.
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	both := withToken.Run(t, bytes.NewReader([]byte("x\n")), "ship", "--config", conf, "--spool", filepath.Join(s.dir, "spool-both"))
	if both.Code != 2 || !strings.Contains(both.Output(), "FERRY_TOKEN and tcp.token_file") {
		t.Errorf("FERRY_TOKEN with token_file: want exit 2 naming both:\n%s", both)
	}
	// A short token in the environment is refused with the way to make one.
	short := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "FERRY_TOKEN=short")}.Run(t, nil,
		"receive", "--listen", ferrytest.FreeAddr(t), "--insecure", "--stream", s.name, "--state", filepath.Join(s.dir, "state2"), "--apply", "stdout")
	if short.Code != 2 || !strings.Contains(short.Output(), "FERRY_TOKEN: is 5 bytes") || !strings.Contains(short.Output(), "openssl rand") {
		t.Errorf("a 5-byte FERRY_TOKEN: want exit 2 and how to make a token:\n%s", short)
	}

	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d:\n%s", code, recv)
	}
	if strings.Contains(recv.Stdout()+recv.Stderr(), token) {
		t.Errorf("the token appears in the receiver's output:\n%s", recv)
	}
}

// tls_client_names narrows mutual TLS: a shipper whose certificate (signed
// by the client CA) is named gets through; another, signed by the same CA,
// is refused at the handshake, and the receiver logs the name it presented.
func TestLinkTLSClientNames(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	srvCert, srvKey := pki.Issue(t, "receiver", true)
	allowedCert, allowedKey := pki.Issue(t, "primary-a", false)
	otherCert, otherKey := pki.Issue(t, "primary-b", false)
	s := newStream(t, "names")
	addr := ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", pki.CAFile,
		"--tls-client-names", "primary-a,primary-c")

	refused := failFerry(t, bytes.NewReader([]byte("refused-intruder\n")), []string{"tls_client_names"}, "ship", "--store", "tcp://"+addr,
		"--tls-ca", pki.CAFile, "--tls-cert", otherCert, "--tls-key", otherKey,
		"--stream", s.name, "--spool", filepath.Join(s.dir, "spool-b"), "--shutdown-timeout", "2s")
	t.Logf("refused shipper:\n%s", refused)
	data := logLines(32, 1, 3000)
	mustFerry(t, bytes.NewReader(data), "ship", "--store", "tcp://"+addr, "--tls-ca", pki.CAFile,
		"--tls-cert", allowedCert, "--tls-key", allowedKey, "--stream", s.name, "--spool", s.spool, "--ack", "applied")
	if got := s.readReplica(); !bytes.Equal(got, data) {
		t.Fatalf("replica after an --ack applied ship: %s", describeDiff(data, got))
	}
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d:\n%s", code, recv)
	}
	log := recv.Stderr()
	if !strings.Contains(log, "TLS handshake failed") || !strings.Contains(log, `common name \"primary-b\"`) {
		t.Errorf("the receiver's log does not name the refused certificate:\n%s", log)
	}
	if bytes.Contains(s.readReplica(), []byte("refused-intruder")) {
		t.Fatal("a record from the refused shipper was applied")
	}
	// The names need the client CA they are checked under.
	failFerry(t, nil, []string{"tcp.tls_client_names", "client_ca_file"}, "receive", "--listen", ferrytest.FreeAddr(t),
		"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-names", "primary-a", "--token", linkToken,
		"--stream", s.name, "--state", filepath.Join(s.dir, "state2"), "--apply", "stdout")
}

// waitListening waits until p accepts connections on addr.
func waitListening(t *testing.T, p *ferrytest.Process, addr string) {
	t.Helper()
	ferrytest.Eventually(t, 10*time.Second, "receiver listening on "+addr, func() (bool, string) {
		if p.Exited() {
			t.Fatalf("receiver exited:\n%s", p)
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
}
