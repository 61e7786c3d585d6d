package dirsync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/internal/fsutil"
)

// Action is what the applier does with a peer's record (Decide).
type Action string

const (
	ActApply Action = "apply" // apply it
	ActSkip  Action = "skip"  // drop it: already seen, or it lost a conflict
	// ActRenameApply: keep the local version as Decision.Copy (rename it
	// there), then apply the record.
	ActRenameApply Action = "rename-apply"
	// ActAsCopy: the local version wins; the record's content is applied
	// under Decision.Copy instead of its key.
	ActAsCopy Action = "as-copy"
)

// Decision is Decide's answer.
type Decision struct {
	Act  Action
	Copy string
}

// Incoming is a peer's change as the applier meets it.
type Incoming struct {
	Peer string // the peer whose stream carries it
	Seq  uint64 // the record's seq in that stream
	Key  string
	Ver  Version
	// State is what the record makes of the path (Absent for a delete).
	State State
	// Disk is what the local tree holds at the path now. CheckDisk is
	// false when a record earlier in the same segment already decided the
	// path: the tree then still shows the state before it, and the first
	// decision took any local change. (A path below one decided earlier
	// in the segment is checked, against its entry as it was before the
	// segment too: see Ledger.BeginSegment.)
	Disk      State
	CheckDisk bool
	// LocalHash hashes the local file (asked only to compare contents).
	LocalHash func() []byte
	// Below lists the paths under Key in the local tree with their state
	// (asked only for a delete of a directory).
	Below func(fn func(path string, st State))
	// DecidedBefore reports whether a record earlier in the same segment
	// decided path: its entry already holds that decision while the tree
	// still shows the state before it.
	DecidedBefore func(path string) bool
	// Rebuild: a rejoin reads the history back (docs/SYNC.md "Rejoin").
	// A conflict between versions this site had seen both of before it
	// lost its state (its own stream's records say what it had seen) was
	// recorded then, and is not recorded again.
	Rebuild bool
}

