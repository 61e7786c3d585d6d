package dirsync

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// Kind is what a path is in a State.
type Kind string

const (
	KindAbsent Kind = "-" // nothing at the path (deleted)
	KindFile   Kind = "f"
	KindDir    Kind = "d"
	KindLink   Kind = "l"
)

// State is what a path is: what a record makes it, or what the local tree
// holds. Hash is the content's SHA-256 where known (files); Same ignores
// it, SameContent uses it.
type State struct {
	Kind   Kind   `json:"k"`
	Mode   uint32 `json:"m,omitempty"`
	Mtime  int64  `json:"t,omitempty"`
	Size   int64  `json:"s,omitempty"`
	Target string `json:"l,omitempty"`
	Hash   []byte `json:"h,omitempty"`
	// Unread: a file this site's source listed in its scan (kind, mode,
	// mtime, size from its stat) and never read: it was gone before the
	// source got to it. Only a version's Base is ever one (LocalUnread).
	Unread bool `json:"u,omitempty"`
}

// Absent is the state of a path with nothing at it.
var Absent = State{Kind: KindAbsent}

// Same reports whether a and b look the same to stat: kind, mode, mtime,
// size, symlink target. The applier sets mode and mtime exactly, so a tree
// still holding what a record made is Same as the record's state, and a
// local change (which moves the mtime) is not.
func (a State) Same(b State) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case KindAbsent:
		return true
	case KindDir:
		return a.Mode == b.Mode && a.Mtime == b.Mtime
	}
	return a.Mode == b.Mode && a.Mtime == b.Mtime && a.Size == b.Size && a.Target == b.Target
}

// SameContent reports whether a and b hold the same thing, times and modes
// aside: two sites that made the same change have no conflict. Files
// compare by hash (false when a hash is unknown).
func SameContent(a, b State) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case KindFile:
		return a.Size == b.Size && len(a.Hash) > 0 && bytes.Equal(a.Hash, b.Hash)
	case KindLink:
		return a.Target == b.Target
	}
	return true
}

// Entry is what the ledger knows of one path.
type Entry struct {
	VV      VV     `json:"vv,omitempty"`   // the version the local tree holds
	Seen    VV     `json:"seen,omitempty"` // every version of the path this site has seen (includes VV)
	State   State  `json:"st"`             // what that version is
	Origin  string `json:"o,omitempty"`    // the site that made it
	Shipped bool   `json:"sh,omitempty"`   // a local version handed to the source: it ships with VV
	// Stored: a version of this site read back from its own stream in the
	// store (ferry sync --rejoin): the store holds it already, so the
	// source records it in its index and ships nothing, as for a peer's.
	Stored bool `json:"sto,omitempty"`
	// Lost: the versions of other sites this site has seen lose a conflict
	// at the path (newest stamp per site). Every local version made after
	// carries it (Version.Lost), so that the loser's site keeps its copy
	// even when this site's change reaches it before the winner does.
	Lost VV `json:"lost,omitempty"`
	// Base is the state the version replaced, as far as this site knows
	// (nil: the path was new to it); Version.Base carries it.
	Base *State `json:"base,omitempty"`
	// BaseSite, BaseTime: the version Base is (Version.BaseSite).
	BaseSite string `json:"bs,omitempty"`
	BaseTime int64  `json:"bt,omitempty"`
	// BaseBase: the base of the version Base is (Version.BaseBase).
	BaseBase *State `json:"bb,omitempty"`

	// The last decision on a peer's record for the path, so that the
	// record applied again after a crash does what it did the first time.
	From string `json:"from,omitempty"`
	Seq  uint64 `json:"seq,omitempty"`
	Act  Action `json:"act,omitempty"`
	Copy string `json:"copy,omitempty"`
}

