//go:build linux

package source

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/shipper"
)

// dirSourceRun is the state of a Dir's Run (dir_config.go).
type dirSourceRun struct {
	mu             sync.Mutex
	run            *dirRun // the current Run, for Status
	baselineWanted atomic.Bool
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

// dirLogLimit is the pending-log size that triggers a snapshot.
const dirLogLimit = 4 << 20

// dirFileAttempts is how often a file that changes while it is read is read
// again before it is put back to wait for the next quiet moment.
const dirFileAttempts = 5

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
	s.mu.Unlock()
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

// dirDirtyMark is a changed path waiting to be shipped.
type dirDirtyMark struct{ first, last time.Time }

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
	warned  map[string]bool
	status  DirStatus

	// Flusher side only.
	cur         []batch.Record
	curBytes    int
	flushPaths  []string
	logged      bool // flushPaths are in the pending log
	inFlush     bool // a flush started and did not finish: the index is not durable
	changed     int  // index changes since the snapshot
	lastPersist time.Time

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
		r.warnOnce(rel, "path has a name the dir applier reserves; not shipped", nil)
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
		r.log.Warn(msg, "path", rel, "error", err)
	}
}

func (r *dirRun) clearWarned(rel string) {
	r.mu.Lock()
	delete(r.warned, rel)
	r.mu.Unlock()
}

// dirtySince reports whether rel was marked dirty at or after t: it changed
// since then and will be shipped again.
func (r *dirRun) dirtySince(rel string, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.dirty[rel]
	return m != nil && !m.last.Before(t)
}

func (r *dirRun) markDirty(rel string, now time.Time) {
	r.mu.Lock()
	if m := r.dirty[rel]; m != nil {
		m.last = now
	} else {
		r.dirty[rel] = &dirDirtyMark{first: now, last: now}
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// takeDue removes and returns the paths quiet for Debounce (or dirty for
// MaxDelay), and when the next of the others is due.
func (r *dirRun) takeDue(now time.Time) ([]string, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var due []string
	var next time.Time
	for p, m := range r.dirty {
		at := m.last.Add(r.debounce)
		if f := m.first.Add(r.maxDelay); f.Before(at) {
			at = f
		}
		if !at.After(now) {
			due = append(due, p)
			delete(r.dirty, p)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, next
}

// watchAndShip sets up a new watcher, scans the tree and ships changes
// until ctx ends, something fails, or events are lost (errDirRescan).
func (r *dirRun) watchAndShip(ctx context.Context, sink shipper.Sink) error {
	w, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return fmt.Errorf("dir source %s: %w", r.root, err)
	}
	r.mu.Lock()
	r.w, r.watched = w, map[string]struct{}{}
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

// events turns fsnotify events into dirty paths. A new directory is
// watched and listed at once, so files created in it before the watch
// existed are not missed.
func (r *dirRun) events(ctx context.Context, w *fsnotify.Watcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			r.handle(ev)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				r.log.Warn("inotify error; rescanning the tree", "error", err)
			}
			select {
			case r.rescan <- struct{}{}:
			default:
			}
		}
	}
}

func (r *dirRun) handle(ev fsnotify.Event) {
	rel, ok := r.rel(ev.Name)
	if !ok {
		return
	}
	now := time.Now()
	structural := ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	if r.skip(rel) {
		// Not shipped, but it changed its directory's mtime.
		if par := dirParent(rel); structural && par != "" && !r.skip(par) {
			r.markDirty(par, now)
		}
		return
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		// A directory renamed away keeps its inotify watches under the old
		// names; drop them so a later watch on its new name gets new ones.
		r.unwatchTree(rel)
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(r.abs(rel)); err == nil && fi.IsDir() {
			r.addTree(rel, now)
		}
	}
	r.markDirty(rel, now)
	if rel != "." && structural {
		r.markDirty(dirParent(rel), now) // its mtime changed
	}
}

// watch adds an inotify watch on directory rel.
func (r *dirRun) watch(rel string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.watched[rel]; ok {
		return nil
	}
	if err := r.w.Add(r.abs(rel)); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			limit, _ := os.ReadFile("/proc/sys/fs/inotify/max_user_watches")
			return fmt.Errorf("dir source: watch %s: %w (fs.inotify.max_user_watches = %s); raise it with sysctl and restart",
				r.abs(rel), errDirWatchLimit, strings.TrimSpace(string(limit)))
		}
		return err
	}
	r.watched[rel] = struct{}{}
	return nil
}

