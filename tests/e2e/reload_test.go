//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// SIGHUP re-reads the config: a new max_age applies to the batch being
// filled and the ones after it; a changed store is refused naming the key,
// and a file that does not parse is refused naming file and line, the
// shipper running on with the config it had. SIGHUP never stops it.
func TestShipReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	s := newStream(t, "reload")
	logPath := filepath.Join(s.dir, "app.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(s.dir, "ship.toml")
	writeCfg := func(store, maxAge, extra string) {
		t.Helper()
		body := fmt.Sprintf("stream = %q\nstore = %q\n%s[ship]\nspool = %q\nsource = \"tail:%s\"\nmax_age = %q\nmax_bytes = \"64MiB\"\n",
			s.name, store, extra, s.spool, logPath, maxAge)
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	appendLog := func(first, n int) {
		t.Helper()
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(logLines(81, first, n)); err != nil {
			t.Fatal(err)
		}
	}
	hup := func(p *ferrytest.Process, wantLog string) {
		t.Helper()
		before := strings.Count(p.Stderr(), wantLog)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 10*time.Second, "log says "+wantLog, func() (bool, string) {
			if p.Exited() {
				t.Fatalf("SIGHUP stopped the shipper:\n%s", p)
			}
			return strings.Count(p.Stderr(), wantLog) > before, ferrytest.Clip(p.Stderr())
		})
	}

	writeCfg(s.store, "1h", "")
	p := startFerry(t, nil, "ship", "--config", cfgPath)
	appendLog(1, 100)
	time.Sleep(2 * time.Second)
	if segs := s.segments(); len(segs) != 0 {
		t.Fatalf("segments %q sealed under max_age 1h", segs)
	}

	writeCfg(s.store, "300ms", "")
	hup(p, "config reloaded")
	if !strings.Contains(p.Stderr(), "changed=ship.max_age") {
		t.Errorf("the reload's log line does not name ship.max_age:\n%s", ferrytest.Clip(p.Stderr()))
	}
	ferrytest.Eventually(t, 10*time.Second, "the open batch sealed by the new max_age", func() (bool, string) {
		return len(s.segments()) == 1, fmt.Sprintf("%q", s.segments())
	})
	appendLog(101, 50)
	ferrytest.Eventually(t, 10*time.Second, "the next batch sealed by the new max_age", func() (bool, string) {
		return len(s.segments()) == 2, fmt.Sprintf("%q", s.segments())
	})

	writeCfg(filepath.Join(s.dir, "other-store"), "300ms", "")
	hup(p, "config reload refused: restart to change store")

	if err := os.WriteFile(cfgPath, []byte("stream = \"x\"\n[ship\nmax_age = \"1s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(p, "config reload refused: keeping the running config")
	if !strings.Contains(p.Stderr(), cfgPath+":2") {
		t.Errorf("the refusal of a broken file does not name file and line (%s:2):\n%s", cfgPath, ferrytest.Clip(p.Stderr()))
	}

	// Still the config it had: this store, max_age 300ms.
	appendLog(151, 50)
	ferrytest.Eventually(t, 10*time.Second, "a third segment in the running store", func() (bool, string) {
		return len(s.segments()) == 3, fmt.Sprintf("%q", s.segments())
	})
	if _, err := os.Stat(filepath.Join(s.dir, "other-store")); err == nil {
		t.Error("the refused store was created")
	}
	if code := p.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("SIGTERM after the reloads: exit %d, want 0:\n%s", code, p)
	}
	s.receiveOnce()
	if got, want := s.readReplica(), append(logLines(81, 1, 100), append(logLines(81, 101, 50), logLines(81, 151, 50)...)...); string(got) != string(want) {
		t.Fatalf("replica: %s", describeDiff(want, got))
	}
}

// SIGHUP does not stop a receiver: it reloads (the log level), and
// refuses a changed store.
func TestReceiveReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	s := newStream(t, "reloadrecv")
	s.ship(logLines(82, 1, 10))
	cfgPath := filepath.Join(s.dir, "receive.toml")
	write := func(store, level string) {
		body := fmt.Sprintf("stream = %q\nstore = %q\nlog_level = %q\n[receive]\nstate = %q\napply = \"file:%s\"\npoll_max = \"500ms\"\n",
			s.name, store, level, s.state, s.replica)
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(s.store, "info")
	p := startFerry(t, nil, "receive", "--config", cfgPath)
	waitReplica(t, s, p, logLines(82, 1, 10))
	for _, step := range []struct{ store, level, want string }{
		{s.store, "debug", "changed=log_level"},
		{filepath.Join(s.dir, "elsewhere"), "debug", "restart to change store"},
	} {
		write(step.store, step.level)
		if err := p.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 10*time.Second, step.want, func() (bool, string) {
			if p.Exited() {
				t.Fatalf("SIGHUP stopped the receiver:\n%s", p)
			}
			return strings.Contains(p.Stderr(), step.want), ferrytest.Clip(p.Stderr())
		})
	}
	if code := p.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0:\n%s", code, p)
	}
}

// A setting the environment gave (FERRY_RECEIVE_POLL_MAX) holds across a
// reload: the variables are gone from the process by then, and a reload
// that read the file alone took the setting for a change and refused it.
func TestReloadKeepsEnvironmentSettings(t *testing.T) {
	t.Parallel()
	s := newStream(t, "reloadenv")
	s.ship(logLines(83, 1, 10))
	cfgPath := filepath.Join(s.dir, "receive.toml")
	write := func(level string) {
		body := fmt.Sprintf("stream = %q\nstore = %q\nlog_level = %q\n[receive]\nstate = %q\napply = \"file:%s\"\n",
			s.name, s.store, level, s.state, s.replica)
		if err := os.WriteFile(cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info")
	p := ferrytest.Cmd{Bin: ferryBin, Env: append(os.Environ(), "FERRY_RECEIVE_POLL_MAX=400ms")}.Start(t, nil, "receive", "--config", cfgPath)
	waitReplica(t, s, p, logLines(83, 1, 10))
	write("debug")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 10*time.Second, "the reload", func() (bool, string) {
		if strings.Contains(p.Stderr(), "reload refused") {
			t.Fatalf("the reload was refused:\n%s", p)
		}
		return strings.Contains(p.Stderr(), "changed=log_level"), ferrytest.Clip(p.Stderr())
	})
	if code := p.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0:\n%s", code, p)
	}
}
