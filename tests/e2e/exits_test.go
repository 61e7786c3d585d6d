//go:build linux

package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
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

// retryConfig writes a config that retries fast, for runs that must give
// up (or recover) within a test's time.
func retryConfig(t *testing.T, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "receive.toml")
	body := "[receive]\nretry_min = \"100ms\"\nretry_max = \"400ms\"\n" + extra
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startReceiving starts a receiver (no --once) on s's store into its
// replica, polling fast.
func startReceiving(t *testing.T, s *stream) *ferrytest.Process {
	t.Helper()
	return startFerry(t, nil, s.receiveArgs("--poll-min", "20ms", "--poll-max", "100ms")...)
}

// waitReplica waits until s's replica holds want, failing if p exits.
func waitReplica(t *testing.T, s *stream, p *ferrytest.Process, want []byte) {
	t.Helper()
	ferrytest.Eventually(t, 30*time.Second, "replica applied", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("receiver exited:\n%s", p)
		}
		got := s.readReplica()
		return string(got) == string(want), fmt.Sprintf("%d of %d bytes", len(got), len(want))
	})
}

// waitExit waits for p to exit on its own and returns its code.
func waitExit(t *testing.T, p *ferrytest.Process, within time.Duration, what string) int {
	t.Helper()
	code, ok := p.Wait(within)
	if !ok {
		t.Fatalf("%s: still running after %s:\n%s", what, within, p)
	}
	return code
}

func wantOutput(t *testing.T, out string, what ...string) {
	t.Helper()
	for _, w := range what {
		if !strings.Contains(out, w) {
			t.Errorf("output does not mention %q:\n%s", w, ferrytest.Clip(out))
		}
	}
}

// A replica truncated under a running receiver stops it with a non-zero
// exit naming the file and both sizes; nothing is written into the hole.
func TestReceiverStopsOnTruncatedReplica(t *testing.T) {
	t.Parallel()
	s := newStream(t, "trunc")
	first := logLines(61, 1, 200)
	s.ship(first)
	recv := startReceiving(t, s)
	waitReplica(t, s, recv, first)
	if err := os.Truncate(s.replica, 0); err != nil {
		t.Fatal(err)
	}
	s.ship(logLines(61, 201, 100))
	code := waitExit(t, recv, 30*time.Second, "receiver after its replica was truncated")
	if code == 0 {
		t.Fatalf("receiver exited 0 after its replica was truncated:\n%s", recv)
	}
	wantOutput(t, recv.Stderr(), s.replica, "is 0 bytes", fmt.Sprintf("ferry left it at %d", len(first)), "truncated")
	if got := s.readReplica(); len(got) != 0 {
		t.Fatalf("replica is %d bytes after the refused append, want it left empty (no NUL hole)", len(got))
	}
	if cp := s.checkpointSeq(); cp != 200 {
		t.Fatalf("checkpoint at seq %d, want 200", cp)
	}
}

