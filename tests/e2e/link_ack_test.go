package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
)

var (
	appenderOnce sync.Once
	appenderBin  string
	appenderDir  string
)

// appender builds tests/bench/appender once per test binary: a program
// that embeds the shipper through the Go API.
func appender(t *testing.T) string {
	t.Helper()
	appenderOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-e2e-appender-")
		if err != nil {
			t.Fatal(err)
		}
		appenderDir = dir
		appenderBin = ferrytest.Build(t, "./tests/bench/appender", dir)
	})
	if appenderBin == "" {
		t.Fatal("appender was not built (see the first test that tried)")
	}
	return appenderBin
}

// startReceiver starts `ferry receive --listen addr` applying to s.replica
// and waits until it accepts connections.
func startReceiver(t *testing.T, s *stream, addr string, extra ...string) *ferrytest.Process {
	t.Helper()
	args := append([]string{"receive", "--listen", addr, "--stream", s.name, "--state", s.state,
		"--apply", "file:" + s.replica, "--poll-min", "20ms", "--poll-max", "100ms"}, extra...)
	p := startFerry(t, nil, args...)
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
	return p
}

// ackedRecords parses the appender's "acked SEQ RECORD" lines.
func ackedRecords(t *testing.T, out string) map[string]uint64 {
	t.Helper()
	acked := map[string]uint64{}
	for line := range strings.Lines(out) {
		if !strings.HasSuffix(line, "\n") {
			break // cut off by the kill: that Append's print never finished
		}
		var seq uint64
		var rec string
		if _, err := fmt.Sscanf(line, "acked %d %s", &seq, &rec); err != nil {
			t.Fatalf("appender printed %q: %v", line, err)
		}
		acked[rec] = seq
	}
	return acked
}

// Under ack = "received", a record whose Append returned is on the
// receiving side even if the shipper is killed -9 the moment after; the
// restarted shipper continues the stream and nothing is applied twice.
func TestLinkAckReceivedSurvivesShipperKill9(t *testing.T) {
	t.Parallel()
	bin := appender(t)
	s := newStream(t, "ackrecv")
	addr := ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	run := func(extra ...string) *ferrytest.Process {
		args := append([]string{"-store", "tcp://" + addr, "-insecure", "-token", linkToken, "-stream", s.name,
			"-spool", s.spool, "-ack", "received", "-c", "8", "-size", "60", "-print-acks", "-max-age", "1h"}, extra...)
		return ferrytest.Cmd{Bin: bin}.Start(t, nil, args...)
	}
	acked := map[string]uint64{}
	for round := range 3 {
		p := run("-n", "0")
		ferrytest.Eventually(t, 30*time.Second, "appends acknowledged", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("appender exited:\n%s", p)
			}
			n := strings.Count(p.Stdout(), "\n")
			return n >= 300*(round+1), fmt.Sprintf("%d acked", n)
		})
		p.Kill9()
		for rec, seq := range ackedRecords(t, p.Stdout()) {
			acked[rec] = seq
		}
	}
	// A last clean run drains the spool, so the replica must end complete.
	last := run("-n", "50")
	if code, ok := last.Wait(60 * time.Second); !ok || code != 0 {
		t.Fatalf("last appender run: exit %d (finished %t):\n%s", code, ok, last)
	}
	for rec, seq := range ackedRecords(t, last.Stdout()) {
		acked[rec] = seq
	}
	var maxSeq uint64
	for _, seq := range acked {
		maxSeq = max(maxSeq, seq)
	}
	ferrytest.Eventually(t, 30*time.Second, "receiver applied everything", func() (bool, string) {
		n := s.checkpointSeq()
		return n >= maxSeq, fmt.Sprintf("checkpoint %d, want >= %d", n, maxSeq)
	})
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d:\n%s", code, recv)
	}
	replica := lines(s.readReplica())
	seen := map[string]int{}
	for i, l := range replica {
		rec := strings.Fields(string(l))[0]
		if prev, dup := seen[rec]; dup {
			t.Fatalf("record %s applied twice (lines %d and %d)", rec, prev+1, i+1)
		}
		seen[rec] = i
	}
	if uint64(len(replica)) != s.checkpointSeq() {
		t.Fatalf("replica has %d records, checkpoint says %d: gap or duplicate", len(replica), s.checkpointSeq())
	}
	for rec, seq := range acked {
		i, ok := seen[rec]
		if !ok {
			t.Fatalf("record %s was acknowledged (seq %d) but never arrived", rec, seq)
		}
		if uint64(i+1) != seq {
			t.Fatalf("record %s acknowledged as seq %d is line %d of the replica", rec, seq, i+1)
		}
	}
	t.Logf("%d acknowledged records over 3 kills, %d applied", len(acked), len(replica))
	mustFerry(t, nil, "verify", "--store", filepath.Join(s.state, "inbox"), "--stream", s.name)
}

