package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// wantNothingShipped fails the test if the stream has any segment in the
// store.
func (s *stream) wantNothingShipped(what string) {
	s.t.Helper()
	if segs := s.segments(); len(segs) != 0 {
		s.t.Errorf("%s: the store holds %d segment(s), want none", what, len(segs))
	}
}

func TestBadConfigFile(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		toml string
		want []string // in the message, besides the file name
	}{
		{
			name: "unknown key",
			toml: "stream = \"cfg\"\n\n[ship]\nmax_byts = \"4MiB\"\n",
			want: []string{":4:", "max_byts"},
		},
		{
			name: "malformed TOML",
			toml: "stream = \"cfg\"\n\n[ship\nfsync = \"batch\"\n",
			want: []string{":3:"},
		},
		{
			name: "invalid value",
			toml: "stream = \"cfg\"\n[ship]\nformat = \"line\"\nfsync = \"sometimes\"\n",
			want: []string{":4:", "fsync", "sometimes"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newStream(t, "cfg")
			cfg := filepath.Join(s.dir, "ferry.toml")
			if err := os.WriteFile(cfg, []byte(c.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			want := append([]string{cfg}, c.want...)
			failFerry(t, strings.NewReader("one line\n"), want, "ship", "--config", cfg, "--store", s.store, "--spool", s.spool)
			s.wantNothingShipped("ship with a bad config")
			failFerry(t, nil, want, "receive", "--config", cfg, "--store", s.store, "--state", s.state,
				"--apply", "file:"+s.replica, "--once")
			if _, err := os.Stat(s.replica); !os.IsNotExist(err) {
				t.Errorf("receive with a bad config created the replica %s", s.replica)
			}
		})
	}
}

func TestMissingRequiredFlags(t *testing.T) {
	t.Parallel()
	s := newStream(t, "req")
	in := "one line\n"
	failFerry(t, strings.NewReader(in), []string{"spool", "required"}, "ship", "--store", s.store, "--stream", s.name)
	failFerry(t, strings.NewReader(in), []string{"stream", "required"}, "ship", "--store", s.store, "--spool", s.spool)
	failFerry(t, nil, []string{"state", "required"}, "receive", "--store", s.store, "--stream", s.name,
		"--apply", "file:"+s.replica, "--once")
	failFerry(t, nil, []string{"stream", "required"}, "receive", "--store", s.store, "--state", s.state,
		"--apply", "file:"+s.replica, "--once")
	s.wantNothingShipped("ship without its required flags")
	if _, err := os.Stat(s.replica); !os.IsNotExist(err) {
		t.Errorf("receive without its required flags created the replica")
	}
}

// A spool or state directory that cannot be created (a path under a regular
// file: this works even as root) is refused, naming the directory.
func TestUnwritableSpoolAndStateDirs(t *testing.T) {
	t.Parallel()
	s := newStream(t, "unw")
	input := logLines(10, 1, 100)
	file := filepath.Join(s.dir, "regular-file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(file, "sub")

	good := s.spool
	s.spool = bad
	failFerry(t, bytes.NewReader(input), []string{"spool", bad}, s.shipArgs()...)
	s.wantNothingShipped("ship with an unusable spool")

	s.spool = good
	s.ship(input)
	s.state = bad
	failFerry(t, nil, []string{"state", bad}, s.receiveArgs("--once")...)
	if _, err := os.Stat(s.replica); !os.IsNotExist(err) {
		t.Errorf("receive with an unusable state dir created the replica")
	}
}

func TestStorePathIsAFile(t *testing.T) {
	t.Parallel()
	s := newStream(t, "sf")
	if err := os.WriteFile(s.store, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	failFerry(t, strings.NewReader("one line\n"), []string{s.store, "not a directory"}, s.shipArgs()...)
	failFerry(t, nil, []string{s.store, "not a directory"}, s.receiveArgs("--once")...)
	failFerry(t, nil, []string{s.store}, "verify", "--store", s.store, "--stream", s.name)
	failFerry(t, nil, []string{s.store}, "ls", "--store", s.store, "--stream", s.name)
	if data, err := os.ReadFile(s.store); err != nil || string(data) != "not a directory" {
		t.Errorf("the file given as store was changed: %q, %v", data, err)
	}
}

// A record over --max-record-size stops ship with the line number; every
// line before it is shipped, nothing after it.
func TestOversizeRecord(t *testing.T) {
	t.Parallel()
	s := newStream(t, "big-rec")
	before := logLines(11, 1, 499)
	huge := append(bytes.Repeat([]byte("H"), 2047), '\n')
	after := logLines(11, 501, 500)
	input := bytes.Join([][]byte{before, huge, after}, nil)

	failFerry(t, bytes.NewReader(input), []string{"line 500", "max_record_size"},
		s.shipArgs("--max-record-size", "1KiB", "--max-bytes", "8KiB")...)
	r := mustFerry(t, nil, "cat", "--store", s.store, "--stream", s.name)
	if !bytes.Equal([]byte(r.Stdout), before) {
		t.Fatalf("store after the oversize line 500: %s", describeDiff(before, []byte(r.Stdout)))
	}
	s.receiveOnce()
	s.wantReplica(before, "after an oversize line 500")
	if r := s.verify(); r.Code != 0 {
		t.Fatalf("verify: want exit 0:\n%s", r)
	}
}

// One shipper per spool: a second one is refused while the first runs,
// and ships nothing.
func TestSecondShipperOnSpoolIsRefused(t *testing.T) {
	t.Parallel()
	s := newStream(t, "lock-ship")
	logPath := filepath.Join(s.dir, "app.log")
	tailed := logLines(12, 1, 1000)
	if err := os.WriteFile(logPath, tailed, 0o644); err != nil {
		t.Fatal(err)
	}
	first := startFerry(t, nil, s.shipArgs("--source", "tail:"+logPath, "--max-age", "100ms")...)
	ferrytest.Eventually(t, 30*time.Second, "first shipper ships the tailed file", func() (bool, string) {
		if first.Exited() {
			t.Fatalf("first shipper exited with %d:\n%s", first.Code(), first)
		}
		got := s.pollCat()
		return got == string(tailed), fmt.Sprintf("store holds %d of %d bytes", len(got), len(tailed))
	})

	intruder := []byte("this line must not be shipped\n")
	failFerry(t, bytes.NewReader(intruder), []string{s.spool, "in use"}, s.shipArgs()...)

	if code := first.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("first shipper exit %d on SIGTERM, want 0:\n%s", code, first)
	}
	s.receiveOnce()
	s.wantReplica(tailed, "after a refused second shipper")
}

// One receiver per state directory: a second one is refused while the
// first runs, and applies nothing.
func TestSecondReceiverOnStateIsRefused(t *testing.T) {
	t.Parallel()
	s := newStream(t, "lock-recv")
	input := logLines(13, 1, 2000)
	s.ship(input, "--max-bytes", "16KiB")
	first := startFerry(t, nil, s.receiveArgs("--poll-min", "50ms", "--poll-max", "200ms")...)
	ferrytest.Eventually(t, 30*time.Second, "first receiver applies the stream", func() (bool, string) {
		if first.Exited() {
			t.Fatalf("first receiver exited with %d:\n%s", first.Code(), first)
		}
		got := s.readReplica()
		return bytes.Equal(got, input), fmt.Sprintf("replica has %d of %d bytes", len(got), len(input))
	})

	other := filepath.Join(s.dir, "other.out")
	failFerry(t, nil, []string{s.state, "in use"}, "receive", "--store", s.store, "--stream", s.name,
		"--state", s.state, "--apply", "file:"+other, "--once")
	if data, err := os.ReadFile(other); err == nil && len(data) > 0 {
		t.Errorf("the refused receiver applied %d bytes to %s", len(data), other)
	}

	if code := first.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("first receiver exit %d on SIGTERM, want 0:\n%s", code, first)
	}
	s.wantReplica(input, "after a refused second receiver")
}
