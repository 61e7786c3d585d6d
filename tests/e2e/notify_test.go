package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// notifySocket is a systemd notification socket as a test plays systemd:
// a unix datagram socket whose messages arrive on msgs.
type notifySocket struct {
	addr string // what NOTIFY_SOCKET is set to
	msgs chan string
}

// listenNotify binds a datagram socket at a path, or in the abstract
// namespace if abstract (NOTIFY_SOCKET="@name"), as systemd may use either.
func listenNotify(t *testing.T, abstract bool) *notifySocket {
	t.Helper()
	var name, env string
	if abstract {
		env = fmt.Sprintf("@ferry-e2e-notify-%d-%d", os.Getpid(), time.Now().UnixNano())
		name = env // Go maps a leading @ to the abstract namespace
	} else {
		// A short path: a socket path has a 108-byte limit.
		dir, err := os.MkdirTemp("", "sdn")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		name = filepath.Join(dir, "notify")
		env = name
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &notifySocket{addr: env, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	return s
}

// next waits up to within for the next message, failing the test if none
// comes.
func (s *notifySocket) next(t *testing.T, p *ferrytest.Process, within time.Duration) string {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(within):
		t.Fatalf("no notification within %s:\n%s", within, p)
		return ""
	}
}

// checkNotify runs a long-running verb as a Type=notify unit with
// WatchdogSec=1 would: it must send READY=1 once, WATCHDOG=1 about every
// half second while it runs, STOPPING=1 on SIGTERM, and exit 0.
func checkNotify(t *testing.T, abstract bool, args ...string) {
	t.Helper()
	sock := listenNotify(t, abstract)
	env := append(os.Environ(), "NOTIFY_SOCKET="+sock.addr, "WATCHDOG_USEC=1000000")
	p := ferrytest.Cmd{Bin: ferryBin, Env: env}.Start(t, nil, args...)
	if m := sock.next(t, p, 60*time.Second); m != "READY=1" {
		t.Fatalf("first notification %q, want READY=1:\n%s", m, p)
	}
	start := time.Now()
	for i := 0; i < 3; i++ {
		if m := sock.next(t, p, 10*time.Second); m != "WATCHDOG=1" {
			t.Fatalf("notification %q after READY=1, want WATCHDOG=1:\n%s", m, p)
		}
	}
	// Pings at half of WATCHDOG_USEC: three take about 1.5s. Generous
	// bounds for a loaded machine; too fast would mean a wrong interval.
	if el := time.Since(start); el < time.Second || el > 8*time.Second {
		t.Errorf("3 watchdog pings took %s, want about 1.5s (every WATCHDOG_USEC/2)", el)
	}
	p.Signal(syscall.SIGTERM)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-sock.msgs:
			if m == "WATCHDOG=1" {
				continue // pings go on through the drain
			}
			if m != "STOPPING=1" {
				t.Fatalf("notification %q after SIGTERM, want STOPPING=1:\n%s", m, p)
			}
		case <-deadline:
			t.Fatalf("no STOPPING=1 within 30s of SIGTERM:\n%s", p)
		}
		break
	}
	if code, ok := p.Wait(30 * time.Second); !ok || code != 0 {
		t.Fatalf("after SIGTERM: exited %v, code %d, want 0:\n%s", ok, code, p)
	}
	for len(sock.msgs) > 0 {
		if m := <-sock.msgs; m != "WATCHDOG=1" {
			t.Errorf("notification %q after STOPPING=1", m)
		}
	}
}

