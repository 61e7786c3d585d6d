//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// wantAbsent fails the test if path exists: a verb that only reads must
// never invent a store (or any other directory) it was pointed at.
func wantAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("%s was created", path)
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// The verbs that read a store, and prune, promote and rejoin, fail, naming
// it, when its directory does not exist, and leave it not existing (they
// used to create it and report an empty stream, or wait on it for ever).
func TestReadOnlyVerbsNeverCreateTheStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-store")
	want := []string{missing, "does not exist"}
	state := filepath.Join(dir, "state")
	pstate := filepath.Join(dir, "pstate") // a receiver's state, stopped
	if err := os.Mkdir(pstate, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"ls":      {"ls", "--store", missing, "--stream", "app"},
		"cat":     {"cat", "--store", missing, "--stream", "app"},
		"verify":  {"verify", "--store", missing, "--stream", "app"},
		"receive": {"receive", "--store", missing, "--stream", "app", "--state", state, "--apply", "file:" + filepath.Join(dir, "out"), "--once"},
		"restore": {"restore", "--store", missing, "--stream", "app", "--state", state, "--apply", "file:" + filepath.Join(dir, "out")},
		"drill":   {"drill", "--store", missing, "--stream", "app", "--scratch", filepath.Join(dir, "scratch")},
		"fetch":   {"fetch", "--store", missing, "--stream", "app", "00000001-0000000000000001-0000000000000001.seg.zst", filepath.Join(dir, "seg")},
		"status":  {"status", "--spool", missing},
		// They write to a store, but only to one that holds the stream.
		"prune":   {"prune", "--store", missing, "--stream", "app", "--keep-for", "1h"},
		"promote": {"promote", "--store", missing, "--stream", "app", "--state", pstate},
		"rejoin": {"rejoin", "--store", missing, "--stream", "app", "--spool", filepath.Join(dir, "spool"), "--state", state,
			"--apply", "file:" + filepath.Join(dir, "out"), "--report", filepath.Join(dir, "report")},
	}
	for verb, args := range cases {
		t.Run(verb, func(t *testing.T) {
			w := want
			if verb == "status" {
				w = []string{missing} // a spool, not a store: named all the same
			}
			failFerry(t, nil, w, args...)
			wantAbsent(t, missing)
		})
	}
	// Relative paths and file:// URLs are the same directory.
	t.Run("relative", func(t *testing.T) {
		r := ferrytest.Cmd{Bin: ferryBin, Dir: dir}.Run(t, nil, "ls", "--store", "no-such-store", "--stream", "app")
		if r.Code == 0 || !strings.Contains(r.Output(), missing) {
			t.Errorf("want a non-zero exit naming %s:\n%s", missing, r)
		}
		wantAbsent(t, missing)
	})
	t.Run("file-url", func(t *testing.T) {
		failFerry(t, nil, want, "verify", "--store", "file://"+missing, "--stream", "app")
		wantAbsent(t, missing)
	})
}

// ls, verify and cat on a stream with no segments (a typo) fail, naming the
// streams the store does hold; they used to report "0 segments ... ok".
func TestUnknownStreamNamesTheStreams(t *testing.T) {
	t.Parallel()
	s := newStream(t, "demo")
	s.ship(logLines(20, 1, 50))
	other := &stream{t: t, name: "other", store: s.store, spool: filepath.Join(s.dir, "spool2")}
	other.ship(logLines(21, 1, 5))
	for _, verb := range []string{"ls", "verify", "cat"} {
		t.Run(verb, func(t *testing.T) {
			failFerry(t, nil, []string{`stream "demoo" has no segments`, s.store, "its streams: demo, other"},
				verb, "--store", s.store, "--stream", "demoo")
		})
	}
	wantAbsent(t, filepath.Join(s.store, "demoo"))
	// The streams that are there still pass.
	if r := s.verify(); r.Code != 0 {
		t.Errorf("verify of the shipped stream:\n%s", r)
	}
	mustFerry(t, nil, "ls", "--store", s.store, "--stream", "other")
	// An empty store says so.
	empty := filepath.Join(s.dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	failFerry(t, nil, []string{`stream "demo" has no segments`, empty, "no other stream"}, "verify", "--store", empty, "--stream", "demo")
}

// A store that starts like a URL but is not a valid one is refused, with
// exit 2, and no directory named after it is made; plain paths still work.
func TestBadStoreSchemeRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, bad := range []string{"s3:/bucket", "s4://x", "tcp:/host", "file:/x"} {
		for _, verb := range []string{"ls", "ship"} {
			t.Run(verb+" "+bad, func(t *testing.T) {
				args := []string{verb, "--store", bad, "--stream", "app"}
				if verb == "ship" {
					args = append(args, "--spool", filepath.Join(dir, "spool"))
				}
				r := ferrytest.Cmd{Bin: ferryBin, Dir: dir}.Run(t, strings.NewReader("x\n"), args...)
				if r.Code != 2 || !strings.Contains(r.Output(), strconv.Quote(bad)) {
					t.Errorf("want exit 2 naming %q:\n%s", bad, r)
				}
				first, _, _ := strings.Cut(bad, "/")
				wantAbsent(t, filepath.Join(dir, first))
			})
		}
	}
	// A relative directory is still a directory, even one with a colon
	// when written as ./ (the refusal says how).
	r := ferrytest.Cmd{Bin: ferryBin, Dir: dir}.Run(t, strings.NewReader("x\n"), "ship", "--store", "./a:b", "--stream", "app", "--spool", filepath.Join(dir, "spool3"))
	if r.Code != 0 {
		t.Fatalf("ship to ./a:b:\n%s", r)
	}
	if r := (ferrytest.Cmd{Bin: ferryBin, Dir: dir}.Run(t, nil, "verify", "--store", "./a:b", "--stream", "app")); r.Code != 0 {
		t.Errorf("verify ./a:b:\n%s", r)
	}
}

// A receiver service started before anything was shipped waits for the
// store, saying so and naming it, without creating it; it picks up the
// stream once a shipper has made the store. (--once fails instead: see
// TestReadOnlyVerbsNeverCreateTheStore.)
func TestReceiveWaitsForAMissingStore(t *testing.T) {
	t.Parallel()
	s := newStream(t, "late")
	recv := startFerry(t, nil, s.receiveArgs("--poll-min", "20ms", "--poll-max", "100ms")...)
	ferrytest.Eventually(t, 10*time.Second, "the receiver warns of the missing store", func() (bool, string) {
		if recv.Exited() {
			t.Fatalf("receiver exited:\n%s", recv)
		}
		out := recv.Stderr()
		return strings.Contains(out, "the store does not exist") && strings.Contains(out, s.store), ferrytest.Clip(out)
	})
	time.Sleep(300 * time.Millisecond) // a few polls
	wantAbsent(t, s.store)
	data := logLines(9, 1, 300)
	s.ship(data)
	waitReplica(t, s, recv, data)
}
