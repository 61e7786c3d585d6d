package s3e2e

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// failFast is the most a run refused by the server for good may take.
const failFast = 15 * time.Second

// wantRefused fails the test unless r exited non-zero within failFast and
// its output contains every one of want.
func wantRefused(t *testing.T, r ferrytest.Result, want ...string) {
	t.Helper()
	if r.Code == 0 {
		t.Errorf("want a non-zero exit:\n%s", r)
		return
	}
	if r.Elapsed > failFast {
		t.Errorf("took %s to fail, want under %s: retrying cannot fix this:\n%s", r.Elapsed.Round(time.Millisecond), failFast, r)
	}
	for _, w := range want {
		if !strings.Contains(r.Output(), w) {
			t.Errorf("output does not say %q:\n%s", w, r)
		}
	}
}

// TestBadCredentialsAndMissingBucket: every verb fails fast, says what to
// fix and never prints a secret (the harness checks every run's output
// for the server's secret and for the wrong ones handed to ferry here).
func TestBadCredentialsAndMissingBucket(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("creds", "app")
	input := numbered(1, 2_000)
	s.ship(input, "--max-bytes", "16KiB")

	wrongSecret := "WrongSecret" + strings.Repeat("x", 29)
	h.addSecret(wrongSecret)
	badSecret := h.env("AWS_SECRET_ACCESS_KEY=" + wrongSecret)
	badKeyID := h.env("AWS_ACCESS_KEY_ID=AKIANOSUCHKEY0000000")
	const fixSecret = "check the secret key"
	const fixKeyID = "check the access key"

	t.Run("ship-fresh-spool", func(t *testing.T) {
		fresh := h.newStream("creds", "app")
		wantRefused(t, h.run(badSecret, bytes.NewReader(input), fresh.shipArgs()...), fixSecret, s.url())
		fresh = h.newStream("creds", "app")
		wantRefused(t, h.run(badKeyID, bytes.NewReader(input), fresh.shipArgs()...), fixKeyID)
	})
	t.Run("ship-existing-spool", func(t *testing.T) {
		// The spool already knows the stream, but the shipper reads the
		// stream's generation history before it takes any input: refused
		// at the start, it accepts nothing.
		more := numbered(2_001, 1_000)
		wantRefused(t, h.run(badSecret, bytes.NewReader(more), s.shipArgs()...), fixSecret, "generation history")
	})
	t.Run("secret-in-config-file", func(t *testing.T) {
		other := "AnotherWrongSecret" + strings.Repeat("y", 22)
		h.addSecret(other)
		cfg := h.writeConfig("creds.toml", "[s3]\naccess_key = \""+h.srv.AccessKey+"\"\nsecret_key = \""+other+"\"\n")
		fresh := h.newStream("creds", "app")
		wantRefused(t, h.run(h.env("AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="), bytes.NewReader(input),
			fresh.shipArgs("--config", cfg)...), fixSecret)
	})
	t.Run("receive", func(t *testing.T) {
		other := h.newStream("creds", "app")
		wantRefused(t, h.run(badSecret, nil, other.receiveArgs("--once")...), fixSecret)
		// Without --once too: a receiver must not retry forever on an
		// error only the operator can fix.
		wantRefused(t, h.run(badSecret, nil, other.receiveArgs()...), fixSecret)
	})
	t.Run("inspect", func(t *testing.T) {
		for _, verb := range []string{"ls", "verify", "cat"} {
			wantRefused(t, h.run(badSecret, nil, verb, "--store", s.url(), "--stream", s.name), fixSecret)
		}
	})
	t.Run("missing-bucket", func(t *testing.T) {
		const bucket = "no-such-bucket-here"
		url := "s3://" + bucket + "/p"
		fresh := h.newStream("p", "app")
		wantRefused(t, h.run(nil, bytes.NewReader(input), "ship", "--store", url, "--stream", "app", "--spool", fresh.spool),
			`bucket "`+bucket+`" does not exist`, "create the bucket")
		wantRefused(t, h.run(nil, nil, "receive", "--store", url, "--stream", "app", "--state", fresh.state,
			"--apply", "file:"+fresh.replica, "--once"), `bucket "`+bucket+`" does not exist`)
		wantRefused(t, h.run(nil, nil, "ls", "--store", url, "--stream", "app"), `bucket "`+bucket+`" does not exist`)
	})

	// After all that the stream is intact, and the refused runs left
	// nothing to deliver.
	s.ship(nil)
	s.receiveOnce()
	s.wantReplica(numbered(1, 2_000), "after the refused runs")
}