// Decide says what a peer's record does to the local tree, and records the
// outcome in the ledger (held under the lock; Sync before touching the
// tree). The rule (docs/SYNC.md):
//
//   - A local change the ledger has no version for yet (the tree differs
//     from the ledger) gets one now, stamped now.
//   - A record whose version this site has seen is dropped.
//   - A record whose version includes the local one is applied; if it lists
//     the local version, made here, among its losers (Version.Lost), the
//     local version is first kept as its conflict copy.
//   - Otherwise the two are concurrent: a conflict. The same content on
//     both sides is no conflict. Else the winner is the one Wins says, on
//     every site, whatever order the versions arrive in. A losing version
//     is kept as ConflictName(path, its site, its stamp) by its own site
//     only, and only while that site's tree still holds it: the winner
//     arrives there sooner or later (every site reads every other's
//     stream), so exactly one site makes each copy, and ships it as an
//     ordinary new file. Any other site just applies the winner or drops
//     the loser, and remembers the loser in Entry.Lost.
//   - A delete of a directory below which the local tree has changes the
//     deleter had not seen loses: the directory and everything below it
//     get new local versions and are shipped again.
func (l *Ledger) Decide(in Incoming) (Decision, error) {
	l.observe(in.Ver.VV)
	l.observe(in.Ver.Seen)
	e := l.entries[in.Key]
	if e != nil && e.From == in.Peer && e.Seq == in.Seq && e.Act != "" {
		return Decision{Act: e.Act, Copy: e.Copy}, nil // applied again after a crash
	}
	if in.Rebuild && in.Ver.Origin == l.Site {
		if err := l.noteKnown(in.Ver); err != nil {
			return Decision{}, err
		}
	}
	cur := Entry{State: Absent}
	if e != nil {
		cur = *e
	}
	if in.CheckDisk && !cur.State.Same(in.Disk) {
		// The tree differs from the ledger. Unless it still shows the
		// entry from before this segment (an earlier record changed it:
		// a file gone with its directory), that is a local change.
		prior, inSegment := l.before[in.Key]
		if !inSegment || !stateOf(prior).Same(in.Disk) {
			if inSegment {
				e = prior
			}
			vv := Merge(cur.Seen, cur.VV)
			vv[l.Site] = l.now()
			bs, bt := baseVersion(e)
			cur = Entry{VV: vv, Seen: vv, State: in.Disk, Origin: l.Site, Lost: cur.Lost, Base: baseOf(e), BaseSite: bs, BaseTime: bt, BaseBase: baseBase(e)}
		}
	}
	seen := Merge(cur.Seen, cur.VV)
	remote := in.Ver
	done := func(d Decision, ne Entry) (Decision, error) {
		ne.From, ne.Seq, ne.Act, ne.Copy = in.Peer, in.Seq, d.Act, d.Copy
		if (d.Act == ActApply || d.Act == ActRenameApply) && cur.State.Kind == KindDir && ne.State.Kind != KindDir {
			if err := l.goneBelow(in.Key, ne); err != nil {
				return Decision{}, err
			}
		}
		return d, l.set(in.Key, &ne)
	}
	if remote.VV.LE(seen) {
		cur.Seen = seen
		return done(Decision{Act: ActSkip}, cur)
	}
	if in.State.Kind == KindAbsent && in.Disk.Kind == KindDir && in.Below != nil && l.changedBelow(in) {
		return l.resurrect(in, cur, seen)
	}
	applied := Entry{VV: remote.VV.Clone(), Seen: Merge(seen, remote.VV), State: in.State, Origin: remote.Origin,
		Lost: Merge(cur.Lost, remote.Lost), Base: remote.Base, BaseSite: remote.BaseSite, BaseTime: remote.BaseTime, BaseBase: remote.BaseBase}
	if remote.Origin == l.Site {
		// This site's own version, read back from its stream in the store
		// by a rejoin: the store has it, nothing ships.
		applied.Shipped, applied.Stored = true, true
	}
	localTime := cur.VV[cur.Origin]
	// holdsOwn: the tree holds a version this site made: if it loses, this
	// site is the one that keeps it.
	holdsOwn := cur.Origin == l.Site && cur.State.Kind != KindAbsent && in.Disk.Kind != KindAbsent
	c := Conflict{At: time.Now().UTC(), Path: in.Key, Peer: in.Peer}
	if cur.VV.LE(remote.VV) {
		if holdsOwn && localTime > 0 && remote.Lost[l.Site] >= localTime {
			// The peer's change includes the local version only as a
			// conflict's loser, which this site keeps.
			c.Winner, c.WinnerTime, c.Loser, c.LoserTime = remote.Origin, remote.Time(), l.Site, localTime
			d := Decision{Act: ActRenameApply, Copy: ConflictName(in.Key, l.Site, localTime)}
			if err := l.recordConflict(in, c, d.Copy, true); err != nil {
				return Decision{}, err
			}
			return done(d, applied)
		}
		return done(Decision{Act: ActApply}, applied)
	}
	// Concurrent.
	local := cur.State
	if local.Kind == KindFile && len(local.Hash) == 0 && in.LocalHash != nil &&
		((in.State.Kind == KindFile && local.Size == in.State.Size) ||
			(remote.Base != nil && remote.Base.Kind == KindFile && local.Size == remote.Base.Size) ||
			(remote.BaseBase != nil && remote.BaseBase.Kind == KindFile && local.Size == remote.BaseBase.Size)) {
		local.Hash = in.LocalHash()
	}
	// A change made on top of the very content the other side holds is no
	// conflict: that side has changed nothing since. Two sites' first
	// scans of the same tree are concurrent versions of every path, so a
	// change one site makes before it meets the other's first scan meets
	// it this way (a delete would otherwise lose to it as to a modify).
	// Both sites judge from the same two versions, so they agree; when each
	// holds what the other replaced, neither rule is taken.
	remoteOnLocal := madeOn(remote.Base, local)
	localOnRemote := madeOn(cur.Base, in.State)
	rr := Rival{Origin: remote.Origin, VV: remote.VV, State: in.State, Base: remote.Base, BaseSite: remote.BaseSite, BaseTime: remote.BaseTime, BaseBase: remote.BaseBase}
	lr := Rival{Origin: cur.Origin, VV: cur.VV, State: local, Base: cur.Base, BaseSite: cur.BaseSite, BaseTime: cur.BaseTime, BaseBase: cur.BaseBase}
	switch {
	case remoteOnLocal && !localOnRemote, rr.replacedOn(lr):
		// Also a delete of a version made on top of the local content:
		// it wins as that version would, with no conflict.
		return done(Decision{Act: ActApply}, applied)
	case localOnRemote && !remoteOnLocal, lr.replacedOn(rr):
		cur.Seen = Merge(seen, remote.VV)
		return done(Decision{Act: ActSkip}, cur)
	}
	lr.State = cur.State
	remoteWins := Outranks(rr, lr)
	if SameContent(local, in.State) {
		if remoteWins {
			return done(Decision{Act: ActApply}, applied)
		}
		cur.Seen = Merge(seen, remote.VV)
		return done(Decision{Act: ActSkip}, cur)
	}
	var d Decision
	var ne Entry
	var loserState State
	if remoteWins {
		c.Winner, c.WinnerTime, c.Loser, c.LoserTime = remote.Origin, remote.Time(), cur.Origin, localTime
		d, ne, loserState = Decision{Act: ActApply}, applied, cur.State
		if holdsOwn {
			d = Decision{Act: ActRenameApply, Copy: ConflictName(in.Key, l.Site, localTime)}
		} else if cur.State.Kind != KindAbsent {
			ne.Lost = Merge(ne.Lost, VV{cur.Origin: localTime})
		}
	} else {
		c.Winner, c.WinnerTime, c.Loser, c.LoserTime = cur.Origin, localTime, remote.Origin, remote.Time()
		d, ne, loserState = Decision{Act: ActSkip}, cur, in.State
		ne.Seen = Merge(seen, remote.VV)
		if in.State.Kind != KindAbsent {
			ne.Lost = Merge(ne.Lost, VV{remote.Origin: remote.Time()})
		}
	}
	if loserState.Kind != KindAbsent {
		// The loser leaves something (the winner may be a delete that
		// outranks it): its site keeps it.
		copyName := ConflictName(in.Key, c.Loser, c.LoserTime)
		if err := l.recordConflict(in, c, copyName, d.Copy != ""); err != nil {
			return Decision{}, err
		}
	} else {
		l.Log.Info("sync: a delete met a concurrent change; the change stays", "path", in.Key, "peer", in.Peer,
			"winner_site", c.Winner, "loser_site", c.Loser, "loser_deleted", loserState.Kind == KindAbsent)
	}
	return done(d, ne)
}

