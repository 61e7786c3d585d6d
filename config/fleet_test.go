package config

import (
	"strings"
	"testing"
)

// Stream lists and globs are for receive, each element must be a stream
// name or a glob of one, the apply target needs {stream}, and fleet names
// and member ids are refused with path characters.
func TestValidateFleet(t *testing.T) {
	base := func() *File {
		f := Defaults()
		f.Store, f.Receive.State, f.Receive.Apply = "/srv/store", "/srv/state", "file:/srv/r/{stream}.log"
		return f
	}
	ok := base()
	ok.Stream, ok.Receive.Streams, ok.Fleet.Name = "app-*,billing", []string{"audit-[0-9]*"}, "dr"
	if err := ok.Validate("receive"); err != nil {
		t.Fatalf("valid fleet config refused: %v", err)
	}
	if got := ok.StreamPatterns(); strings.Join(got, " ") != "app-* billing audit-[0-9]*" {
		t.Errorf("StreamPatterns = %q", got)
	}
	if !MatchStream(ok.StreamPatterns(), "app-7") || MatchStream(ok.StreamPatterns(), "other") {
		t.Error("MatchStream does not follow the globs")
	}
	for _, c := range []struct {
		set  func(f *File)
		verb string
		want string
	}{
		{func(f *File) { f.Stream = "app-*" }, "ship", "stream: \"app-*\" names several streams"},
		{func(f *File) { f.Stream = "a/b,c" }, "receive", `stream: "a/b" is not a stream name or glob`},
		{func(f *File) { f.Stream = "[" }, "receive", `stream: "[" is not a stream name or glob`},
		{func(f *File) { f.Stream = "..,x" }, "receive", `stream: ".." is not a valid stream name`},
		{func(f *File) { f.Stream = "a*"; f.Receive.Apply = "file:/srv/r.log" }, "receive", "receive.apply: \"file:/srv/r.log\" has no {stream}"},
		{func(f *File) { f.Stream = "a"; f.Fleet.Name = "../x" }, "receive", "fleet.name"},
		{func(f *File) { f.Stream = "a"; f.Fleet.Name = "dr"; f.Fleet.Member = "h/1" }, "receive", `fleet.member: "h/1" is not a valid member id`},
		{func(f *File) { f.Stream = "a"; f.Fleet.Name = "dr"; f.Fleet.LeaseTTL = Duration(1e9) }, "receive", "fleet.lease_ttl: 1s is below the minimum 3s"},
	} {
		f := base()
		c.set(f)
		err := f.Validate(c.verb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error containing %q, got %v", c.want, err)
		}
	}
}
