package s3

import (
	"context"
	"time"
)

// watchdog is an idle timeout for streaming calls (Get bodies, paged
// listings): its context is cancelled with errCallTimeout when kick has not
// been called for d. A plain deadline would fail a large object that is
// still arriving steadily.
type watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	d      time.Duration
	timer  *time.Timer
}

func newWatchdog(parent context.Context, d time.Duration) *watchdog {
	ctx, cancel := context.WithCancelCause(parent)
	return &watchdog{
		ctx:    ctx,
		cancel: cancel,
		d:      d,
		timer:  time.AfterFunc(d, func() { cancel(errCallTimeout) }),
	}
}

// kick records progress: the idle period starts again.
func (w *watchdog) kick() { w.timer.Reset(w.d) }

// pause suspends the timeout while the caller's code runs; kick resumes it.
func (w *watchdog) pause() { w.timer.Stop() }

// stop releases the context; the watchdog cannot be used afterwards.
func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel(context.Canceled)
}
