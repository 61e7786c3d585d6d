package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
// overflowed inotify queue wakes them all at once too). A busy tail that
// spaces its reads (Tail.Coalesce) sleeps between them while the
// TailWatch looks at its path every Poll, for every such tail on one
// timer, and wakes it if its file was rotated, removed or truncated.
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

	// The busy tails spacing their reads (follow), looked at by one
	// goroutine (checkLoop) while there are any.
	fmu       sync.Mutex
	followers map[*follower]bool
	every     time.Duration // checkLoop's period: the smallest follower's poll
	kick      chan struct{} // a follower with a shorter poll came
	checking  bool          // checkLoop runs
	stat      func(string) (os.FileInfo, error)
}

// follower is a busy tail between two spaced reads (Tail.pause, with
// Coalesce): its path is looked at every poll by the TailWatch, not by
// the tail's own timer, and moved is signalled once the path no longer
// names its file at or past its offset (rotated away, removed,
// truncated). 100 tails each waking every 100 ms to stat their file were
// a tenth of a 100-stream ship's CPU (issue 23); one goroutine statting
// them all on one timer wakes no tail that has nothing to do.
type follower struct {
	path     string
	dev, ino uint64
	off      int64
	poll     time.Duration
	moved    chan struct{} // buffered: one signal
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
		all: make(chan struct{}), stop: cancel, done: make(chan struct{}),
		followers: map[*follower]bool{}, kick: make(chan struct{}, 1), stat: os.Stat}
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

// follow looks at path every poll, on one timer for every follower, until
// cancel, and signals the returned channel once path no longer names
// cur's file at or past its offset. cur must not change meanwhile (the
// tail waits).
func (tw *TailWatch) follow(path string, cur *tailFile, poll time.Duration) (moved <-chan struct{}, cancel func()) {
	f := &follower{path: path, dev: cur.dev, ino: cur.ino, off: cur.off, poll: poll, moved: make(chan struct{}, 1)}
	tw.fmu.Lock()
	tw.followers[f] = true
	if !tw.checking {
		tw.checking, tw.every = true, poll
		go tw.checkLoop()
	} else if poll < tw.every {
		tw.every = poll
		select {
		case tw.kick <- struct{}{}:
		default:
		}
	}
	tw.fmu.Unlock()
	return f.moved, func() {
		tw.fmu.Lock()
		delete(tw.followers, f)
		tw.fmu.Unlock()
	}
}

// checkLoop looks at every follower's path each period, until there are
// none (then it returns: an idle ship has no timer here) or Close.
func (tw *TailWatch) checkLoop() {
	var batch []*follower
	for {
		tw.fmu.Lock()
		if len(tw.followers) == 0 {
			tw.checking = false
			tw.fmu.Unlock()
			return
		}
		every := tw.every
		tw.fmu.Unlock()
		t := time.NewTimer(every)
		select {
		case <-tw.done:
			t.Stop()
			return
		case <-tw.kick:
			t.Stop()
			continue
		case <-t.C:
		}
		tw.fmu.Lock()
		batch = batch[:0]
		for f := range tw.followers {
			batch = append(batch, f)
		}
		tw.fmu.Unlock()
		for _, f := range batch {
			if f.hasMoved(tw.stat) {
				select {
				case f.moved <- struct{}{}:
				default:
				}
			}
		}
		clear(batch)
	}
}

// hasMoved is Tail.moved for a follower.
func (f *follower) hasMoved(stat func(string) (os.FileInfo, error)) bool {
	fi, err := stat(f.path)
	if err != nil {
		return true
	}
	dev, ino := fileID(fi)
	return dev != f.dev || ino != f.ino || fi.Size() < f.off
}
