//go:build linux

package e2e

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// liveShip is a ferry ship --config whose config a test rewrites and
// reloads with SIGHUP, fed through a tailed file.
type liveShip struct {
	t       *testing.T
	cfgPath string
	logPath string
	p       *ferrytest.Process
}

func newLiveShip(t *testing.T, dir string) *liveShip {
	l := &liveShip{t: t, cfgPath: filepath.Join(dir, "ship.toml"), logPath: filepath.Join(dir, "app.log")}
	if err := os.WriteFile(l.logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *liveShip) write(body string) {
	l.t.Helper()
	if err := os.WriteFile(l.cfgPath, []byte(body), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

func (l *liveShip) start(body string) {
	l.write(body)
	l.p = startFerry(l.t, nil, "ship", "--config", l.cfgPath)
}

func (l *liveShip) appendLog(b []byte) {
	l.t.Helper()
	f, err := os.OpenFile(l.logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		l.t.Fatal(err)
	}
}

// reload rewrites the config, sends SIGHUP and waits for the log line want.
func (l *liveShip) reload(body, want string) {
	l.t.Helper()
	before := strings.Count(l.p.Stderr(), want)
	l.write(body)
	if err := l.p.Signal(syscall.SIGHUP); err != nil {
		l.t.Fatal(err)
	}
	ferrytest.Eventually(l.t, 15*time.Second, "log says "+want, func() (bool, string) {
		if l.p.Exited() {
			l.t.Fatalf("SIGHUP stopped the shipper:\n%s", l.p)
		}
		return strings.Count(l.p.Stderr(), want) > before, ferrytest.Clip(l.p.Stderr())
	})
}

// A sending window set by a reload applies at once: outside the windows
// nothing is sent; a reload that opens one drains the backlog; a reload
// back to a closed window stops sending again.
func TestShipReloadWindows(t *testing.T) {
	t.Parallel()
	s := newStream(t, "reloadwin")
	l := newLiveShip(t, s.dir)
	cfg := func(start, duration string) string {
		return fmt.Sprintf("stream = %q\nstore = %q\n[ship]\nspool = %q\nsource = \"tail:%s\"\nmax_age = \"200ms\"\n[[ship.windows]]\nstart = %q\nduration = %q\n",
			s.name, s.store, s.spool, l.logPath, start, duration)
	}
	closed := cfg("0 0 1 1 *", "1m") // one minute a year
	if now := time.Now(); now.Month() == time.January && now.Day() == 1 && now.Hour() == 0 && now.Minute() < 2 {
		closed = cfg("0 0 1 7 *", "1m")
	}
	l.start(closed)
	l.appendLog(logLines(91, 1, 100))
	ferrytest.Eventually(t, 15*time.Second, "the shipper waits outside the window", func() (bool, string) {
		return strings.Contains(l.p.Stderr(), "outside the sending windows"), ferrytest.Clip(l.p.Stderr())
	})
	time.Sleep(1500 * time.Millisecond) // max_age has sealed the records by now
	if segs := s.segments(); len(segs) != 0 {
		t.Fatalf("segments %q sent outside the window", segs)
	}

	l.reload(cfg("* * * * *", "2h"), "reload: schedules applied")
	// "config reloaded" is logged just after the schedules are applied.
	ferrytest.Eventually(t, 5*time.Second, "the reload's log line naming ship.windows", func() (bool, string) {
		return strings.Contains(l.p.Stderr(), "changed=ship.windows"), ferrytest.Clip(l.p.Stderr())
	})
	ferrytest.Eventually(t, 15*time.Second, "the backlog drained once the reload opened a window", func() (bool, string) {
		return len(s.segments()) > 0, fmt.Sprintf("%q", s.segments())
	})

	l.reload(closed, "reload: schedules applied")
	time.Sleep(500 * time.Millisecond) // a segment then on its way may finish
	sent := len(s.segments())
	l.appendLog(logLines(91, 101, 50))
	time.Sleep(2 * time.Second)
	if n := len(s.segments()); n != sent {
		t.Fatalf("%d segments sent after a reload closed the window (had %d)", n, sent)
	}
	l.reload(cfg("* * * * *", "2h"), "reload: schedules applied")
	ferrytest.Eventually(t, 15*time.Second, "the rest sent once a reload opened the window again", func() (bool, string) {
		return len(s.segments()) > sent, fmt.Sprintf("%q", s.segments())
	})
	if code := l.p.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, l.p)
	}
	s.receiveOnce()
	s.wantReplica(append(logLines(91, 1, 100), logLines(91, 101, 50)...), "the records sent in the windows the reloads opened")
}

// A reload of [retention] keep_for is what the next scheduled prune uses.
func TestShipReloadRetention(t *testing.T) {
	t.Parallel()
	s := newStream(t, "reloadret")
	l := newLiveShip(t, s.dir)
	cfg := func(keepFor string) string {
		return fmt.Sprintf("stream = %q\nstore = %q\n[ship]\nspool = %q\nsource = \"tail:%s\"\nmax_age = \"200ms\"\n[retention]\nkeep_for = %q\nschedule = \"@every 1s\"\n",
			s.name, s.store, s.spool, l.logPath, keepFor)
	}
	l.start(cfg("1h"))
	for i := range 3 {
		n := len(s.segments())
		l.appendLog(logLines(92, 1+20*i, 20))
		ferrytest.Eventually(t, 15*time.Second, "one more segment", func() (bool, string) {
			return len(s.segments()) > n, fmt.Sprintf("%q", s.segments())
		})
	}
	// Prunes under keep_for 1h delete nothing.
	before := strings.Count(l.p.Stderr(), "scheduled prune")
	ferrytest.Eventually(t, 15*time.Second, "two scheduled prunes under keep_for 1h", func() (bool, string) {
		return strings.Count(l.p.Stderr(), "scheduled prune") >= before+2, ferrytest.Clip(l.p.Stderr())
	})
	if n := len(s.segments()); n < 3 {
		t.Fatalf("%d segments left under keep_for 1h, want 3 or more", n)
	}

	l.reload(cfg("1s"), "reload: retention applied")
	if !strings.Contains(l.p.Stderr(), "changed=retention.keep_for") {
		t.Errorf("the reload's log line does not name retention.keep_for:\n%s", ferrytest.Clip(l.p.Stderr()))
	}
	ferrytest.Eventually(t, 20*time.Second, "a scheduled prune under the new keep_for 1s leaves the newest segment only", func() (bool, string) {
		return len(s.segments()) == 1, fmt.Sprintf("%q\n%s", s.segments(), ferrytest.Clip(l.p.Stderr()))
	})
	if !strings.Contains(l.p.Stderr(), "keep_for=1s") {
		t.Errorf("no scheduled prune logged keep_for=1s:\n%s", ferrytest.Clip(l.p.Stderr()))
	}
	if code := l.p.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, l.p)
	}
}