// receive --once gives up on a persistent error within its once_timeout,
// non-zero, naming the error.
func TestReceiveOnceGivesUp(t *testing.T) {
	t.Parallel()
	const budget = 2 * time.Second
	within := func(t *testing.T, r ferrytest.Result) {
		t.Helper()
		t.Logf("exit %d after %s (once_timeout %s)", r.Code, r.Elapsed.Round(time.Millisecond), budget)
		if r.Code == 0 {
			t.Fatalf("want a non-zero exit:\n%s", r)
		}
		if r.Elapsed > budget+15*time.Second {
			t.Errorf("took %s, far past its %s budget", r.Elapsed, budget)
		}
	}

	t.Run("unreachable s3", func(t *testing.T) {
		t.Parallel()
		s := newStream(t, "s3down")
		cfg := retryConfig(t, fmt.Sprintf("[s3]\nendpoint = \"http://%s\"\nregion = \"us-east-1\"\npath_style = true\n", ferrytest.FreeAddr(t)))
		env := append(os.Environ(), "AWS_ACCESS_KEY_ID=ferrytest", "AWS_SECRET_ACCESS_KEY=ferrytest-secret", "AWS_EC2_METADATA_DISABLED=true")
		r := ferrytest.Cmd{Bin: ferryBin, Env: env}.Run(t, nil, "receive", "--config", cfg, "--store", "s3://bucket/prefix", "--stream", s.name,
			"--state", s.state, "--apply", "file:"+s.replica, "--once", "--once-timeout", budget.String())
		within(t, r)
		wantOutput(t, r.Stderr, "gave up retrying", "connection refused")
	})

	t.Run("exec fails", func(t *testing.T) {
		t.Parallel()
		s := newStream(t, "execfails")
		s.ship(logLines(62, 1, 10))
		r := ferry(t, nil, "receive", "--config", retryConfig(t, ""), "--store", s.store, "--stream", s.name, "--state", s.state,
			"--apply", "exec:exit 3", "--once", "--once-timeout", budget.String())
		within(t, r)
		wantOutput(t, r.Stderr, "gave up retrying", "exit status 3", "exec:")
	})

	t.Run("full disk", func(t *testing.T) {
		t.Parallel()
		s := newStream(t, "fulldisk")
		data := logLines(63, 1, 3000) // ~500 KiB, more than the file system holds
		s.ship(data)
		small := filepath.Join(s.dir, "small")
		mountTmpfs(t, small, 128<<10)
		s.replica = filepath.Join(small, "replica.out")
		r := ferry(t, nil, s.receiveArgs("--config", retryConfig(t, ""), "--once", "--once-timeout", budget.String())...)
		within(t, r)
		wantOutput(t, r.Stderr, "gave up retrying", "no space left on device", s.replica)
		// What was applied is checkpointed, and the replica is a prefix.
		if got := s.readReplica(); string(data[:len(got)]) != string(got) {
			t.Fatalf("replica is not a prefix of the data: %s", describeDiff(data, got))
		}
	})
}

// alive reports whether pid is a running process (a zombie is not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: comm may hold spaces, so look after the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// exec_timeout kills a hung exec: command with its process group (the
// grandchild it started too) and retries the segment.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	s := newStream(t, "exectimeout")
	data := logLines(64, 1, 20)
	s.ship(data)
	out := t.TempDir()
	q := func(name string) string { return strconv.Quote(filepath.Join(out, name)) }
	cmd := fmt.Sprintf(`if [ ! -e %s ]; then : >%s; sh -c 'echo $$ >%s; exec sleep 60' & sleep 60; fi; cat >%s`,
		q("tried"), q("tried"), q("grandchild"), q("applied"))
	r := ferry(t, nil, "receive", "--config", retryConfig(t, ""), "--store", s.store, "--stream", s.name, "--state", s.state,
		"--apply", "exec:"+cmd, "--exec-timeout", "1s", "--once")
	t.Logf("exit %d after %s (exec_timeout 1s)", r.Code, r.Elapsed.Round(time.Millisecond))
	if r.Code != 0 {
		t.Fatalf("want the retried segment applied and exit 0:\n%s", r)
	}
	wantOutput(t, r.Stderr, "still running after exec_timeout 1s")
	applied, err := os.ReadFile(filepath.Join(out, "applied"))
	if err != nil || string(applied) != string(data) {
		t.Fatalf("the retry applied %d bytes (%v), want the %d of the segment", len(applied), err, len(data))
	}
	raw, err := os.ReadFile(filepath.Join(out, "grandchild"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 5*time.Second, "the grandchild gone", func() (bool, string) {
		return !alive(pid), fmt.Sprintf("pid %d still running", pid)
	})
}

