//go:build linux

package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// The event side of a Dir: one goroutine per watcher turns inotify events
// into dirty paths, which the flusher (watchAndShip, dir.go) takes when
// they are due. Lost events end the watcher; Run then starts a new one
// and scans the tree again.

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
				r.log.Warn("inotify error; rescanning the tree", "err", err)
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
	r.noteRename(ev, rel)
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		// A directory renamed away keeps its inotify watches under the old
		// names; drop them so a later watch on its new name gets new ones.
		r.unwatchTree(rel)
	}
	if ev.Has(fsnotify.Create) {
		if r.src.Ledger != nil {
			r.mu.Lock()
			if r.appeared == nil {
				r.appeared = map[string]struct{}{}
			}
			r.appeared[rel] = struct{}{}
			r.mu.Unlock()
		}
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