// Conflict is one conflict this site resolved, as listed in
// STATE/conflicts.ndjson and by ferry status.
type Conflict struct {
	At         time.Time `json:"at"`
	Path       string    `json:"path"`
	Winner     string    `json:"winner_site"`
	WinnerTime int64     `json:"winner_time"`
	Loser      string    `json:"loser_site"`
	LoserTime  int64     `json:"loser_time"`
	Copy       string    `json:"copy,omitempty"` // where the loser is kept; empty when it was a delete
	Made       bool      `json:"made,omitempty"` // this site made the copy (the loser's own site; exactly one does)
	Peer       string    `json:"peer"`           // whose record met the local version
}

// Ledger files in the sync state directory:
//
//	STATE/ledger.ndjson     one JSON line per change: {"p":PATH,"e":ENTRY}; the last line
//	                        of a path wins; a torn last line is ignored; rewritten
//	                        (temp, fsync, rename) when it holds many superseded lines.
//	                        Also one line per peer's segment decided:
//	                        {"seg":{"peer":ID,"segment":NAME,"acts":"sasr-c","copies":{"3":NAME}}}
//	                        (one letter per record, with "conf":[CONFLICT...] for the
//	                        conflicts its decisions resolved), and again with "done":true
//	                        (and "cont":PATH) once it is applied to its end; the last one
//	                        of a peer wins.
//	                        A rejoin adds {"known":VV}: what the site had seen before its
//	                        loss, from its own stream; the last one wins.
//	                        A line that is not JSON or holds other than exactly one of
//	                        "e", "seg", "known" makes Open refuse the ledger, unless it
//	                        is the last (torn).
//	STATE/conflicts.ndjson  one Conflict per line, appended (and fsynced) by the Sync that makes
//	                        the decision resolving it durable (segLine.Conflicts)
const (
	LedgerFile    = "ledger.ndjson"
	ConflictsFile = "conflicts.ndjson"
)

// ledgerLine is one line of LedgerFile: a path's entry, or (Seg) the
// decisions on a peer's segment.
type ledgerLine struct {
	P   string   `json:"p,omitempty"`
	E   *Entry   `json:"e,omitempty"`
	Seg *segLine `json:"seg,omitempty"`
	// Known: what this site had seen before a rejoin rebuilt it (Ledger.known).
	Known VV `json:"known,omitempty"`
}

// kinds counts the parts a ledger line holds (exactly one is valid).
func (line ledgerLine) kinds() int {
	n := 0
	for _, set := range []bool{line.E != nil, line.Seg != nil, line.Known != nil} {
		if set {
			n++
		}
	}
	return n
}

// segLine is what a peer's segment was decided to do (SetDecided): Acts
// has one letter per record (actLetters), Copies the conflict copy names
// by record index.
type segLine struct {
	Peer    string         `json:"peer"`
	Segment string         `json:"segment"`
	Acts    string         `json:"acts"`
	Copies  map[int]string `json:"copies,omitempty"`
	// Done: the segment was applied to its end and the tree made durable
	// (SetAppliedToEnd); Cont is then the file whose chunks go on in the
	// next segment.
	Done bool   `json:"done,omitempty"`
	Cont string `json:"cont,omitempty"`
	// Conflicts: those the segment's decisions resolved. They are
	// appended to ConflictsFile only once this line is durable (Sync), so
	// a crash before cannot leave a conflict recorded, its copy counted
	// as made, for a decision then taken anew; Open appends any that a
	// crash right after kept from ConflictsFile.
	Conflicts []Conflict `json:"conf,omitempty"`
}

// actLetters encodes a segment's decisions, one byte per record.
var actLetters = map[Action]byte{"": '-', ActApply: 'a', ActSkip: 's', ActRenameApply: 'r', ActAsCopy: 'c'}

