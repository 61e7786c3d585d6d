package config

import (
	"path"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// Fleet is the [fleet] table: receivers that share a store's streams
// (docs/FLEET.md).
type Fleet struct {
	// Name turns fleet mode on: the receivers started with one name share
	// the streams, one owner per stream. Empty (default): off.
	Name string `toml:"name"`

	// Member is this receiver's id in the fleet, unique among its
	// members. Default: the host name and the process id.
	Member string `toml:"member"`

	// LeaseTTL is how long a member's heartbeat and stream leases last
	// unless renewed (every LeaseTTL/3): how soon a dead member's streams
	// move. Default 30s, at least 3s.
	LeaseTTL Duration `toml:"lease_ttl"`
}

// DefaultFleetLeaseTTL is fleet.lease_ttl when the config does not set it.
const DefaultFleetLeaseTTL = 30 * time.Second

// minFleetLeaseTTL is the least fleet.lease_ttl.
const minFleetLeaseTTL = 3 * time.Second

// IsStreamSet reports whether a stream setting names several streams: a
// comma-separated list or a glob (*, ?, [...]), which only ferry receive
// takes.
func IsStreamSet(s string) bool { return strings.ContainsAny(s, ",*?[") }

// StreamPatterns splits a stream setting and [receive] streams into the
// names and globs they hold.
func (f *File) StreamPatterns() []string {
	var out []string
	for _, p := range append(strings.Split(f.Stream, ","), f.Receive.Streams...) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// MultiStream reports whether receive applies many streams: a list or
// glob in stream, [receive] streams, or a fleet.
func (f *File) MultiStream() bool {
	return IsStreamSet(f.Stream) || len(f.Receive.Streams) > 0 || f.Fleet.Name != ""
}

// MatchStream reports whether stream is one that patterns name.
func MatchStream(patterns []string, stream string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, stream); ok {
			return true
		}
	}
	return false
}

// validateFleet checks [fleet], [receive] streams and a stream list or
// glob.
func (f *File) validateFleet(verb string, add func(key, format string, args ...any)) {
	if IsStreamSet(f.Stream) && verb != "receive" && verb != "" {
		add("stream", "%q names several streams (a list or a glob), which only ferry receive takes", f.Stream)
	}
	key := "stream"
	if len(f.Receive.Streams) > 0 {
		key = "receive.streams"
	}
	if f.MultiStream() {
		for _, p := range f.StreamPatterns() {
			if _, err := path.Match(p, ""); err != nil || strings.ContainsAny(p, "/\\") {
				add(key, "%q is not a stream name or glob (*, ?, [a-z]; no '/')", p)
				continue
			}
			if !strings.ContainsAny(p, "*?[") && batch.CheckStream(p) != nil {
				add(key, "%q is not a valid stream name: use 1-128 letters, digits, '.', '_', '-' or '@', starting with a letter or digit", p)
			}
		}
		if verb == "receive" {
			if f.Receive.Apply != "" && f.Receive.Apply != "stdout" && !strings.Contains(f.Receive.Apply, "{stream}") {
				add("receive.apply", "%q has no {stream}: with several streams each needs its own target, e.g. file:/srv/replica/{stream}.log or dir:/srv/replica/{stream}", f.Receive.Apply)
			}
		}
	}
	fl := &f.Fleet
	if fl.Name != "" && !validName(fl.Name) {
		add("fleet.name", "%q is not a valid fleet name (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", fl.Name)
	}
	if fl.Member != "" && !validName(fl.Member) {
		add("fleet.member", "%q is not a valid member id (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit; no '/')", fl.Member)
	}
	if fl.LeaseTTL != 0 && time.Duration(fl.LeaseTTL) < minFleetLeaseTTL {
		add("fleet.lease_ttl", "%v is below the minimum %v", time.Duration(fl.LeaseTTL), minFleetLeaseTTL)
	}
}
