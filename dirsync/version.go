// Package dirsync is what two (or more) sites need to replicate one
// directory tree in both directions (docs/SYNC.md): the version of every
// path (a version vector of hybrid-logical-clock stamps), the ledger that
// remembers, per path, which version the local tree holds and where it came
// from, and the rule that decides, without the sites talking, what a change
// from a peer does to the local tree: apply it, drop it as already seen, or
// resolve a conflict the same way on every site.
//
// The dir: source asks the ledger before it ships a path (Ledger.Local): a
// state a peer's change left is not shipped back. The dir: applier asks it
// before it applies a peer's record (Ledger.Decide), and the answer is
// durable before the tree is touched.
package dirsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// VV is a version vector: for each site, the stamp (hybrid-logical-clock
// nanoseconds) of the latest change of that site it includes.
type VV map[string]int64

// LE reports whether v is included in w: every stamp of v is at most w's.
func (v VV) LE(w VV) bool {
	for s, t := range v {
		if w[s] < t {
			return false
		}
	}
	return true
}

// Merge returns the element-wise maximum of v and w (a new map).
func Merge(v, w VV) VV {
	m := make(VV, len(v)+len(w))
	for s, t := range v {
		m[s] = t
	}
	for s, t := range w {
		if m[s] < t {
			m[s] = t
		}
	}
	return m
}

// Clone copies v.
func (v VV) Clone() VV { return Merge(v, nil) }

// Version is the data of a version record (dirtree.OpVersion): it comes
// right before the record(s) that change its key, and says which version
// of the path they make.
type Version struct {
	V      int    `json:"v"`      // format version, 1
	Origin string `json:"origin"` // the site whose change this is
	VV     VV     `json:"vv"`     // the version vector of the new state; VV[Origin] is its time
	// Seen is what the origin had applied from each site when it made the
	// change (its frontier): a change of another site stamped later was
	// concurrent with this one. A delete of a directory uses it for the
	// paths below it.
	Seen VV `json:"seen,omitempty"`
	// Lost lists, per site, the newest stamp of that site's versions of
	// the path that lost a conflict at the origin before it made this
	// change: the change includes them (VV covers them) but only as
	// losers. The site that made such a loser and still holds it keeps
	// it as its conflict copy before it applies this change (docs/SYNC.md,
	// "Three or more sites").
	Lost VV `json:"lost,omitempty"`
	// Base is the state of the path the change replaced at its origin
	// (absent: the origin did not know the path). A concurrent version
	// whose content is exactly that base changed nothing since, so this
	// change wins over it without a conflict (docs/SYNC.md).
	Base *State `json:"base,omitempty"`
	// BaseSite and BaseTime name the version Base is (its origin and
	// stamp; empty when unknown). A delete ranks against a concurrent
	// change as the version it replaced would, when that one is
	// concurrent with the change too (Outranks).
	BaseSite string `json:"base_site,omitempty"`
	BaseTime int64  `json:"base_time,omitempty"`
	// BaseBase is the base of the version Base is: the state that version
	// replaced at its own origin. A delete carries it so that a site
	// meeting only the delete and a concurrent change ranks the replaced
	// version against the change as Decide would, base rule included
	// (replacedBeats).
	BaseBase *State `json:"base_base,omitempty"`
}

// FormatVersion is the Version.V this ferry writes and reads.
const FormatVersion = 1

// Time is the version's own stamp: when its origin made it.
func (v Version) Time() int64 { return v.VV[v.Origin] }

// Encode is the record data of v.
func (v Version) Encode() []byte {
	v.V = FormatVersion
	b, _ := json.Marshal(v)
	return b
}

// ParseVersion decodes a version record's data.
func ParseVersion(data []byte) (Version, error) {
	var v Version
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("malformed version record: %v", err)
	}
	if v.V != FormatVersion {
		return v, fmt.Errorf("version record format %d; this ferry reads %d (upgrade ferry)", v.V, FormatVersion)
	}
	if v.Origin == "" || v.VV[v.Origin] == 0 {
		return v, errors.New("malformed version record: no origin, or no stamp of the origin in its vector")
	}
	// The replaced version is named by its site and stamp together, and
	// only a named one has a base of its own: half of it would rank a
	// delete differently on the sites that read it (Outranks).
	switch {
	case v.BaseSite != "" && v.BaseTime == 0:
		return v, errors.New("malformed version record: base_site without base_time")
	case v.BaseSite == "" && v.BaseTime != 0:
		return v, errors.New("malformed version record: base_time without base_site")
	case v.BaseBase != nil && v.BaseSite == "":
		return v, errors.New("malformed version record: base_base without base_site and base_time")
	}
	return v, nil
}