// Ledger is a site's record of the version of every path of its tree. One
// Ledger serves the site's dir: source and every applier of a peer's
// stream; they hold its lock while they read the tree and decide, so that
// neither sees the other's half-done work.
type Ledger struct {
	Site string
	Log  *slog.Logger
	// OnReship is called (under the lock) with a path whose subtree the
	// source must ship again: a delete of a directory lost to changes
	// below it.
	OnReship func(path string)
	// OnConflict is called for every conflict resolved (metrics).
	OnConflict func(Conflict)

	mu        sync.Mutex
	dir       string
	entries   map[string]*Entry
	under     map[string]int      // per directory, how many paths below it have entries (put)
	segs      map[string]*segLine // per peer, the decisions on its last segment decided
	frontier  VV                  // the highest stamp applied from each site
	queued    []Conflict          // resolved since the last Sync, listed by it
	clock     int64               // hybrid logical clock: the last stamp given or seen
	f         *os.File
	w         *bufio.Writer
	lines     int
	dirty     bool
	conflicts atomic.Int64

	// After a start (SetApplied): per peer, its receiver's checkpoint and
	// the file whose chunks go on; the paths of a peer's segment decided
	// and not applied to its end, by peer.
	applied    map[string]uint64
	continuing map[string]string
	pending    map[string]string
	// pendingGone: the pending paths whose decision leaves no directory
	// there, by peer. Everything below such a path waits too: a delete of
	// a directory (or a file or symlink that replaces one) took the
	// entries below it with it (goneBelow) while the tree still holds
	// them until the segment is applied again (waiting).
	pendingGone map[string]string

	// While a peer's segment is decided (BeginSegment to EndSegment): the
	// entries, as they stood before it, of the paths its decisions
	// changed (nil: the path had none). The tree still shows that state
	// until the segment is applied.
	before map[string]*Entry

	// known: per site, the newest stamp this site had seen before it lost
	// its state, as its own stream read back by a rejoin says (its own
	// versions, and their Seen). A conflict of two versions it had seen
	// was met and recorded then (Incoming.Rebuild).
	known VV

	// baseline: the source is shipping a baseline (SetBaseline): this
	// site's versions read back by a rejoin (Entry.Stored) ship again with
	// it, as every other version of this site does, so that the stream
	// from the baseline on holds them all.
	baseline bool

	// fsync makes the log file durable (f.Sync; crash-image tests wrap it
	// to note what each fsync made durable).
	fsync func(*os.File) error
}

// Open loads the ledger of the sync state directory dir (creating it).
func Open(dir, site string, log *slog.Logger) (*Ledger, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sync ledger: %w", err)
	}
	l := &Ledger{Site: site, Log: log, dir: dir, entries: map[string]*Entry{}, under: map[string]int{}, frontier: VV{}, segs: map[string]*segLine{},
		fsync: (*os.File).Sync}
	path := filepath.Join(dir, LedgerFile)
	raw, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sync ledger: %w", err)
	}
	good := 0
	for len(raw) > good {
		nl := bytes.IndexByte(raw[good:], '\n')
		if nl < 0 {
			break // torn last line: never fsynced, so nothing depends on it
		}
		var line ledgerLine
		if err := json.Unmarshal(raw[good:good+nl], &line); err != nil || line.kinds() != 1 {
			if good+nl+1 == len(raw) {
				break
			}
			return nil, fmt.Errorf("sync ledger %s is damaged at byte %d (%v); remove the sync state to start over", path, good, err)
		}
		switch {
		case line.Known != nil:
			l.known = line.Known
		case line.Seg != nil:
			l.segs[line.Seg.Peer] = line.Seg
		default:
			l.put(line.P, line.E)
		}
		l.lines++
		good += nl + 1
	}
	for _, e := range l.entries {
		l.observe(e.VV)
		l.observe(e.Seen)
	}
	l.frontier[site] = l.clock
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err == nil {
		err = f.Truncate(int64(good))
	}
	if err == nil {
		_, err = f.Seek(int64(good), 0)
	}
	if err != nil {
		return nil, fmt.Errorf("sync ledger: %w", err)
	}
	l.f, l.w = f, bufio.NewWriterSize(f, 64<<10)
	if err := l.recoverConflicts(); err != nil {
		return nil, err
	}
	if n, err := countLines(filepath.Join(dir, ConflictsFile)); err == nil {
		l.conflicts.Store(int64(n))
	}
	return l, nil
}