func (r *dirRun) unwatchTree(rel string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.watched[rel]; !ok {
		return
	}
	pre := rel + "/"
	if rel == "." {
		pre = ""
	}
	for p := range r.watched {
		if p == rel || strings.HasPrefix(p, pre) {
			r.w.Remove(r.abs(p)) // may be gone already; nothing to do then
			delete(r.watched, p)
		}
	}
}

func (r *dirRun) isWatched(rel string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.watched[rel]
	return ok
}

// addTree watches directory rel and everything under it, marking every
// entry dirty. The watch goes on before the listing, so nothing created
// in between is missed.
func (r *dirRun) addTree(rel string, now time.Time) {
	if err := r.watch(rel); err != nil {
		if errors.Is(err, errDirWatchLimit) {
			select {
			case r.fatal <- err:
			default:
			}
		}
		return
	}
	ents, err := os.ReadDir(r.abs(rel))
	if err != nil {
		return // gone again, or unreadable: its events will tell
	}
	for _, e := range ents {
		c := dirJoin(rel, e.Name())
		if r.skip(c) {
			continue
		}
		r.markDirty(c, now)
		if e.IsDir() {
			r.addTree(c, now)
		}
	}
}

// scan walks the tree, watching every directory, and marks dirty every
// path whose state differs from the index or that the index has and the
// tree does not. Marks from a scan are due at once.
func (r *dirRun) scan() error {
	r.mu.Lock()
	r.status.Scans++
	r.mu.Unlock()
	seen := make(map[string]struct{}, len(r.idx.entries)+1)
	unreadable := map[string]bool{}
	fi, err := os.Lstat(r.root)
	if err != nil {
		return fmt.Errorf("dir source: %w", err)
	}
	seen["."] = struct{}{}
	if r.differs(".", fi) {
		r.markDirty(".", time.Time{})
	}
	if err := r.walk(".", seen, unreadable); err != nil {
		return err
	}
	for p := range r.idx.entries {
		if _, ok := seen[p]; ok {
			continue
		}
		under := false
		for a := dirParent(p); a != "" && !under; a = dirParent(a) {
			under = unreadable[a]
		}
		if !under {
			r.markDirty(p, time.Time{})
		}
	}
	return nil
}

func (r *dirRun) walk(rel string, seen map[string]struct{}, unreadable map[string]bool) error {
	if err := r.watch(rel); err != nil {
		if errors.Is(err, errDirWatchLimit) {
			return err
		}
		if !errors.Is(err, os.ErrNotExist) {
			r.warnOnce(rel, "cannot watch directory; changes in it are not seen until a rescan", err)
		}
	}
	ents, err := os.ReadDir(r.abs(rel))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			unreadable[rel] = true
			r.warnOnce(rel, "cannot list directory; what is under it is left as it was shipped", err)
		}
		return nil
	}
	for _, e := range ents {
		c := dirJoin(rel, e.Name())
		if r.skip(c) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // vanished; its event follows
		}
		seen[c] = struct{}{}
		if r.differs(c, fi) {
			r.markDirty(c, time.Time{})
		}
		if fi.IsDir() {
			if err := r.walk(c, seen, unreadable); err != nil {
				return err
			}
		}
	}
	return nil
}

// dirStat is what the source compares of a path.
type dirStat struct {
	mode         uint32
	mtime, ctime int64
	size         int64
	ino          uint64
}

func dirStatOf(fi os.FileInfo) dirStat {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return dirStat{mode: uint32(fi.Mode().Perm()), mtime: fi.ModTime().UnixNano(), size: fi.Size()}
	}
	return dirStat{
		mode:  uint32(st.Mode & 0o7777),
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
		size:  st.Size,
		ino:   st.Ino,
	}
}

// differs is the scan's quick check: could rel's state differ from what
// the index says the replica has? No file is read.
func (r *dirRun) differs(rel string, fi os.FileInfo) bool {
	e := r.idx.get(rel)
	if e == nil || e.Pending {
		return true
	}
	st := dirStatOf(fi)
	switch m := fi.Mode(); {
	case m.IsDir():
		return e.Kind != dirKindDir || e.Mode != st.mode || e.Mtime != st.mtime
	case m.IsRegular():
		return e.Kind != dirKindFile || e.Mode != st.mode || e.Mtime != st.mtime || e.Size != st.size || e.Ino != st.ino || e.Ctime != st.ctime
	case m&os.ModeSymlink != 0:
		return e.Kind != dirKindLink || e.Mtime != st.mtime || e.Ino != st.ino || e.Ctime != st.ctime
	}
	return true // a special file: gone as far as the replica is concerned
}

