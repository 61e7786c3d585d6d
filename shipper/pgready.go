package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/internal/fsutil"
	"github.com/fsnotify/fsnotify"
)

// PGReadAhead ships PostgreSQL's archive before archive_command asks for
// it (docs/DIRTREE.md, "Reading ahead of PostgreSQL"). PostgreSQL marks a
// WAL segment (or .history, .backup, .partial file) complete by creating
// pg_wal/archive_status/NAME.ready, then runs archive_command for the
// oldest .ready files one at a time. The read-ahead lists those .ready
// files and pushes each file, in the order PostgreSQL archives them,
// through the same Pusher as push.sock, so `ferry push` from
// archive_command usually finds the markers written and exits 0 at once.
//
// It changes nothing in the contract: a file counts as shipped only by
// its markers, which a push writes once the records are accepted under
// the ack mode, and ferry push compares them with the hash of the file it
// is asked to archive. A file that changes after it was read ahead (not
// something PostgreSQL does to a .ready file) therefore fails its
// archive_command with a conflict instead of being taken as shipped; a file
// that changes while it is read is left to archive_command. The read-ahead
// never touches pg_wal: PostgreSQL renames .ready to .done itself when
// archive_command returns 0.
type PGReadAhead struct {
	DataDir string // PostgreSQL's data directory (holding pg_wal)
	Pusher  *Pusher
	// Interval is how often archive_status is listed when no inotify
	// event came (a missed event, a file system without inotify); 0: 1s.
	Interval time.Duration
	Log      *slog.Logger
	// OnShipped, if set, runs after each file the read-ahead pushed
	// (already is true when its markers were there before).
	OnShipped func(name string, already bool)
}

// readyKey identifies the version of a file that was pushed: a file
// replaced or rewritten since has another key and is looked at again.
type readyKey struct {
	ino, size int64
	mtime     int64
}

// Run reads ahead until ctx ends. Errors are logged (rate-limited) and
// retried at the next listing; archive_command reports the same ones to
// PostgreSQL. It returns ctx's error.
func (r *PGReadAhead) Run(ctx context.Context) error {
	interval := r.Interval
	if interval <= 0 {
		interval = time.Second
	}
	statusDir := filepath.Join(r.DataDir, "pg_wal", "archive_status")
	// inotify wakes the read-ahead as soon as a .ready file appears: the
	// archiver starts archive_command at once too, and whoever comes
	// second waits for the first (Pusher's lock per name).
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		r.Log.Warn("pg read-ahead: no inotify; listing archive_status every interval", "interval", interval, "err", err)
	} else {
		defer w.Close()
		if err := w.Add(statusDir); err != nil {
			r.Log.Warn("pg read-ahead: cannot watch archive_status; listing it every interval", "dir", statusDir, "interval", interval, "err", err)
		} else {
			events, watchErrs = w.Events, w.Errors
		}
	}
	seen := map[string]readyKey{} // pushed (or refused) in this run
	var lastWarn time.Time
	warn := func(msg string, args ...any) {
		if time.Since(lastWarn) > 30*time.Second {
			r.Log.Warn(msg, args...)
			lastWarn = time.Now()
		}
	}
	for {
		names, err := readyFiles(statusDir)
		if err != nil {
			warn("pg read-ahead: cannot list PostgreSQL's archive_status; archive_command still archives every file", "dir", statusDir, "err", err)
		}
		ready := map[string]bool{}
		for _, name := range names {
			ready[name] = true
			if ctx.Err() != nil {
				return ctx.Err()
			}
			key, err := r.pushOne(ctx, name, seen[name])
			if errors.Is(err, errUnchanged) || errors.Is(err, errNotReady) {
				continue
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				warn("pg read-ahead: file not shipped ahead; archive_command will try it", "name", name, "err", err)
				if errors.Is(err, ErrPushConflict) {
					seen[name] = key // the same content would conflict again
				}
				break // PostgreSQL archives in order: so does the read-ahead
			}
			seen[name] = key
		}
		for name := range seen {
			if !ready[name] {
				delete(seen, name) // archived (.done) or removed
			}
		}
		timer := time.NewTimer(interval)
	wait:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			case <-timer.C:
				break wait
			case ev, ok := <-events:
				if !ok {
					events = nil
					continue
				}
				if ev.Has(fsnotify.Create) && strings.HasSuffix(ev.Name, ".ready") {
					timer.Stop()
					break wait
				}
			case err, ok := <-watchErrs:
				// Read, or the watcher's reader blocks for good on an
				// overflow; an event may be lost: list now.
				if !ok {
					watchErrs = nil
					continue
				}
				warn("pg read-ahead: inotify on archive_status reported an error; listing it now", "dir", statusDir, "err", err)
				timer.Stop()
				break wait
			}
		}
	}
}

