package s3e2e

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A new s3:// prefix added with --also beside the one the spool shipped
// to is backfilled from it, object for object; a new prefix that is the
// only target is refused until --start-now, after which verify and ls
// say where its history starts and why.
func TestNewS3TargetBackfilledOrStartedNow(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("site/a", "app")
	first, second := numbered(1, 60_000), numbered(60_001, 10_000)
	s.ship(first, "--max-bytes", "64KiB")
	old := s.segments()
	if len(old) < 5 {
		t.Fatalf("want several segments, have %d", len(old))
	}

	b := h.newStream("site/b", "app")
	r := s.ship(second, "--max-bytes", "64KiB", "--also", b.url())
	if m := regexp.MustCompile(`backfill done.*segments=(\d+) bytes=(\d+) took=(\S+)`).FindStringSubmatch(r.Stderr); m == nil {
		t.Errorf("ship does not log the backfill:\n%s", r)
	} else {
		t.Logf("backfill of %s segments, %s bytes, S3 to S3: %s", m[1], m[2], m[3])
	}
	if got, want := b.segments(), s.segments(); !slices.Equal(got, want) {
		t.Fatalf("new target holds %d segments, the old %d", len(got), len(want))
	}
	for _, n := range old {
		if !bytes.Equal(h.object(s.dirKey()+n), h.object(b.dirKey()+n)) {
			t.Fatalf("segment %s differs between the prefixes", n)
		}
	}
	v := h.ferry(nil, "verify", "--store", b.url(), "--stream", b.name)
	if strings.Contains(v.Stdout, "history starts") {
		t.Errorf("verify on the backfilled prefix:\n%s", v)
	}
	b.receiveOnce()
	b.wantReplica(append(append([]byte(nil), first...), second...), "rebuilt from the backfilled prefix")

	c := h.newStream("site/c", "app")
	args := []string{"ship", "--store", c.url(), "--stream", s.name, "--spool", s.spool, "--max-bytes", "64KiB"}
	base := 70_000
	if r := h.run(nil, bytes.NewReader(numbered(70_001, 100)), args...); r.Code == 0 ||
		!strings.Contains(r.Output(), fmt.Sprintf("seq 1..%d have left the spool", base)) || !strings.Contains(r.Output(), "--start-now store") {
		t.Fatalf("ship to a new prefix alone: want a refusal naming the missing seqs and --start-now:\n%s", r)
	}
	h.ferry(bytes.NewReader(numbered(70_001, 100)), append(args, "--start-now", "store")...)
	start := fmt.Sprintf("history starts at seq %d", base+1)
	if v := h.ferry(nil, "verify", "--store", c.url(), "--stream", c.name); !strings.Contains(v.Stdout, start) {
		t.Errorf("verify on the prefix started now:\n%s", v)
	}
	if ls := h.ferry(nil, "ls", "--store", c.url(), "--stream", c.name); !strings.Contains(ls.Stdout, start) {
		t.Errorf("ls on the prefix started now:\n%s", ls)
	}
	h.checkNoSecrets()
}