// flush ships the given paths (plus any ancestor the index does not hold
// as a shipped directory, so the replica never sees a path below something
// that is not yet a directory there), parents before children.
func (r *dirRun) flush(ctx context.Context, sink shipper.Sink, due []string) error {
	set := make(map[string]struct{}, len(due))
	for _, p := range due {
		set[p] = struct{}{}
		for a := dirParent(p); a != "" && a != "."; a = dirParent(a) {
			if e := r.idx.get(a); e == nil || e.Kind != dirKindDir || e.Pending {
				set[a] = struct{}{}
			}
		}
	}
	paths := make([]string, 0, len(set))
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths) // a parent is a prefix of its children, so it sorts first
	// In parts, each made durable and logged on its own, so that a crash
	// in the middle of a large scan ships again only the part it was in.
	for len(paths) > 0 {
		n := min(len(paths), dirFlushPaths)
		if err := r.flushPart(ctx, sink, paths[:n]); err != nil {
			return err
		}
		paths = paths[n:]
	}
	return nil
}

// dirFlushPaths is the most paths one part of a flush ships.
const dirFlushPaths = 8192

func (r *dirRun) flushPart(ctx context.Context, sink shipper.Sink, paths []string) error {
	r.flushPaths, r.logged, r.inFlush = paths, false, true
	r.cur, r.curBytes = r.cur[:0], 0
	for _, p := range paths {
		if err := r.process(ctx, sink, p); err != nil {
			return err
		}
		r.baselineShipped(p)
	}
	if len(r.cur) > 0 {
		if err := r.send(ctx, sink, true); err != nil {
			return err
		}
	}
	r.inFlush = false
	r.mu.Lock()
	r.status.Flushes++
	r.status.Indexed = len(r.idx.entries)
	r.mu.Unlock()
	// Rewrite the snapshot once the log is a good part of it: the cost of
	// snapshots stays proportional to what is shipped.
	if r.idx.logSize >= max(dirLogLimit, r.idx.snapSize/2) {
		return r.maybePersist(true)
	}
	return nil
}

// maybePersist writes the index snapshot when forced (and anything changed)
// or when IndexEvery has passed since the last one. Never mid-flush.
func (r *dirRun) maybePersist(force bool) error {
	if r.inFlush || (r.changed == 0 && r.idx.logSize == 0) {
		return nil
	}
	if !force && time.Since(r.lastPersist) < r.indexEvery {
		return nil
	}
	if err := r.idx.persist(); err != nil {
		return err
	}
	r.changed, r.lastPersist = 0, time.Now()
	return nil
}

// emit adds a record to the flush's current batch, first handing the batch
// to the sink if it is full. The last batch of a flush is sent durably by
// flush itself, so the current batch is never empty after an emit.
func (r *dirRun) emit(ctx context.Context, sink shipper.Sink, rec batch.Record) error {
	n := rec.FramedSize()
	if len(r.cur) > 0 && (r.curBytes+n > sourceBatchBytes || len(r.cur) >= sourceBatchRecords) {
		if err := r.send(ctx, sink, false); err != nil {
			return err
		}
	}
	r.cur = append(r.cur, rec)
	r.curBytes += n
	r.changed++
	return nil
}

