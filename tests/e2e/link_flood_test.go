package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
)

// Hostile peers, for the tests of the receiver's limits on connections that
// have not authenticated: they speak just enough of the link protocol
// (docs/PROTOCOL.md "Frames") to hold a connection open.

// floodKind is what one hostile connection does.
type floodKind int

const (
	floodIdle       floodKind = iota // TCP connect, then nothing
	floodSlowTLS                     // the first bytes of a TLS record, then nothing
	floodSlowHello                   // TLS, then a HELLO's header and part of it, dribbled
	floodBigHello                    // TLS, then 59 KB of a HELLO claiming 60 KB, then nothing
	floodWrongToken                  // TLS, then a whole HELLO with a wrong token, again and again
	floodKinds
)

func (k floodKind) String() string {
	return [...]string{"idle", "slow-tls", "slow-hello", "big-hello", "wrong-token"}[k]
}

// attackerSource is the loopback address hostile connection i comes from:
// 127.0.0.2 to 127.0.0.9, so that it is not the shipper's 127.0.0.1 (an
// attacker elsewhere on the network).
func attackerSource(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%8))}
}

// linkFrame encodes one link frame: u32 length, type, payload, CRC-32C.
func linkFrame(typ byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	b = append(b, typ)
	b = append(b, payload...)
	sum := crc32.Update(crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), []byte{typ}), crc32.MakeTable(crc32.Castagnoli), payload)
	return binary.BigEndian.AppendUint32(b, sum)
}

// hostileHello is a HELLO with a wrong token and a client id of escape
// sequences and padding, which the receiver must not copy into its log.
func hostileHello(stream string) []byte {
	js, _ := json.Marshal(map[string]any{"version": 1, "minor": 1, "stream": stream, "generation": 1,
		"token":     "not-the-token-" + strings.Repeat("x", 40),
		"client_id": "\x1b[2J\x1b[31mFAKE LOG LINE\n" + strings.Repeat("A", 200)})
	return linkFrame(0x01, js)
}

// attack opens one hostile connection of kind k from src to addr and
// holds it until the receiver closes it, stop is closed, or hold passes.
// It reports whether the connection got as far as its kind goes (a TLS
// handshake the receiver answered, a HELLO written).
func attack(k floodKind, src *net.TCPAddr, addr, stream string, stop <-chan struct{}, hold time.Duration) bool {
	d := net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer nc.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
		case <-done:
		case <-time.After(hold):
		}
		nc.Close()
	}()
	var conn net.Conn = nc
	switch k {
	case floodIdle:
	case floodSlowTLS:
		if _, err := nc.Write([]byte{0x16, 0x03, 0x01}); err != nil {
			return false
		}
	default:
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err := tc.Handshake(); err != nil {
			return false
		}
		conn = tc
	}
	switch k {
	case floodSlowHello:
		// A HELLO small enough for any receiver, sent a byte at a time.
		if _, err := conn.Write([]byte{0, 0, 0x0f, 0xa0, 0x01, '{'}); err != nil {
			return false
		}
		for {
			select {
			case <-stop:
				return true
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := conn.Write([]byte{' '}); err != nil {
				return true
			}
		}
	case floodBigHello:
		msg := append([]byte{0, 0, 0xea, 0x60, 0x01}, bytes.Repeat([]byte{' '}, 59000)...)
		if _, err := conn.Write(msg); err != nil {
			return false
		}
	case floodWrongToken:
		if _, err := conn.Write(hostileHello(stream)); err != nil {
			return false
		}
	}
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			return true
		}
	}
}

// flood keeps n hostile connections going against addr, of every kind in
// turn, each reconnecting once the receiver closes it, until the returned
// stop function is called; stop waits for them and returns how many
// connections were opened.
func flood(t *testing.T, addr, stream string, n int) (stop func() int64) {
	t.Helper()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	var opened atomic.Int64
	for i := range n {
		wg.Go(func() {
			k := floodKind(i % int(floodKinds))
			for {
				select {
				case <-quit:
					return
				default:
				}
				start := time.Now()
				attack(k, attackerSource(i), addr, stream, quit, time.Minute)
				opened.Add(1)
				// Closed at once: wait a little before the next, so the
				// flood does not take all of this machine's CPU.
				if time.Since(start) < 200*time.Millisecond {
					select {
					case <-quit:
					case <-time.After(200 * time.Millisecond):
					}
				}
			}
		})
	}
	var once sync.Once
	return func() int64 {
		once.Do(func() { close(quit) })
		wg.Wait()
		return opened.Load()
	}
}

// pidOf finds the ferry process whose command line has arg (a test's own
// temp dir): prlimit runs it under its own pid, which ferrytest does not
// expose.
func pidOf(t *testing.T, arg string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if filepath.Base(args[0]) == "ferry" && len(args) > 1 && args[1] == "receive" && strings.Contains(string(cmdline), "\x00"+arg+"\x00") {
			return pid
		}
	}
	t.Fatalf("no ferry receive process with argument %s", arg)
	return 0
}