// Wins reports whether the change (aTime, aSite, aState) beats the
// concurrent change (bTime, bSite, bState) under the total order every
// site applies (docs/SYNC.md): a change that leaves something at the path
// beats a delete; otherwise the later stamp wins, and on equal stamps the
// greater site id.
func Wins(aTime int64, aSite string, aState State, bTime int64, bSite string, bState State) bool {
	aDel, bDel := aState.Kind == KindAbsent, bState.Kind == KindAbsent
	if aDel != bDel {
		return bDel
	}
	if aTime != bTime {
		return aTime > bTime
	}
	return aSite > bSite
}

// Rival is one of two concurrent versions of a path as Outranks compares
// them.
type Rival struct {
	Origin string
	VV     VV
	State  State
	Base   *State // the state it replaced, if known
	// BaseSite, BaseTime: the version it replaced, if known; BaseBase,
	// that version's own base.
	BaseSite string
	BaseTime int64
	BaseBase *State
}

// Time is the rival's own stamp.
func (r Rival) Time() int64 { return r.VV[r.Origin] }

// Outranks reports whether a beats the concurrent b: as Wins says, but a
// delete that replaced a version concurrent with a change that leaves
// something, and beating it, beats that change too (docs/SYNC.md, "Three
// or more sites"). Sites that meet the replaced version see it beat the
// change and the delete then supersede it; a site that meets only the
// delete and the change must reach the same end, or the outcome would
// depend on the order the three arrive in.
func Outranks(a, b Rival) bool {
	aDel, bDel := a.State.Kind == KindAbsent, b.State.Kind == KindAbsent
	switch {
	case aDel && !bDel && a.replacedBeats(b):
		return true
	case bDel && !aDel && b.replacedBeats(a):
		return false
	}
	return Wins(a.Time(), a.Origin, a.State, b.Time(), b.Origin, b.State)
}

// replaced compares the version V the delete d replaced with the change
// m: concurrent when m does not include V (d, which does not include m,
// includes V, so V does not include m either); vOnM when V was made on top
// of m's very content (V's base is d.BaseBase), mOnV when m was made on
// top of V's (V's state is d.Base).
func (d Rival) replaced(m Rival) (concurrent, vOnM, mOnV bool) {
	if d.BaseTime == 0 || d.BaseSite == "" || m.VV[d.BaseSite] >= d.BaseTime {
		return false, false, false
	}
	return true, madeOn(d.BaseBase, m.State), d.Base != nil && madeOn(m.Base, *d.Base)
}

// replacedBeats reports whether the version V the delete d replaced is
// concurrent with the change m and beats it as Decide ranks two
// concurrent versions: made on top of the other's very content, one wins
// without a conflict (when each was made on the other's, neither rule is
// taken); otherwise the later wins (both leave something).
func (d Rival) replacedBeats(m Rival) bool {
	concurrent, vOnM, mOnV := d.replaced(m)
	switch {
	case !concurrent:
		return false
	case vOnM && !mOnV:
		return true
	case mOnV && !vOnM:
		return false
	}
	return Wins(d.BaseTime, d.BaseSite, m.State, m.Time(), m.Origin, m.State)
}

// replacedOn reports whether d is a delete of a version V, concurrent
// with the change m, that was made on top of m's very content (and m not
// on top of V's): V beats m without a conflict, and so does d (Decide
// takes m for no conflict's loser: its content is what V replaced).
func (d Rival) replacedOn(m Rival) bool {
	if d.State.Kind != KindAbsent || m.State.Kind == KindAbsent {
		return false
	}
	concurrent, vOnM, mOnV := d.replaced(m)
	return concurrent && vOnM && !mOnV
}

// ConflictName is the name the losing version of a conflict is kept under,
// beside the path: NAME.ferry-conflict-SITE-TIME, TIME the loser's stamp in
// UTC. Every site computes the same name from the same loser.
func ConflictName(key, site string, stamp int64) string {
	return key + ".ferry-conflict-" + site + "-" + time.Unix(0, stamp).UTC().Format("20060102T150405.000000000Z")
}
