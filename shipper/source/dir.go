//go:build linux

package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/shipper"
)

// dirSourceRun is the state of a Dir's Run (dir_config.go).
type dirSourceRun struct {
	mu             sync.Mutex
	run            *dirRun // the current Run, for Status
	baselineWanted atomic.Bool
	reship         []string // paths whose subtrees are to be shipped again
}

// Reship asks the running source to ship path and everything below it
// again, as if the index did not know them (ferry sync: a peer's delete of
// a directory lost to changes below it). Safe from any goroutine.
func (s *Dir) Reship(path string) {
	s.mu.Lock()
	s.reship = append(s.reship, path)
	s.mu.Unlock()
	s.wakeRun()
}

// wakeRun wakes the running source's loop, if one runs.
func (s *Dir) wakeRun() {
	s.mu.Lock()
	r := s.run
	s.mu.Unlock()
	if r != nil {
		r.wake()
	}
}

// wake makes the loop look at its work now; a wake already pending covers
// this one.
func (r *dirRun) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// takeReship marks dirty, and unknown to the index, the paths Reship named.
func (r *dirRun) takeReship() error {
	s := r.src
	s.mu.Lock()
	paths := s.reship
	s.reship = nil
	s.mu.Unlock()
	for _, p := range paths {
		r.idx.markPending(p)
		r.markDirty(p, time.Time{})
		if fi, err := os.Lstat(r.abs(p)); err != nil || !fi.IsDir() {
			continue // a file, or gone: marking it is enough
		}
		if err := r.walk(p, map[string]struct{}{}, map[string]bool{}); err != nil {
			return err
		}
	}
	return nil
}

// DirStatus is what a Dir reports about itself.
type DirStatus struct {
	Scans    int  // full scans: one at start, one more per inotify overflow
	Baseline bool // the first scan's differences have been shipped
	Watched  int  // directories watched
	Dirty    int  // paths waiting to be shipped
	Indexed  int  // paths in the index
	Records  uint64
	Bytes    int64 // framed bytes of the records appended
	Flushes  uint64

	BaselineRunning bool      // a baseline is being shipped
	Baselines       int       // baselines completed by this Run
	LastBaseline    time.Time // end of the last baseline the spool completed
}

