package receiver

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/internal/fsutil"
)

// Grouped syncs (issue 23): a Multi offers every stream its part of a
// bundle at once, and each stream's receiver applied its part, fsynced
// the replica, wrote its checkpoint and fdatasynced that: a bundle of 100
// parts cost 200 syncs. Receivers that share a SyncGroup instead apply
// without an fsync, ask the group to make their writes durable, and the
// group makes every request that arrived meanwhile durable with one
// syncfs(2) of their file system; then each writes its checkpoint and asks
// again. A bundle of 100 parts then costs a few syncfs calls.
//
// The order a receiver alone keeps is kept: a checkpoint is written only
// once a sync that started after the data it covers was written has
// returned without error, and it counts as saved (Applied, OnApplied,
// the next save's slot) only once a second such sync has returned. A
// crash at any point leaves a checkpoint whose data is durable, and data
// past it that Restore undoes (docs/FORMAT.md, the file: applier's state).
//
// syncfs reports write-back errors of the file system since the
// descriptor it is called on was opened (Linux 5.8 and later); the group
// opens that descriptor before the receiver that registers the file
// system writes through the group, and an error fails every request the
// sync covered, as a failed fsync fails one receiver: each stops, naming
// its files, and the Multi opens it again (Open restores the replica to
// its checkpoint). Where syncfs does not report errors there is no group
// (NewSyncGroup returns nil) and each receiver fsyncs its own files.

// GroupSyncable is a SyncDeferrer whose deferred writes all lie on the
// file system of SyncPath, so that a sync of that whole file system
// makes them durable as its Sync would.
type GroupSyncable interface {
	SyncDeferrer
	SyncPath() string
}

// SyncGroup shares syncs among the receivers of a Multi.
type SyncGroup struct {
	// Linger is how long a sync waits for other requests after the first
	// one before it starts (requests that come while a sync runs wait
	// for the next one anyway). Default 2ms.
	Linger time.Duration
	// Sync makes everything written on the file system of fs durable.
	// Default: syncfs(2). Tests inject failures and crash images.
	Sync func(fs *os.File) error

	mu  sync.Mutex
	fss map[uint64]*groupFS // by device
}

// groupFS is one file system's descriptor and its waiting requests.
type groupFS struct {
	f       *os.File
	waiting []chan error
	running bool // a goroutine is syncing it
	// failed counts the syncs of f that failed. A write-back error is
	// reported to one syncfs only, the first on f after it: a sync that
	// failed for one batch may have lost the writes of a stream that
	// asked later, whose own sync then returns 0 (sync checks it).
	failed uint64
}

// NewSyncGroup returns a group using syncfs(2), or nil where syncfs does
// not report write-back errors (before Linux 5.8, other systems).
func NewSyncGroup() *SyncGroup {
	if !fsutil.SyncfsReportsErrors() {
		return nil
	}
	return &SyncGroup{}
}

// register returns the group's descriptor on the file system of path,
// opening it for the first path there.
func (g *SyncGroup) register(path string) (*groupFS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fss == nil {
		g.fss = map[uint64]*groupFS{}
	}
	if have := g.fss[uint64(st.Dev)]; have != nil {
		f.Close()
		return have, nil
	}
	fs := &groupFS{f: f}
	g.fss[uint64(st.Dev)] = fs
	return fs, nil
}

// seen is how many syncs of fs failed so far: a receiver joining the
// group notes it before it writes (sync).
func (g *SyncGroup) seen(fs *groupFS) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return fs.failed
}

// sync returns once a sync of fs that started after the call has
// returned: nil, or its error; or an error if any sync of fs failed since
// *seen, the count the caller noted when its last sync succeeded (or it
// joined): that failure may have taken the caller's writes, and no later
// syncfs reports it again. (A receiver whose sync failed stops; opened
// again, it joins anew.)
func (g *SyncGroup) sync(fs *groupFS, seen *uint64) error {
	done := make(chan error, 1)
	g.mu.Lock()
	fs.waiting = append(fs.waiting, done)
	if !fs.running {
		fs.running = true
		go g.run(fs)
	}
	g.mu.Unlock()
	if err := <-done; err != nil {
		return err
	}
	failed := g.seen(fs)
	if failed != *seen {
		return fmt.Errorf("a syncfs of the file system of %s failed since this stream last synced there: its writes since may be lost", fs.f.Name())
	}
	return nil
}

// run syncs fs while requests wait for it.
func (g *SyncGroup) run(fs *groupFS) {
	linger := g.Linger
	if linger <= 0 {
		linger = 2 * time.Millisecond
	}
	do := g.Sync
	if do == nil {
		do = fsutil.Syncfs
	}
	for {
		time.Sleep(linger)
		g.mu.Lock()
		batch := fs.waiting
		fs.waiting = nil
		if len(batch) == 0 {
			fs.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		err := do(fs.f)
		if err != nil {
			err = fmt.Errorf("syncfs of the file system of %s: %w", fs.f.Name(), err)
			g.mu.Lock()
			fs.failed++
			g.mu.Unlock()
		}
		for _, w := range batch {
			w <- err
		}
	}
}

// Close releases the group's descriptors. No receiver may sync through
// it any more.
func (g *SyncGroup) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var first error
	for dev, fs := range g.fss {
		if err := fs.f.Close(); err != nil && first == nil {
			first = err
		}
		delete(g.fss, dev)
	}
	return first
}

// joinGroup makes the receiver sync through g, if its applier's writes
// can be (GroupSyncable); otherwise, or if g cannot open a descriptor on
// its file systems, it syncs its own files as before.
func (r *Receiver) joinGroup(g *SyncGroup) {
	ap, ok := r.cfg.Applier.(GroupSyncable)
	if g == nil || !ok {
		return
	}
	data, err := g.register(ap.SyncPath())
	if err == nil {
		var cp *groupFS
		if cp, err = g.register(r.cfg.StateDir); err == nil {
			r.group, r.dataFS, r.cpFS = g, data, cp
			r.dataSeen, r.cpSeen = g.seen(data), g.seen(cp)
			return
		}
	}
	r.log.Warn("cannot share syncs with the other streams; this stream fsyncs its own files", "stream", r.cfg.Stream, "err", err)
}

// syncApplied makes what the applier applied without fsync durable:
// through the group, or by its own Sync.
func (r *Receiver) syncApplied() error {
	if r.group == nil {
		return r.cfg.Applier.(SyncDeferrer).Sync()
	}
	if err := r.group.sync(r.dataFS, &r.dataSeen); err != nil {
		return fmt.Errorf("apply %s: %w: %w", r.cfg.Applier, err, ErrFatal)
	}
	return nil
}

// saveCheckpoint saves next durably: written, then synced through the
// group, or by the file's own fdatasync.
func (r *Receiver) saveCheckpoint(next Checkpoint) error {
	if r.group == nil {
		return r.cpFile.Save(next)
	}
	return r.cpFile.saveWith(next, func() error { return r.group.sync(r.cpFS, &r.cpSeen) })
}
