// Package fleet shares the streams of a store among the receivers of a
// fleet: processes started with one config and one fleet name. The store
// is the only thing they share, and its compare-and-swap (store.Swapper)
// the only coordination:
//
//	_fleet/<name>/members/<id>     a member's heartbeat, swapped every TTL/3
//	_fleet/<name>/leases/<stream>  who applies the stream, swapped every TTL/3
//
// Each stream belongs to the live member that rendezvous hashing picks
// (Owner); that member takes the stream's lease, the others leave it. A
// member that sees a stream hash to another live member stops applying it
// (the segment in progress finishes and is checkpointed) and releases the
// lease, which the new owner then takes. A dead member's heartbeat and
// leases expire after the TTL, and the others take its streams over.
// docs/FLEET.md has the model, its costs and what it guarantees.
package fleet

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/ferry-dr/ferry/batch"
)

// Version is the format of the member and lease objects this ferry writes
// and reads.
const Version = 1

// Dir is the store "directory" of fleet name's objects. Its "_" keeps it
// apart from every stream, whose names start with a letter or digit.
func Dir(name string) string { return "_fleet/" + name + "/" }

// MembersDir holds one heartbeat object per member.
func MembersDir(name string) string { return Dir(name) + "members/" }

// LeasesDir holds one lease object per stream.
func LeasesDir(name string) string { return Dir(name) + "leases/" }

// CheckName validates a fleet name or a member id: it becomes one element
// of an object name, so it is held to the stream name rules (letters,
// digits, '.', '_', '-', '@', starting with a letter or digit: no '/',
// no "..", no control characters).
func CheckName(what, s string) error {
	if err := batch.CheckStream(s); err != nil {
		return fmt.Errorf("%s %q is invalid: use 1-128 of A-Z a-z 0-9 . _ - @ starting with a letter or digit", what, s)
	}
	return nil
}

// MemberRecord is a member's heartbeat. It is live until Expires by the
// reader's clock, unless Left.
type MemberRecord struct {
	Version int       `json:"version"`
	Fleet   string    `json:"fleet"`
	Member  string    `json:"member"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Token   string    `json:"token"` // random per process: two processes given one id tell each other apart
	Started time.Time `json:"started"`
	Renewed time.Time `json:"renewed"`
	Expires time.Time `json:"expires"`
	Beats   uint64    `json:"beats"` // makes every write's content unique (store.Swapper)
	Left    bool      `json:"left,omitempty"`
	// Streams is how many streams the member holds, for ferry status.
	Streams int `json:"streams"`
}

// LeaseRecord is a stream's lease: Member (with Token) applies Stream
// until Expires by the reader's clock, unless Released.
type LeaseRecord struct {
	Version  int       `json:"version"`
	Fleet    string    `json:"fleet"`
	Stream   string    `json:"stream"`
	Member   string    `json:"member"`
	Token    string    `json:"token"`
	Acquired time.Time `json:"acquired"`
	Renewed  time.Time `json:"renewed"`
	Expires  time.Time `json:"expires"`
	Renewals uint64    `json:"renewals"`
	Released bool      `json:"released,omitempty"`
}

// parseMember decodes the member object at key; an object that is not a
// member record of fleet under that name is refused with why.
func parseMember(data []byte, fleet, key string) (MemberRecord, error) {
	var m MemberRecord
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("fleet member %s is damaged: %v", key, err)
	}
	switch {
	case m.Version > Version:
		return m, fmt.Errorf("fleet member %s has version %d; this ferry reads %d (upgrade ferry)", key, m.Version, Version)
	case m.Version < 1:
		return m, fmt.Errorf("fleet member %s is damaged: version %d", key, m.Version)
	case m.Fleet != fleet || MembersDir(fleet)+m.Member != key:
		return m, fmt.Errorf("fleet member %s is damaged: it says fleet %q, member %q", key, m.Fleet, m.Member)
	case m.Token == "":
		return m, fmt.Errorf("fleet member %s is damaged: no token", key)
	case len(m.Host) > maxHost || strings.ContainsFunc(m.Host, unicode.IsControl):
		// ferry status prints the host: no terminal escapes, no screenfuls.
		return m, fmt.Errorf("fleet member %s is damaged: host %.64q", key, m.Host)
	}
	return m, nil
}

// maxHost is the longest host a member object may name (a host name is at
// most 255 bytes).
const maxHost = 255

// parseLease decodes the lease object at key, like parseMember.
func parseLease(data []byte, fleet, key string) (LeaseRecord, error) {
	var l LeaseRecord
	if err := json.Unmarshal(data, &l); err != nil {
		return l, fmt.Errorf("fleet lease %s is damaged: %v", key, err)
	}
	switch {
	case l.Version > Version:
		return l, fmt.Errorf("fleet lease %s has version %d; this ferry reads %d (upgrade ferry)", key, l.Version, Version)
	case l.Version < 1:
		return l, fmt.Errorf("fleet lease %s is damaged: version %d", key, l.Version)
	case l.Fleet != fleet || LeasesDir(fleet)+l.Stream != key:
		return l, fmt.Errorf("fleet lease %s is damaged: it says fleet %q, stream %q", key, l.Fleet, l.Stream)
	case l.Token == "" || CheckName("member", l.Member) != nil:
		return l, fmt.Errorf("fleet lease %s is damaged: no token, or a bad member %q", key, l.Member)
	}
	return l, nil
}

// lastElem is the name's last "/" element.
func lastElem(name string) string { return name[strings.LastIndex(name, "/")+1:] }