// procStatus reads a kB field (VmHWM, VmRSS) of /proc/PID/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status %s: %v", pid, field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// openFDs counts the descriptors process pid has open.
func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// startTLSReceiver starts `ferry receive --listen addr` with TLS and a
// token, under `prlimit --nofile=N` when nofile > 0, and waits until it
// accepts connections.
func startTLSReceiver(t *testing.T, s *stream, addr string, pki *testpki.PKI, nofile int, token string) *ferrytest.Process {
	t.Helper()
	cert, key := pki.Issue(t, "receiver", true)
	args := []string{"receive", "--listen", addr, "--stream", s.name, "--state", s.state,
		"--apply", "file:" + s.replica, "--poll-min", "20ms", "--poll-max", "100ms",
		"--tls-cert", cert, "--tls-key", key, "--token", token}
	var p *ferrytest.Process
	if nofile > 0 {
		prlimit, err := exec.LookPath("prlimit")
		if err != nil {
			t.Fatalf("prlimit (util-linux) is needed to run the receiver under a low file limit: %v", err)
		}
		p = ferrytest.Cmd{Bin: prlimit}.Start(t, nil, append([]string{fmt.Sprintf("--nofile=%d", nofile), "--", ferryBin}, args...)...)
	} else {
		p = startFerry(t, nil, args...)
	}
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

// checkReceiverLog fails the test if the receiver's log carries what a
// hostile peer sent (escape sequences, a forged line) or has more than
// maxLines lines: a flood must not fill the journal.
func checkReceiverLog(t *testing.T, recv *ferrytest.Process, maxLines int) {
	t.Helper()
	out := recv.Stderr() + recv.Stdout()
	n := strings.Count(out, "\n")
	t.Logf("receiver log: %d lines, %d bytes:\n%s", n, len(out), ferrytest.Clip(out))
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\nFAKE LOG LINE") {
		t.Errorf("a peer's control characters reached the receiver log:\n%s", ferrytest.Clip(out))
	}
	if n > maxLines {
		t.Errorf("the flood made %d log lines, want at most %d:\n%s", n, maxLines, ferrytest.Clip(out))
	}
	for line := range strings.Lines(out) {
		if len(line) > 2048 {
			t.Errorf("a %d-byte log line:\n%.600s...", len(line), line)
			break
		}
	}
	if strings.Contains(out, "too many open files") {
		t.Errorf("the receiver ran out of file descriptors:\n%s", ferrytest.Clip(out))
	}
}

// A receiver with 128 file descriptors, flooded by 240 hostile
// connections that reconnect as soon as they are closed (idle ones, slow
// TLS, slow and oversized HELLOs, wrong tokens), still takes a real
// shipper's segments within seconds and applies them, keeps its log short
// and clean, and is healthy after the flood.
func TestLinkFloodShipperGetsThrough(t *testing.T) {
	s := newStream(t, "flood")
	addr := ferrytest.FreeAddr(t)
	pki := testpki.New(t)
	const token = "flood-test-token-0123456789"
	recv := startTLSReceiver(t, s, addr, pki, 128, token)
	pid := pidOf(t, s.state)

	stop := flood(t, addr, s.name, 240)
	defer stop()
	// Let the flood fill every slot before the shipper comes.
	time.Sleep(3 * time.Second)
	t.Logf("under flood: receiver has %d descriptors open", openFDs(pid))

	ship := func(data []byte, spool string) time.Duration {
		start := time.Now()
		p := startFerry(t, bytes.NewReader(data), "ship", "--store", "tcp://"+addr, "--tls-ca", pki.CAFile, "--token", token,
			"--stream", s.name, "--spool", spool, "--max-bytes", "32KiB", "--ack", "applied", "--shutdown-timeout", "20s")
		if code, ok := p.Wait(40 * time.Second); !ok || code != 0 {
			t.Fatalf("shipper did not get through the flood (exit %d, finished %t, after %s):\n%s\n--- receiver ---\n%s",
				code, ok, time.Since(start).Round(time.Millisecond), p, recv)
		}
		return time.Since(start)
	}
	first := logLines(31, 1, 3000)
	took := ship(first, s.spool)
	s.wantReplica(first, "after shipping under flood")
	t.Logf("under flood: the shipper's %d records were applied (ack applied) %s after it started", 3000, took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("the shipper needed %s to get through the flood, want seconds", took)
	}
	if recv.Exited() {
		t.Fatalf("receiver died under the flood:\n%s", recv)
	}
	fds := openFDs(pid)
	opened := stop()
	t.Logf("flood: %d hostile connections opened; receiver: %d descriptors open, peak RSS %d MiB",
		opened, fds, procStatus(t, pid, "VmHWM")>>20)

	// Healthy afterwards: a second shipper run (a new spool continues
	// from the inbox) goes through, and the inbox verifies.
	second := logLines(31, 3001, 2000)
	took = ship(second, filepath.Join(s.dir, "spool2"))
	s.wantReplica(append(append([]byte(nil), first...), second...), "after the flood")
	t.Logf("after the flood: second shipper run took %s", took.Round(time.Millisecond))
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d on SIGTERM:\n%s", code, recv)
	}
	checkReceiverLog(t, recv, 300)
	mustFerry(t, nil, "verify", "--store", filepath.Join(s.state, "inbox"), "--stream", s.name)
}