// TLS with a server certificate, then mutual TLS: a shipper without a
// client certificate, or trusting another CA, is refused and gets a clear
// error; the right one ships a byte-identical replica.
func TestLinkTLSAndMutualTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	srvCert, srvKey := pki.Issue(t, "receiver", true)
	cliCert, cliKey := pki.Issue(t, "shipper", false)
	other := testpki.New(t)

	t.Run("server certificate and token", func(t *testing.T) {
		s := newStream(t, "tls")
		addr := ferrytest.FreeAddr(t)
		recv := startReceiver(t, s, addr, "--tls-cert", srvCert, "--tls-key", srvKey, "--token", linkToken)
		failFerry(t, bytes.NewReader([]byte("x\n")), []string{"certificate"}, "ship", "--store", "tcp://"+addr,
			"--tls-ca", other.CAFile, "--token", linkToken, "--stream", s.name, "--spool", filepath.Join(s.dir, "spool-bad"),
			"--shutdown-timeout", "2s")
		data := logLines(21, 1, 5000)
		mustFerry(t, bytes.NewReader(data), "ship", "--store", "tcp://"+addr, "--tls-ca", pki.CAFile, "--token", linkToken,
			"--stream", s.name, "--spool", s.spool, "--max-bytes", "32KiB", "--ack", "received")
		ferrytest.Eventually(t, 30*time.Second, "replica complete", func() (bool, string) {
			got := s.readReplica()
			return bytes.Equal(got, data), fmt.Sprintf("%d of %d bytes", len(got), len(data))
		})
		recv.Terminate(10 * time.Second)
	})
	t.Run("mutual TLS", func(t *testing.T) {
		s := newStream(t, "mtls")
		addr := ferrytest.FreeAddr(t)
		recv := startReceiver(t, s, addr, "--tls-cert", srvCert, "--tls-key", srvKey, "--tls-client-ca", pki.CAFile)
		failFerry(t, bytes.NewReader([]byte("refused-intruder\n")), []string{"certificate"}, "ship", "--store", "tcp://"+addr,
			"--tls-ca", pki.CAFile, "--stream", s.name, "--spool", filepath.Join(s.dir, "spool-nocert"), "--shutdown-timeout", "2s")
		strangerCert, strangerKey := other.Issue(t, "stranger", false)
		failFerry(t, bytes.NewReader([]byte("refused-intruder\n")), []string{"certificate"}, "ship", "--store", "tcp://"+addr,
			"--tls-ca", pki.CAFile, "--tls-cert", strangerCert, "--tls-key", strangerKey,
			"--stream", s.name, "--spool", filepath.Join(s.dir, "spool-stranger"), "--shutdown-timeout", "2s")
		data := logLines(22, 1, 5000)
		mustFerry(t, bytes.NewReader(data), "ship", "--store", "tcp://"+addr, "--tls-ca", pki.CAFile,
			"--tls-cert", cliCert, "--tls-key", cliKey, "--stream", s.name, "--spool", s.spool, "--max-bytes", "32KiB")
		ferrytest.Eventually(t, 30*time.Second, "replica complete", func() (bool, string) {
			got := s.readReplica()
			return bytes.Equal(got, data), fmt.Sprintf("%d of %d bytes", len(got), len(data))
		})
		recv.Terminate(10 * time.Second)
		if bytes.Contains(s.readReplica(), []byte("refused-intruder")) {
			t.Fatal("a record from a refused shipper was applied")
		}
		out := recv.Stderr()
		if !strings.Contains(out, "certificate") {
			t.Errorf("receiver log does not say why it refused the shippers:\n%s", out)
		}
	})
}