// goneBelow records that everything below the directory key is gone with
// it, in the peer's version ne that replaces it (as its origin recorded
// when it made the change), so that no entry below still says a peer's
// file is in the tree (InTree).
func (l *Ledger) goneBelow(key string, ne Entry) error {
	for p, c := range l.entries {
		if strings.HasPrefix(p, key+"/") && c.State.Kind != KindAbsent {
			cv := Merge(c.Seen, c.VV)
			cv[ne.Origin] = max(cv[ne.Origin], ne.VV[ne.Origin])
			if err := l.set(p, &Entry{VV: cv, Seen: cv, State: Absent, Origin: ne.Origin, Shipped: ne.Shipped, Stored: ne.Stored, Lost: c.Lost, Base: baseOf(c)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// changedBelow reports whether the tree under a directory the record
// deletes holds a change the deleter had not seen.
func (l *Ledger) changedBelow(in Incoming) bool {
	changed := false
	in.Below(func(p string, st State) {
		if changed {
			return
		}
		e := l.entries[p]
		switch {
		case e != nil && e.From == in.Peer && in.DecidedBefore != nil && in.DecidedBefore(p):
			// The deleter's own record earlier in the segment decided it;
			// the tree shows the state before that until it is applied.
		case e == nil || !e.State.Same(st):
			changed = true // not versioned yet: a local change
		case e.Origin == l.Site && e.VV[l.Site] > in.Ver.Seen[l.Site]:
			changed = true
		}
	})
	return changed
}

// resurrect keeps a directory whose delete lost: it and everything below
// get new local versions (including the delete's), and the source ships
// them again.
func (l *Ledger) resurrect(in Incoming, cur Entry, seen VV) (Decision, error) {
	now := l.now()
	vv := Merge(seen, in.Ver.VV)
	vv[l.Site] = now
	ne := Entry{VV: vv, Seen: vv, State: in.Disk, Origin: l.Site, From: in.Peer, Seq: in.Seq, Act: ActSkip}
	if err := l.set(in.Key, &ne); err != nil {
		return Decision{}, err
	}
	var err error
	in.Below(func(p string, st State) {
		e := l.entries[p]
		cv := Merge(in.Ver.VV, nil)
		if e != nil {
			cv = Merge(cv, Merge(e.Seen, e.VV))
		}
		cv[l.Site] = now
		if serr := l.set(p, &Entry{VV: cv, Seen: cv, State: st, Origin: l.Site}); serr != nil && err == nil {
			err = serr
		}
	})
	if err != nil {
		return Decision{}, err
	}
	l.Log.Info("sync: a peer deleted a directory below which this site changed things; it stays and is shipped again",
		"path", in.Key, "peer", in.Peer)
	if l.OnReship != nil {
		l.OnReship(in.Key)
	}
	return Decision{Act: ActSkip}, nil
}

// noteKnown adds what this site's own version v, read back by a rejoin,
// says the site had seen before its loss (Ledger.known).
func (l *Ledger) noteKnown(v Version) error {
	k := Merge(l.known, v.Seen)
	k[l.Site] = max(k[l.Site], v.Time())
	if l.known != nil && k.LE(l.known) {
		return nil
	}
	l.known = k
	return l.writeLine(ledgerLine{Known: k})
}

// recordConflict lists c, whose loser is kept as copyName by the loser's
// site (made: this one), unless a rejoin meets again a conflict the site
// had met before its loss (both versions known).
func (l *Ledger) recordConflict(in Incoming, c Conflict, copyName string, made bool) error {
	if in.Rebuild && c.WinnerTime <= l.known[c.Winner] && c.LoserTime <= l.known[c.Loser] {
		l.Log.Debug("rejoin: a conflict met before the loss, not recorded again", "path", c.Path, "winner_site", c.Winner, "loser_site", c.Loser)
		return nil
	}
	c.Copy, c.Made = copyName, made
	// Listed in ConflictsFile by the Sync that makes the decision durable
	// (and in the segment's decision line: SetDecided).
	l.queued = append(l.queued, c)
	l.conflicts.Add(1)
	l.Log.Warn("sync conflict", "path", c.Path, "peer", c.Peer, "winner_site", c.Winner,
		"winner_time", time.Unix(0, c.WinnerTime).UTC(), "loser_site", c.Loser, "loser_time", time.Unix(0, c.LoserTime).UTC(), "copy", c.Copy, "copy_made_here", c.Made)
	if l.OnConflict != nil {
		l.OnConflict(c)
	}
	return nil
}

// appendConflicts appends cs to ConflictsFile and makes them durable
// before it returns: the ledger line that carries them too (segLine) is
// only the peer's last, so once its next segment is decided a power loss
// would otherwise lose them.
func (l *Ledger) appendConflicts(cs []Conflict) error {
	if len(cs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, c := range cs {
		b, _ := json.Marshal(c)
		buf.Write(append(b, '\n'))
	}
	path := filepath.Join(l.dir, ConflictsFile)
	_, statErr := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("sync conflicts: %w", err)
	}
	out := buf.Bytes()
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		// A torn last line (a power loss mid-append) is cut off first: the
		// first line appended would join it and be lost, and ended, it
		// would be a damaged line in the middle (ReadConflicts refuses
		// one). Its conflict is listed again from the ledger (Open).
		err = cutTornTail(f, fi.Size())
	}
	if err == nil {
		_, err = f.Write(out)
	}
	if err == nil {
		err = l.fsync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		err = fsutil.SyncDir(l.dir) // its name, when this created it
	}
	if err != nil {
		return fmt.Errorf("sync conflicts %s: %w", path, err)
	}
	return nil
}

// cutTornTail cuts f, of size bytes, back to the end of its last whole
// line.
func cutTornTail(f *os.File, size int64) error {
	tail := make([]byte, min(size, 64<<10))
	for end := size; end > 0; {
		start := end - int64(len(tail))
		if start < 0 {
			tail, start = tail[:end], 0
		}
		if _, err := f.ReadAt(tail, start); err != nil {
			return err
		}
		if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
			if start+int64(i)+1 == size {
				return nil // whole
			}
			return f.Truncate(start + int64(i) + 1)
		}
		end = start
	}
	return f.Truncate(0)
}

// ReadConflicts lists the conflicts recorded in a sync state directory. A
// last line without its newline was torn by a crash while it was appended
// (its conflict is listed again when the site starts: Open) and is
// skipped; any other line that is not a conflict is an error naming the
// file and the line.
func ReadConflicts(dir string) ([]Conflict, error) {
	path := filepath.Join(dir, ConflictsFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []Conflict
	n := 0
	for line := range bytes.Lines(raw) {
		n++
		var c Conflict
		if err := json.Unmarshal(line, &c); err != nil || c.Path == "" {
			if !bytes.HasSuffix(line, []byte{'\n'}) {
				break // torn
			}
			if err == nil {
				err = errors.New("no path")
			}
			return nil, fmt.Errorf("sync conflicts %s: line %d is not a conflict (%v); remove or fix that line", path, n, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// stateOf is the state an entry records (Absent for none).
func stateOf(e *Entry) State {
	if e == nil {
		return Absent
	}
	return e.State
}

// baseVersion names the version an entry holds, which a new local version
// of the path replaces (Version.BaseSite).
func baseVersion(e *Entry) (string, int64) {
	if e == nil || e.Origin == "" {
		return "", 0
	}
	return e.Origin, e.VV[e.Origin]
}

// baseBase is the base of the version a new local version of a path
// replaces (Version.BaseBase): e's own base.
func baseBase(e *Entry) *State {
	if e == nil {
		return nil
	}
	return e.Base
}

// baseOf is the state a new local version of a path replaces: what the
// ledger held for it (nil when it held nothing: the path is new to it).
func baseOf(e *Entry) *State {
	if e == nil {
		return nil
	}
	st := e.State
	return &st
}

// madeOn reports whether a change whose base (the state it replaced at its
// origin) is base was made on top of st: the same content, or, for a file
// the origin listed and never read (State.Unread), the same stat: kind,
// mode, size and mtime to the nanosecond, which a copy of a tree made with
// its times (cp -a, rsync -a) keeps and a change moves.
func madeOn(base *State, st State) bool {
	if base == nil {
		return false
	}
	if base.Unread {
		return base.Kind == KindFile && st.Kind == KindFile && base.Mtime != 0 &&
			base.Mode == st.Mode && base.Size == st.Size && base.Mtime == st.Mtime
	}
	return SameContent(*base, st)
}