// ferry ship and ferry receive, run by systemd as Type=notify units with a
// watchdog, say when they are ready, ping the watchdog and say when they
// stop; the socket may be a path or abstract.
func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	s := newStream(t, "notify")
	log := filepath.Join(s.dir, "app.log")
	if err := os.WriteFile(log, []byte("one\ntwo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("ship", func(t *testing.T) {
		checkNotify(t, false, s.shipArgs("--source", "tail:"+log, "--max-age", "50ms")...)
	})
	t.Run("receive", func(t *testing.T) {
		checkNotify(t, true, s.receiveArgs("--poll-max", "200ms")...)
		if got := string(readFile(t, s.replica)); got != "one\ntwo\n" {
			t.Errorf("replica %q, want the two lines shipped", got)
		}
	})
	t.Run("sync", func(t *testing.T) {
		dir := t.TempDir()
		tree := filepath.Join(dir, "tree")
		os.Mkdir(tree, 0o755)
		conf := filepath.Join(dir, "sync.toml")
		os.WriteFile(conf, []byte(fmt.Sprintf(`store = %q
[site]
id = "a"
[sync]
data = "dir:%s"
spool = %q
state = %q
[[sync.peers]]
id = "b"
`, filepath.Join(dir, "store"), tree, filepath.Join(dir, "spool"), filepath.Join(dir, "state"))), 0o644)
		checkNotify(t, false, "sync", "--config", conf)
	})
}

// A SIGHUP reload follows systemd's reload protocol: RELOADING=1 with
// MONOTONIC_USEC (CLOCK_MONOTONIC in µs: since boot, so below the wall
// clock's µs since 1970: at most the host's uptime), then READY=1 once
// done, for a reload applied and for one refused alike.
func TestSystemdNotifyReload(t *testing.T) {
	t.Parallel()
	s := newStream(t, "notifyreload")
	l := newLiveShip(t, s.dir)
	cfg := func(store, maxAge string) string {
		return fmt.Sprintf("stream = %q\nstore = %q\n[ship]\nspool = %q\nsource = \"tail:%s\"\nmax_age = %q\n", s.name, store, s.spool, l.logPath, maxAge)
	}
	l.write(cfg(s.store, "1s"))
	sock := listenNotify(t, false)
	p := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "NOTIFY_SOCKET="+sock.addr)}.Start(t, nil, "ship", "--config", l.cfgPath)
	if m := sock.next(t, p, 60*time.Second); m != "READY=1" {
		t.Fatalf("first notification %q, want READY=1:\n%s", m, p)
	}
	for _, step := range []struct{ body, log string }{
		{cfg(s.store, "300ms"), "changed=ship.max_age"},
		{cfg(filepath.Join(s.dir, "elsewhere"), "300ms"), "restart to change store"},
	} {
		l.write(step.body)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		m := sock.next(t, p, 15*time.Second)
		state, usec, ok := strings.Cut(m, "\nMONOTONIC_USEC=")
		if !ok || state != "RELOADING=1" {
			t.Fatalf("notification %q on SIGHUP, want RELOADING=1 and MONOTONIC_USEC=:\n%s", m, p)
		}
		mono, err := strconv.ParseInt(usec, 10, 64)
		uptime := readUptime(t)
		if err != nil || mono <= 0 || float64(mono)/1e6 > uptime+1 {
			t.Errorf("MONOTONIC_USEC=%s: want CLOCK_MONOTONIC in µs, at most the uptime %.0fs", usec, uptime)
		}
		if m := sock.next(t, p, 15*time.Second); m != "READY=1" {
			t.Fatalf("notification %q after RELOADING=1, want READY=1:\n%s", m, p)
		}
		// The log line is written before READY=1, but reaches the test
		// through a pipe that may lag the socket.
		ferrytest.Eventually(t, 5*time.Second, "the reload's log line "+step.log, func() (bool, string) {
			return strings.Contains(p.Stderr(), step.log), ferrytest.Clip(p.Stderr())
		})
	}
	if code := p.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p)
	}
}

// readUptime is the host's uptime in seconds (CLOCK_BOOTTIME; close to
// CLOCK_MONOTONIC unless the host has been suspended).
func readUptime(t *testing.T) float64 {
	t.Helper()
	var up float64
	if _, err := fmt.Sscan(string(readFile(t, "/proc/uptime")), &up); err != nil {
		t.Fatal(err)
	}
	return up
}