// Status reports on the running source (zero before Run).
func (s *Dir) Status() DirStatus {
	s.mu.Lock()
	r := s.run
	s.mu.Unlock()
	if r == nil {
		return DirStatus{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Watched, st.Dirty = len(r.watched), len(r.dirty)
	return st
}

var errDirRescan = errors.New("rescan")

// errDirWatchLimit: the inotify watch limit is reached; the source cannot go on.
var errDirWatchLimit = errors.New("inotify watch limit reached")

// dirCursor is the source cursor stored with every batch.
type dirCursor struct {
	Batches uint64 `json:"dir_batches"`
}

// Run ships the tree until ctx ends (nil) or something fails: the index
// cannot be written, the sink refuses records, or the watch limit is hit.
func (s *Dir) Run(ctx context.Context, sink shipper.Sink) error {
	r, err := s.start()
	if err != nil {
		return err
	}
	defer r.idx.close()
	defer r.rootDir.Close()
	s.mu.Lock()
	s.run = r
	if s.Ledger != nil {
		// What the ledger gave versions of this site that never reached
		// the source (a crash between the two) ships now.
		s.reship = append(s.reship, s.Ledger.Unshipped()...)
	}
	s.mu.Unlock()
	if s.Ledger != nil {
		r.markGoneWhileDown()
	}
	for {
		err := r.watchAndShip(ctx, sink)
		if errors.Is(err, errDirRescan) && ctx.Err() == nil {
			r.log.Warn("inotify events were lost (queue overflow): rescanning the tree", "root", r.root)
			continue
		}
		if ctx.Err() != nil {
			if perr := r.maybePersist(true); perr != nil {
				return perr
			}
			return nil
		}
		return err
	}
}

// markGoneWhileDown marks for shipping the removal of the paths a peer's
// change certainly put in the tree (dirsync.Ledger.InTree) that are gone
// and that the index does not have: applied just before the site stopped,
// never indexed, and deleted while it was down. As for a removal seen
// running (peerGone), they count as having appeared.
func (r *dirRun) markGoneWhileDown() {
	for _, p := range r.src.Ledger.InTree() {
		if r.idx.get(p) != nil || r.skip(p) {
			continue
		}
		if _, err := os.Lstat(r.abs(p)); !errors.Is(err, os.ErrNotExist) {
			continue
		}
		r.mu.Lock()
		if r.appeared == nil {
			r.appeared = map[string]struct{}{}
		}
		r.appeared[p] = struct{}{}
		r.mu.Unlock()
		r.markDirty(p, time.Time{})
	}
}

func (s *Dir) start() (*dirRun, error) {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	if s.Root == "" {
		return nil, errors.New("dir source: no root directory")
	}
	if s.SpoolDir == "" {
		return nil, errors.New("dir source: no spool directory for the index")
	}
	for _, p := range s.Exclude {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("dir source: exclude pattern %q: %w", p, err)
		}
	}
	root, err := filepath.Abs(s.Root)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return nil, fmt.Errorf("dir source %s: %w", s.Root, err)
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("dir source %s: not a directory", s.Root)
	}
	spool, err := filepath.Abs(s.SpoolDir)
	if err == nil {
		if sp, e := filepath.EvalSymlinks(spool); e == nil {
			spool = sp
		}
	}
	if err != nil || spool == root || strings.HasPrefix(spool, root+"/") {
		return nil, fmt.Errorf("dir source %s: the spool %s must not be inside the tree it ships", s.Root, s.SpoolDir)
	}
	r := &dirRun{
		src: s, root: root, prefix: root + "/", log: log.With("source", "dir:"+s.Root),
		idx:   newDirIndex(s.SpoolDir),
		dirty: map[string]*dirDirtyMark{}, warned: map[string]bool{},
		kick: make(chan struct{}, 1), rescan: make(chan struct{}, 1), fatal: make(chan error, 1),
		debounce: s.Debounce, maxDelay: s.MaxDelay, settle: s.Settle,
		chunk: s.ChunkSize, maxRecord: s.MaxRecordSize, indexEvery: s.IndexEvery,
		recent: newDirRecentMaps(dirRecentBudget),
	}
	if root == "/" {
		r.prefix = "/"
	}
	if r.debounce <= 0 {
		r.debounce = 100 * time.Millisecond
	}
	if r.maxDelay <= 0 {
		r.maxDelay = max(2*time.Second, r.debounce)
	}
	if r.settle <= 0 {
		r.settle = 20 * time.Millisecond
	}
	if r.chunk <= 0 {
		r.chunk = dirtree.ChunkSize
	}
	if r.maxRecord <= 0 {
		r.maxRecord = 16 << 20
	}
	if r.indexEvery <= 0 {
		r.indexEvery = 30 * time.Second
	}
	if r.rootDir, err = os.Open(root); err != nil {
		return nil, fmt.Errorf("dir source: %w", err)
	}
	f, err := r.openIn(".", unix.O_PATH)
	if err != nil {
		r.rootDir.Close()
		return nil, fmt.Errorf("dir source %s: %w (openat2 needs Linux 5.6 or later)", s.Root, err)
	}
	f.Close()
	exists, err := r.idx.open()
	if err != nil {
		r.rootDir.Close()
		r.idx.close()
		return nil, err
	}
	var cur dirCursor
	if len(s.Cursor) > 0 {
		if err := json.Unmarshal(s.Cursor, &cur); err != nil {
			r.log.Warn("spool cursor is not a dir source's; treating the spool as new", "cursor", string(s.Cursor))
		}
	}
	r.idx.checkCursor(cur.Batches, exists, r.log)
	r.lastPersist = time.Now()
	if err := r.initBaseline(); err != nil {
		r.rootDir.Close()
		r.idx.close()
		return nil, err
	}
	return r, nil
}

// dirRun is the state of one Dir.Run.
type dirRun struct {
	src     *Dir
	root    string // absolute, symlinks resolved
	prefix  string // root + "/"
	rootDir *os.File
	log     *slog.Logger
	idx     *dirIndex

	debounce, maxDelay, settle, indexEvery time.Duration
	chunk, maxRecord                       int

	kick   chan struct{} // a path became dirty
	rescan chan struct{} // events were lost
	fatal  chan error    // the event side hit something it cannot go on from

	mu      sync.Mutex
	w       *fsnotify.Watcher
	watched map[string]struct{}
	dirty   map[string]*dirDirtyMark
	// appeared are the paths an event showed coming into the tree (a
	// create, or a rename to the name) since they were last processed:
	// under ferry sync, a peer's path the applier put there is in the tree
	// even before the index has it (gone).
	appeared map[string]struct{}
	// listed: ferry sync, the files a scan listed that the index does
	// not have, by their stat, until they are processed: one gone by
	// then was deleted here before the source read it (gone).
	listed      map[string]dirsync.State
	renames     map[string]dirRenamePair // by new path (dir_rename.go)
	renameSeq   uint64
	renamedAway map[string]string // new path of a pending rename, moved on -> its old path
	warned      map[string]bool
	status      DirStatus

	// Flusher side only.
	cur         []batch.Record
	curBytes    int
	flushPaths  []string
	logged      bool // flushPaths are in the pending log
	inFlush     bool // a flush started and did not finish: the index is not durable
	changed     int  // index changes since the snapshot
	lastPersist time.Time

	recent       *dirRecentMaps  // block maps of files shipped whole lately (dir_recent.go)
	base         *dirBaselineRun // the baseline in progress, if any
	nextBaseline time.Time       // when the next one is due (zero: never)
}