// A reload that lowers [tcp] bandwidth_limit paces the link from then on:
// the same amount of data takes measurably longer.
func TestShipReloadBandwidthLimit(t *testing.T) {
	t.Parallel()
	s := newStream(t, "reloadbw")
	addr := ferrytest.FreeAddr(t)
	const token = "reload-link-token-0123"
	recv := startFerry(t, nil, "receive", "--listen", addr, "--insecure", "--token", token,
		"--stream", s.name, "--state", s.state, "--apply", "file:"+s.replica, "--poll-min", "20ms", "--poll-max", "100ms")
	defer recv.Terminate(10 * time.Second)
	ferrytest.Eventually(t, 10*time.Second, "receiver listening", func() (bool, string) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})
	l := newLiveShip(t, s.dir)
	cfg := func(limit string) string {
		return fmt.Sprintf("stream = %q\nstore = \"tcp://%s\"\n[ship]\nspool = %q\nsource = \"tail:%s\"\nmax_age = \"100ms\"\nmax_bytes = \"64KiB\"\n"+
			"[tcp]\ninsecure = true\ntoken = %q\nbandwidth_limit = %q\n", s.name, addr, s.spool, l.logPath, token, limit)
	}
	// Random base64 lines: zstd cannot shrink them much, so the bytes on
	// the wire are close to the bytes written.
	rnd := seededRand(t)
	chunk := func(n int) []byte {
		var b []byte
		raw := make([]byte, 75)
		for len(b) < n {
			for i := range raw {
				raw[i] = byte(rnd.UintN(256))
			}
			b = append(b, base64.StdEncoding.EncodeToString(raw)...)
			b = append(b, '\n')
		}
		return b
	}
	const size = 1 << 20
	var total int
	timed := func(what string) time.Duration {
		t.Helper()
		data := chunk(size)
		total += len(data)
		start := time.Now()
		l.appendLog(data)
		ferrytest.Eventually(t, 90*time.Second, what, func() (bool, string) {
			fi, err := os.Stat(s.replica)
			return err == nil && fi.Size() == int64(total), fmt.Sprint(fi, err)
		})
		return time.Since(start)
	}
	l.start(cfg("64MiB"))
	fast := timed("1 MiB through the link at 64 MiB/s")
	l.reload(cfg("128KiB"), "reload: tcp.bandwidth_limit applied")
	slow := timed("1 MiB through the link at 128 KiB/s")
	t.Logf("1 MiB of random lines: %s at 64 MiB/s, %s after the reload to 128 KiB/s", fast.Round(time.Millisecond), slow.Round(time.Millisecond))
	// 1 MiB at 128 KiB/s is about 6-8s (zstd takes a little off); a load
	// spike slows both, and cannot make the paced one fast.
	if slow < 4*time.Second {
		t.Errorf("1 MiB took %s after lowering bandwidth_limit to 128 KiB/s, want at least 4s", slow)
	}
	if slow < 2*fast {
		t.Errorf("1 MiB took %s after lowering bandwidth_limit, %s before: want it clearly slower", slow, fast)
	}
	if code := l.p.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, l.p)
	}
}