func (r *dirRun) send(ctx context.Context, sink shipper.Sink, durable bool) error {
	if !r.logged {
		if err := r.idx.logPending(r.idx.batches+1, r.flushPaths); err != nil {
			return err
		}
		r.logged = true
	}
	r.idx.batches++
	cursor, _ := json.Marshal(dirCursor{Batches: r.idx.batches})
	var err error
	if ds, ok := sink.(shipper.DurableSink); ok && durable {
		err = ds.AppendDurable(ctx, r.cur, cursor)
	} else {
		err = sink.AppendBatch(ctx, r.cur, cursor)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.status.Records += uint64(len(r.cur))
	r.status.Bytes += int64(r.curBytes)
	r.mu.Unlock()
	clear(r.cur)
	r.cur, r.curBytes = r.cur[:0], 0
	return nil
}

// process ships the current state of one path, if the replica does not
// have it already.
func (r *dirRun) process(ctx context.Context, sink shipper.Sink, p string) error {
	if p != "." && r.skip(p) {
		return r.gone(ctx, sink, p)
	}
	f, err := r.openIn(p, unix.O_PATH)
	var fi os.FileInfo
	if err == nil {
		fi, err = f.Stat()
		defer f.Close()
	}
	if err != nil {
		if p == "." {
			return fmt.Errorf("dir source: the root %s is gone: %w", r.root, err)
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP) {
			return r.gone(ctx, sink, p)
		}
		r.warnOnce(p, "cannot stat; left as it was shipped", err)
		return nil
	}
	switch m := fi.Mode(); {
	case m.IsDir():
		return r.shipDir(ctx, sink, p, fi)
	case p == ".":
		return fmt.Errorf("dir source: the root %s is no longer a directory", r.root)
	case m.IsRegular():
		return r.shipFile(ctx, sink, p)
	case m&os.ModeSymlink != 0:
		return r.shipLink(ctx, sink, p, f, fi)
	}
	r.warnOnce(p, "not a regular file, directory or symlink; not replicated", nil)
	return r.gone(ctx, sink, p)
}

// gone ships the removal of a path the index has.
func (r *dirRun) gone(ctx context.Context, sink shipper.Sink, p string) error {
	e := r.idx.get(p)
	if e == nil || p == "." {
		return nil
	}
	op := dirtree.OpDel
	if e.Kind == dirKindDir {
		op = dirtree.OpRmdir
	}
	r.idx.removeTree(p)
	r.unwatchTree(p)
	return r.emit(ctx, sink, batch.Record{Op: op, Key: []byte(p)})
}

func (r *dirRun) shipDir(ctx context.Context, sink shipper.Sink, p string, fi os.FileInfo) error {
	st := dirStatOf(fi)
	e := r.idx.get(p)
	if e != nil && e.Kind == dirKindDir && !e.Pending && e.Mode == st.mode && e.Mtime == st.mtime {
		return nil
	}
	// A file or symlink that became a directory has no children to drop;
	// an unknown (pending) entry keeps its children, which are pending too.
	r.idx.set(p, &dirEntry{Kind: dirKindDir, Mode: st.mode, Mtime: st.mtime, Ino: st.ino, Ctime: st.ctime})
	if err := r.emit(ctx, sink, batch.Record{Op: dirtree.OpMkdir, Key: []byte(p),
		Data: dirtree.AppendHeader(make([]byte, 0, dirtree.HeaderLen), st.mode, st.mtime, 0, 0, nil)}); err != nil {
		return err
	}
	if !r.isWatched(p) {
		r.addTree(p, time.Now())
	}
	return nil
}

func (r *dirRun) shipLink(ctx context.Context, sink shipper.Sink, p string, f *os.File, fi os.FileInfo) error {
	// The descriptor is the link itself: readlink on it cannot race a
	// replacement of the path.
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(int(f.Fd()), "", buf)
	if err != nil {
		r.warnOnce(p, "cannot read symlink; left as it was shipped", err)
		return nil
	}
	target := string(buf[:n])
	st := dirStatOf(fi)
	e := r.idx.get(p)
	if e != nil && e.Kind == dirKindLink && !e.Pending && e.Target == target && e.Mtime == st.mtime {
		e.Ino, e.Ctime = st.ino, st.ctime
		return nil
	}
	if e != nil {
		r.idx.removeTree(p) // whatever was there, the symlink replaces it
	}
	r.idx.set(p, &dirEntry{Kind: dirKindLink, Mode: st.mode, Mtime: st.mtime, Size: int64(len(target)), Ino: st.ino, Ctime: st.ctime, Target: target})
	data := dirtree.AppendHeader(make([]byte, 0, dirtree.HeaderLen+len(target)), st.mode, st.mtime, int64(len(target)), 0, nil)
	return r.emit(ctx, sink, batch.Record{Op: dirtree.OpSymlink, Key: []byte(p), Data: append(data, target...)})
}

// payloadMax is the most content bytes a record for key p can carry.
func (r *dirRun) payloadMax(p string) int {
	return min(r.chunk, dirtree.ChunkRoom(p, r.maxRecord))
}

// shipFile ships a regular file, reading it again while it changes under
// the read; after dirFileAttempts it is put back to wait for a quiet moment.
func (r *dirRun) shipFile(ctx context.Context, sink shipper.Sink, p string) error {
	if r.payloadMax(p) < 1 {
		return fmt.Errorf("dir source: path %q is too long for max_record_size %d", p, r.maxRecord)
	}
	for attempt := 0; attempt < dirFileAttempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(r.settle)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		done, err := r.tryFile(ctx, sink, p)
		if err != nil || done {
			return err
		}
	}
	r.warnOnce(p, "file keeps changing while it is read; it is shipped once it holds still", nil)
	r.markDirty(p, time.Now())
	return nil
}

func dirSameStat(a, b dirStat) bool { return a == b }