// Fan-out: a direct link and an archive (a directory store). While the
// link's receiver is down the archive still gets everything at once; the
// link's segments wait in the spool, status says so, and once the receiver
// is back they go out too. Both replicas end byte-identical.
func TestFanOutOneTargetDown(t *testing.T) {
	t.Parallel()
	s := newStream(t, "fanout")
	addr := ferrytest.FreeAddr(t)
	archive := filepath.Join(s.dir, "archive")
	first, second := logLines(23, 1, 5000), logLines(23, 5001, 20000)
	ship := func(stdin io.Reader) ferrytest.Result {
		return ferry(t, stdin, "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken, "--also", archive,
			"--stream", s.name, "--spool", s.spool, "--max-bytes", "64KiB", "--shutdown-timeout", "2s")
	}
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	if r := ship(bytes.NewReader(first)); r.Code != 0 {
		t.Fatalf("ship with both targets up:\n%s", r)
	}
	ferrytest.Eventually(t, 30*time.Second, "first part applied", func() (bool, string) {
		return s.checkpointSeq() == 5000, fmt.Sprintf("checkpoint %d", s.checkpointSeq())
	})
	recv.Kill9()

	r := ship(bytes.NewReader(second))
	if r.Code == 0 || !strings.Contains(r.Output(), "still in spool") {
		t.Fatalf("ship with its link down: want a non-zero exit saying what is left in the spool:\n%s", r)
	}
	// The archive is complete although the link is down.
	all := append(append([]byte(nil), first...), second...)
	arch := newStream(t, s.name)
	arch.store = archive
	arch.receiveOnce()
	arch.wantReplica(all, "archive replica")

	var st struct {
		Running bool
		LastSeq uint64 `json:"last_seq"`
		Spool   struct {
			SealedSegments int `json:"sealed_segments"`
		}
		Targets []struct {
			Name        string
			ReceivedSeq uint64 `json:"received_seq"`
			LagRecords  uint64 `json:"lag_records"`
			LagBytes    int64  `json:"lag_bytes"`
			LastError   string `json:"last_error"`
		}
	}
	out := mustFerry(t, nil, "status", "--spool", s.spool, "--json")
	if err := json.Unmarshal([]byte(out.Stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Running || st.LastSeq != 25000 || st.Spool.SealedSegments == 0 || len(st.Targets) != 2 {
		t.Fatalf("status after the run: %+v\n%s", st, out.Stdout)
	}
	for _, tg := range st.Targets {
		switch tg.Name {
		case "store":
			if tg.ReceivedSeq != 5000 || tg.LagRecords != 20000 || tg.LagBytes <= 0 || tg.LastError == "" {
				t.Errorf("link target status %+v: want received 5000, 20000 records behind and the connection error", tg)
			}
		case archive:
			if tg.ReceivedSeq != 25000 || tg.LagBytes != 0 || tg.LastError != "" {
				t.Errorf("archive target status %+v: want everything received", tg)
			}
		default:
			t.Errorf("unexpected target %q", tg.Name)
		}
	}
	table := mustFerry(t, nil, "status", "--spool", s.spool).Stdout
	if !strings.Contains(table, "not running") || !strings.Contains(table, "tcp://"+addr) || strings.Contains(table, linkToken) {
		t.Errorf("status table:\n%s", table)
	}

	// The receiver comes back; the next run sends what waited.
	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	if r := ship(strings.NewReader("")); r.Code != 0 {
		t.Fatalf("ship after the receiver came back:\n%s", r)
	}
	ferrytest.Eventually(t, 30*time.Second, "link replica complete", func() (bool, string) {
		got := s.readReplica()
		return bytes.Equal(got, all), fmt.Sprintf("%d of %d bytes", len(got), len(all))
	})
	recv.Terminate(10 * time.Second)
	if a, b := len(lsSegments(t, archive, s.name)), len(lsSegments(t, filepath.Join(s.state, "inbox"), s.name)); a != b {
		t.Errorf("archive holds %d segments, the inbox %d", a, b)
	}
}

func lsSegments(t *testing.T, store, stream string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(store, stream))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg.zst") {
			out = append(out, e.Name())
		}
	}
	return out
}