// A signal that stops a run before its work is done exits 128+signo: 143
// for SIGTERM, 130 for SIGINT. A service (receive without --once) stopped
// by SIGTERM exits 0.
func TestSignalMidWorkExitsNonZero(t *testing.T) {
	t.Parallel()
	// hung is an exec: applier that marks its start and hangs.
	hung := func(t *testing.T) (spec, mark string) {
		mark = filepath.Join(t.TempDir(), "started")
		return "exec:: >" + strconv.Quote(mark) + "; sleep 60", mark
	}
	started := func(t *testing.T, p *ferrytest.Process, mark string) {
		t.Helper()
		ferrytest.Eventually(t, 30*time.Second, "the work to start", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("exited before the signal:\n%s", p)
			}
			_, err := os.Stat(mark)
			return err == nil, "not yet"
		})
	}
	for _, tc := range []struct {
		verb string
		sig  syscall.Signal
		want int
	}{
		{"receive --once", syscall.SIGTERM, 143},
		{"receive --once", syscall.SIGINT, 130},
		{"restore", syscall.SIGTERM, 143},
	} {
		t.Run(fmt.Sprintf("%s %v", tc.verb, tc.sig), func(t *testing.T) {
			t.Parallel()
			s := newStream(t, "sig")
			s.ship(logLines(65, 1, 10))
			spec, mark := hung(t)
			args := []string{"receive", "--once"}
			if tc.verb == "restore" {
				args = []string{"restore"}
			}
			args = append(args, "--store", s.store, "--stream", s.name, "--state", s.state, "--apply", spec)
			p := startFerry(t, nil, args...)
			started(t, p, mark)
			start := time.Now()
			p.Signal(tc.sig)
			code := waitExit(t, p, 10*time.Second, "after the signal")
			t.Logf("exit %d %s after the signal", code, time.Since(start).Round(time.Millisecond))
			if code != tc.want {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.want, p)
			}
			wantOutput(t, p.Stderr(), "stopped by "+map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT"}[tc.sig])
		})
	}

	t.Run("ship from stdin before EOF", func(t *testing.T) {
		t.Parallel()
		s := newStream(t, "sigship")
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pw.Close()
		p := startFerry(t, pr, s.shipArgs("--max-age", "50ms")...)
		pr.Close()
		lines := logLines(66, 1, 5)
		if _, err := pw.Write(lines); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 30*time.Second, "a segment stored", func() (bool, string) {
			return len(s.segments()) > 0, "none yet"
		})
		code := p.Terminate(30 * time.Second)
		if code != 143 {
			t.Fatalf("exit %d, want 143:\n%s", code, p)
		}
		wantOutput(t, p.Stderr(), "stopped by SIGTERM", "before the end of stdin")
		s.receiveOnce()
		s.wantReplica(lines, "the records read before the signal")
	})

	t.Run("fetch", func(t *testing.T) {
		t.Parallel()
		cfg := retryConfig(t, fmt.Sprintf("[s3]\nendpoint = \"http://%s\"\nregion = \"us-east-1\"\npath_style = true\n", ferrytest.FreeAddr(t)))
		env := append(os.Environ(), "AWS_ACCESS_KEY_ID=ferrytest", "AWS_SECRET_ACCESS_KEY=ferrytest-secret", "AWS_EC2_METADATA_DISABLED=true")
		p := ferrytest.Cmd{Bin: ferryBin, Env: env}.Start(t, nil, "fetch", "--config", cfg, "--store", "s3://bucket/prefix", "--stream", "app",
			"000000010000000100000001", filepath.Join(t.TempDir(), "wal"))
		ferrytest.Eventually(t, 30*time.Second, "fetch retrying", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("fetch exited before the signal:\n%s", p)
			}
			return strings.Contains(p.Stderr(), "retrying"), "no retry yet"
		})
		if code := p.Terminate(10 * time.Second); code != 143 {
			t.Fatalf("exit %d, want 143:\n%s", code, p)
		}
	})

	// A signal while the shipper opens its spool and targets (here an S3
	// endpoint that accepts connections and never answers) ends the open:
	// stdin exits 143 saying nothing was read, a service (tail:) exits 0.
	// Before, the signal came before any handler and killed the process.
	for _, src := range []string{"stdin", "tail"} {
		t.Run("ship while opening its targets, "+src, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 16)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- c // held open, never answered
				}
			}()
			defer func() {
				for {
					select {
					case c := <-accepted:
						c.Close()
					default:
						return
					}
				}
			}()
			dir := t.TempDir()
			env := append(os.Environ(), "AWS_ENDPOINT_URL_S3=http://"+ln.Addr().String(), "AWS_ACCESS_KEY_ID=ferrytest",
				"AWS_SECRET_ACCESS_KEY=ferrytest-secret", "AWS_EC2_METADATA_DISABLED=true")
			args := []string{"ship", "--store", "s3://bucket/prefix", "--stream", "app", "--spool", filepath.Join(dir, "spool")}
			var stdin io.Reader = strings.NewReader("one line\n")
			if src == "tail" {
				log := filepath.Join(dir, "app.log")
				if err := os.WriteFile(log, []byte("one line\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				args, stdin = append(args, "--source", "tail:"+log), nil
			}
			p := ferrytest.Cmd{Bin: ferryBin, Env: env}.Start(t, stdin, args...)
			select {
			case c := <-accepted:
				accepted <- c
			case <-time.After(30 * time.Second):
				t.Fatalf("ferry ship never connected to the S3 endpoint:\n%s", p)
			}
			time.Sleep(200 * time.Millisecond) // inside the request
			if p.Exited() {
				t.Fatalf("exited before the signal:\n%s", p)
			}
			start := time.Now()
			p.Signal(syscall.SIGTERM)
			code := waitExit(t, p, 10*time.Second, "after the signal")
			t.Logf("exit %d %s after the signal", code, time.Since(start).Round(time.Millisecond))
			want := map[string]int{"stdin": 143, "tail": 0}[src]
			if code != want {
				t.Fatalf("exit %d, want %d (-1: killed by the signal):\n%s", code, want, p)
			}
			if src == "stdin" {
				wantOutput(t, p.Stderr(), "stopped by SIGTERM", "stopped while opening the spool", "nothing was read from stdin")
			} else {
				wantOutput(t, p.Stderr(), "stopped while opening the spool and the targets")
			}
		})
	}

	t.Run("receive service", func(t *testing.T) {
		t.Parallel()
		s := newStream(t, "sigsvc")
		data := logLines(67, 1, 10)
		s.ship(data)
		p := startReceiving(t, s)
		waitReplica(t, s, p, data)
		if code := p.Terminate(10 * time.Second); code != 0 {
			t.Fatalf("a receiver stopped as a service exited %d, want 0:\n%s", code, p)
		}
	})
}