// openIn opens rel below the root without following a symlink anywhere on
// the way: a path that leads through a symlink is not in the tree (ELOOP),
// so the source never reads or ships anything outside the root. With O_PATH
// a trailing symlink is opened itself.
func (r *dirRun) openIn(rel string, flags int) (*os.File, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
	for {
		fd, err := unix.Openat2(int(r.rootDir.Fd()), rel, &how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // EAGAIN: a rename raced the lookup
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: r.abs(rel), Err: err}
		}
		return os.NewFile(uintptr(fd), r.abs(rel)), nil
	}
}

func (r *dirRun) abs(rel string) string {
	if rel == "." {
		return r.root
	}
	return r.prefix + rel
}

func (r *dirRun) rel(name string) (string, bool) {
	if name == r.root {
		return ".", true
	}
	if rest, ok := strings.CutPrefix(name, r.prefix); ok && rest != "" {
		return rest, true
	}
	return "", false
}

// skip says whether rel is not shipped: excluded, or a name the applier
// reserves for its temporary files.
func (r *dirRun) skip(rel string) bool {
	if rel == "." {
		return false
	}
	if dirtree.Reserved(rel) {
		if r.src.Ledger == nil { // under ferry sync they are the appliers' own temp files
			r.warnOnce(rel, "path has a name the dir applier reserves; not shipped", nil)
		}
		return true
	}
	base := path.Base(rel)
	for _, pat := range r.src.Exclude {
		if ok, _ := path.Match(pat, base); ok {
			return true
		}
		if ok, _ := path.Match(pat, rel); ok {
			return true
		}
	}
	return false
}

func (r *dirRun) warnOnce(rel, msg string, err error) {
	r.mu.Lock()
	seen := r.warned[rel]
	r.warned[rel] = true
	r.mu.Unlock()
	if !seen {
		r.log.Warn(msg, "path", rel, "err", err)
	}
}

func (r *dirRun) clearWarned(rel string) {
	r.mu.Lock()
	delete(r.warned, rel)
	r.mu.Unlock()
}

// watchAndShip sets up a new watcher, scans the tree and ships changes
// until ctx ends, something fails, or events are lost (errDirRescan).
func (r *dirRun) watchAndShip(ctx context.Context, sink shipper.Sink) error {
	w, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return fmt.Errorf("dir source %s: %w", r.root, err)
	}
	r.mu.Lock()
	r.w, r.watched, r.renames, r.renamedAway = w, map[string]struct{}{}, nil, nil // the cookies of the old watcher are lost
	r.mu.Unlock()
	evCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		r.events(evCtx, w)
		close(done)
	}()
	defer func() {
		stop()
		w.Close()
		<-done
	}()
	select {
	case <-r.rescan:
	default:
	}
	if r.base == nil && r.baselineDue(time.Now()) {
		err = r.beginBaseline(ctx, sink) // its walk is the scan
	} else {
		err = r.scan()
	}
	if err != nil {
		return err
	}
	baseline := true
	for {
		select { // not only when idle: under a steady stream of changes too
		case <-ctx.Done():
			return ctx.Err()
		case err := <-r.fatal:
			return err
		case <-r.rescan:
			return errDirRescan
		default:
		}
		if err := r.takeReship(); err != nil {
			return err
		}
		if err := r.maybeEndBaseline(ctx, sink); err != nil {
			return err
		}
		if r.baselineDue(time.Now()) {
			if err := r.beginBaseline(ctx, sink); err != nil {
				return err
			}
			continue
		}
		due, next := r.takeDue(time.Now())
		if len(due) > 0 {
			if err := r.flush(ctx, sink, due); err != nil {
				return err
			}
			continue
		}
		if baseline {
			baseline = false
			r.mu.Lock()
			r.status.Baseline = true
			r.mu.Unlock()
			if err := r.maybePersist(true); err != nil {
				return err
			}
		}
		if err := r.wait(ctx, next); err != nil {
			return err
		}
	}
}

// wait blocks until a dirty path may be due (at next, or, if nothing is
// dirty, when something becomes dirty), writing the index snapshot when
// IndexEvery has passed with changes unsaved.
func (r *dirRun) wait(ctx context.Context, next time.Time) error {
	var due <-chan time.Time
	var kick <-chan struct{}
	if next.IsZero() {
		kick = r.kick
	} else {
		t := time.NewTimer(time.Until(next))
		defer t.Stop()
		due = t.C
	}
	var baselineDue <-chan time.Time
	if r.base == nil && !r.nextBaseline.IsZero() {
		t := time.NewTimer(time.Until(r.nextBaseline))
		defer t.Stop()
		baselineDue = t.C
	}
	var persist <-chan time.Time
	if r.changed > 0 {
		t := time.NewTimer(time.Until(r.lastPersist.Add(r.indexEvery)))
		defer t.Stop()
		persist = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-r.fatal:
		return err
	case <-r.rescan:
		return errDirRescan
	case <-due:
	case <-kick:
	case <-baselineDue:
	case <-persist:
		return r.maybePersist(false)
	}
	return nil
}
