package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifyServing tells systemd (a Type=notify unit) that a long-running
// verb is serving: READY=1 now; WATCHDOG=1 every half of the unit's
// WatchdogSec= for as long as alive returns, until stop (through the
// drain, so that a long one is not taken for a hang); STOPPING=1 when ctx
// ends (a signal: shutdown begins) or, at the latest, at stop. alive takes the locks the verb's main loops take, so a loop stuck
// holding one stops the pings and systemd restarts ferry (with SIGABRT,
// whose goroutine dump shows where it was stuck). Outside systemd
// ($NOTIFY_SOCKET unset) it does nothing.
func notifyServing(ctx context.Context, log *slog.Logger, alive func()) (stop func()) {
	var warnOnce sync.Once
	send := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			warnOnce.Do(func() { log.Warn("cannot notify systemd", "state", state, "err", err) })
		}
	}
	send(daemon.SdNotifyReady)

	pings, stopPings := context.WithCancel(context.Background())
	var done sync.WaitGroup
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog off", "err", err)
	}
	if interval > 0 {
		done.Add(1)
		go func() {
			defer done.Done()
			t := time.NewTicker(interval / 2)
			defer t.Stop()
			for {
				select {
				case <-pings.Done():
					return
				case <-t.C:
				}
				alive()
				send(daemon.SdNotifyWatchdog)
			}
		}()
	}
	var stopping sync.Once
	done.Add(1)
	go func() {
		defer done.Done()
		select {
		case <-ctx.Done():
			stopping.Do(func() { send(daemon.SdNotifyStopping) })
		case <-pings.Done():
		}
	}()
	return func() {
		stopping.Do(func() { send(daemon.SdNotifyStopping) })
		stopPings()
		done.Wait()
	}
}
