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

// TailWatch tells the tails of one process when their idle files change,
// so a tail whose file is idle neither reads nor stats it (issue 23: 100
// idle streams polled 1,000 times a second). A tail whose reads come back
// empty twice in a row watches its file with inotify (fsnotify) and
// sleeps until an event on it (a write, a truncation, a rename or removal
// of the file); once it reads data again it drops the watch and polls
// every Poll, so a busy file costs no event per write. Every Fallback
// wakes every watching tail anyway, in case an event was missed (an
// overflowed inotify queue wakes them all at once too).
type TailWatch struct {
	// Fallback is how often every tail looks at its file without an
	// event (NewTailWatch's fallback; default 10s). Read-only once started.
	Fallback time.Duration
	Log      *slog.Logger

	w    *fsnotify.Watcher
	mu   sync.Mutex
	subs map[string]map[chan struct{}]bool // watched path -> wake channels
	all  chan struct{}                     // closed and replaced on Fallback and overflow
	stop context.CancelFunc
	done chan struct{}
}

// NewTailWatch starts a TailWatch; Close stops it. fallback is how often
// every tail looks at its file without an event (0: 10s).
func NewTailWatch(log *slog.Logger, fallback time.Duration) (*TailWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("tail watch: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	tw := &TailWatch{Fallback: fallback, Log: log, w: w, subs: map[string]map[chan struct{}]bool{},
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
// event on the file at path, until cancel.
func (tw *TailWatch) watch(path string) (wake chan struct{}, cancel func(), err error) {
	path = filepath.Clean(path)
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if len(tw.subs[path]) == 0 {
		if err := tw.w.Add(path); err != nil {
			return nil, nil, fmt.Errorf("tail watch %s: %w", path, err)
		}
		tw.subs[path] = map[chan struct{}]bool{}
	}
	wake = make(chan struct{}, 1)
	tw.subs[path][wake] = true
	return wake, func() {
		tw.mu.Lock()
		defer tw.mu.Unlock()
		delete(tw.subs[path], wake)
		if len(tw.subs[path]) == 0 {
			delete(tw.subs, path)
			tw.w.Remove(path) // gone with its file, maybe: nothing to undo then
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