// 2000 connections that each send 59 KB of a HELLO claiming 60 KB cost
// the receiver little memory: its peak RSS stays within 64 MiB of what
// it had before them, with TLS and in plaintext.
func TestLinkFloodMemory(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		name := map[bool]string{true: "tls", false: "plaintext"}[useTLS]
		t.Run(name, func(t *testing.T) {
			s := newStream(t, "flood-mem")
			addr := ferrytest.FreeAddr(t)
			const token = "flood-test-token-0123456789"
			var recv *ferrytest.Process
			if useTLS {
				recv = startTLSReceiver(t, s, addr, testpki.New(t), 0, token)
			} else {
				recv = startReceiver(t, s, addr, "--insecure", "--token", token)
			}
			pid := pidOf(t, s.state)
			time.Sleep(500 * time.Millisecond) // settle after start-up
			base := procStatus(t, pid, "VmHWM")

			const conns = 2000
			held := make(chan net.Conn, conns)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			var sent atomic.Int64
			for i := range conns {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					d := net.Dialer{LocalAddr: attackerSource(i), Timeout: 10 * time.Second}
					nc, err := d.Dial("tcp", addr)
					if err != nil {
						return
					}
					held <- nc
					var conn net.Conn = nc
					if useTLS {
						tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
						tc.SetDeadline(time.Now().Add(10 * time.Second))
						if tc.Handshake() != nil {
							return
						}
						conn = tc
					}
					msg := append([]byte{0, 0, 0xea, 0x60, 0x01}, bytes.Repeat([]byte{' '}, 59000)...)
					if _, err := conn.Write(msg); err == nil {
						sent.Add(1)
					}
				})
			}
			wg.Wait()
			time.Sleep(time.Second) // let the receiver read what was sent
			peak := procStatus(t, pid, "VmHWM")
			close(held)
			for nc := range held {
				nc.Close()
			}
			t.Logf("%s: %d connections, %d sent their partial HELLO whole; receiver peak RSS %.1f MiB before, %.1f MiB after (+%.1f MiB)",
				name, conns, sent.Load(), float64(base)/(1<<20), float64(peak)/(1<<20), float64(peak-base)/(1<<20))
			if peak-base > 64<<20 {
				t.Errorf("the receiver's peak RSS grew by %d MiB, want at most 64 MiB", (peak-base)>>20)
			}
			if recv.Exited() {
				t.Fatalf("receiver died:\n%s", recv)
			}
			recv.Terminate(10 * time.Second)
		})
	}
}

// The listener's limits come from [tcp] in the config file: with
// handshake_timeout = "1s" a silent connection is closed after a second,
// and with max_startups = 2 a third from the same address at once.
func TestLinkListenLimitsFromConfig(t *testing.T) {
	t.Parallel()
	s := newStream(t, "limits")
	addr := ferrytest.FreeAddr(t)
	cfg := writeFile(t, "receive.toml",
		"[tcp]\ntoken = \"limits-test-token-0123456789\"\ninsecure = true\nmax_startups = 2\nmax_connections = 4\nhandshake_timeout = \"1s\"\n")
	recv := startReceiver(t, s, addr, "--config", cfg)
	ferrytest.Eventually(t, 5*time.Second, "listener ready", func() (bool, string) {
		out := recv.Stderr()
		return strings.Contains(out, "max_connections=4 max_startups=2 handshake_timeout=1s"), out
	})
	src := attackerSource(0)
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: src}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	// closedAt is when the receiver closed nc (its read ended).
	closedAt := func(nc net.Conn) time.Time {
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		nc.Read(make([]byte, 1))
		return time.Now()
	}
	time.Sleep(300 * time.Millisecond) // the readiness probe's connection is gone
	start := time.Now()
	a, b := dial(), dial()
	time.Sleep(100 * time.Millisecond)
	third := time.Now()
	if took := closedAt(dial()).Sub(third); took > 500*time.Millisecond {
		t.Errorf("a third connection with max_startups = 2 was kept %s", took)
	}
	for _, nc := range []net.Conn{a, b} {
		if took := closedAt(nc).Sub(start); took < 800*time.Millisecond || took > 3*time.Second {
			t.Errorf("a silent connection was closed after %s, want about the 1s handshake_timeout", took)
		}
	}
	recv.Terminate(10 * time.Second)
	if t.Failed() {
		t.Logf("receiver:\n%s", recv)
	}
}