// recoverConflicts appends to ConflictsFile the conflicts of each peer's
// last decided segment that it does not list: the ledger line was made
// durable and the site stopped before Sync appended them.
func (l *Ledger) recoverConflicts() error {
	var want []Conflict
	for _, sl := range l.segs {
		want = append(want, sl.Conflicts...)
	}
	if len(want) == 0 {
		return nil
	}
	have, err := ReadConflicts(l.dir)
	if err != nil {
		return fmt.Errorf("sync conflicts: %w", err)
	}
	listed := map[string]bool{}
	for _, c := range have {
		b, _ := json.Marshal(c)
		listed[string(b)] = true
	}
	var missing []Conflict
	for _, c := range want {
		if b, _ := json.Marshal(c); !listed[string(b)] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		l.Log.Info("sync: conflicts decided before the site stopped, not yet listed, are listed now", "conflicts", len(missing))
	}
	return l.appendConflicts(missing)
}

func countLines(path string) (int, error) {
	raw, err := os.ReadFile(path)
	return bytes.Count(raw, []byte{'\n'}), err
}

// Close writes what is buffered and closes the file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.syncLocked()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// Lock and Unlock serialise the source and the appliers.
func (l *Ledger) Lock()   { l.mu.Lock() }
func (l *Ledger) Unlock() { l.mu.Unlock() }

// Conflicts is how many conflicts this site has resolved (all time).
func (l *Ledger) Conflicts() int64 { return l.conflicts.Load() }

// Get returns a copy of the entry of path (tests, status), under the lock.
func (l *Ledger) Get(path string) (Entry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[path]
	if e == nil {
		return Entry{}, false
	}
	return *e, true
}

