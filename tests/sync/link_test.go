//go:build linux

package sync_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
)

// transport is how a test's sites reach each other.
type transport int

const (
	viaStore transport = iota // one shared directory store
	viaLink                   // the direct link: each site listens, and ships to the others' listeners
)

// streams says where a site's stream can be read: the directory that
// holds NAME@ID (the shared store, or a peer's inbox).
type streams func(id string) string

// linkNet is the direct-link setup of a test's sites: a test CA, a server
// certificate for each site, one token, and a free address each listens on.
type linkNet struct {
	base      string
	ids       []string
	pki       *testpki.PKI
	tokenFile string
	addr      map[string]string
}

const linkToken = "sync-link-token-0123456789abcdef"

func newLinkNet(t *testing.T, base string, ids []string) *linkNet {
	n := &linkNet{base: base, ids: ids, pki: testpki.New(t), addr: map[string]string{}}
	n.tokenFile = filepath.Join(base, "token")
	if err := os.WriteFile(n.tokenFile, []byte(linkToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		n.addr[id] = ferrytest.FreeAddr(t)
	}
	return n
}

// tcpTable is site id's [tcp] table: TLS with its own server certificate
// for its listener, the CA for its peers', the token from a file, and an
// inbox that keeps every segment (the test reads the streams there).
func (n *linkNet) tcpTable(t *testing.T, id string) string {
	cert, key := n.pki.Issue(t, id, true)
	return fmt.Sprintf(`[tcp]
token_file = %q
ca_file = %q
cert_file = %q
key_file = %q
inbox_keep = 0
`, n.tokenFile, n.pki.CAFile, cert, key)
}

// streams is where site id's stream is kept: another site's inbox.
func (n *linkNet) streams(id string) string {
	for _, o := range n.ids {
		if o != id {
			return filepath.Join(n.base, o, "state", "inbox")
		}
	}
	return ""
}

// TestSyncLinkChurnKill9 is TestSyncChurnKill9 over the direct link in
// both directions, TLS and token on: each site ships its stream to the
// other's listener. Site b and then site a are killed with SIGKILL and
// restarted; afterwards the trees are identical, every change is there,
// each conflict copy made once, and no site ships the other's changes back.
func TestSyncLinkChurnKill9(t *testing.T) { runChurn(t, viaLink, []string{"a", "b"}, "b", "a") }

// TestSyncLinkRecordsKill9 is TestSyncRecordsKill9's two sites over the
// direct link: every event applied once at the other site, none shipped
// back, across a SIGKILL of each.
func TestSyncLinkRecordsKill9(t *testing.T) { runRecordsKill9(t, viaLink, []string{"a", "b"}) }

// A site's listener takes its link peers' own streams only: a shipper
// with a wrong token, one that claims another site's stream, and one that
// ships the listening site's own stream are refused, and the site logs
// each refusal naming the shipper (its address, the site it claims and
// the stream). The sites go on syncing.
func TestSyncLinkRefusesImpostors(t *testing.T) {
	_, sites := newMesh(t, viaLink, "a", "b")
	a, b := sites[0], sites[1]
	write(t, filepath.Join(a.tree, "box/f"), []byte("from a\n"))
	a.start(t)
	b.start(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("site a:\n%s\nsite b:\n%s", a.proc, b.proc)
		}
	})
	waitIdentical(t, a, b, 30*time.Second)

	links := filepath.Dir(a.dir)
	impostor := func(name, site, stream, token string) ferrytest.Result {
		dir := filepath.Join(links, "impostor-"+name)
		tokenFile := filepath.Join(dir, "token")
		conf := filepath.Join(dir, "ship.toml")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`store = "tcp://%s"
stream = %q
[site]
id = %q
[ship]
spool = %q
[tcp]
token_file = %q
ca_file = %q
`, readListen(t, a), stream, site, filepath.Join(dir, "spool"), tokenFile, filepath.Join(filepath.Dir(readCert(t, a)), "ca.pem"))
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return ferrytest.Cmd{Bin: ferryBin}.Run(t, bytes.NewReader([]byte("{\"evil\":1}\n")), "ship", "--config", conf)
	}
	cases := []struct {
		name, site, stream, token string
		shipper, log              string // what the impostor is told, what a logs
	}{
		{"wrongtoken", "b", "mail@b", "not-the-token-0123456789", "token rejected", "token rejected"},
		{"otherstream", "c", "mail@b", linkToken, `is peer b's own, and this shipper says it is site "c"`, `site=c stream=mail@b`},
		{"ownstream", "a", "mail@a", linkToken, `takes only its link peers' streams`, `site=a stream=mail@a`},
		{"unknown", "c", "mail@c", linkToken, `takes only its link peers' streams`, `site=c stream=mail@c`},
	}
	for _, c := range cases {
		r := impostor(c.name, c.site, c.stream, c.token)
		if r.Code == 0 || !strings.Contains(r.Output(), c.shipper) {
			t.Errorf("%s: the impostor's ferry ship exited %d; want an error saying %q:\n%s", c.name, r.Code, c.shipper, r)
		}
		ferrytest.Eventually(t, 10*time.Second, c.name+": a logs the refusal naming the shipper", func() (bool, string) {
			for _, l := range strings.Split(a.proc.Stderr(), "\n") {
				if strings.Contains(l, "refused link") && strings.Contains(l, c.log) && strings.Contains(l, "peer=127.0.0.1:") {
					return true, ""
				}
			}
			return false, a.proc.Stderr()
		})
	}
	if _, err := os.Stat(filepath.Join(a.dir, "state", "inbox", "mail@c")); err == nil {
		t.Error("the impostor's stream mail@c was given a place in a's inbox")
	}
	// Both sites still sync.
	write(t, filepath.Join(b.tree, "box/g"), []byte("from b, after\n"))
	snap := waitIdentical(t, a, b, 30*time.Second)
	if !strings.Contains(snap["box/g"], sig([]byte("from b, after\n"))) {
		t.Fatalf("box/g after the impostors: %q", snap["box/g"])
	}
	a.stop(t)
	b.stop(t)
}

// readListen is the sync.listen of s's config.
func readListen(t *testing.T, s *site) string { return confValue(t, s, "listen") }

// readCert is the cert_file of s's config.
func readCert(t *testing.T, s *site) string { return confValue(t, s, "cert_file") }

func confValue(t *testing.T, s *site, key string) string {
	t.Helper()
	b, err := os.ReadFile(s.conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " = "); ok && k == key {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatalf("no %s in %s", key, s.conf)
	return ""
}