var (
	errUnchanged = errors.New("pushed before in this run")
	errNotReady  = errors.New("no longer ready, or changed while it was read")
)

// pushOne pushes pg_wal/NAME unless it is the version pushed before
// (prev). A file that is no longer .ready, or changed while it was read,
// is errNotReady: it is left to archive_command.
func (r *PGReadAhead) pushOne(ctx context.Context, name string, prev readyKey) (readyKey, error) {
	path := filepath.Join(r.DataDir, "pg_wal", name)
	f, fi, err := fsutil.OpenRegular(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return readyKey{}, errNotReady
		}
		return readyKey{}, err
	}
	defer f.Close()
	key := keyOf(fi)
	if key == prev {
		return key, errUnchanged
	}
	// Shipped by archive_command already (it came first): no need to
	// read it. The size is enough here; archive_command's push compares
	// the hash.
	if m, ok, err := r.Pusher.Marked(ctx, name); err == nil && ok && m.Size == fi.Size() {
		return key, nil
	}
	if fi.Size() > MaxPushSize {
		return key, fmt.Errorf("%s is %d bytes; a push carries at most %d", path, fi.Size(), MaxPushSize)
	}
	readyPath := filepath.Join(r.DataDir, "pg_wal", "archive_status", name+".ready")
	// The file must be the one that is .ready, unchanged by the read: the
	// same inode, size and mtime at the path before and after.
	unchanged := func() bool {
		after, err := os.Lstat(path)
		if err != nil || keyOf(after) != key {
			return false
		}
		_, err = os.Stat(readyPath) // archive_command took it meanwhile?
		return err == nil
	}
	start := time.Now()
	res, err := r.Pusher.PushFrom(ctx, PushSource{Name: name, R: f, Size: fi.Size(), Mode: uint32(fi.Mode().Perm()), Mtime: fi.ModTime().UnixNano(),
		Check: func([32]byte) error {
			if !unchanged() {
				return errNotReady
			}
			return nil
		}})
	if err != nil {
		if errors.Is(err, errNotReady) || !unchanged() {
			return key, errNotReady // shrank, grew or changed while read
		}
		return key, fmt.Errorf("ship %s: %w", name, err)
	}
	if !res.Already {
		r.Log.Info("pushed file", "via", "pg read-ahead", "name", name, "bytes", fi.Size(),
			"first_seq", res.Marker.FirstSeq, "last_seq", res.Marker.LastSeq, "took", time.Since(start).Round(time.Millisecond))
	}
	if r.OnShipped != nil {
		r.OnShipped(name, res.Already)
	}
	return key, nil
}

func keyOf(fi os.FileInfo) readyKey {
	k := readyKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = int64(st.Ino)
	}
	return k
}

// readyFiles lists the names PostgreSQL has marked .ready, in the order
// its archiver takes them: timeline history files first, then by name
// (WAL segment names sort by timeline and position).
func readyFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || CheckPushName(name) != nil {
			continue
		}
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		hi, hj := strings.HasSuffix(names[i], ".history"), strings.HasSuffix(names[j], ".history")
		if hi != hj {
			return hi
		}
		return names[i] < names[j]
	})
	return names, nil
}