// Unshipped lists, parents first, the paths whose version is this site's
// own but was never handed to the source: a directory kept against a
// peer's delete (resurrect) and what is below it, or a local change
// versioned by Decide. The source ships them when it starts, since a
// crash can lose the running source's note of them (OnReship) while the
// tree and the source's index still agree.
func (l *Ledger) Unshipped() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p, e := range l.entries {
		if e.Origin == l.Site && !e.Shipped {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// now is the next stamp of this site: wall-clock nanoseconds, but always
// past every stamp given or seen, so a site's changes are ordered and a
// change made after seeing another is stamped later than it.
func (l *Ledger) now() int64 {
	t := time.Now().UnixNano()
	if t <= l.clock {
		t = l.clock + 1
	}
	l.clock = t
	l.frontier[l.Site] = t
	return t
}

func (l *Ledger) observe(v VV) {
	for s, t := range v {
		if t > l.clock {
			l.clock = t
		}
		if s != l.Site && t > l.frontier[s] {
			l.frontier[s] = t
		}
	}
}

// set records e for path in memory and in the log (written, not yet
// synced: Sync makes it durable).
func (l *Ledger) set(path string, e *Entry) error {
	if l.before != nil {
		if _, ok := l.before[path]; !ok {
			l.before[path] = l.entries[path]
		}
	}
	l.put(path, e)
	return l.writeLine(ledgerLine{P: path, E: e})
}

// put sets path's entry in memory, counting a new path below each of its
// directories (under).
func (l *Ledger) put(path string, e *Entry) {
	if _, ok := l.entries[path]; !ok {
		for d := path; ; {
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
			l.under[d]++
		}
	}
	l.entries[path] = e
}

func (l *Ledger) writeLine(line ledgerLine) error {
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := l.w.Write(b); err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	l.lines++
	l.dirty = true
	return nil
}

// BeginSegment starts the decisions on a peer's segment (call it under
// the lock, before the first Decide; EndSegment after the last): until
// the segment is applied, the tree shows every path as it was before it,
// which Decide then tells from a local change even where an earlier
// record of the segment already changed the path's entry (a file below a
// directory the segment deleted or made).
func (l *Ledger) BeginSegment() { l.before = map[string]*Entry{} }

// EndSegment ends what BeginSegment started.
func (l *Ledger) EndSegment() { l.before = nil }

// SetDecided records acts, the decisions on the records of the segment
// named segment of peer's stream, in order (call it under the lock, with
// the entries it decided; Sync before touching the tree). Only the last
// segment of each peer is kept: the receiver checkpoints every segment
// before it applies the next, so only that one can be applied again.
func (l *Ledger) SetDecided(peer, segment string, acts []Decision) error {
	sl := &segLine{Peer: peer, Segment: segment}
	b := make([]byte, len(acts))
	for i, d := range acts {
		c, ok := actLetters[d.Act]
		if !ok {
			return fmt.Errorf("sync ledger: unknown decision %q", d.Act)
		}
		b[i] = c
		if d.Copy != "" {
			if sl.Copies == nil {
				sl.Copies = map[int]string{}
			}
			sl.Copies[i] = d.Copy
		}
	}
	sl.Acts = string(b)
	sl.Conflicts = append([]Conflict(nil), l.queued...)
	l.segs[peer] = sl
	return l.writeLine(ledgerLine{Seg: sl})
}

// Decided returns the decisions SetDecided recorded on segment of peer's
// stream, if it is the last one recorded for peer and has n records (call
// it under the lock). A segment applied again (after a crash, or a retry
// after an error midway) must do what it was decided to do the first
// time: deciding it again would meet the tree half applied, and take what
// the first pass already did for local changes.
func (l *Ledger) Decided(peer, segment string, n int) ([]Decision, bool) {
	sl := l.segs[peer]
	if sl == nil || sl.Segment != segment || len(sl.Acts) != n {
		return nil, false
	}
	out := make([]Decision, n)
	for i := range n {
		for act, c := range actLetters {
			if c == sl.Acts[i] {
				out[i].Act = act
			}
		}
		out[i].Copy = sl.Copies[i]
	}
	return out, true
}

// SetAppliedToEnd records that segment of peer's stream, decided by
// SetDecided, was applied to its end and the tree made durable (call it
// after the applier's fsyncs, under the lock); cont is the file whose
// chunks go on in the next segment ("" for none). A site that stops
// before the receiver's checkpoint covers the segment then knows at its
// start that the tree held all of it: a path of the segment that differs
// now was changed here while the site was down, a change of this site
// that the segment applied again must not undo (ChangedSince, SetApplied).
//
// The line is fsynced before it returns: a power loss after the apply
// must not leave the segment half applied as far as the ledger knows (it
// would then hold back, and overwrite, a local change made to one of its
// paths since, and count a file deleted here since as the applier's).
func (l *Ledger) SetAppliedToEnd(peer, segment, cont string) error {
	sl := l.segs[peer]
	if sl == nil || sl.Segment != segment || sl.Done {
		return nil
	}
	done := *sl
	done.Done, done.Cont = true, cont
	l.segs[peer] = &done
	if err := l.writeLine(ledgerLine{Seg: &done}); err != nil {
		return err
	}
	return l.syncLocked()
}

// AppliedToEnd reports whether segment, the last of peer's segments
// decided, was applied to its end (SetAppliedToEnd; call it under the
// lock).
func (l *Ledger) AppliedToEnd(peer, segment string) bool {
	sl := l.segs[peer]
	return sl != nil && sl.Segment == segment && sl.Done
}

// ChangedSince reports whether path, decided in peer's segment of seqs
// first to last (call it under the lock), is no longer what the segment
// left: its entry is another's since (a local change the source
// versioned), or the tree, in state disk, differs from it (a local change
// not versioned yet). A segment applied to its end (AppliedToEnd) and
// applied again after a restart skips such a path: the change is this
// site's, made after the peer's, and ships.
func (l *Ledger) ChangedSince(peer string, first, last uint64, path string, disk State) bool {
	e := l.entries[path]
	return e == nil || e.From != peer || e.Seq < first || e.Seq > last || !e.State.Same(disk)
}

// Sync makes every entry set so far durable. Call it with the lock held.
func (l *Ledger) Sync() error { return l.syncLocked() }

func (l *Ledger) syncLocked() error {
	if !l.dirty {
		return nil
	}
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	if err := l.fsync(l.f); err != nil {
		return fmt.Errorf("fsync sync ledger: %w", err)
	}
	l.dirty = false
	// The decisions are durable: now the conflicts they resolved are.
	if err := l.appendConflicts(l.queued); err != nil {
		return err
	}
	l.queued = nil
	if l.lines > 4*len(l.entries)+100000 {
		return l.compact()
	}
	return nil
}

// compact rewrites the log with one line per path.
func (l *Ledger) compact() error {
	paths := make([]string, 0, len(l.entries))
	for p := range l.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	for _, p := range paths {
		b, _ := json.Marshal(ledgerLine{P: p, E: l.entries[p]})
		buf.Write(b)
		buf.WriteByte('\n')
	}
	peers := make([]string, 0, len(l.segs))
	for p := range l.segs {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		b, _ := json.Marshal(ledgerLine{Seg: l.segs[p]})
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if l.known != nil {
		b, _ := json.Marshal(ledgerLine{Known: l.known})
		buf.Write(b)
		buf.WriteByte('\n')
	}
	path := filepath.Join(l.dir, LedgerFile)
	if err := fsutil.WriteFileAtomic(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("sync ledger: %w", err)
	}
	l.f.Close()
	l.f, l.w, l.lines = f, bufio.NewWriterSize(f, 64<<10), len(paths)
	return nil
}

// WithHash is st with the content hash h.
func (st State) WithHash(h []byte) State {
	st.Hash = append([]byte(nil), h...)
	return st
}

// Foreign reports whether path in state st is what a peer's change, or the
// conflict rule, left in the tree, or a version of this site the store
// already holds (Entry.Stored), or a path of a peer's segment that waits
// to be applied again (SetApplied) (call it under the lock): the source
// does not ship it. hash is the content's hash as the ledger knows it.
func (l *Ledger) Foreign(path string, st State) (bool, []byte) {
	e := l.entries[path]
	if l.waiting(path) {
		return true, nil // the applier's, half applied: it applies it again
	}
	if e == nil || (e.Origin == l.Site && (!e.Stored || l.baseline)) || !e.State.Same(st) {
		return false, nil
	}
	return true, e.State.Hash
}

// SetBaseline tells the ledger that the source begins (on) or ends a
// baseline of this site's stream (docs/SYNC.md "Baselines"): while it
// runs, this site's versions the store held already (Entry.Stored) are
// shipped again too, with their own version vectors.
func (l *Ledger) SetBaseline(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.baseline = on
}

// OwnDeletes lists, parents first, the paths whose version is a delete
// made by this site (its tombstones): a baseline ships them again
// (Tombstone), since a replica built from the baseline on must not take a
// peer's older version of such a path for the newest.
func (l *Ledger) OwnDeletes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p, e := range l.entries {
		if l.ownDelete(e) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Tombstone reports whether path's version is a delete made by this site
// (call it under the lock), and whether what it deleted was a directory.
func (l *Ledger) Tombstone(path string) (ok, dir bool) {
	e := l.entries[path]
	if !l.ownDelete(e) {
		return false, false
	}
	return true, e.Base != nil && e.Base.Kind == KindDir
}

// ownDelete reports whether e is a delete this site made (a tombstone).
func (l *Ledger) ownDelete(e *Entry) bool {
	return e != nil && e.Origin == l.Site && e.State.Kind == KindAbsent && len(e.VV) > 0
}

// Present reports the kind of what the ledger says is at path, if
// anything (call it under the lock).
func (l *Ledger) Present(path string) (Kind, bool) {
	e := l.entries[path]
	if e == nil || e.State.Kind == KindAbsent {
		return "", false
	}
	return e.State.Kind, true
}

// Local is the source's question before it ships path in state st (held
// under the lock; Sync before the records reach the spool). ship is false
// when st is what a peer's change (or the conflict rule) left there: it is
// not this site's change and is not shipped back. Otherwise ver is the
// version record's data to ship before the path's records: the version
// already given to this state, or a new one.
func (l *Ledger) Local(path string, st State) (ver []byte, ship bool, err error) {
	if l.waiting(path) {
		return nil, false, nil // the applier's, half applied: it applies it again
	}
	e := l.entries[path]
	if e != nil && e.State.Same(st) {
		if e.Origin != l.Site || (e.Stored && !l.baseline) {
			return nil, false, nil
		}
		if !e.Shipped || (len(e.State.Hash) == 0 && len(st.Hash) > 0) {
			ne := *e
			ne.Shipped = true
			if len(ne.State.Hash) == 0 {
				ne.State.Hash = st.Hash
			}
			if err := l.set(path, &ne); err != nil {
				return nil, false, err
			}
			e = &ne
		}
		return l.ownVersion(e), true, nil
	}
	return l.newLocal(path, st, e, baseOf(e))
}

// LocalUnread is Local for the delete of a path the ledger does not know
// that the source's scan listed here in state listed (a file: kind, mode,
// mtime, size) and found gone when it came to read it: deleted or renamed
// away before the site's first scan reached it. The delete carries the
// listed state as its base, marked unread, so that a peer's version of
// the path with that very stat (its first scan of a copy of the same tree)
// meets it as a delete made on top of it, and the delete wins on every
// site (Decide). A path the ledger knows is Local's.
func (l *Ledger) LocalUnread(path string, listed State) (ver []byte, ship bool, err error) {
	if l.waiting(path) || l.entries[path] != nil || listed.Kind != KindFile {
		return l.Local(path, Absent)
	}
	listed.Hash, listed.Unread = nil, true
	return l.newLocal(path, Absent, nil, &listed)
}

// newLocal gives path a new version of this site in state st, replacing
// e (nil: none) whose state was base.
func (l *Ledger) newLocal(path string, st State, e *Entry, base *State) (ver []byte, ship bool, err error) {
	var seen, lost VV
	if e != nil {
		seen, lost = Merge(e.Seen, e.VV), e.Lost
	}
	now := l.now()
	vv := seen.Clone()
	vv[l.Site] = now
	bs, bt := baseVersion(e)
	ne := &Entry{VV: vv, Seen: vv, State: st, Origin: l.Site, Shipped: true, Lost: lost, Base: base, BaseSite: bs, BaseTime: bt, BaseBase: baseBase(e)}
	if err := l.set(path, ne); err != nil {
		return nil, false, err
	}
	if st.Kind == KindAbsent && l.under[path] > 0 {
		// Everything below is gone with it, in this same version.
		for p, c := range l.entries {
			if strings.HasPrefix(p, path+"/") && c.State.Kind != KindAbsent {
				cv := Merge(c.Seen, c.VV)
				cv[l.Site] = now
				if err := l.set(p, &Entry{VV: cv, Seen: cv, State: Absent, Origin: l.Site, Shipped: true, Lost: c.Lost, Base: baseOf(c)}); err != nil {
					return nil, false, err
				}
			}
		}
	}
	return l.ownVersion(ne), true, nil
}

// ownVersion is the version record data of e, an entry of this site's
// version, as Local ships it.
func (l *Ledger) ownVersion(e *Entry) []byte {
	return Version{Origin: l.Site, VV: e.VV, Seen: l.frontier.Clone(), Lost: e.Lost,
		Base: e.Base, BaseSite: e.BaseSite, BaseTime: e.BaseTime, BaseBase: e.BaseBase}.Encode()
}

// SetApplied tells the ledger, when the site starts, where peer's
// receiver checkpoint stands: every segment of peer's stream up to lastSeq
// was applied to its end, so the tree held what each of its records
// decided "apply" made, but for continuing, a file whose chunks go on in
// the next segment (InTree). So was peer's last segment decided if it
// was marked applied to its end (SetAppliedToEnd: the site stopped
// between the apply and the checkpoint). Otherwise the decisions on it,
// if the checkpoint does not cover it (the site stopped while applying
// it), are pending until the applier applies it again (DoneApplying):
// their paths are the applier's, not local changes, even as the tree
// shows them half applied (Foreign, Local).
func (l *Ledger) SetApplied(peer string, lastSeq uint64, continuing string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.applied == nil {
		l.applied, l.continuing, l.pending, l.pendingGone = map[string]uint64{}, map[string]string{}, map[string]string{}, map[string]string{}
	}
	l.applied[peer], l.continuing[peer] = lastSeq, continuing
	sl := l.segs[peer]
	if sl == nil {
		return
	}
	_, first, last, ok := batch.ParseSegmentName(sl.Segment)
	if !ok || last <= lastSeq {
		return
	}
	if sl.Done {
		// Applied to its end, the checkpoint not written: the tree holds
		// the segment, and what differs from it now is a local change.
		l.applied[peer], l.continuing[peer] = last, sl.Cont
		l.Log.Info("sync: a peer's segment was applied to its end before the site stopped, its checkpoint not written; what changed here since stays, and ships",
			"peer", peer, "segment", sl.Segment)
		return
	}
	for p, e := range l.entries {
		if e.From == peer && e.Seq >= first && e.Seq <= last && e.Act != ActSkip && e.Act != "" {
			l.pending[p] = peer
			if e.State.Kind != KindDir {
				l.pendingGone[p] = peer
			}
		}
	}
	if len(l.pending) > 0 {
		l.Log.Info("sync: a peer's segment was decided and not applied to its end before the site stopped; its paths wait for it to be applied again",
			"peer", peer, "segment", sl.Segment, "paths", len(l.pending))
	}
}

// DoneApplying marks the end of the application of a segment of peer's
// stream (call it under the lock): no path waits for it any more.
func (l *Ledger) DoneApplying(peer string) {
	for p, from := range l.pending {
		if from == peer {
			delete(l.pending, p)
		}
	}
	for p, from := range l.pendingGone {
		if from == peer {
			delete(l.pendingGone, p)
		}
	}
}

// waiting reports whether path belongs to a peer's segment decided and
// not applied to its end before the site stopped (SetApplied), until the
// applier applies it again (call it under the lock): a path of the
// segment, or one below a path whose decision leaves no directory there
// (a peer's delete of a directory: the ledger holds everything below as
// deleted with it while the tree still holds it). The source must not
// take such a path, as the tree shows it, for a change of this site: a
// file below the directory would ship back with a version that
// supersedes the peer's delete, bring the directory back at the peer,
// and be gone here once the delete is applied.
func (l *Ledger) waiting(path string) bool {
	if l.pending[path] != "" {
		return true
	}
	for a := path; len(l.pendingGone) > 0; {
		i := strings.LastIndexByte(a, '/')
		if i < 0 {
			return false
		}
		a = a[:i]
		if l.pendingGone[a] != "" {
			return true
		}
	}
	return false
}

// InTree lists the paths a peer's change certainly put in the tree and
// that still hold it as far as the ledger knows: a peer's present state,
// decided "apply" in a segment the peer's checkpoint covers (SetApplied),
// every ancestor a directory. The source ships the removal of such a path
// that is gone and that its index does not have: a file applied just
// before the site stopped and deleted while it was down. (The ledger alone
// is no proof: an apply that failed after its entry never touched the
// tree.)
func (l *Ledger) InTree() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for p, e := range l.entries {
		if e.Origin == l.Site || e.State.Kind == KindAbsent || e.From == "" ||
			(e.Act != ActApply && e.Act != ActRenameApply) {
			continue
		}
		if applied, ok := l.applied[e.From]; !ok || e.Seq > applied || l.continuing[e.From] == p {
			continue
		}
		under := true
		for a := p; under; {
			i := strings.LastIndexByte(a, '/')
			if i < 0 {
				break
			}
			a = a[:i]
			ae := l.entries[a]
			under = ae != nil && ae.State.Kind == KindDir
		}
		if under {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}