// tryFile reads and ships a file once. done is false when the file changed
// while it was read (nothing published; any chunks sent are discarded by
// the applier when the next record arrives).
func (r *dirRun) tryFile(ctx context.Context, sink shipper.Sink, p string) (done bool, err error) {
	readStart := time.Now()
	f, err := r.openIn(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			return true, r.gone(ctx, sink, p)
		case errors.Is(err, syscall.ELOOP):
			r.markDirty(p, time.Now()) // became a symlink (or its directory did): look again
		default:
			r.warnOnce(p, "cannot read file; left as it was shipped", err)
		}
		return true, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		r.markDirty(p, time.Now())
		return true, nil
	}
	st := dirStatOf(fi)
	e := r.idx.get(p)
	if e != nil && e.Kind == dirKindFile && !e.Pending && e.Mode == st.mode && e.Mtime == st.mtime &&
		e.Size == st.size && e.Ino == st.ino && e.Ctime == st.ctime {
		return true, nil
	}
	if age := time.Since(time.Unix(0, st.ctime)); age >= 0 && age < r.settle {
		return false, nil
	}
	// The stat comparison misses a write that updated the timestamps
	// before the read began and copies data during it (one long write(2)).
	// Its inotify event comes when it completes: a path marked dirty since
	// the read began is left to the next flush instead.
	still := func() bool {
		fi, err := f.Stat()
		return err == nil && dirSameStat(dirStatOf(fi), st) && !r.dirtySince(p, readStart)
	}
	known := e != nil && e.Kind == dirKindFile && !e.Pending && e.Size == st.size
	entry := &dirEntry{Kind: dirKindFile, Mode: st.mode, Mtime: st.mtime, Size: st.size, Ino: st.ino, Ctime: st.ctime}
	limit := r.payloadMax(p)
	if st.size <= int64(limit) {
		data := make([]byte, dirtree.HeaderLen+int(st.size))
		if n, err := f.ReadAt(data[dirtree.HeaderLen:], 0); n != int(st.size) && !errors.Is(err, io.EOF) {
			r.warnOnce(p, "cannot read file; left as it was shipped", err)
			return true, nil
		} else if n != int(st.size) || !still() {
			return r.dirtySince(p, readStart), nil
		}
		entry.Hash = sha256.Sum256(data[dirtree.HeaderLen:])
		dirtree.AppendHeader(data[:0], st.mode, st.mtime, st.size, 0, &entry.Hash)
		r.clearWarned(p)
		if known && e.Hash == entry.Hash {
			r.idx.set(p, entry)
			if e.Mode == st.mode && e.Mtime == st.mtime {
				return true, nil // only the inode or ctime moved
			}
			return true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpAttr, Key: []byte(p), Data: data[:dirtree.HeaderLen]})
		}
		if e != nil {
			r.idx.removeTree(p)
		}
		r.idx.set(p, entry)
		return true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpPut, Key: []byte(p), Data: data})
	}
	if known && e.Mtime == st.mtime {
		// Same size and mtime: most likely a chmod or a copy. Hash first
		// rather than send the content.
		h := sha256.New()
		if n, err := io.Copy(h, io.NewSectionReader(f, 0, st.size)); n != st.size || err != nil || !still() {
			return r.dirtySince(p, readStart), nil
		}
		if sum := [32]byte(h.Sum(nil)); sum == e.Hash {
			entry.Hash = sum
			r.idx.set(p, entry)
			r.clearWarned(p)
			if e.Mode == st.mode {
				return true, nil
			}
			hdr := dirtree.AppendHeader(nil, st.mode, st.mtime, st.size, 0, &sum)
			return true, r.emit(ctx, sink, batch.Record{Op: dirtree.OpAttr, Key: []byte(p), Data: hdr})
		}
	}
	h := sha256.New()
	for off := int64(0); off < st.size; {
		n := min(int64(limit), st.size-off)
		data := make([]byte, dirtree.HeaderLen+int(n))
		if k, err := f.ReadAt(data[dirtree.HeaderLen:], off); int64(k) != n {
			if !errors.Is(err, io.EOF) {
				r.warnOnce(p, "cannot read file; left as it was shipped", err)
				return true, nil
			}
			return false, nil
		}
		if !still() {
			return r.dirtySince(p, readStart), nil
		}
		h.Write(data[dirtree.HeaderLen:])
		var sum *[32]byte
		if off+n == st.size {
			entry.Hash = [32]byte(h.Sum(nil))
			sum = &entry.Hash
		}
		dirtree.AppendHeader(data[:0], st.mode, st.mtime, st.size, off, sum)
		if err := r.emit(ctx, sink, batch.Record{Op: dirtree.OpChunk, Key: []byte(p), Data: data}); err != nil {
			return false, err
		}
		off += n
	}
	r.clearWarned(p)
	if e != nil {
		r.idx.removeTree(p)
	}
	r.idx.set(p, entry)
	return true, nil
}
