package apply_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// shQuote quotes s for /bin/sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func TestExecEnvironmentAndStdin(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	out := t.TempDir()
	envLog, data := filepath.Join(out, "env"), filepath.Join(out, "data")
	cmd := `printf '%s %s %s %s %s\n' "$FERRY_STREAM" "$FERRY_GENERATION" "$FERRY_FIRST_SEQ" "$FERRY_LAST_SEQ" "$FERRY_SEGMENT" >>` +
		shQuote(envLog) + `; cat >>` + shQuote(data)
	var stderr bytes.Buffer
	cfg := receivertest.Config(t, st, &apply.Exec{Command: cmd, Stderr: &stderr})
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after Run")
	if stderr.Len() > 0 {
		t.Errorf("command wrote to stderr: %s", stderr.String())
	}

	receivertest.WantFile(t, data, receivertest.Want(1, 30), "records on stdin")
	var wantEnv strings.Builder
	for _, s := range segs {
		fmt.Fprintf(&wantEnv, "app 1 %d %d %s\n", s.Meta.FirstSeq, s.Meta.LastSeq, s.Name)
	}
	receivertest.WantFile(t, envLog, []byte(wantEnv.String()), "environment")
}

// A failing command is run again with backoff, and the checkpoint stays
// before its segment until it succeeds.
func TestExecRetriesFailedCommand(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	out := t.TempDir()
	cfg := receivertest.Config(t, st, nil)
	o := shQuote(out)
	// Each run counts itself per segment; the one for 11..20 fails twice,
	// saving the checkpoint as it stood during the failed attempt.
	cmd := `n=$(cat ` + o + `/count.$FERRY_FIRST_SEQ 2>/dev/null || echo 0); n=$((n+1)); echo $n >` + o + `/count.$FERRY_FIRST_SEQ
if [ "$FERRY_FIRST_SEQ" = 11 ] && [ $n -le 2 ]; then mkdir ` + o + `/cp.$n && cp ` + shQuote(filepath.Join(cfg.StateDir, "checkpoint.ferry")) + ` ` + o + `/cp.$n/; exit 3; fi
cat >>` + o + `/data`
	cfg.Applier = &apply.Exec{Command: cmd}
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after Run")
	receivertest.WantFile(t, filepath.Join(out, "data"), receivertest.Want(1, 30), "data")
	for seq, n := range map[int]string{1: "1\n", 11: "3\n", 21: "1\n"} {
		receivertest.WantFile(t, filepath.Join(out, fmt.Sprintf("count.%d", seq)), []byte(n), fmt.Sprintf("runs for the segment at seq %d", seq))
	}
	for _, n := range []int{1, 2} {
		cp, ok, err := receiver.LoadCheckpoint(filepath.Join(out, fmt.Sprintf("cp.%d", n)))
		if err != nil || !ok {
			t.Fatalf("checkpoint saved by failed attempt %d: ok=%v err=%v", n, ok, err)
		}
		receivertest.WantCheckpoint(t, cp, segs[0], fmt.Sprintf("during failed attempt %d", n))
	}
}

func TestExecCancelStopsRetrying(t *testing.T) {
	segs := receivertest.Chain(t, 1, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	attempts := filepath.Join(t.TempDir(), "attempts")
	cfg := receivertest.Config(t, st, &apply.Exec{Command: `echo x >>` + shQuote(attempts) + `; exit 1`})
	cfg.Once = false
	r := receivertest.Open(t, cfg)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	receivertest.Eventually(t, "three attempts", func() bool {
		b, _ := os.ReadFile(attempts)
		return bytes.Count(b, []byte("\n")) >= 3
	})
	cancel()
	receivertest.WaitReturned(t, done, "Run kept retrying after cancel")
	if cp := r.Checkpoint(); cp.LastSeq != 0 {
		t.Fatalf("checkpoint at seq %d after only failed attempts", cp.LastSeq)
	}
}

// Cancelling a receiver kills the whole command, children included: Run
// returns promptly even while a child holds the stdin pipe without reading
// it, and nothing the command started goes on applying.
func TestExecCancelKillsCommandTree(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 1, 2000)...) // more stdin than a pipe buffers
	for _, tc := range []struct{ name, cmd string }{
		{"hung child", `sleep 30; true`},
		{"background child", `(sleep 0.3; echo late >"$OUT/late") & sleep 30; true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			t.Setenv("OUT", out)
			cfg := receivertest.Config(t, st, &apply.Exec{Command: `: >"$OUT/started"; ` + tc.cmd})
			r := receivertest.Open(t, cfg)

			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			receivertest.Eventually(t, "the command to start", func() bool {
				_, err := os.Stat(filepath.Join(out, "started"))
				return err == nil
			})
			time.Sleep(50 * time.Millisecond)
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after cancel: %v, want nil", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Run did not return within 3s of cancel while the command hung")
			}
			time.Sleep(500 * time.Millisecond)
			if _, err := os.Stat(filepath.Join(out, "late")); err == nil {
				t.Fatal("a child of the cancelled command kept running and wrote its output")
			}
			if cp := r.Checkpoint(); cp.LastSeq != 0 {
				t.Fatalf("checkpoint at seq %d after a cancelled apply", cp.LastSeq)
			}
		})
	}
}

// A command still running after Timeout is killed with its process group
// (a grandchild too) and the segment is retried: the second attempt,
// which does not hang, applies it.
func TestExecTimeoutKillsAndRetries(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 1, 10)
	receivertest.Put(t, st, segs...)
	out := t.TempDir()
	t.Setenv("OUT", out)
	// The first attempt starts a grandchild that would write "late" and
	// hangs; later attempts succeed.
	cmd := `if [ ! -e "$OUT/tried" ]; then : >"$OUT/tried"; sh -c 'echo $$ >"$OUT/grandchild"; sleep 1; echo late >"$OUT/late"' & sleep 30; fi; cat >"$OUT/applied"`
	cfg := receivertest.Config(t, st, &apply.Exec{Command: cmd, Timeout: 300 * time.Millisecond})
	start := time.Now()
	cp := receivertest.RunOnce(t, cfg)
	took := time.Since(start)
	receivertest.WantCheckpoint(t, cp, segs[0], "after the retry")
	receivertest.WantFile(t, filepath.Join(out, "applied"), receivertest.Want(1, 10), "the retried command's stdin")
	if took > 5*time.Second {
		t.Errorf("took %s: the hung attempt was not cut at its 300ms timeout", took)
	}
	pid, err := os.ReadFile(filepath.Join(out, "grandchild"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the grandchild's own sleep
	if _, err := os.Stat(filepath.Join(out, "late")); err == nil {
		t.Fatalf("the grandchild (pid %s) of the timed-out command kept running", strings.TrimSpace(string(pid)))
	}
}
