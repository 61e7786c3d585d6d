//go:build linux

// Package mail_test runs the real-world check of issue 24, tests/mail/run.sh:
// a real Cyrus IMAP server whose mail store ferry replicates, served from
// the replica by a second Cyrus, both compared as an IMAP client sees them.
package mail_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const cyrusMaster = "/usr/lib/cyrus/bin/master"

// TestCyrusReplica fails, never skips, when Cyrus is missing or cannot
// start in CI (CI set, or FERRY_REQUIRE_TOOLS=1 as tests/run.sh sets it).
// Run as root, the script installs cyrus-imapd itself; elsewhere without it
// the test is skipped. It runs the script twice: with Cyrus 3.6's default
// layout (3,000 messages), where a folder rename only changes
// mailboxes.db, and with the legacy layout (1,000), where it renames
// directories of the partition. MAIL_MESSAGES overrides both counts.
func TestCyrusReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("the mail check takes a few minutes; not with -short")
	}
	required := os.Getenv("CI") != "" || os.Getenv("FERRY_REQUIRE_TOOLS") == "1"
	if _, err := os.Stat(cyrusMaster); err != nil && os.Getuid() != 0 && !required {
		t.Skipf("no %s (Debian package cyrus-imapd) and not root to install it", cyrusMaster)
	}
	for _, c := range []struct{ layout, messages string }{{"uuid", "3000"}, {"legacy", "1000"}} {
		t.Run(c.layout, func(t *testing.T) {
			if n := os.Getenv("MAIL_MESSAGES"); n != "" {
				c.messages = n
			}
			runCheck(t, "LAYOUT="+c.layout, "MESSAGES="+c.messages)
		})
	}
}

func runCheck(t *testing.T, env ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "run.sh")
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tests/mail/run.sh: %v\n%s", err, out)
	}
	// The script exits 0 only after its comparison; make sure it got there
	// and compared mail, not two empty servers.
	if !strings.Contains(string(out), "OK: the replica's Cyrus shows the same") || strings.Contains(string(out), "same 0 messages") {
		t.Fatalf("tests/mail/run.sh did not report a comparison of delivered mail:\n%s", out)
	}
	t.Logf("%s", out)
}
