package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// TailWatch tells the tails of one process when their files change, so a
// tail whose file is idle neither reads nor stats it (issue 23: 100 idle
// streams polled 1,000 times a second). It watches each tailed file's
// directory once with inotify (fsnotify), whatever number of tails follow
// files there, and wakes the tail of a path on any event naming it: a
// write, a truncation, a rename away, a new file under the name. A tail
// still reads at most once per its Poll interval (writes coalesce), and
// every Fallback wakes every tail anyway, in case an event was missed
// (an overflowed inotify queue wakes them all at once too).
type TailWatch struct {
	// Fallback is how often every tail looks at its file without an
	// event. Default 10s.
	Fallback time.Duration
	Log      *slog.Logger

	w    *fsnotify.Watcher
	mu   sync.Mutex
	dirs map[string]int                      // watched directory -> tails there
	subs map[string]map[chan struct{}]string // path -> wake channels
	all  chan struct{}                       // closed and replaced on Fallback and overflow
	stop context.CancelFunc
	done chan struct{}
}

// NewTailWatch starts a TailWatch; Close stops it.
func NewTailWatch(log *slog.Logger) (*TailWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("tail watch: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	tw := &TailWatch{Log: log, w: w, dirs: map[string]int{}, subs: map[string]map[chan struct{}]string{},
		all: make(chan struct{}), stop: cancel, done: make(chan struct{})}
	go tw.run(ctx)
	return tw, nil
}

// Close stops watching.
func (tw *TailWatch) Close() error {
	tw.stop()
	err := tw.w.Close()
	<-tw.done
	return err
}

// watch wakes the returned channel (buffered: wakes coalesce) on every
// event naming path, until cancel.
func (tw *TailWatch) watch(path string) (wake chan struct{}, cancel func(), err error) {
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.dirs[dir] == 0 {
		if err := tw.w.Add(dir); err != nil {
			return nil, nil, fmt.Errorf("tail watch %s: %w", dir, err)
		}
	}
	tw.dirs[dir]++
	wake = make(chan struct{}, 1)
	if tw.subs[path] == nil {
		tw.subs[path] = map[chan struct{}]string{}
	}
	tw.subs[path][wake] = dir
	return wake, func() {
		tw.mu.Lock()
		defer tw.mu.Unlock()
		delete(tw.subs[path], wake)
		if len(tw.subs[path]) == 0 {
			delete(tw.subs, path)
		}
		if tw.dirs[dir]--; tw.dirs[dir] == 0 {
			delete(tw.dirs, dir)
			tw.w.Remove(dir) // the directory may be gone: nothing to undo then
		}
	}, nil
}

// everyone returns the channel closed at the next Fallback or overflow.
func (tw *TailWatch) everyone() <-chan struct{} {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.all
}

func (tw *TailWatch) wakeAll() {
	tw.mu.Lock()
	close(tw.all)
	tw.all = make(chan struct{})
	tw.mu.Unlock()
}

func (tw *TailWatch) run(ctx context.Context) {
	defer close(tw.done)
	every := tw.Fallback
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			tw.wakeAll()
		case ev, ok := <-tw.w.Events:
			if !ok {
				return
			}
			tw.mu.Lock()
			for ch := range tw.subs[filepath.Clean(ev.Name)] {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			tw.mu.Unlock()
		case err, ok := <-tw.w.Errors:
			if !ok {
				return
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				tw.Log.Warn("tail watch", "err", err)
			}
			tw.wakeAll()
		}
	}
}