// Connections cut in the middle of segments: the shipper reconnects and
// resumes, the receiver stores only whole segments, and the replica is
// byte-identical; then the receiver is killed -9 mid-stream and restarted.
func TestLinkCutMidSegmentAndReceiverRestart(t *testing.T) {
	t.Parallel()
	s := newStream(t, "cut")
	addr := ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	proxy := ferrytest.StartProxy(t, addr)
	proxy.CutAfter(20_000)
	data := logLines(24, 1, 40000)
	go func() {
		time.Sleep(3 * time.Second)
		proxy.CutAfter(0)
	}()
	mustFerry(t, bytes.NewReader(data), "ship", "--store", "tcp://"+proxy.Addr(), "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "256KiB", "--shutdown-timeout", "60s")
	if proxy.Cuts() == 0 {
		t.Fatal("the proxy never cut a connection")
	}
	t.Logf("%d connections cut mid-stream", proxy.Cuts())

	// Receiver killed -9 while it applies, then restarted: the rest arrives.
	ferrytest.Eventually(t, 30*time.Second, "receiver applying", func() (bool, string) {
		return s.checkpointSeq() > 0, "checkpoint still 0"
	})
	recv.Kill9()
	more := logLines(25, 40001, 10000)
	shipper := startFerry(t, bytes.NewReader(more), "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "256KiB", "--shutdown-timeout", "60s")
	time.Sleep(500 * time.Millisecond)
	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	if code, ok := shipper.Wait(60 * time.Second); !ok || code != 0 {
		t.Fatalf("shipper across the receiver's restart: exit %d (finished %t):\n%s", code, ok, shipper)
	}
	all := append(append([]byte(nil), data...), more...)
	ferrytest.Eventually(t, 30*time.Second, "replica complete", func() (bool, string) {
		got := s.readReplica()
		if !bytes.HasPrefix(all, got) {
			t.Fatalf("replica is not a prefix of the input: %s", describeDiff(all, got))
		}
		return bytes.Equal(got, all), fmt.Sprintf("%d of %d bytes", len(got), len(all))
	})
	recv.Terminate(10 * time.Second)
	mustFerry(t, nil, "verify", "--store", filepath.Join(s.state, "inbox"), "--stream", s.name)
}

// tcp.inbox_keep prunes a link receiver's inbox once segments are applied,
// keeping the newest few: the inbox verifies, and a shipper on a fresh
// spool still continues the stream from the newest segment.
func TestLinkInboxPruned(t *testing.T) {
	t.Parallel()
	s := newStream(t, "pruned")
	addr := ferrytest.FreeAddr(t)
	cfg := filepath.Join(s.dir, "recv.toml")
	if err := os.WriteFile(cfg, []byte("[tcp]\ninbox_keep = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	recv := startReceiver(t, s, addr, "--config", cfg, "--insecure", "--token", linkToken)
	first, second := logLines(27, 1, 20000), logLines(27, 20001, 5000)
	mustFerry(t, bytes.NewReader(first), "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "32KiB")
	inbox := filepath.Join(s.state, "inbox")
	ferrytest.Eventually(t, 30*time.Second, "applied and pruned to 2 segments", func() (bool, string) {
		n := len(lsSegments(t, inbox, s.name))
		return bytes.Equal(s.readReplica(), first) && n == 2, fmt.Sprintf("%d segments in the inbox", n)
	})
	mustFerry(t, nil, "verify", "--store", inbox, "--stream", s.name)
	// A fresh spool continues from the newest segment, still in the inbox.
	mustFerry(t, bytes.NewReader(second), "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", filepath.Join(s.dir, "spool2"), "--max-bytes", "32KiB")
	all := append(append([]byte(nil), first...), second...)
	ferrytest.Eventually(t, 30*time.Second, "replica complete", func() (bool, string) {
		got := s.readReplica()
		return bytes.Equal(got, all), fmt.Sprintf("%d of %d bytes", len(got), len(all))
	})
	recv.Terminate(10 * time.Second)
	failFerry(t, nil, []string{"tcp.inbox_keep"}, "receive", "--config", writeFile(t, "bad.toml", "[tcp]\ninbox_keep = -1\n"),
		"--listen", ferrytest.FreeAddr(t), "--insecure", "--token", linkToken, "--stream", "x", "--state", t.TempDir(), "--apply", "stdout")
}