// A state dir removed under a running receiver stops it at the next
// checkpoint, non-zero, naming the dir.
func TestReceiverStopsWhenStateDirRemoved(t *testing.T) {
	t.Parallel()
	s := newStream(t, "stategone")
	first := logLines(68, 1, 50)
	s.ship(first)
	recv := startReceiving(t, s)
	waitReplica(t, s, recv, first)
	// Gone at once: os.RemoveAll empties the dir before it removes it,
	// and a save in between rightly names the checkpoint file instead.
	gone := s.state + ".gone"
	if err := os.Rename(s.state, gone); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	s.ship(logLines(68, 51, 50))
	code := waitExit(t, recv, 30*time.Second, "receiver after its state dir was removed")
	if code == 0 {
		t.Fatalf("receiver exited 0 after its state dir was removed:\n%s", recv)
	}
	wantOutput(t, recv.Stderr(), "state dir "+s.state+" was removed")
}

// A damaged newest checkpoint slot is logged, naming the file and the
// slot, when the other is used; the replica still gets every record once.
func TestDamagedNewestCheckpointSlotLogged(t *testing.T) {
	t.Parallel()
	s := newStream(t, "slot")
	var all []byte
	for i := range 3 {
		batch := logLines(69, i*20+1, 20)
		all = append(all, batch...)
		s.ship(batch)
		s.receiveOnce()
	}
	path := filepath.Join(s.state, "checkpoint.ferry")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	slotSize := int(binary.BigEndian.Uint32(raw[12:]))
	counter := func(i int) uint64 { return binary.BigEndian.Uint64(raw[4096+i*slotSize+8:]) }
	newest := 0
	if counter(1) > counter(0) {
		newest = 1
	}
	raw[4096+newest*slotSize+30] ^= 0xff // in the payload: the checksum fails
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	more := logLines(69, 61, 20)
	all = append(all, more...)
	s.ship(more)
	r := s.receiveOnce()
	wantOutput(t, r.Stderr, "checkpoint slot damaged", path, fmt.Sprintf("slot %d: checksum mismatch", newest))
	s.wantReplica(all, "after a start from the older slot")
}
